//! `mixopt fit` and `mixopt predict` driven as a user would: on RegMix's
//! published 1M-proxy runs (tests/data/regmix), on a sweep runs table, and
//! on crafted bad inputs that must fail with a message naming file/line/field.

use assert_cmd::Command;
use mixopt::law::spearman;
use mixopt::store::{RunRecord, RunsWriter};
use mixopt::Mixture;
use std::path::{Path, PathBuf};

const REGMIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/regmix");
const PILE_CC: &str = "metric/the_pile_pile_cc_val_loss";

fn regmix(name: &str) -> PathBuf {
    Path::new(REGMIX).join(name)
}

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// Run and expect failure; returns stderr, which must not be a panic.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    stderr
}

/// Column `name` of a CSV keyed by its first column.
fn column(path: &Path, name: &str) -> Vec<(String, f64)> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let idx = rdr
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == name)
        .unwrap();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[idx].parse().unwrap())
        })
        .collect()
}

#[test]
fn regmix_linear_fit_ranks_unseen_mixtures() {
    let dir = tempfile::tempdir().unwrap();
    let law = dir.path().join("law.json");
    let out = mixopt()
        .args([
            "fit", "--target", PILE_CC, "--law", "linear", "--id", "index",
        ])
        .arg("--mixtures")
        .arg(regmix("train_mixture_1m.csv"))
        .arg("--losses")
        .arg(regmix("train_pile_loss_1m.csv"))
        .arg("--test-mixtures")
        .arg(regmix("test_mixture_1m.csv"))
        .arg("--test-losses")
        .arg(regmix("test_pile_loss_1m.csv"))
        .arg("--out")
        .arg(&law)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("5-fold CV") && stdout.contains("train→test"),
        "{stdout}"
    );

    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
    assert_eq!(file["format"], 1);
    assert_eq!(file["kind"], "linear");
    assert_eq!(file["n_runs"], 512);
    assert_eq!(file["domains"].as_array().unwrap().len(), 17);
    assert_eq!(file["source"][0]["sha256"].as_str().unwrap().len(), 64);
    // RegMix reports ρ ≈ 90.2 for a linear fit on this split (RegMix paper, Table 2 setting).
    let test_rho = file["test"]["score"]["spearman"].as_f64().unwrap();
    assert!(test_rho > 0.85, "stored train→test ρ {test_rho}");

    let preds = dir.path().join("pred.csv");
    mixopt()
        .args(["predict", "--id", "index"])
        .arg("--law")
        .arg(&law)
        .arg("--mixtures")
        .arg(regmix("test_mixture_1m.csv"))
        .arg("--out")
        .arg(&preds)
        .assert()
        .success();
    let pred = column(&preds, "prediction");
    let truth = column(&regmix("test_pile_loss_1m.csv"), PILE_CC);
    assert_eq!(pred.len(), 256);
    let ids: Vec<&String> = pred.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, truth.iter().map(|(id, _)| id).collect::<Vec<_>>());
    let p: Vec<f64> = pred.iter().map(|(_, v)| *v).collect();
    let t: Vec<f64> = truth.iter().map(|(_, v)| *v).collect();
    let rho = spearman(&p, &t);
    assert!(
        rho > 0.85,
        "ρ(predicted, true) on the 256 test runs = {rho}"
    );
    assert!((rho - test_rho).abs() < 1e-9);
}

/// A small valid pair of CSVs: 12 runs over a, b, c; y = 2 − a + b.
fn small_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let mut m = String::from("index,a,b,c\n");
    let mut l = String::from("index,y,z\n");
    for i in 0..12 {
        let a = (i as f64 + 0.5) / 12.0;
        let b = (1.0 - a) * if i % 2 == 0 { 0.25 } else { 0.75 };
        let c = 1.0 - a - b;
        m.push_str(&format!("{i},{a},{b},{c}\n"));
        l.push_str(&format!("{i},{},{}\n", 2.0 - a + b, 3.0 + c));
    }
    let (mp, lp) = (dir.join("m.csv"), dir.join("l.csv"));
    std::fs::write(&mp, m).unwrap();
    std::fs::write(&lp, l).unwrap();
    (mp, lp)
}

/// A linear-law fit of a mixtures/metrics pair (the test data are linear).
fn fit_pair(m: &Path, l: &Path, out: &Path) -> Command {
    let mut c = mixopt();
    c.arg("fit")
        .args(["--law", "linear"])
        .arg("--mixtures")
        .arg(m)
        .arg("--losses")
        .arg(l)
        .arg("--out")
        .arg(out);
    c
}

/// Replace line `n` (1-based) of a file.
fn set_line(path: &Path, n: usize, text: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = s.lines().map(String::from).collect();
    lines[n - 1] = text.to_string();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn small_pair_fits_with_weighted_target() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    let law = dir.path().join("law.json");
    fit_pair(&m, &l, &law)
        .args([
            "--target",
            "0.5*y + 0.5*z",
            "--folds",
            "3",
            "--alpha",
            "1e-6",
        ])
        .assert()
        .success();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
    assert_eq!(file["target"], "0.5*y + 0.5*z");
    assert_eq!(file["cv"]["k"], 3);
    assert!(file["cv"]["mse"].as_f64().unwrap() < 1e-8);
    assert_eq!(file["hyper"]["alpha"], 1e-6);
}

#[test]
fn unknown_target_lists_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    let e = fails(fit_pair(&m, &l, &dir.path().join("law.json")).args(["--target", "nope"]));
    assert!(e.contains("\"nope\"") && e.contains("y, z"), "{e}");
}

#[test]
fn id_missing_from_losses_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    set_line(&l, 5, "99,1.0,1.0");
    let e = fails(&mut fit_pair(&m, &l, &dir.path().join("law.json")));
    assert!(
        e.contains("l.csv") && e.contains("\"3\"") && e.contains("m.csv:5"),
        "{e}"
    );
}

#[test]
fn missing_id_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    let e = fails(fit_pair(&m, &l, &dir.path().join("law.json")).args(["--id", "run"]));
    assert!(e.contains("m.csv:1") && e.contains("\"run\""), "{e}");
}

#[test]
fn weights_not_summing_to_one_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    set_line(&m, 4, "2,0.5,0.3,0.1");
    let e = fails(&mut fit_pair(&m, &l, &dir.path().join("law.json")));
    assert!(e.contains("m.csv:4") && e.contains("sum to 0.9"), "{e}");
}

#[test]
fn nan_loss_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    set_line(&l, 3, "1,NaN,1.0");
    let e = fails(&mut fit_pair(&m, &l, &dir.path().join("law.json")));
    assert!(e.contains("l.csv:3") && e.contains("column 2 (y)"), "{e}");
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    set_line(&m, 2, "0,abc,0.5,0.5");
    let e = fails(&mut fit_pair(&m, &l, &dir.path().join("law.json")));
    assert!(
        e.contains("m.csv:2") && e.contains("column 2 (a)") && e.contains("abc"),
        "{e}"
    );
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = small_pair(dir.path());
    let missing = dir.path().join("nowhere.csv");
    let e = fails(&mut fit_pair(&m, &missing, &dir.path().join("law.json")));
    assert!(e.contains("nowhere.csv"), "{e}");
}

#[test]
fn unknown_law_lists_known_laws() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    let e = fails(
        mixopt()
            .args(["fit", "--law", "gbdtx", "--mixtures"])
            .arg(&m)
            .arg("--losses")
            .arg(&l),
    );
    assert!(e.contains("gbdtx") && e.contains("linear"), "{e}");
}

#[test]
fn predict_checks_columns_against_the_law() {
    let dir = tempfile::tempdir().unwrap();
    let (m, l) = small_pair(dir.path());
    let law = dir.path().join("law.json");
    fit_pair(&m, &l, &law)
        .args(["--target", "y"])
        .assert()
        .success();
    let extra = dir.path().join("extra.csv");
    std::fs::write(&extra, "index,a,b,c,d\n0,0.25,0.25,0.25,0.25\n").unwrap();
    let e = fails(
        mixopt()
            .arg("predict")
            .arg("--law")
            .arg(&law)
            .arg("--mixtures")
            .arg(&extra),
    );
    assert!(e.contains("extra.csv") && e.contains("\"d\""), "{e}");
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "index,a,b\n0,0.5,0.5\n").unwrap();
    let e = fails(
        mixopt()
            .arg("predict")
            .arg("--law")
            .arg(&law)
            .arg("--mixtures")
            .arg(&short),
    );
    assert!(e.contains("short.csv") && e.contains("\"c\""), "{e}");
    // Columns in another order are matched by name; output goes to stdout.
    let reordered = dir.path().join("reordered.csv");
    std::fs::write(&reordered, "c,b,index,a\n0,0.5,x,0.5\n").unwrap();
    let out = mixopt()
        .arg("predict")
        .arg("--law")
        .arg(&law)
        .arg("--mixtures")
        .arg(&reordered)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,prediction"));
    let (id, v) = lines.next().unwrap().split_once(',').unwrap();
    assert_eq!(id, "x");
    // y = 2 − a + b at a = 0.5, b = 0.5.
    assert!((v.parse::<f64>().unwrap() - 2.0).abs() < 1e-3, "{v}");
}

#[test]
fn runs_table_fit_uses_sidecar_prior_and_predicts_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.csv");
    let domains: Vec<String> = vec!["web".into(), "code".into()];
    let (mut w, _) =
        RunsWriter::open(&runs, &mixopt::store::RunsLayout::training(&domains)).unwrap();
    for i in 0..10 {
        let x = (i as f64 + 0.5) / 10.0;
        w.append(&RunRecord {
            run_id: format!("r{i}"),
            seed: i,
            proxy: "tiny".into(),
            n_tokens: 1000,
            wall_s: 1.0,
            config_hash: "h".into(),
            version: "0.1.0".into(),
            mixture: Mixture::new(domains.clone(), vec![x, 1.0 - x]).unwrap(),
            losses: vec![3.0 - x, 2.0 + x],
        })
        .unwrap();
    }
    drop(w);
    std::fs::write(
        dir.path().join("runs.csv.meta.json"),
        r#"{"prior": {"web": 0.8, "code": 0.2}}"#,
    )
    .unwrap();
    let law = dir.path().join("law.json");
    mixopt()
        .args(["fit", "--target", "loss_web"])
        .arg("--runs")
        .arg(&runs)
        .arg("--out")
        .arg(&law)
        .assert()
        .success();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
    assert_eq!(file["prior"]["web"], 0.8);
    assert_eq!(file["target"], "loss_web");
    let out = mixopt()
        .arg("predict")
        .arg("--law")
        .arg(&law)
        .arg("--mixtures")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 11);
    assert!(text.lines().nth(1).unwrap().starts_with("r0,"));

    let e = fails(
        mixopt()
            .args(["fit", "--target", "math"])
            .arg("--runs")
            .arg(&runs)
            .arg("--out")
            .arg(&law),
    );
    assert!(e.contains("\"math\"") && e.contains("web, code"), "{e}");
}
