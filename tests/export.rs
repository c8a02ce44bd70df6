//! `mixopt export` driven as a user would: every format against a golden file
//! (tests/golden/export/), YAML/JSON outputs parsed back to the same weights,
//! rounding that sums to exactly 1, multi-phase schedules from a trajectory,
//! and bad input that must fail with one line naming the file or flag.
//!
//! Regenerate the golden files after an intended change with
//! `MIXOPT_UPDATE_GOLDEN=1 cargo test --release --test export` and review the diff.

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/export");

const FORMATS: [&str; 13] = [
    "json",
    "yaml",
    "megatron",
    "gpt-neox",
    "olmo-core",
    "llm-foundry",
    "nanotron",
    "levanter",
    "hf",
    "litdata",
    "torchtitan",
    "doremi",
    "regmix",
];

/// The main output's extension for each format.
fn ext(format: &str) -> &'static str {
    match format {
        "json" | "doremi" => "json",
        "megatron" => "txt",
        "hf" | "litdata" | "torchtitan" => "py",
        _ => "yaml",
    }
}

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// Weights with a multi-path domain, a remote one with validation data, and
/// one tiny weight that `--min-weight 0.001` zeroes.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let weights = dir.join("weights.json");
    std::fs::write(
        &weights,
        r#"{"domains": {"web": 0.45372, "code": 0.32628, "books": 0.21999, "math": 0.00001},
            "order": ["web", "code", "books", "math"], "target": "mean"}"#,
    )
    .unwrap();
    let paths = dir.join("paths.toml");
    std::fs::write(
        &paths,
        "web = \"/data/web_text_document\"\ncode = [\"/data/code_0\", \"/data/code_1\"]\nmath = \"/data/math\"\n\n[books]\ntrain = \"s3://bucket/books/train\"\nvalid = \"s3://bucket/books/val\"\nmax_repetition = 2.5\n",
    )
    .unwrap();
    (weights, paths)
}

/// A three-domain online trajectory with gaps in its losses.
fn trajectory(dir: &Path) -> PathBuf {
    let t = dir.join("traj.csv");
    let mut s = String::from("step,w_web,w_code,w_books,loss_web,loss_code,loss_books\n");
    for i in 0..8u32 {
        let a = 0.6 - 0.05 * f64::from(i);
        let b = 0.1 + 0.05 * f64::from(i);
        let loss = |x: f64| format!("{:.3}", 3.0 - 0.1 * f64::from(i) + x);
        let books_loss = if i % 3 == 1 { String::new() } else { loss(0.2) };
        s.push_str(&format!(
            "{},{a:.2},{b:.2},{:.2},{},{},{books_loss}\n",
            i * 100,
            1.0 - a - b,
            loss(0.0),
            loss(0.1)
        ));
    }
    std::fs::write(&t, s).unwrap();
    t
}

/// Compare every file `mixopt` wrote beside `out` with its golden twin.
fn check_golden(dir: &Path, stem: &str) {
    let update = std::env::var_os("MIXOPT_UPDATE_GOLDEN").is_some();
    let mut produced: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{stem}."))
        })
        .collect();
    produced.sort();
    assert!(!produced.is_empty(), "nothing written for {stem}");
    for p in produced {
        let name = p.file_name().unwrap();
        let golden = Path::new(GOLDEN).join(name);
        let got = std::fs::read_to_string(&p).unwrap();
        if update {
            std::fs::create_dir_all(GOLDEN).unwrap();
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "no golden file {} (MIXOPT_UPDATE_GOLDEN=1 writes it)",
                golden.display()
            )
        });
        assert_eq!(
            got,
            want,
            "{} differs from its golden file",
            name.to_string_lossy()
        );
    }
}

#[test]
fn every_format_matches_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, paths) = fixture(dir.path());
    for format in FORMATS {
        let stem = format.replace('-', "_");
        let out = dir.path().join(format!("{stem}.{}", ext(format)));
        let o = mixopt()
            .args([
                "export",
                "--format",
                format,
                "--round",
                "3",
                "--min-weight",
                "0.001",
            ])
            .arg("--weights")
            .arg(&weights)
            .arg("--paths")
            .arg(&paths)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        check_golden(dir.path(), &stem);
    }
}

#[test]
fn schedules_match_their_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let traj = trajectory(dir.path());
    // nanotron, levanter and json hold a schedule in one file; megatron gets
    // one set of files per phase.
    for format in ["nanotron", "levanter", "json", "megatron"] {
        let stem = format!("schedule_{format}");
        let out = dir.path().join(format!("{stem}.{}", ext(format)));
        let o = mixopt()
            .args([
                "export",
                "--format",
                format,
                "--phases",
                "2",
                "--round",
                "2",
                // Levanter aligns phase starts to whole mixture blocks.
                "--batch-size",
                "256",
            ])
            .arg("--trajectory")
            .arg(&traj)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        check_golden(dir.path(), &stem);
    }
    assert!(dir
        .path()
        .join("schedule_megatron.phase2.per_split.json")
        .is_file());
}

/// Weights (as f64) under a YAML/JSON path, keyed by name.
fn map_of(v: &serde_json::Value) -> BTreeMap<String, f64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, w)| (k.clone(), w.as_f64().unwrap()))
        .collect()
}

#[test]
fn yaml_and_json_parse_back_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, _) = fixture(dir.path());
    let original = mixopt::Mixture::load(&weights).unwrap();
    let run = |format: &str, extra: &[&str]| -> String {
        let o = mixopt()
            .args(["export", "--format", format])
            .args(extra)
            .arg("--weights")
            .arg(&weights)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };

    // Unrounded: the exact f64 values come back, and mixopt reads its own output.
    let j: serde_json::Value = serde_json::from_str(&run("json", &[])).unwrap();
    let back = map_of(&j["domains"]);
    for (d, w) in original.iter() {
        assert_eq!(back[d], w, "{d}");
    }
    let json_out = dir.path().join("again.json");
    std::fs::write(&json_out, run("json", &[])).unwrap();
    assert_eq!(mixopt::Mixture::load(&json_out).unwrap(), original);
    let y: serde_json::Value = serde_yaml_ng::from_str(&run("yaml", &[])).unwrap();
    assert_eq!(map_of(&y["domains"]), back);
    let d: serde_json::Value = serde_json::from_str(&run("doremi", &[])).unwrap();
    assert_eq!(map_of(&d["train_domain_weights"]), back);
    let r: serde_json::Value = serde_yaml_ng::from_str(&run("regmix", &[])).unwrap();
    assert_eq!(map_of(&r["train"]), back);
    let l: serde_json::Value = serde_yaml_ng::from_str(&run("levanter", &[])).unwrap();
    assert_eq!(map_of(&l["data"]["train_weights"]), back);

    // Rounded to 3 decimals: units sum to exactly 1000 in every format that is data.
    let rounded = ["--round", "3"];
    let check_units = |m: &BTreeMap<String, f64>| {
        let units: i64 = m.values().map(|w| (w * 1000.0).round() as i64).sum();
        assert_eq!(units, 1000, "{m:?}");
        for w in m.values() {
            assert!(((w * 1000.0).round() - w * 1000.0).abs() < 1e-9, "{w}");
        }
    };
    let j: serde_json::Value = serde_json::from_str(&run("json", &rounded)).unwrap();
    check_units(&map_of(&j["domains"]));
    // 453.72 / 326.28 / 219.99 / 0.01 → floors 453+326+219+0 = 998; the two
    // largest remainders (books .99, web .72) get the two units left.
    assert_eq!(
        map_of(&j["domains"]),
        [
            ("web", 0.454),
            ("code", 0.326),
            ("books", 0.22),
            ("math", 0.0)
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
    );
    let y: serde_json::Value = serde_yaml_ng::from_str(&run("yaml", &rounded)).unwrap();
    check_units(&map_of(&y["domains"]));
    let n: serde_json::Value = serde_yaml_ng::from_str(&run("nanotron", &rounded)).unwrap();
    let ds = &n["data_stages"][0]["data"]["dataset"];
    let ws: Vec<f64> = ds["dataset_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert_eq!(
        ws.iter().map(|w| (w * 1000.0).round() as i64).sum::<i64>(),
        1000
    );
    assert_eq!(
        ds["dataset_folder"].as_array().unwrap().len(),
        3,
        "math (0) is left out"
    );
    let o: serde_json::Value = serde_yaml_ng::from_str(&run("olmo-core", &rounded)).unwrap();
    let ratios: f64 = o["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target_ratio"].as_f64().unwrap())
        .sum();
    assert!((ratios - 1.0).abs() < 1e-12);
    let g: serde_json::Value = serde_yaml_ng::from_str(&run("gpt-neox", &rounded)).unwrap();
    assert_eq!(
        g["train-data-paths"].as_array().unwrap().len(),
        g["train-data-weights"].as_array().unwrap().len()
    );
    let f: serde_json::Value = serde_yaml_ng::from_str(&run("llm-foundry", &rounded)).unwrap();
    let props: f64 = f["train_loader"]["dataset"]["streams"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["proportion"].as_f64().unwrap())
        .sum();
    assert!((props - 1.0).abs() < 1e-12);
}

#[test]
fn trajectory_schedule_parses_back_per_phase() {
    let dir = tempfile::tempdir().unwrap();
    let traj = trajectory(dir.path());
    let o = mixopt()
        .args([
            "export",
            "--format",
            "yaml",
            "--phases",
            "4",
            "--total-steps",
            "10000",
        ])
        .arg("--trajectory")
        .arg(&traj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let y: serde_json::Value = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    let phases = y["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 4);
    let starts: Vec<u64> = phases
        .iter()
        .map(|p| p["start_step"].as_u64().unwrap())
        .collect();
    // 8 rows at steps 0..700 (span 701) cut in 4: boundaries at 175.25, 350.5,
    // 525.75 → fractions of 701 × 10000 steps.
    assert_eq!(starts, [0, 2500, 5000, 7500]);
    // Phase 1 = mean of rows 0 and 1: web (0.60 + 0.55) / 2.
    assert!((phases[0]["domains"]["web"].as_f64().unwrap() - 0.575).abs() < 1e-12);
    for p in phases {
        let s: f64 = map_of(&p["domains"]).values().sum();
        assert!((s - 1.0).abs() < 1e-12);
    }
}

/// Run and expect failure with a one-line message (no panic); returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    stderr
}

#[test]
fn bad_input_fails_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, paths) = fixture(dir.path());
    let export = |extra: &[&str]| {
        let mut c = mixopt();
        c.arg("export").args(extra);
        c
    };
    let w = weights.to_str().unwrap();
    let p = paths.to_str().unwrap();

    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        "/nonexistent/w.json",
    ]));
    assert!(e.contains("/nonexistent/w.json"), "{e}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"domains\": {\"a\": 0.5,\n \"b\": }}").unwrap();
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        bad.to_str().unwrap(),
    ]));
    assert!(e.contains("bad.json:2"), "{e}");
    let e = fails(&mut export(&["--format", "megatorn", "--weights", w]));
    assert!(e.contains("megatorn") && e.contains("nanotron"), "{e}");
    for round in ["0", "13"] {
        let e = fails(&mut export(&[
            "--format",
            "json",
            "--weights",
            w,
            "--round",
            round,
        ]));
        assert!(e.contains("--round"), "{e}");
    }
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        w,
        "--round",
        "x",
    ]));
    assert!(e.contains("--round"), "{e}");
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        w,
        "--min-weight",
        "1.5",
    ]));
    assert!(e.contains("--min-weight"), "{e}");
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        w,
        "--min-weight",
        "0.9",
    ]));
    assert!(e.contains("zeroes every domain"), "{e}");

    // Trajectory edge cases: steps spanning all of u64, too few total steps.
    let huge = dir.path().join("huge.csv");
    std::fs::write(
        &huge,
        "step,w_a,w_b\n0,0.5,0.5\n18446744073709551615,0.1,0.9\n",
    )
    .unwrap();
    let out = mixopt()
        .args([
            "export",
            "--format",
            "json",
            "--phases",
            "2",
            "--trajectory",
        ])
        .arg(&huge)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "step,w_a,w_b\n0,0.5,0.5\n10,0.4,0.6\n20,0.1,0.9\n").unwrap();
    let e = fails(&mut export(&[
        "--format",
        "nanotron",
        "--phases",
        "3",
        "--total-steps",
        "1",
        "--trajectory",
        short.to_str().unwrap(),
    ]));
    assert!(e.contains("--total-steps"), "{e}");

    // A key after a table header belongs to the table: the typo goes first.
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        format!(
            "wbe = \"/typo\"\n{}",
            std::fs::read_to_string(&paths).unwrap()
        ),
    )
    .unwrap();
    let e = fails(&mut export(&[
        "--format",
        "megatron",
        "--weights",
        w,
        "--paths",
        unknown.to_str().unwrap(),
    ]));
    assert!(e.contains("unknown.toml:1") && e.contains("wbe"), "{e}");
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "web = \"/w\"\ncode = \"/c\"\nbooks = \"/b\"\n").unwrap();
    let e = fails(&mut export(&[
        "--format",
        "megatron",
        "--weights",
        w,
        "--paths",
        missing.to_str().unwrap(),
    ]));
    assert!(e.contains("missing.toml") && e.contains("math"), "{e}");
    let e = fails(&mut export(&[
        "--format",
        "megatron",
        "--weights",
        w,
        "--paths",
        "/nonexistent/p.toml",
    ]));
    assert!(e.contains("/nonexistent/p.toml"), "{e}");
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--weights",
        w,
        "--paths",
        p,
        "--phases",
        "2",
    ]));
    assert!(e.contains("--trajectory"), "{e}");
    let traj = dir.path().join("t.csv");
    std::fs::write(&traj, "step,w_a,w_b\n0,0.5,0.5\n10,0.5,oops\n").unwrap();
    let e = fails(&mut export(&[
        "--format",
        "json",
        "--trajectory",
        traj.to_str().unwrap(),
    ]));
    assert!(e.contains("t.csv:3") && e.contains("w_b"), "{e}");
}
