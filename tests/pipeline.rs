//! The offline pipeline driven through the binary: prepare → train → sweep →
//! fit → predict → optimize, and a sweep killed with SIGKILL then resumed.

use assert_cmd::Command;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// A proxy small and short enough for tests (one run well under a second).
const TEST_PROXY: &str = r#"
name = "test"
n_layers = 1
d_model = 32
n_heads = 2
d_ff = 64
seq_len = 32
batch_size = 8
n_steps = 40
lr_peak = 1e-2
warmup_steps = 4
eval_windows = 8
"#;

/// Two domains with different structure: `alpha` cycles letters, `digits` counts.
fn write_corpus(dir: &Path) {
    for (name, make) in [
        (
            "alpha",
            Box::new(|i: usize| -> String {
                (0..300)
                    .map(|j| char::from(b'a' + ((i + j) % 7) as u8))
                    .collect()
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "digits",
            Box::new(|i: usize| -> String {
                (0..120).map(|j| format!("{} ", (i + j) % 10)).collect()
            }),
        ),
        (
            "words",
            Box::new(|i: usize| -> String { ["the cat", "a dog", "one bird"][i % 3].repeat(30) }),
        ),
    ] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let lines: Vec<String> = (0..60)
            .map(|i| serde_json::json!({ "text": make(i) }).to_string())
            .collect();
        std::fs::write(sub.join("docs.jsonl"), lines.join("\n") + "\n").unwrap();
    }
}

fn prepare(tmp: &Path) -> PathBuf {
    write_corpus(&tmp.join("corpus"));
    let cache = tmp.join("cache");
    let mut cmd = mixopt();
    cmd.arg("prepare").arg("--cache").arg(&cache);
    for d in ["alpha", "digits", "words"] {
        cmd.arg("--domain").arg(format!(
            "{d}={}",
            tmp.join("corpus").join(d).join("docs.jsonl").display()
        ));
    }
    cmd.assert().success();
    std::fs::write(tmp.join("test.toml"), TEST_PROXY).unwrap();
    cache
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `val_loss` column of `mixopt train`'s table, by domain.
fn val_loss(stdout: &str, domain: &str) -> f64 {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(domain))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loss for {domain} in:\n{stdout}"))
}

#[test]
fn train_learns_and_specializes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = prepare(tmp.path());
    let proxy = tmp.path().join("test.toml");
    let run = |mix: &str| {
        stdout_of(
            mixopt()
                .args(["train", "--seed", "1", "--mixture", mix, "--proxy"])
                .arg(&proxy)
                .arg("--cache")
                .arg(&cache)
                .arg("--curve")
                .arg(tmp.path().join("curve.csv")),
        )
    };
    let on_alpha = run("alpha=1");
    let on_digits = run("digits=1");
    // The training loss falls: first logged value vs last.
    let line = on_alpha
        .lines()
        .find(|l| l.starts_with("train loss"))
        .unwrap();
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(nums[1] < nums[0] * 0.8, "{line}");
    // Specialization: each proxy is better on the domain it trained on.
    assert!(val_loss(&on_alpha, "alpha") < val_loss(&on_digits, "alpha"));
    assert!(val_loss(&on_digits, "digits") < val_loss(&on_alpha, "digits"));
    // Same seed, same numbers.
    assert_eq!(without_wall(&run("alpha=1")), without_wall(&on_alpha));
    let curve = std::fs::read_to_string(tmp.path().join("curve.csv")).unwrap();
    assert!(curve.starts_with("step,loss\n") && curve.lines().count() > 3);
}

/// Data-parallel shards (`--threads N` splits each batch's rows) train the same
/// model as one thread: the gradients differ only by float summation order.
#[test]
fn threads_shard_the_batch_without_changing_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = prepare(tmp.path());
    let proxy = tmp.path().join("test.toml");
    let run = |threads: &str| {
        stdout_of(
            mixopt()
                .args([
                    "train",
                    "--seed",
                    "3",
                    "--steps",
                    "12",
                    "--threads",
                    threads,
                ])
                .arg("--proxy")
                .arg(&proxy)
                .arg("--cache")
                .arg(&cache),
        )
    };
    let one = run("1");
    // 8 rows in 3 shards: 2, 3 and 3 rows, so the shard losses are weighted.
    for threads in ["2", "3"] {
        let many = run(threads);
        for d in ["alpha", "digits", "words"] {
            let (a, b) = (val_loss(&one, d), val_loss(&many, d));
            assert!(
                (a - b).abs() < 2e-3,
                "{d}: 1 thread {a}, {threads} threads {b}"
            );
        }
        assert_eq!(
            without_wall(&run(threads)),
            without_wall(&many),
            "{threads} threads twice"
        );
    }
}

/// Drops the wall-clock line so two runs' outputs compare equal.
fn without_wall(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("wall"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn train_rejects_bad_mixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = prepare(tmp.path());
    for (mix, expect) in [
        ("alpha=0.5,digits=0.2", "sum"),
        ("alpha=1.5,digits=-0.5", "negative"),
        ("nope=1", "unknown domain"),
        ("alpha=NaN,digits=1", "alpha"),
    ] {
        let out = mixopt()
            .args(["train", "--proxy", "tiny", "--mixture", mix, "--cache"])
            .arg(&cache)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mix}");
        assert!(
            err.contains(expect) && !err.contains("panicked"),
            "{mix}: {err}"
        );
    }
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, format!("{TEST_PROXY}\nlearning_rate = 3\n")).unwrap();
    let out = mixopt()
        .args(["train", "--mixture", "alpha=1", "--cache"])
        .arg(&cache)
        .arg("--proxy")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("learning_rate") && err.contains("bad.toml"),
        "{err}"
    );
}

fn data_rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn sweep_args(tmp: &Path, cache: &Path, out: &Path, runs: usize, jobs: usize) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["sweep", "--seed", "5", "--runs"]
        .map(OsString::from)
        .to_vec();
    a.push(runs.to_string().into());
    a.push("--jobs".into());
    a.push(jobs.to_string().into());
    a.push("--proxy".into());
    a.push(tmp.join("test.toml").into());
    a.push("--cache".into());
    a.push(cache.into());
    a.push("--out".into());
    a.push(out.into());
    // Row counts below are the sampled runs; the noise floor has its own test.
    a.push("--noise-seeds".into());
    a.push("0".into());
    a
}

fn sweep_cmd(tmp: &Path, cache: &Path, out: &Path, runs: usize, jobs: usize) -> Command {
    let mut c = mixopt();
    c.args(sweep_args(tmp, cache, out, runs, jobs));
    c
}

/// Losses of each run id (columns after the first seven), wall time dropped.
fn by_id(rows: &[String]) -> std::collections::BTreeMap<String, String> {
    rows.iter()
        .map(|r| {
            let cells: Vec<&str> = r.split(',').collect();
            let mut kept = cells.clone();
            kept.remove(4); // wall_s
            (cells[0].to_string(), kept.join(","))
        })
        .collect()
}

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

/// The default path on a proxy with checkpoints: the scale-aware law predicts
/// at a larger budget, `optimize --validate-proxy` trains its candidates and
/// keeps the best, and `validate` compares mixtures paired by seed and records
/// the evidence.
#[test]
fn scale_aware_fit_then_optimize_and_validate_on_a_larger_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    std::fs::write(
        t.join("test.toml"),
        format!("{TEST_PROXY}checkpoints = 4\nschedule = \"constant\"\n"),
    )
    .unwrap();
    let runs = t.join("runs.csv");
    mixopt()
        .args(sweep_args(t, &cache, &runs, 6, 2))
        .assert()
        .success();
    assert!(t.join("runs.csv.checkpoints.csv").exists());
    let law = t.join("law.json");
    let fit = stdout_of(
        mixopt()
            .args(["fit", "--folds", "2", "--at-tokens", "40960", "--runs"])
            .arg(&runs)
            .arg("--out")
            .arg(&law),
    );
    assert!(
        fit.contains("law scaling") && fit.contains("tokens ×2"),
        "{fit}"
    );
    let w = t.join("w.json");
    let so = stdout_of(
        mixopt()
            .args(["optimize", "--validate-seeds", "1", "--validate-proxy"])
            .arg(t.join("test.toml"))
            .arg("--cache")
            .arg(&cache)
            .arg("--law")
            .arg(&law)
            .arg("--out")
            .arg(&w),
    );
    assert!(so.contains("validate: 5 candidate(s) × 1 seed(s)"), "{so}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&w).unwrap()).unwrap();
    let checked = &file["provenance"]["validated"];
    let kept = checked["kept"].as_str().unwrap();
    let best = checked["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .min_by(|a, b| {
            a["mean"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["mean"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(best["name"], kept, "{checked}");
    assert!(
        so.contains("kept optimized") || so.contains("no optimized candidate beat"),
        "{so}"
    );

    let out = t.join("validate.json");
    let so = stdout_of(
        mixopt()
            .args(["validate", "--seeds", "2", "--split", "test", "--proxy"])
            .arg(t.join("test.toml"))
            .arg("--cache")
            .arg(&cache)
            .arg("--mixtures")
            .arg(format!("{},natural,uniform", w.display()))
            .arg("--out")
            .arg(&out),
    );
    assert!(
        so.contains("vs natural (paired)") && so.contains("natural on mean"),
        "{so}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 6);
    assert_eq!(v["split"], "test");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&w).unwrap()).unwrap();
    assert_eq!(file["validation"].as_array().unwrap().len(), 1, "{file}");
    // Bad input is named.
    let o = mixopt()
        .args(["validate", "--seeds", "0", "--proxy"])
        .arg(t.join("test.toml"))
        .arg("--cache")
        .arg(&cache)
        .args(["--mixtures", "natural"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--seeds"));
}

/// What the README says the demo prints: the optimized, uniform and natural
/// mixtures with the target the law predicts for each and the target fresh
/// proxies (seed + 1) reach on each, and whether prediction and outcome agree
/// within the law's CV error. Checked against law.json, weights.json and a
/// proxy trained here by `mixopt train`.
fn check_demo_claims(stdout: &str, out: &Path, proxy: &Path) {
    let table: Vec<(String, f64, f64)> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("mixture "))
        .skip(1)
        .take(3)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = table.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["optimized", "uniform", "natural"], "{stdout}");
    // Predictions: the law's, as optimize recorded them in weights.json.
    let w: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("weights.json")).unwrap()).unwrap();
    let recorded = [
        w["predicted"].as_f64().unwrap(),
        w["provenance"]["predicted_uniform"].as_f64().unwrap(),
        w["provenance"]["predicted_natural"].as_f64().unwrap(),
    ];
    for ((name, pred, _), want) in table.iter().zip(recorded) {
        assert!(
            (pred - want).abs() <= 5e-5 + 1e-9,
            "{name}: printed {pred}, recorded {want}"
        );
    }
    // Outcome: uniform's "actual" is what `mixopt train` (uniform by default)
    // reaches with the check's seed, averaged over the learnable domains.
    let trained = stdout_of(
        mixopt()
            .args(["train", "--seed", "1", "--proxy"])
            .arg(proxy)
            .arg("--cache")
            .arg(out.join("cache")),
    );
    let learnable: Vec<f64> = trained
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let is_domain =
                f.len() == 3 && !["domain", "mean", "noise", "checkpoint"].contains(&f[0]);
            is_domain.then(|| f[2].parse::<f64>().ok()).flatten()
        })
        .collect();
    assert_eq!(learnable.len(), 5, "{trained}");
    let uniform_actual = learnable.iter().sum::<f64>() / 5.0;
    assert!(
        (table[1].2 - uniform_actual).abs() <= 1e-4,
        "uniform: demo {}, train {uniform_actual}",
        table[1].2
    );
    // The verdict: the largest |predicted − actual| against the CV rmse.
    let law: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("law.json")).unwrap()).unwrap();
    let rmse = law["cv"]["mse"].as_f64().unwrap().sqrt();
    let worst = table
        .iter()
        .map(|(_, p, a)| (p - a).abs())
        .fold(0.0, f64::max);
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("largest |predicted - actual|"))
        .unwrap_or_else(|| panic!("no verdict: {stdout}"));
    // Printed to 4 decimals: only a near tie could go either way.
    if (worst - rmse).abs() > 2e-4 {
        let want = if worst <= rmse { "within" } else { "OUTSIDE" };
        assert!(
            verdict.contains(want),
            "worst {worst}, rmse {rmse}: {verdict}"
        );
    }
}

#[test]
fn demo_runs_end_to_end_and_reruns_with_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("test.toml"), TEST_PROXY).unwrap();
    let out = t.join("demo");
    let demo = |seed: &str| {
        stdout_of(
            mixopt()
                .args([
                    "demo", "--runs", "6", "--scale", "0.1", "--seed", seed, "--proxy",
                ])
                .arg(t.join("test.toml"))
                .arg("--out")
                .arg(&out),
        )
    };
    let first = demo("0");
    check_demo_claims(&first, &out, &t.join("test.toml"));
    for f in [
        "runs.csv",
        "law.json",
        "weights.json",
        "cache/manifest.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // 6 sampled runs and the noise floor: the prior and a probe at 2 seeds each.
    let rows = data_rows(&out.join("runs.csv"));
    assert_eq!(rows.len(), 6 + 4);
    assert_eq!(rows.iter().filter(|r| r.starts_with("noise-")).count(), 4);
    assert!(first.contains("noise: target sd over 2 seeds"), "{first}");
    assert!(first.contains("the law's CV error (rmse"), "{first}");
    // Another seed means another corpus and sweep: the demo starts its runs afresh.
    let second = demo("1");
    assert!(second.contains("0 already finished"), "{second}");
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
