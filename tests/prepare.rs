//! `mixopt prepare` driven as a user would: from a `--domains-dir` laid out like
//! `shared/corpus/build_corpus.sh` output, from globs, txt, compressed jsonl and
//! parquet sources, with a hand-written HuggingFace tokenizer; re-runs that must
//! do nothing; and bad inputs that must fail with one line naming the
//! file/line/field, never a panic.

use assert_cmd::Command;
use mixopt::corpus::TokenCache;
use serde_json::json;
use std::path::{Path, PathBuf};

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// Run and expect success; returns stdout.
fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "expected success, stderr: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Run and expect failure; returns stderr, which must not be a panic.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    stderr
}

/// One jsonl line per text, with build_corpus.sh's fields.
fn jsonl(source: &str, texts: &[&str]) -> String {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": format!("{source}-{i}"), "source": source, "text": t}).to_string() + "\n"
        })
        .collect()
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

fn manifest(cache: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(cache.join("manifest.json")).unwrap()).unwrap()
}

/// A proxy small enough for the few-token corpora here (windows of 5 tokens).
fn tiny_preset(dir: &Path) -> PathBuf {
    let path = dir.join("micro.toml");
    write(
        &path,
        "name = \"micro\"\nn_layers = 1\nd_model = 8\nn_heads = 2\nd_ff = 16\nseq_len = 4\n\
         batch_size = 2\nn_steps = 2\nlr_peak = 1e-3\nwarmup_steps = 0\neval_windows = 2\n",
    );
    path
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// A corpus dir as build_corpus.sh writes it: DIR/<domain>/{train,val}.jsonl + manifest.json.
fn corpus_dir(root: &Path) -> PathBuf {
    let dir = root.join("corpus");
    write(
        &dir.join("web/train.jsonl"),
        jsonl("web", &["the cat sat", "hello world", "a b c"]),
    );
    write(&dir.join("web/val.jsonl"), jsonl("web", &["held out"]));
    write(
        &dir.join("code/train.jsonl"),
        jsonl("code", &["fn main() {}", "let x = 1;"]),
    );
    write(
        &dir.join("code/val.jsonl"),
        jsonl("code", &["x += 1;", "y"]),
    );
    write(&dir.join("manifest.json"), "{\"not\": \"a domain\"}");
    dir
}

#[test]
fn prepares_domains_dir_and_reruns_as_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(tmp.path());
    let cache = tmp.path().join("cache");
    let args = [
        "prepare",
        "--domains-dir",
        corpus.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    let out = succeeds(mixopt().args(args));
    assert!(out.contains("prepared 2 domains"), "{out}");
    assert!(
        out.contains("train_tokens") && out.contains("code") && out.contains("web"),
        "{out}"
    );

    let m = manifest(&cache);
    assert_eq!(m["format_version"], 2);
    assert_eq!(m["tokenizer"]["kind"], "bytes");
    assert_eq!(m["tokenizer"]["vocab_size"], 257);
    assert_eq!(m["token_width_bytes"], 2);
    let domains = m["domains"].as_array().unwrap();
    assert_eq!(domains[0]["name"], "code");
    assert_eq!(domains[1]["name"], "web");
    let web = &domains[1];
    assert_eq!(web["split"], "given");
    // Its one held-out document validates; there is none left for a test split.
    assert_eq!(
        (
            web["train_docs"].as_u64(),
            web["val_docs"].as_u64(),
            web["test_docs"].as_u64()
        ),
        (Some(3), Some(1), Some(0))
    );
    // code's two are dealt one to validation, one to test.
    assert_eq!(
        (
            domains[0]["val_docs"].as_u64(),
            domains[0]["test_docs"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // Bytes plus one separator per document.
    assert_eq!(web["train_tokens"], 11 + 1 + 11 + 1 + 5 + 1);
    assert_eq!(web["val_tokens"], 8 + 1);
    assert_eq!(web["sources"].as_array().unwrap().len(), 2);
    assert_eq!(web["sources"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(web["train_file"], "web.train.bin");

    let tc = TokenCache::open(&cache).unwrap();
    assert_eq!(tc.domains(), ["code", "web"]);
    assert_eq!(tc.val(1).len(), 9);
    assert_eq!(tc.val(1).get(0), u32::from(b'h'));
    assert_eq!(tc.val(1).get(8), 256);
    let fp = tc.fingerprint();
    drop(tc);

    let watched = [
        cache.join("manifest.json"),
        cache.join("web.train.bin"),
        cache.join("code.val.bin"),
    ];
    let before: Vec<_> = watched.iter().map(|p| mtime(p)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = succeeds(mixopt().args(args));
    assert!(out.contains("up to date"), "{out}");
    let after: Vec<_> = watched.iter().map(|p| mtime(p)).collect();
    assert_eq!(before, after, "an up-to-date re-run rewrote files");
    assert_eq!(TokenCache::open(&cache).unwrap().fingerprint(), fp);

    // A changed source rebuilds.
    write(
        &corpus.join("web/val.jsonl"),
        jsonl("web", &["held out too"]),
    );
    let out = succeeds(mixopt().args(args));
    assert!(out.contains("prepared 2 domains"), "{out}");
    assert_eq!(manifest(&cache)["domains"][1]["val_tokens"], 12 + 1);
    // So do changed options.
    let out = succeeds(mixopt().args(args).args(["--max-val-tokens", "4"]));
    assert!(out.contains("prepared"), "{out}");
    assert_eq!(manifest(&cache)["domains"][1]["val_tokens"], 4);
}

#[test]
fn prepares_globs_txt_gz_and_parquet_with_a_seeded_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..10 {
        write(
            &d.join(format!("txt/doc{i}.txt")),
            format!("text document number {i}"),
        );
    }
    write(&d.join("txt/notes.md"), "not matched by the glob");
    let gz = d.join("news.jsonl.gz");
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(jsonl("news", &["one", "two", "three", "four"]).as_bytes())
            .unwrap();
        enc.finish().unwrap();
    }
    let pq = d.join("books.parquet");
    write_parquet(&pq, &["chapter one", "chapter two", "chapter three"]);

    let cache = d.join("cache");
    let glob = d.join("txt/*.txt");
    let run = |seed: &str| {
        let mut c = mixopt();
        c.args([
            "prepare",
            "--cache",
            cache.to_str().unwrap(),
            "--val-fraction",
            "0.2",
            "--seed",
            seed,
        ]);
        c.args(["--domain", &format!("a={}", glob.display())]);
        c.args(["--domain", &format!("news={}", gz.display())]);
        c.args(["--domain", &format!("books={}", pq.display())]);
        succeeds(&mut c)
    };
    let out = run("3");
    assert!(out.contains("prepared 3 domains"), "{out}");
    let m = manifest(&cache);
    let docs = |d: &serde_json::Value| {
        ["train_docs", "val_docs", "test_docs"].map(|k| d[k].as_u64().unwrap())
    };
    let a = &m["domains"][0];
    assert_eq!(a["split"], "seeded");
    assert_eq!(a["sources"].as_array().unwrap().len(), 10);
    // 20% of 10 held out, dealt half to validation, half to test.
    assert_eq!(docs(a), [8, 1, 1]);
    // 20% of 4 rounds to 1; a test split needs a second held-out document.
    assert_eq!(docs(&m["domains"][1]), [2, 1, 1]);
    assert_eq!(docs(&m["domains"][2]), [1, 1, 1]);
    let val_a = std::fs::read(cache.join("a.val.bin")).unwrap();

    // Same seed, same split (forced rebuild); another seed, another split.
    let out = succeeds(mixopt().args([
        "prepare",
        "--cache",
        cache.to_str().unwrap(),
        "--val-fraction",
        "0.2",
        "--seed",
        "3",
        "--force",
        "--domain",
        &format!("a={}", glob.display()),
        "--domain",
        &format!("news={}", gz.display()),
        "--domain",
        &format!("books={}", pq.display()),
    ]));
    assert!(out.contains("prepared"), "{out}");
    assert_eq!(std::fs::read(cache.join("a.val.bin")).unwrap(), val_a);
    run("4");
    assert_ne!(std::fs::read(cache.join("a.val.bin")).unwrap(), val_a);
}

#[test]
fn evaluation_only_domains_are_held_out_entirely() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(tmp.path());
    write(
        &corpus.join("web/val.jsonl"),
        jsonl("web", &["held out", "also held"]),
    );
    let cache = tmp.path().join("cache");
    let base = [
        "prepare",
        "--domains-dir",
        corpus.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    // NAME alone moves a --domains-dir domain out of training.
    let out = succeeds(mixopt().args(base).args(["--eval-domain", "code"]));
    assert!(out.contains("eval"), "{out}");
    let m = manifest(&cache);
    let code = &m["domains"][1];
    assert_eq!(
        (&code["name"], &code["role"]),
        (&"code".into(), &"eval".into())
    );
    // All four code documents (train and val files) are held out, none trained on.
    assert_eq!(code["train_tokens"], 0);
    assert_eq!(
        code["val_docs"].as_u64().unwrap() + code["test_docs"].as_u64().unwrap(),
        4
    );
    let tc = TokenCache::open(&cache).unwrap();
    assert_eq!(tc.domains(), ["web"]);
    assert_eq!(tc.eval_domains(), ["web", "code"]);
    assert_eq!(tc.natural_mixture().unwrap().weights(), [1.0]);

    // A proxy scores it (on either split) and cannot be told to train on it.
    let train = |extra: &[&str]| {
        let mut c = mixopt();
        c.args(["train", "--cache", cache.to_str().unwrap(), "--proxy"])
            .arg(tiny_preset(tmp.path()))
            .args(extra);
        c
    };
    let out = succeeds(&mut train(&["--split", "test"]));
    assert!(
        out.contains("test_loss") && out.contains("code") && out.contains("eval"),
        "{out}"
    );
    let err = fails(&mut train(&["--mixture", "web=0.5,code=0.5"]));
    assert!(err.contains("code"), "{err}");

    // Unknown names and a NAME=PATH that repeats a training domain are refused.
    let err = fails(mixopt().args(base).args(["--eval-domain", "nope"]));
    assert!(err.contains("--eval-domain nope"), "{err}");
    let web = corpus.join("web");
    let err = fails(
        mixopt()
            .args(base)
            .args(["--eval-domain", &format!("web={}", web.display())]),
    );
    assert!(err.contains("also a training domain"), "{err}");
}

/// A tiny WordLevel tokenizer.json written by hand (no downloads).
const TINY_TOKENIZER: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel",
            "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "the": 3, "cat": 4, "sat": 5},
            "unk_token": "[UNK]"}
}"#;

#[test]
fn prepares_with_a_huggingface_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(tmp.path());
    let tok = tmp.path().join("tokenizer.json");
    write(&tok, TINY_TOKENIZER);
    let cache = tmp.path().join("cache");
    let out = succeeds(mixopt().args([
        "prepare",
        "--domains-dir",
        corpus.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
    ]));
    assert!(out.contains("vocab 7"), "{out}");
    let m = manifest(&cache);
    assert_eq!(m["tokenizer"]["kind"], "huggingface");
    assert_eq!(m["tokenizer"]["separator_id"], 6);
    assert_eq!(m["tokenizer"]["sha256"].as_str().unwrap().len(), 64);
    let tc = TokenCache::open(&cache).unwrap();
    let web = tc.train(1);
    let mut ids = vec![0; web.len()];
    web.copy_to(0, &mut ids);
    // "the cat sat", "hello world", "a b c" (unknown words → [UNK]).
    assert_eq!(ids, [3, 4, 5, 6, 1, 2, 6, 0, 0, 0, 6]);
}

fn write_parquet(path: &Path, texts: &[&str]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message s { REQUIRED BYTE_ARRAY text (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(*t)).collect();
    col.typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}

/// `prepare --cache <tmp>/cache` plus `args`; expects failure and that stderr
/// mentions every one of `expected`.
fn rejects(tmp: &Path, args: &[&str], expected: &[&str]) {
    let cache = tmp.join("cache");
    let stderr = fails(
        mixopt()
            .args(["prepare", "--cache", cache.to_str().unwrap()])
            .args(args),
    );
    for e in expected {
        assert!(stderr.contains(e), "stderr lacks {e:?}: {stderr}");
    }
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(!cache.join("manifest.json").exists());
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |name: &str| d.join(name).display().to_string();
    let good = p("good.jsonl");
    write(&d.join("good.jsonl"), jsonl("g", &["one", "two", "three"]));
    let dom = |name: &str, path: &str| format!("{name}={path}");

    // Paths.
    rejects(
        d,
        &["--domain", &dom("a", &p("missing.jsonl"))],
        &["missing.jsonl", "does not exist", "\"a\""],
    );
    rejects(
        d,
        &["--domain", &dom("a", &p("*.nothing"))],
        &["*.nothing", "matched no files"],
    );
    write(&d.join("data.csv"), "a,b\n");
    rejects(
        d,
        &["--domain", &dom("a", &p("data.csv"))],
        &["data.csv", "unsupported file type"],
    );

    // jsonl content.
    write(
        &d.join("bad.jsonl"),
        "{\"text\": \"ok\"}\n{\"text\": oops}\n",
    );
    rejects(
        d,
        &["--domain", &dom("a", &p("bad.jsonl"))],
        &["bad.jsonl:2", "malformed JSON"],
    );
    write(
        &d.join("nofield.jsonl"),
        "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n",
    );
    rejects(
        d,
        &["--domain", &dom("a", &p("nofield.jsonl"))],
        &["nofield.jsonl:3", "no field \"text\""],
    );
    write(&d.join("number.jsonl"), "{\"text\": 42}\n");
    rejects(
        d,
        &["--domain", &dom("a", &p("number.jsonl"))],
        &["number.jsonl:1", "\"text\"", "not a string"],
    );
    rejects(
        d,
        &["--domain", &dom("a", &good), "--text-field", "content"],
        &["good.jsonl:1", "no field \"content\""],
    );

    // Parquet.
    write(&d.join("corrupt.parquet"), "PAR1 definitely not parquet");
    rejects(
        d,
        &["--domain", &dom("a", &p("corrupt.parquet"))],
        &["corrupt.parquet", "parquet"],
    );
    write_parquet(&d.join("ok.parquet"), &["x", "y"]);
    rejects(
        d,
        &[
            "--domain",
            &dom("a", &p("ok.parquet")),
            "--text-field",
            "body",
        ],
        &["ok.parquet", "no column \"body\""],
    );

    // Empty domains.
    write(&d.join("empty.jsonl"), "\n{\"text\": \"\"}\n");
    rejects(
        d,
        &["--domain", &dom("hollow", &p("empty.jsonl"))],
        &["domain \"hollow\"", "0 document"],
    );
    write(&d.join("one.jsonl"), jsonl("o", &["single"]));
    rejects(
        d,
        &["--domain", &dom("solo", &p("one.jsonl"))],
        &["domain \"solo\"", "at least 2"],
    );
    write(&d.join("split/train.jsonl"), "");
    write(&d.join("split/val.jsonl"), jsonl("v", &["x"]));
    rejects(
        d,
        &["--domain", &dom("sp", &p("split"))],
        &["domain \"sp\"", "train.jsonl"],
    );

    // Domain specs.
    rejects(d, &["--domain", "noequals"], &["noequals", "NAME=PATH"]);
    rejects(
        d,
        &["--domain", &dom("a", &good), "--domain", &dom("a", &good)],
        &["\"a\"", "twice"],
    );
    rejects(
        d,
        // A space is a valid name (hierarchies, Olmix topics); a comma is not.
        &["--domain", &dom("bad,name", &good)],
        &["bad,name", "domain name"],
    );
    rejects(d, &[], &["no domains"]);

    // Tokenizer and options.
    write(&d.join("tok.json"), "{\"model\": 1}");
    rejects(
        d,
        &["--domain", &dom("a", &good), "--tokenizer", &p("tok.json")],
        &["tok.json", "tokenizer"],
    );
    rejects(
        d,
        &["--domain", &dom("a", &good), "--tokenizer", &p("nope.json")],
        &["nope.json"],
    );
    for bad in ["0", "1", "1.5", "-0.1", "NaN"] {
        rejects(
            d,
            &[
                "--domain",
                &dom("a", &good),
                &format!("--val-fraction={bad}"),
            ],
            &["--val-fraction"],
        );
    }
}

#[test]
fn a_failed_rebuild_keeps_the_old_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("a.jsonl");
    write(&src, jsonl("a", &["one", "two", "three"]));
    let cache = d.join("cache");
    let args = [
        "prepare",
        "--cache",
        cache.to_str().unwrap(),
        "--domain",
        &format!("a={}", src.display()),
    ];
    succeeds(mixopt().args(args));
    let before = std::fs::read(cache.join("manifest.json")).unwrap();
    write(&src, "{\"text\": \"one\"}\nnot json\n");
    let stderr = fails(mixopt().args(args));
    assert!(stderr.contains("a.jsonl:2"), "{stderr}");
    assert_eq!(std::fs::read(cache.join("manifest.json")).unwrap(), before);
    TokenCache::open(&cache).unwrap();
}
