//! `mixopt train`: learning, data-parallel shards, refused inputs.

use super::*;

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
