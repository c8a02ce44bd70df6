//! Sweeps: fit/predict/optimize on their runs, concurrency, kill and resume,
//! torn lines, the noise floor, shards merged.

use super::*;

#[test]
fn sweep_fit_predict_optimize_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let runs = t.join("runs.csv");
    sweep_cmd(t, &cache, &runs, 12, 2).assert().success();
    let rows = data_rows(&runs);
    assert_eq!(rows.len(), 12);
    // A second invocation has nothing left to do.
    let again = stdout_of(&mut sweep_cmd(t, &cache, &runs, 12, 2));
    assert!(again.contains("12 already finished"), "{again}");
    assert_eq!(data_rows(&runs), rows);

    let law = t.join("law.json");
    let fit = stdout_of(
        mixopt()
            .args(["fit", "--target", "mean", "--law", "linear", "--runs"])
            .arg(&runs)
            .arg("--out")
            .arg(&law),
    );
    let law_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
    assert_eq!(law_json["kind"], "linear");
    // The CV line printed is the CV stored: 12 runs, the same ρ (×100, 2 decimals).
    let cv = fit
        .lines()
        .find(|l| l.contains("-fold CV"))
        .unwrap_or_else(|| panic!("no CV line: {fit}"));
    assert!(cv.contains("n=12"), "{cv}");
    let printed: f64 = cv
        .split("spearman")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no spearman figure: {cv}"));
    let stored = law_json["cv"]["spearman"].as_f64().unwrap();
    assert!(
        (printed - 100.0 * stored).abs() <= 0.005 + 1e-9,
        "{cv} vs {stored}"
    );

    let pred = stdout_of(
        mixopt()
            .args(["predict", "--law"])
            .arg(&law)
            .arg("--mixtures")
            .arg(&runs),
    );
    let lines: Vec<&str> = pred.lines().collect();
    assert_eq!(lines[0], "id,prediction");
    assert_eq!(lines.len(), 13);

    let weights = t.join("weights.json");
    let opt = stdout_of(
        mixopt()
            .args(["optimize", "--candidates", "2000", "--top-k", "20", "--law"])
            .arg(&law)
            .arg("--out")
            .arg(&weights),
    );
    assert!(opt.contains("predicted target"), "{opt}");
    let w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&weights).unwrap()).unwrap();
    let sum: f64 = w["domains"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-9);
    // "predicted" is the law's prediction at the weights written.
    let law_file = mixopt::law::LawFile::load(&law).unwrap();
    let written = mixopt::Mixture::parse_or_load(weights.to_str().unwrap()).unwrap();
    let at_weights = law_file.predict_mixture(&written).unwrap();
    let predicted = w["predicted"].as_f64().unwrap();
    assert!(
        (predicted - at_weights).abs() <= 1e-9 * at_weights.abs().max(1.0),
        "predicted {predicted}, law at the weights {at_weights}"
    );
    assert!(w["provenance"]["law_sha256"].as_str().unwrap().len() == 64);
    // The weights file trains a proxy directly.
    mixopt()
        .args(["train", "--mixture"])
        .arg(&weights)
        .arg("--proxy")
        .arg(t.join("test.toml"))
        .arg("--cache")
        .arg(&cache)
        .assert()
        .success();
}

/// A run of a concurrent sweep is the run `mixopt train` gives alone with the
/// same mixture and seed: concurrency does not change results.
#[test]
fn concurrent_sweep_runs_equal_the_same_runs_trained_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let runs = t.join("runs.csv");
    sweep_cmd(t, &cache, &runs, 3, 2).assert().success();
    let text = std::fs::read_to_string(&runs).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let spec = ["alpha", "digits", "words"]
            .map(|d| format!("{d}={}", f[col(&format!("w_{d}"))]))
            .join(",");
        let alone = stdout_of(
            mixopt()
                .args(["train", "--threads", "1", "--seed", f[col("seed")]])
                .args(["--mixture", &spec, "--proxy"])
                .arg(t.join("test.toml"))
                .arg("--cache")
                .arg(&cache),
        );
        for d in ["alpha", "digits", "words"] {
            let swept: f64 = f[col(&format!("loss_{d}"))].parse().unwrap();
            // `train` prints 4 decimals.
            let got = val_loss(&alone, d);
            assert!(
                (swept - got).abs() <= 5.1e-5,
                "{d}: sweep {swept}, alone {got}"
            );
        }
    }
}

#[test]
fn killed_sweep_resumes_without_losing_or_changing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let reference = t.join("reference.csv");
    sweep_cmd(t, &cache, &reference, 8, 1).assert().success();

    let runs = t.join("runs.csv");
    let bin = assert_cmd::cargo::cargo_bin("mixopt");
    let mut child = std::process::Command::new(&bin)
        .args(sweep_args(t, &cache, &runs, 8, 1))
        .env("MIXOPT_QUIET", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while data_rows(&runs).len() < 3 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = data_rows(&runs);
    assert!(
        before.len() >= 3 && before.len() < 8,
        "{} rows",
        before.len()
    );

    sweep_cmd(t, &cache, &runs, 8, 2).assert().success();
    let after = data_rows(&runs);
    assert_eq!(after.len(), 8);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "finished rows unchanged"
    );
    // Resumed (and concurrently trained) runs equal the uninterrupted sweep's.
    assert_eq!(by_id(&after), by_id(&data_rows(&reference)));

    // A different configuration refuses to append to this table.
    let out = mixopt()
        .args(sweep_args(t, &cache, &runs, 8, 1))
        .args(["--temperature", "0.7"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("different sweep configuration"),
        "{err}"
    );
}

#[test]
fn torn_last_line_is_repaired_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let runs = t.join("runs.csv");
    sweep_cmd(t, &cache, &runs, 3, 1).assert().success();
    let full = data_rows(&runs);
    // Simulate a write cut by kill -9: drop the last row's tail.
    let text = std::fs::read_to_string(&runs).unwrap();
    std::fs::write(&runs, &text[..text.len() - 10]).unwrap();
    sweep_cmd(t, &cache, &runs, 3, 1).assert().success();
    assert_eq!(by_id(&data_rows(&runs)), by_id(&full));
}

#[test]
fn sweep_measures_its_noise_floor_and_fit_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let runs = t.join("runs.csv");
    let mut args = sweep_args(t, &cache, &runs, 4, 2);
    args.truncate(args.len() - 2);
    mixopt()
        .args(args)
        .args(["--noise-seeds", "2", "--seeds", "common"])
        .assert()
        .success();
    let rows = data_rows(&runs);
    let ids: Vec<&str> = rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("noise-")).count(),
        4,
        "{ids:?}"
    );
    // Common seeds: every sampled run has the same seed, the noise runs others.
    let seed_of = |id: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("{id},")))
            .map(|r| r.split(',').nth(1).unwrap().to_string())
            .unwrap()
    };
    assert_eq!(seed_of("run00000"), seed_of("run00003"));
    assert_ne!(seed_of("run00000"), seed_of("noise-natural-0"));
    assert_eq!(seed_of("noise-natural-1"), seed_of("noise-probe-1"));
    let law = t.join("law.json");
    let fit = stdout_of(
        mixopt()
            .args(["fit", "--law", "linear", "--folds", "2", "--runs"])
            .arg(&runs)
            .arg("--out")
            .arg(&law),
    );
    assert!(fit.contains("noise: target sd over 2 seeds"), "{fit}");
    let law: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
    assert_eq!(law["n_runs"], 4, "noise runs are not fitted");
    assert_eq!(law["noise"]["seeds"], 2);
    // seed_sd is the sample sd of the target (mean loss) over the natural
    // mixture's two seeds, |a − b|/√2, recomputed here from the table.
    let text = std::fs::read_to_string(&runs).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let mean_loss = |id: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("no row {id}"));
        let losses: Vec<f64> = header
            .iter()
            .zip(row.split(','))
            .filter(|(h, _)| h.starts_with("loss_"))
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        losses.iter().sum::<f64>() / losses.len() as f64
    };
    let want = (mean_loss("noise-natural-0") - mean_loss("noise-natural-1")).abs() / 2f64.sqrt();
    let got = law["noise"]["seed_sd"].as_f64().unwrap();
    assert!(want > 0.0, "two seeds gave the same loss");
    assert!(
        (got - want).abs() <= 1e-9 * want.max(1.0),
        "seed_sd {got}, recomputed {want}"
    );
}

#[test]
fn three_shards_in_separate_processes_merge_to_the_unsharded_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let whole = t.join("whole.csv");
    sweep_cmd(t, &cache, &whole, 7, 2).assert().success();

    let bin = assert_cmd::cargo::cargo_bin("mixopt");
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(&bin)
                .args(sweep_args(
                    t,
                    &cache,
                    &t.join(format!("shard-{i}.csv")),
                    7,
                    1,
                ))
                .args(["--shard", &format!("{i}/3")])
                .env("MIXOPT_QUIET", "1")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let shard_rows: Vec<usize> = (0..3)
        .map(|i| data_rows(&t.join(format!("shard-{i}.csv"))).len())
        .collect();
    assert_eq!(shard_rows, vec![3, 2, 2]);

    let merged = t.join("merged.csv");
    let mut cmd = mixopt();
    cmd.arg("merge");
    for i in [2, 0, 1, 0] {
        cmd.arg(t.join(format!("shard-{i}.csv")));
    }
    let out = stdout_of(cmd.arg("--out").arg(&merged));
    assert!(out.contains("7 runs (3 duplicates dropped)"), "{out}");
    assert_eq!(by_id(&data_rows(&merged)), by_id(&data_rows(&whole)));
    // The merged table fits like any sweep's (its sidecar carries the prior).
    assert!(t.join("merged.csv.meta.json").exists());

    // A table from another sweep configuration is refused, as is overwriting.
    let other = t.join("other.csv");
    let mut c = sweep_cmd(t, &cache, &other, 2, 1);
    c.args(["--temperature", "0.9"]).assert().success();
    let out = mixopt()
        .arg("merge")
        .arg(t.join("shard-0.csv"))
        .arg(&other)
        .arg("--out")
        .arg(t.join("bad.csv"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("different sweep configuration"),
        "{err}"
    );
    assert!(!t.join("bad.csv").exists());
    let out = mixopt()
        .arg("merge")
        .arg(t.join("shard-0.csv"))
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--force"));
}

/// `bench sweep --repeats`: the three sweeps take turns, each repeat prints
/// its own ratios, and the summary is the median of those ratios with their
/// range; concurrent runs give the sequential losses in every repeat.
#[test]
fn bench_sweep_repeats_take_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let proxy = tmp.path().join("test.toml");
    std::fs::write(&proxy, TEST_PROXY).unwrap();
    let out = stdout_of(
        mixopt()
            .env("TMPDIR", tmp.path())
            .args([
                "bench",
                "sweep",
                "--runs",
                "2",
                "--steps",
                "2",
                "--repeats",
                "3",
                "--jobs",
                "2",
            ])
            .arg("--proxy")
            .arg(&proxy),
    );
    let labels: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["sequential", "concurrent", "data-parallel"].contains(w))
        .collect();
    assert_eq!(
        labels,
        ["sequential", "concurrent", "data-parallel"].repeat(3),
        "{out}"
    );
    // Each repeat's concurrent ratio, from its line; the summary is their median.
    let mut ratios: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("repeat "))
        .map(|l| {
            let tail = l.split("concurrent/sequential = ").nth(1).unwrap();
            tail.split(',').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(ratios.len(), 3, "{out}");
    ratios.sort_by(f64::total_cmp);
    let summary = out
        .lines()
        .find(|l| l.starts_with("sweep throughput concurrent/sequential = "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        summary.starts_with(&format!(
            "sweep throughput concurrent/sequential = {:.2} (median of 3 interleaved repeats; range {:.2}–{:.2})",
            ratios[1], ratios[0], ratios[2]
        )),
        "{summary} vs {ratios:?}"
    );
    assert!(out.contains("identical losses run by run: true"), "{out}");
    // The scratch directory is gone afterwards.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("mixopt-bench-sweep"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let out = mixopt()
        .args(["bench", "sweep", "--repeats", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repeats must be > 0"));
    // A bad --jobs is refused before any sweep has run.
    let out = mixopt()
        .args(["bench", "sweep", "--jobs", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jobs must be > 0"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sequential"));
}
