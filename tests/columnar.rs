//! Parquet and Arrow IPC tables through the binary: `merge --out runs.parquet`
//! (and `.arrow`), read back by `fit`, `merge` and `report`; `predict --out
//! preds.parquet` read back by `fit`. Each must give exactly what the CSV
//! gives.

use assert_cmd::Command;
use mixopt::store::{RunRecord, RunsLayout, RunsWriter};
use mixopt::Mixture;
use std::path::Path;

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A sweep-like runs table of 24 runs over three domains.
fn runs_csv(dir: &Path) -> std::path::PathBuf {
    let runs = dir.join("runs.csv");
    let domains: Vec<String> = vec!["web".into(), "code".into(), "math".into()];
    let (mut w, _) = RunsWriter::open(&runs, &RunsLayout::training(&domains)).unwrap();
    for i in 0..24u64 {
        let a = (i as f64 + 0.5) / 24.0;
        let b = (1.0 - a) * ((i % 5) as f64 + 1.0) / 6.0;
        let m = Mixture::new(domains.clone(), vec![a, b, 1.0 - a - b]).unwrap();
        w.append(&RunRecord {
            run_id: format!("run{i:05}"),
            seed: i,
            proxy: "tiny".into(),
            n_tokens: 1000,
            wall_s: 0.5 + i as f64 / 7.0,
            config_hash: "h".into(),
            version: "0.1.0".into(),
            losses: vec![3.0 - a + 0.1 * b * b, 2.0 + a / 3.0, 2.5 - 0.2 * b],
            mixture: m,
        })
        .unwrap();
    }
    drop(w);
    std::fs::write(
        dir.join("runs.csv.meta.json"),
        r#"{"prior": {"web": 0.5, "code": 0.3, "math": 0.2}}"#,
    )
    .unwrap();
    runs
}

fn fit(runs: &Path, law: &Path) -> serde_json::Value {
    ok(mixopt()
        .args([
            "fit",
            "--target",
            "loss_web",
            "--law",
            "loglinear",
            "--runs",
        ])
        .arg(runs)
        .arg("--out")
        .arg(law));
    json(law)
}

#[test]
fn runs_tables_as_parquet_and_arrow_fit_merge_and_report_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runs = runs_csv(d);
    let merged_csv = d.join("merged.csv");
    ok(mixopt()
        .arg("merge")
        .arg(&runs)
        .arg("--out")
        .arg(&merged_csv));
    let by_csv = fit(&merged_csv, &d.join("law_csv.json"));
    for name in ["runs.parquet", "runs.arrow"] {
        let columnar = d.join(name);
        ok(mixopt().arg("merge").arg(&runs).arg("--out").arg(&columnar));
        assert!(d.join(format!("{name}.meta.json")).exists(), "sidecar");
        // fit reads it back: the same law, the same CV, the sweep's prior.
        let law = d.join(format!("law_{name}.json"));
        let by_col = fit(&columnar, &law);
        for key in ["params", "cv", "prior", "n_runs", "domains"] {
            assert_eq!(by_col[key], by_csv[key], "{name}: {key}");
        }
        assert_eq!(by_col["prior"]["web"], 0.5);
        // merge reads it back: the CSV lines the sweep wrote, byte for byte.
        let back = d.join(format!("back_{name}.csv"));
        ok(mixopt().arg("merge").arg(&columnar).arg("--out").arg(&back));
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(&merged_csv).unwrap(),
            "{name}"
        );
        // report reads it back.
        let html = d.join(format!("{name}.html"));
        ok(mixopt()
            .arg("report")
            .arg("--runs")
            .arg(&columnar)
            .arg("--law")
            .arg(&law)
            .arg("--out")
            .arg(&html));
        assert!(std::fs::read_to_string(&html).unwrap().contains("loss_web"));
    }
    // A sweep appends to CSV only; the error says how to get a columnar table.
    let layout = RunsLayout::training(&["web".to_string()]);
    for name in ["sweep.parquet", "sweep.arrow"] {
        let e = RunsWriter::open(&d.join(name), &layout).err().unwrap();
        assert!(e.to_string().contains("--out runs.parquet"), "{e}");
    }
}

#[test]
fn predictions_as_parquet_read_back_by_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runs = runs_csv(d);
    let law = d.join("law.json");
    fit(&runs, &law);
    let mut m = String::from("id,web,code,math\n");
    for i in 0..12 {
        let a = 0.05 + i as f64 * 0.07;
        m += &format!("m{i},{a},{},{}\n", (1.0 - a) * 0.5, (1.0 - a) * 0.5);
    }
    let mixtures = d.join("mixtures.csv");
    std::fs::write(&mixtures, m).unwrap();
    let predict = |out: &Path| {
        ok(mixopt()
            .args(["predict", "--id", "id", "--law"])
            .arg(&law)
            .arg("--mixtures")
            .arg(&mixtures)
            .arg("--out")
            .arg(out));
    };
    let (csv, pq, ipc) = (d.join("p.csv"), d.join("p.parquet"), d.join("p.arrow"));
    predict(&csv);
    predict(&pq);
    predict(&ipc);
    assert_eq!(&std::fs::read(&pq).unwrap()[..4], b"PAR1");
    assert_eq!(&std::fs::read(&ipc).unwrap()[..6], b"ARROW1");
    // Fit a law to the predictions themselves: identical from all three files.
    let refit = |preds: &Path, out: &Path| {
        ok(mixopt()
            .args([
                "fit",
                "--id",
                "id",
                "--target",
                "prediction",
                "--law",
                "linear",
                "--folds",
                "3",
                "--mixtures",
            ])
            .arg(&mixtures)
            .arg("--losses")
            .arg(preds)
            .arg("--out")
            .arg(out));
        json(out)
    };
    let a = refit(&csv, &d.join("a.json"));
    for p in [&pq, &ipc] {
        let b = refit(p, &d.join("b.json"));
        assert_eq!(a["params"], b["params"], "{}", p.display());
        assert_eq!(a["cv"], b["cv"], "{}", p.display());
    }
}
