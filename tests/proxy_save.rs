//! `mixopt train --save FILE` writes the trained proxy as safetensors;
//! `ProxyModel::load` reads it back (the trained weights, not the seed's) and
//! `mixopt train --init FILE` continues training from it.

use candle_core::Device;
use mixopt::corpus::cache::TokenCache;
use mixopt::proxy::model::ProxyModel;
use mixopt::proxy::ProxyConfig;
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> String {
    env!("CARGO_BIN_EXE_mixopt").to_string()
}

/// Two small domains tokenized into `tmp/cache`.
fn prepare(tmp: &Path) {
    let mut prepare = Command::new(bin());
    prepare
        .env("MIXOPT_QUIET", "1")
        .arg("prepare")
        .arg("--cache")
        .arg(tmp.join("cache"));
    for (d, word) in [("alpha", "abc def "), ("digits", "12 345 ")] {
        let file = tmp.join(format!("{d}.jsonl"));
        let lines: Vec<String> = (0..40)
            .map(|i| serde_json::json!({ "text": format!("{i} {}", word.repeat(40)) }).to_string())
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        prepare
            .arg("--domain")
            .arg(format!("{d}={}", file.display()));
    }
    let out = prepare.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_saved_proxy_loads_back_trained() {
    let tmp = tempfile::tempdir().unwrap();
    prepare(tmp.path());
    let saved = tmp.path().join("proxy.safetensors");
    let out = Command::new(bin())
        .env("MIXOPT_QUIET", "1")
        .args(["train", "--proxy", "tiny", "--steps", "3", "--seed", "2"])
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .arg("--save")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = ProxyConfig::load("tiny").unwrap();
    let vocab = TokenCache::open(&tmp.path().join("cache"))
        .unwrap()
        .vocab_size();
    let dev = Device::Cpu;
    let (_, loaded) = ProxyModel::load(&cfg, vocab, &saved, &dev).unwrap();
    let (_, init) = ProxyModel::new(&cfg, vocab, 2, &dev).unwrap();
    let flat = |v: &candle_core::Var| -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    };
    // Three steps of AdamW moved every matrix away from its seeded start.
    for ((name, a, decay), (_, b, _)) in loaded.vars.iter().zip(&init.vars) {
        if *decay {
            assert_ne!(flat(a), flat(b), "{name} did not change in training");
        }
    }
    // Another preset's shapes: refused with the tensor named.
    let mut small = cfg.clone();
    small.d_model *= 2;
    small.d_ff *= 2;
    let err = match ProxyModel::load(&small, vocab, &saved, &dev) {
        Ok(_) => panic!("a d_model mismatch was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tok_emb"), "{err}");
}

fn train(tmp: &Path, proxy: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .env("MIXOPT_QUIET", "1")
        .args(["train", "--proxy", proxy, "--seed", "2"])
        .arg("--cache")
        .arg(tmp.join("cache"))
        .args(args)
        .output()
        .unwrap()
}

/// The training loss at step 0 from a `--curve` CSV (step,loss).
fn first_loss(curve: &Path) -> f64 {
    let text = std::fs::read_to_string(curve).unwrap();
    let row = text.lines().nth(1).expect("a curve row");
    assert!(row.starts_with("0,"), "{row}");
    row[2..].parse().unwrap()
}

#[test]
fn train_init_continues_from_a_saved_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    prepare(t);
    let saved = t.join("proxy.safetensors");
    let path = |name: &str| t.join(name).to_str().unwrap().to_string();
    let ok = |out: Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
    };
    ok(train(
        t,
        "tiny",
        &["--steps", "40", "--save", saved.to_str().unwrap()],
    ));
    ok(train(
        t,
        "tiny",
        &["--steps", "5", "--curve", &path("fresh.csv")],
    ));
    let init = saved.to_str().unwrap();
    ok(train(
        t,
        "tiny",
        &["--steps", "5", "--curve", &path("cont.csv"), "--init", init],
    ));
    // Step 0's loss is the starting model's: the trained proxy's is far below
    // a fresh initialization's (ln 257 ≈ 5.5 nats for the byte vocabulary).
    let (fresh, cont) = (
        first_loss(&t.join("fresh.csv")),
        first_loss(&t.join("cont.csv")),
    );
    assert!(fresh > 5.0, "fresh start {fresh}");
    assert!(cont < fresh - 1.0, "continued {cont} vs fresh {fresh}");
    // A file of another preset, or no file: refused, naming the file.
    let out = train(t, "small", &["--steps", "2", "--init", init]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "another preset's file was loaded");
    assert!(
        err.contains("proxy.safetensors") && err.contains("tensor"),
        "{err}"
    );
    let out = train(
        t,
        "tiny",
        &["--steps", "2", "--init", &path("missing.safetensors")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing.safetensors"),
        "{err}"
    );
}
