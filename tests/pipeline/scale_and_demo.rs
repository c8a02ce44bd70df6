//! The scale-aware default path with validation, and the demo against the
//! README's claims.

use super::*;

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
