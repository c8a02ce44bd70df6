//! Real users' data and configs through the binary: Olmix's pandas-written
//! swarm files (CSV and Parquet) with an objective over many metrics,
//! hierarchical `source:topic` domains swept per level and rolled up,
//! mixture reuse after a new source appears, the `search` proposer and the
//! published mixtures by name.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

fn out(cmd: &mut Command) -> (String, String) {
    let o = cmd.output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "stdout:\n{so}\nstderr:\n{se}");
    (so, se)
}

fn olmix(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/olmix")
        .join(file)
}

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mixtures/examples")
        .join(file)
}

#[test]
fn olmix_swarm_fits_with_an_objective_and_optimizes_by_source() {
    let tmp = tempfile::tempdir().unwrap();
    let law = tmp.path().join("law.json");
    for ext in ["csv", "parquet"] {
        let (so, se) = out(mixopt()
            .arg("fit")
            .arg("--mixtures")
            .arg(olmix(&format!("ratios.{ext}")))
            .arg("--losses")
            .arg(olmix(&format!("metrics.{ext}")))
            .args(["--id", "run", "--law", "loglinear", "--target"])
            .arg(format!("@{}", example("objective.toml").display()))
            .arg("--out")
            .arg(&law));
        assert!(se.contains("\"name\"") && se.contains("\"index\""), "{se}");
        assert!(so.contains("32 runs × 5 domains"), "{so}");
        // The objective is a known smooth law of the weights: the fit finds it.
        let cv = so.lines().find(|l| l.contains("-fold CV")).unwrap();
        let rho: f64 = cv
            .split("spearman")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(rho > 80.0, "{so}");
    }
    let weights = tmp.path().join("w.json");
    let (so, _) = out(mixopt()
        .args(["optimize", "--proposer", "exact", "--law"])
        .arg(&law)
        .arg("--out")
        .arg(&weights));
    assert!(
        so.contains("source") && so.contains("stack-edu") && so.contains("dclm "),
        "{so}"
    );
    // search: the best observed run, its id in the provenance.
    let (so, _) = out(mixopt()
        .args([
            "optimize",
            "--proposer",
            "search",
            "--max",
            "stack-edu:Rust=0.3",
            "--law",
        ])
        .arg(&law)
        .arg("--out")
        .arg(&weights));
    let w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&weights).unwrap()).unwrap();
    let run = w["provenance"]["search"]["run"].as_str().unwrap();
    assert!(run.starts_with("olmix-swarm-"), "{so}");
    assert!(w["domains"]["stack-edu:Rust"].as_f64().unwrap() <= 0.3);
    // predict reads the Parquet ratios alone (bookkeeping columns skipped).
    let (so, se) = out(mixopt()
        .arg("predict")
        .arg("--law")
        .arg(&law)
        .arg("--mixtures")
        .arg(olmix("ratios.parquet"))
        .args(["--id", "run"]));
    assert_eq!(so.lines().count(), 33, "{so}");
    assert!(se.contains("bookkeeping"), "{se}");
    // A bad objective names the file and the pattern.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[family.x]\nmetrics = [\"hellaswag*\"]\n").unwrap();
    let o = mixopt()
        .arg("fit")
        .arg("--mixtures")
        .arg(olmix("ratios.csv"))
        .arg("--losses")
        .arg(olmix("metrics.csv"))
        .args(["--id", "run", "--target"])
        .arg(format!("@{}", bad.display()))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.toml") && e.contains("hellaswag*"),
        "{e}"
    );
    // One error line (after the notes on skipped columns).
    assert_eq!(
        e.lines().filter(|l| !l.starts_with("note: ")).count(),
        1,
        "{e}"
    );
}

#[test]
fn published_mixtures_by_name_and_alias_tables() {
    let (so, _) = out(mixopt().arg("mixtures"));
    for name in [
        "pile-natural",
        "pile-doremi",
        "pile-regmix",
        "slimpajama-natural",
        "redpajama-natural",
    ] {
        assert!(so.contains(name), "{so}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let aliases = tmp.path().join("a.toml");
    std::fs::write(
        &aliases,
        "common_crawl = \"web\"\nc4 = \"web\"\ngithub = \"code\"\nstackexchange = \"code\"\nbooks = \"\"\narxiv = \"\"\nwikipedia = \"\"\n",
    )
    .unwrap();
    let (so, _) = out(mixopt()
        .arg("mixtures")
        .arg(format!("slimpajama-natural@{}", aliases.display()))
        .args(["--domains", "web,code"]));
    assert!(
        so.contains("Soboleva") && so.contains("web") && so.contains("0.9027"),
        "{so}"
    );
    let o = mixopt()
        .args(["mixtures", "pile-doremi", "--domains", "web,code"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("no domain for") && e.contains("pile_cc"),
        "{e}"
    );
}

/// A tiny proxy (one run well under a second).
const TEST_PROXY: &str = "name = \"test\"\nn_layers = 1\nd_model = 32\nn_heads = 2\nd_ff = 64\nseq_len = 32\nbatch_size = 8\nn_steps = 30\nlr_peak = 1e-2\nwarmup_steps = 3\neval_windows = 8\n";

fn cache(tmp: &Path, name: &str, domains: &[&str]) -> PathBuf {
    let cache = tmp.join(name);
    let mut cmd = mixopt();
    cmd.arg("prepare").arg("--cache").arg(&cache);
    for (k, d) in domains.iter().enumerate() {
        let file = tmp.join(format!("{k}.jsonl"));
        let lines: Vec<String> = (0..40)
            .map(|i| {
                let text: String = (0..200)
                    .map(|j| char::from(b'a' + ((i * (k + 1) + j * (k + 2)) % (5 + 4 * k)) as u8))
                    .collect();
                serde_json::json!({ "text": text }).to_string()
            })
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        cmd.arg("--domain").arg(format!("{d}={}", file.display()));
    }
    out(&mut cmd);
    cache
}

#[test]
fn hierarchical_sweep_then_reuse_when_a_source_is_added() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("test.toml"), TEST_PROXY).unwrap();
    let proxy = t.join("test.toml");
    let old = cache(t, "old", &["web:news", "web:forums", "code:py"]);
    let runs = t.join("runs.csv");
    out(mixopt()
        .arg("sweep")
        .arg("--cache")
        .arg(&old)
        .arg("--proxy")
        .arg(&proxy)
        .args(["--runs", "6", "--jobs", "2", "--levels"])
        .arg(example("levels.toml"))
        .arg("--out")
        .arg(&runs));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("runs.csv.meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["levels"]["level"][0]["concentration"][1], 20.0);
    let law = t.join("law.json");
    out(mixopt()
        .arg("fit")
        .arg("--runs")
        .arg(&runs)
        .args(["--law", "loglinear", "--folds", "3", "--out"])
        .arg(&law));
    let prev = t.join("prev.json");
    let (so, _) = out(mixopt()
        .args(["optimize", "--proposer", "exact", "--law"])
        .arg(&law)
        .arg("--out")
        .arg(&prev));
    assert!(so.contains("source") && so.contains("web "), "{so}");
    let report = t.join("report.html");
    out(mixopt()
        .arg("report")
        .arg("--runs")
        .arg(&runs)
        .arg("--law")
        .arg(&law)
        .arg("--weights")
        .arg(&prev)
        .arg("--out")
        .arg(&report));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("rolled up to sources") && html.contains("Which domain helps which target")
    );

    // A new source appears: freeze the previous optimum, sweep only it and the new one.
    let new = cache(t, "new", &["web:news", "web:forums", "code:py", "math"]);
    let runs2 = t.join("runs2.csv");
    out(mixopt()
        .arg("sweep")
        .arg("--cache")
        .arg(&new)
        .arg("--proxy")
        .arg(&proxy)
        .args(["--runs", "4", "--jobs", "2", "--reuse"])
        .arg(&prev)
        .arg("--out")
        .arg(&runs2));
    let law2 = t.join("law2.json");
    let (_, se) = out(mixopt()
        .arg("fit")
        .arg("--runs")
        .arg(&runs2)
        .args(["--law", "linear", "--folds", "2", "--out"])
        .arg(&law2));
    assert!(se.contains("reuse: 3 frozen domains"), "{se}");
    let w2 = t.join("w2.json");
    let (so, _) = out(mixopt()
        .args(["optimize", "--max", "math=0.5", "--law"])
        .arg(&law2)
        .arg("--out")
        .arg(&w2));
    assert!(so.contains("composed leaf weights"), "{so}");
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&prev), read(&w2));
    assert_eq!(b["domains"].as_object().unwrap().len(), 4);
    // The frozen domains keep the previous ratios.
    let ratio = |v: &serde_json::Value| {
        v["domains"]["web:news"].as_f64().unwrap() / v["domains"]["code:py"].as_f64().unwrap()
    };
    assert!(
        (ratio(&a) - ratio(&b)).abs() < 1e-6 * ratio(&a).max(1.0),
        "{a} {b}"
    );
    out(mixopt()
        .arg("report")
        .arg("--runs")
        .arg(&runs2)
        .arg("--law")
        .arg(&law2)
        .arg("--weights")
        .arg(&w2)
        .arg("--out")
        .arg(&report));
}
