//! Concurrent writers, crashes between files, results that must not depend
//! on timing, and inputs that used to be accepted silently or refused with
//! an unclear message — each driven through the binary.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// (success, stdout, stderr)
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(cmd: &mut Command) -> String {
    let (success, out, err) = run(cmd);
    assert!(success, "{err}");
    out
}

fn fails(cmd: &mut Command) -> String {
    let (success, out, err) = run(cmd);
    assert!(!success, "should have failed: {out}");
    err
}

/// A proxy small and short enough for tests (one run well under a second).
const TEST_PROXY: &str = include_str!("data/test_proxy.toml");

/// Two small domains tokenized into `tmp/cache`; the proxy at `tmp/test.toml`.
fn prepare(tmp: &Path) -> PathBuf {
    let mut cmd = mixopt();
    cmd.arg("prepare").arg("--cache").arg(tmp.join("cache"));
    for (name, unit) in [("alpha", "abcdefg "), ("digits", "0 1 2 3 4 5 ")] {
        let dir = tmp.join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let lines: Vec<String> = (0..40)
            .map(|i| serde_json::json!({ "text": unit.repeat(20 + i % 7) }).to_string())
            .collect();
        std::fs::write(dir.join("docs.jsonl"), lines.join("\n") + "\n").unwrap();
        cmd.arg("--domain")
            .arg(format!("{name}={}", dir.join("docs.jsonl").display()));
    }
    cmd.assert().success();
    std::fs::write(tmp.join("test.toml"), TEST_PROXY).unwrap();
    tmp.join("cache")
}

fn sweep(tmp: &Path, out: &Path, runs: usize) -> Command {
    let mut c = mixopt();
    c.args([
        "sweep",
        "--seed",
        "3",
        "--jobs",
        "1",
        "--runs",
        &runs.to_string(),
        // No noise-floor runs: the tests count and order the sampled runs.
        "--noise-seeds",
        "0",
    ])
    .arg("--proxy")
    .arg(tmp.join("test.toml"))
    .arg("--cache")
    .arg(tmp.join("cache"))
    .arg("--out")
    .arg(out);
    c
}

fn data_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn ids(path: &Path) -> Vec<String> {
    data_lines(path)
        .iter()
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn a_second_sweep_on_one_table_is_refused_while_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    prepare(t);
    let out = t.join("runs.csv");
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("mixopt"))
        .args(sweep(t, &out, 10).get_args())
        .env("MIXOPT_QUIET", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The table exists (and is locked) from the sweep's start.
    let t0 = Instant::now();
    while !out.exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = fails(&mut sweep(t, &out, 10));
    let finished_first = first.try_wait().unwrap().is_some();
    assert!(first.wait().unwrap().success());
    if !finished_first {
        assert!(err.contains("locked by another running sweep"), "{err}");
    }
    // Every run once, in run order.
    let got = ids(&out);
    let want: Vec<String> = (0..10).map(|k| format!("run{k:05}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_finished_sweep_table_is_in_run_order_with_its_rows_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    prepare(t);
    let out = t.join("runs.csv");
    ok(&mut sweep(t, &out, 4));
    let rows = data_lines(&out);
    // Rows as concurrent workers may append them: out of order.
    let text = std::fs::read_to_string(&out).unwrap();
    let header = text.lines().next().unwrap();
    let shuffled = [&rows[2], &rows[0], &rows[3], &rows[1]];
    let body: Vec<&str> = shuffled.iter().map(|s| s.as_str()).collect();
    std::fs::write(&out, format!("{header}\n{}\n", body.join("\n"))).unwrap();
    let said = ok(&mut sweep(t, &out, 4));
    assert!(said.contains("4 already finished"), "{said}");
    assert_eq!(data_lines(&out), rows, "rows reordered, byte for byte");
    // A shard reports its own count.
    let shard = t.join("shard.csv");
    let said = ok(sweep(t, &shard, 5).args(["--shard", "0/2"]));
    assert!(said.contains("sweep: 3 of 3 runs finished here"), "{said}");
}

/// A runs table over domains a, b with `n` rows, the given row order.
fn write_runs(path: &Path, order: &[usize], weights_of: impl Fn(usize) -> (String, String)) {
    let mut text = String::from(
        "run_id,seed,proxy,n_tokens,wall_s,config_hash,mixopt_version,w_a,w_b,loss_a,loss_b\n",
    );
    for &k in order {
        let (wa, wb) = weights_of(k);
        let x = k as f64;
        let la = 3.0 - 0.5 * wa.parse::<f64>().unwrap() + 0.03 * ((k * 7) % 5) as f64;
        let lb = 2.0 + 0.01 * x;
        text += &format!("run{k:05},{k},test,1000,1.5,cafe,0.1.0,{wa},{wb},{la},{lb}\n");
    }
    std::fs::write(path, text).unwrap();
}

fn weights(k: usize) -> (String, String) {
    let a = ((k * 5) % 13) as f64 / 13.0;
    (format!("{a}"), format!("{}", 1.0 - a))
}

#[test]
fn fit_depends_on_run_ids_not_on_row_order() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let orders: [Vec<usize>; 3] = [
        (0..12).collect(),
        vec![11, 3, 7, 0, 9, 1, 5, 10, 2, 8, 4, 6],
        (0..12).rev().collect(),
    ];
    let mut laws = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let runs = t.join(format!("runs{i}.csv"));
        write_runs(&runs, order, weights);
        let law = t.join(format!("law{i}.json"));
        ok(mixopt()
            .args([
                "fit",
                "--law",
                "loglinear",
                "--target",
                "a",
                "--folds",
                "4",
                "--runs",
            ])
            .arg(&runs)
            .arg("--out")
            .arg(&law));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&law).unwrap()).unwrap();
        laws.push((v["cv"].clone(), v["params"].clone()));
    }
    assert_eq!(laws[1], laws[0]);
    assert_eq!(laws[2], laws[0]);
}

#[test]
fn merge_keeps_row_bytes_and_never_leaves_a_table_without_its_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Weights whose sum is 1 + 2 ulp: reading renormalizes them.
    let ulp = |_k: usize| ("0.30000000000000004".to_string(), "0.7".to_string());
    let (s0, s1) = (t.join("runs-0.csv"), t.join("runs-1.csv"));
    write_runs(&s0, &[0, 2, 4], ulp);
    write_runs(&s1, &[3, 1], ulp);
    let meta = serde_json::json!({"config_hash": "cafe", "prior": {"a": 0.25, "b": 0.75}});
    for s in [&s0, &s1] {
        std::fs::write(format!("{}.meta.json", s.display()), meta.to_string()).unwrap();
    }
    // The sidecar cannot be written (a directory is in the way): the merge
    // fails and leaves no table behind, so a rerun is not refused.
    let merged = t.join("runs.csv");
    let blocker = t.join("runs.csv.meta.json");
    std::fs::create_dir(&blocker).unwrap();
    fails(
        mixopt()
            .arg("merge")
            .arg(&s0)
            .arg(&s1)
            .arg("--out")
            .arg(&merged),
    );
    assert!(!merged.exists(), "a table without its sidecar was left");
    std::fs::remove_dir(&blocker).unwrap();
    let said = ok(mixopt()
        .arg("merge")
        .arg(&s1)
        .arg(&s0)
        .arg("--out")
        .arg(&merged));
    assert!(said.contains("5 runs"), "{said}");
    // Exactly the rows one machine writes: run order, the bytes as given.
    let mut want = Vec::new();
    write_runs(&t.join("whole.csv"), &[0, 1, 2, 3, 4], ulp);
    want.extend(data_lines(&t.join("whole.csv")));
    assert_eq!(data_lines(&merged), want);
    assert!(blocker.is_file());
    // fit says where its prior comes from.
    let law = t.join("law.json");
    let out = ok(mixopt()
        .args(["fit", "--law", "linear", "--folds", "2", "--runs"])
        .arg(&merged)
        .arg("--out")
        .arg(&law));
    assert!(
        out.contains("prior: the sweep's natural token shares"),
        "{out}"
    );
    std::fs::remove_file(&blocker).unwrap();
    let out = ok(mixopt()
        .args(["fit", "--law", "linear", "--folds", "2", "--runs"])
        .arg(&merged)
        .arg("--out")
        .arg(&law));
    assert!(
        out.contains("prior: the mean of the 5 runs' mixtures"),
        "{out}"
    );
}

#[test]
fn fit_and_optimize_refuse_what_they_used_to_accept_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let runs = t.join("runs.csv");
    write_runs(&runs, &(0..12).collect::<Vec<_>>(), weights);
    let fit = |runs: &Path, args: &[&str]| {
        let mut c = mixopt();
        c.args(["fit", "--folds", "3", "--runs"])
            .arg(runs)
            .args(args)
            .arg("--out")
            .arg(t.join("law.json"));
        c
    };
    // A negative loss.
    let text = std::fs::read_to_string(&runs).unwrap();
    let bad = t.join("neg.csv");
    std::fs::write(&bad, text.replacen(",2.01\n", ",-2.01\n", 1)).unwrap();
    let err = fails(&mut fit(&bad, &[]));
    assert!(
        err.contains("neg.csv:3") && err.contains("loss_b") && err.contains("negative"),
        "{err}"
    );
    // A constant target: nothing to fit, and no "best" law to pick.
    let flat = t.join("flat.csv");
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                return l.to_string();
            }
            let mut c: Vec<&str> = l.split(',').collect();
            c[10] = "2.5";
            c.join(",")
        })
        .collect();
    std::fs::write(&flat, lines.join("\n") + "\n").unwrap();
    let err = fails(&mut fit(&flat, &["--target", "b", "--law", "all"]));
    assert!(
        err.contains("target b is 2.5 in every one of the 12 runs"),
        "{err}"
    );
    // A target starting with '-' is a target, not a flag.
    let out = ok(&mut fit(&runs, &["--target", "-1*a", "--law", "linear"]));
    assert!(out.contains("target -1*a"), "{out}");
    // --spread-penalty on a law with no spread.
    ok(&mut fit(&runs, &["--target", "a", "--law", "linear"]));
    let err = fails(
        mixopt()
            .args([
                "optimize",
                "--candidates",
                "1000",
                "--spread-penalty",
                "0.5",
                "--law",
            ])
            .arg(t.join("law.json"))
            .arg("--out")
            .arg(t.join("w.json")),
    );
    assert!(
        err.contains("--spread-penalty") && err.contains("no uncertainty"),
        "{err}"
    );
    // Files saved with a UTF-8 byte-order mark are read.
    let law = std::fs::read(t.join("law.json")).unwrap();
    std::fs::write(
        t.join("bom-law.json"),
        [b"\xEF\xBB\xBF".as_slice(), &law].concat(),
    )
    .unwrap();
    std::fs::write(
        t.join("bom-prior.json"),
        "\u{feff}{\"domains\": {\"a\": 0.5, \"b\": 0.5}}",
    )
    .unwrap();
    ok(mixopt()
        .args(["optimize", "--candidates", "1000", "--law"])
        .arg(t.join("bom-law.json"))
        .arg("--prior")
        .arg(t.join("bom-prior.json"))
        .arg("--out")
        .arg(t.join("w.json")));
    // An extra column is named.
    let extra = t.join("extra.csv");
    let with_notes: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}", if i == 0 { "notes" } else { "x" }))
        .collect();
    std::fs::write(&extra, with_notes.join("\n") + "\n").unwrap();
    let err = fails(&mut fit(&extra, &[]));
    assert!(err.contains("column 12 is \"notes\""), "{err}");
}

#[test]
fn prepare_refuses_to_train_on_validation_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("web");
    std::fs::create_dir_all(&dir).unwrap();
    let docs: Vec<String> = (0..10)
        .map(|i| serde_json::json!({ "text": format!("held out {i}") }).to_string())
        .collect();
    std::fs::write(dir.join("val.jsonl"), docs.join("\n")).unwrap();
    let err = fails(
        mixopt()
            .arg("prepare")
            .arg("--domain")
            .arg(format!("web={}", dir.display()))
            .arg("--cache")
            .arg(tmp.path().join("cache")),
    );
    assert!(
        err.contains("validation files (val.jsonl) but no train files") && err.contains("web"),
        "{err}"
    );
    assert!(!tmp.path().join("cache/manifest.json").exists());
}

#[test]
fn prepare_notices_an_edit_that_keeps_size_and_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let doc = t.join("corpus/alpha/docs.jsonl");
    // Let the source's change time settle (a change within 2 s of hashing is
    // never trusted, which would make this test pass for the wrong reason).
    std::thread::sleep(Duration::from_millis(2100));
    let again = || {
        let mut c = mixopt();
        c.arg("prepare").arg("--cache").arg(&cache);
        for d in ["alpha", "digits"] {
            c.arg("--domain").arg(format!(
                "{d}={}",
                t.join("corpus").join(d).join("docs.jsonl").display()
            ));
        }
        c
    };
    assert!(ok(&mut again()).contains("up to date"));
    let mtime = std::fs::metadata(&doc).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&doc).unwrap();
    std::fs::write(&doc, text.replace("abcdefg", "gfedcba")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&doc)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&doc).unwrap().modified().unwrap(), mtime);
    let out = ok(&mut again());
    assert!(!out.contains("up to date"), "{out}");
}

#[test]
fn a_tampered_manifest_is_refused_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = prepare(t);
    let manifest = cache.join("manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let train = |what: &str| {
        fails(
            mixopt()
                .args(["train", "--steps", "2", "--proxy"])
                .arg(t.join("test.toml"))
                .arg("--cache")
                .arg(&cache),
        ) + what
    };
    // A bin path leading out of the cache.
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["domains"][0]["train_file"] = "../../etc/passwd".into();
    std::fs::write(&manifest, m.to_string()).unwrap();
    let err = train("");
    assert!(
        err.contains("train_file") && err.contains("inside the cache"),
        "{err}"
    );
    // A vocabulary smaller than the ids in the bins.
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["tokenizer"]["vocab_size"] = 200.into();
    m["tokenizer"]["separator_id"] = 199.into();
    std::fs::write(&manifest, m.to_string()).unwrap();
    let err = train("");
    assert!(
        err.contains("holds token id")
            && err.contains("vocab_size 200")
            && !err.contains("index-select"),
        "{err}"
    );
}
