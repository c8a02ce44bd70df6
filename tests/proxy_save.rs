//! `mixopt train --save FILE` writes the trained proxy as safetensors, and
//! `ProxyModel::load` reads it back: the trained weights, not the seed's.

use candle_core::Device;
use mixopt::corpus::cache::TokenCache;
use mixopt::proxy::model::ProxyModel;
use mixopt::proxy::ProxyConfig;
use std::process::Command;

fn bin() -> String {
    env!("CARGO_BIN_EXE_mixopt").to_string()
}

#[test]
fn a_saved_proxy_loads_back_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let mut prepare = Command::new(bin());
    prepare
        .env("MIXOPT_QUIET", "1")
        .arg("prepare")
        .arg("--cache")
        .arg(tmp.path().join("cache"));
    for (d, word) in [("alpha", "abc def "), ("digits", "12 345 ")] {
        let file = tmp.path().join(format!("{d}.jsonl"));
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
