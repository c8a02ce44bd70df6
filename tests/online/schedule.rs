//! `mixopt train --schedule` end to end.

use super::*;

const TEST_PROXY: &str = include_str!("../data/test_proxy.toml");

fn prepare(tmp: &Path) -> std::path::PathBuf {
    let mut cmd = Command::new(bin());
    cmd.env("MIXOPT_QUIET", "1")
        .arg("prepare")
        .arg("--cache")
        .arg(tmp.join("cache"));
    for (d, make) in [
        (
            "alpha",
            Box::new(|i: usize| {
                (0..300)
                    .map(|j| char::from(b'a' + ((i + j) % 7) as u8))
                    .collect::<String>()
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "digits",
            Box::new(|i: usize| (0..120).map(|j| format!("{} ", (i + j) % 10)).collect()),
        ),
        (
            "words",
            Box::new(|i: usize| ["the cat", "a dog", "one bird"][i % 3].repeat(30)),
        ),
    ] {
        let sub = tmp.join("corpus").join(d);
        std::fs::create_dir_all(&sub).unwrap();
        let lines: Vec<String> = (0..60)
            .map(|i| serde_json::json!({ "text": make(i) }).to_string())
            .collect();
        std::fs::write(sub.join("docs.jsonl"), lines.join("\n") + "\n").unwrap();
        cmd.arg("--domain")
            .arg(format!("{d}={}", sub.join("docs.jsonl").display()));
    }
    assert!(cmd.output().unwrap().status.success());
    std::fs::write(tmp.join("test.toml"), TEST_PROXY).unwrap();
    tmp.join("cache")
}

#[test]
fn train_schedule_writes_trajectory_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = prepare(tmp.path());
    for schedule in ["odm", "aioli", "doremi", "ado", "static"] {
        let traj = tmp.path().join(format!("{schedule}.csv"));
        let weights = tmp.path().join(format!("{schedule}.json"));
        let run = || {
            Command::new(bin())
                .env("MIXOPT_QUIET", "1")
                .args([
                    "train",
                    "--seed",
                    "3",
                    "--update-every-steps",
                    "2",
                    "--schedule",
                    schedule,
                    "--proxy",
                ])
                .arg(tmp.path().join("test.toml"))
                .arg("--cache")
                .arg(&cache)
                .arg("--trajectory")
                .arg(&traj)
                .arg("--weights-out")
                .arg(&weights)
                .output()
                .unwrap()
        };
        let out = run();
        assert!(
            out.status.success(),
            "{schedule}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&traj).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "step,w_alpha,w_digits,w_words,loss_alpha,loss_digits,loss_words",
            "{schedule}"
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let want_rows = if schedule == "static" { 1 } else { 1 + 39 / 2 };
        assert_eq!(rows.len(), want_rows, "{schedule}: {text}");
        for r in &rows {
            assert_eq!(r.len(), 7);
            let s: f64 = r[1..4].iter().map(|w| w.parse::<f64>().unwrap()).sum();
            assert!((s - 1.0).abs() < 1e-9, "{schedule}: {r:?}");
        }
        if schedule != "static" {
            // The policy moved the weights, and saw losses.
            assert!(
                rows.iter().any(|r| r[1..4] != rows[0][1..4]),
                "{schedule}: {text}"
            );
            assert!(
                rows[1..].iter().any(|r| !r[4].is_empty()),
                "{schedule}: {text}"
            );
        }
        let m = Mixture::load(&weights).unwrap();
        assert_eq!(m.domains(), ["alpha", "digits", "words"]);
        // Same seed, same run.
        let again = run();
        let strip = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with("wall"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&out), strip(&again), "{schedule}");
        assert_eq!(std::fs::read_to_string(&traj).unwrap(), text, "{schedule}");
    }
}
