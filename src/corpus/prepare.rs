//! Corpus stage, the driver: domains of documents → token cache (the first step
//! of the pipeline; `mixopt prepare` and `mixopt demo` both call [`prepare`]).
//!
//! Per domain: resolve the source files, tokenize every document into a
//! temporary bin, hold out validation documents (a seeded draw of whole
//! documents, or the domain's own `val.*` files), and cap validation tokens.
//! Only when every domain succeeded are the bins renamed into place and the
//! manifest written, last and atomically; a failed run leaves an existing cache
//! as it was. A re-run whose options and source contents are unchanged does no
//! work (sources are re-hashed only when their size or mtime changed).
//!
//! The spec and its checks are in `spec`; source stamps and the inputs
//! fingerprint in `fingerprint`; one domain's build in `split`.

use crate::corpus::cache::{
    self, Manifest, Role, SourceFile, TokenizerInfo, FORMAT_VERSION, MANIFEST_FILE,
};
use crate::corpus::fingerprint::{
    absolute_display, bins_intact, describe_sources, inputs_fingerprint, refresh_source_times,
};
use crate::corpus::source::{self, DomainFiles};
use crate::corpus::split::{build_domain, Built};
use crate::corpus::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result};
use crate::mixture::write_json_atomic;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::corpus::spec::{
    domains_in_dir, DomainSource, PrepareSpec, DEFAULT_MAX_VAL_TOKENS, DEFAULT_TEST_FRACTION,
    DEFAULT_TEXT_FIELD, DEFAULT_VAL_FRACTION,
};

#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub cache_dir: PathBuf,
    /// True when nothing needed tokenizing (the cache already matched).
    pub up_to_date: bool,
    /// Per-domain counts are its `domains`.
    pub manifest: Manifest,
}

impl PrepareReport {
    pub(crate) fn new(cache_dir: &Path, up_to_date: bool, manifest: Manifest) -> PrepareReport {
        PrepareReport {
            cache_dir: cache_dir.to_path_buf(),
            up_to_date,
            manifest,
        }
    }
}

/// A domain resolved to files, with their recorded sizes and hashes.
pub(crate) struct Plan {
    pub name: String,
    pub role: Role,
    pub files: DomainFiles,
    pub sources: Vec<SourceFile>,
}

/// Everything a domain build reads but does not own.
pub(crate) struct Context<'a> {
    pub spec: &'a PrepareSpec,
    pub tokenizer: &'a TextTokenizer,
    pub width: usize,
    pub abort: &'a AtomicBool,
    pub bar: &'a indicatif::ProgressBar,
}

/// Tokenize the spec's domains into `spec.cache_dir`, or do nothing when the
/// cache there already matches the options and source contents.
pub fn prepare(spec: &PrepareSpec) -> Result<PrepareReport> {
    spec.check()?;
    // One prepare per cache: two would write the same temporary bins.
    let _lock = crate::store::fsio::lock_exclusive(
        &spec.cache_dir.join(".prepare.lock"),
        "mixopt prepare",
        "wait for it to finish",
    )?;
    let tokenizer = TextTokenizer::load(spec.tokenizer.as_deref())?;
    let tokenizer_info = TokenizerInfo {
        kind: tokenizer.kind().to_string(),
        path: spec.tokenizer.as_deref().map(absolute_display),
        sha256: match &spec.tokenizer {
            Some(p) => Some(source::sha256_file(p)?),
            None => None,
        },
        vocab_size: tokenizer.vocab_size(),
        separator_id: tokenizer.separator_id(),
    };
    let width = cache::token_width_for(tokenizer.vocab_size());
    let dir = &spec.cache_dir;
    // An unreadable old manifest only means there is nothing to reuse.
    let old = Manifest::load(dir).ok();

    let mut known: HashMap<String, &SourceFile> = HashMap::new();
    if let Some(old) = &old {
        for d in &old.domains {
            for s in &d.sources {
                known.insert(s.path.clone(), s);
            }
        }
    }
    let mut plans = Vec::with_capacity(spec.domains.len());
    // Training domains first: the cache indexes them before evaluation-only ones.
    let ordered = spec.domains.iter().filter(|d| d.role == Role::Train);
    for d in ordered.chain(spec.domains.iter().filter(|d| d.role == Role::Eval)) {
        let files = source::resolve(&d.name, &d.path)?;
        let sources = describe_sources(&files, &known)?;
        plans.push(Plan {
            name: d.name.clone(),
            role: d.role,
            files,
            sources,
        });
    }
    let inputs_fingerprint = inputs_fingerprint(spec, &tokenizer_info, &plans);

    if let Some(old) = old.filter(|o| !spec.force && o.inputs_fingerprint == inputs_fingerprint) {
        if bins_intact(dir, &old) {
            return refresh_source_times(dir, old, &plans);
        }
    }

    let total_bytes = plans
        .iter()
        .flat_map(|p| &p.sources)
        .map(|s| s.size_bytes)
        .sum();
    let bar = crate::progress::bar(total_bytes, "tokenizing");
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let abort = AtomicBool::new(false);
    let ctx = Context {
        spec,
        tokenizer: &tokenizer,
        width,
        abort: &abort,
        bar: &bar,
    };
    // Domains build concurrently on rayon's pool; results come back in plan order.
    let outcomes: Vec<_> = plans
        .par_iter()
        .map(|plan| {
            let result = build_domain(plan, &ctx);
            if result.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            result
        })
        .collect();
    bar.finish_and_clear();

    let mut built = Vec::with_capacity(outcomes.len());
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(Some(b)) => built.push(b),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        built.iter().for_each(Built::remove_temporaries);
        return Err(e);
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        mixopt_version: crate::VERSION.to_string(),
        tokenizer: tokenizer_info,
        token_width_bytes: width,
        text_field: spec.text_field.clone(),
        val_fraction: spec.val_fraction,
        test_fraction: spec.test_fraction,
        seed: spec.seed,
        max_val_tokens: spec.max_val_tokens,
        inputs_fingerprint,
        domains: built.iter().map(|b| b.entry.clone()).collect(),
    };
    install(dir, &built, &manifest)?;
    Ok(PrepareReport::new(dir, false, manifest))
}

/// Remove the old manifest (so no manifest ever points at half-replaced bins),
/// move the new bins into place, write the manifest, then drop bins the old
/// manifest named that the new one does not.
fn install(dir: &Path, built: &[Built], manifest: &Manifest) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let old = Manifest::load(dir).ok();
    match std::fs::remove_file(&manifest_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&manifest_path, e)),
    }
    for b in built {
        for (tmp, name) in &b.files {
            let path = dir.join(name);
            std::fs::rename(tmp, &path).at(&path)?;
        }
    }
    write_json_atomic(&manifest_path, manifest)?;
    if let Some(old) = old {
        let keep: Vec<&str> = manifest.domains.iter().flat_map(|d| d.files()).collect();
        for f in old.domains.iter().flat_map(|d| d.files()) {
            if !keep.contains(&f) {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::cache::{Split, TokenCache};

    fn jsonl(texts: &[&str]) -> String {
        texts
            .iter()
            .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
            .collect()
    }

    #[test]
    fn prepares_splits_and_skips_when_current() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("web.jsonl");
        let docs: Vec<String> = (0..20).map(|i| format!("document {i}")).collect();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        std::fs::write(&src, jsonl(&refs)).unwrap();
        let code = dir.path().join("code");
        std::fs::create_dir(&code).unwrap();
        std::fs::write(code.join("train.jsonl"), jsonl(&["fn a()", "fn b()"])).unwrap();
        std::fs::write(code.join("val.jsonl"), jsonl(&["fn c()", "fn dd()"])).unwrap();

        let cache_dir = dir.path().join("cache");
        let mut spec = PrepareSpec::new(
            &cache_dir,
            vec![("web".into(), src.clone()), ("code".into(), code.clone())],
        );
        spec.val_fraction = 0.1;
        let report = prepare(&spec).unwrap();
        assert!(!report.up_to_date);
        let web = &report.manifest.domains[0];
        // 2 of 20 documents held out, dealt one to validation, one to test.
        assert_eq!((web.train_docs, web.val_docs, web.test_docs), (18, 1, 1));
        let total: usize = docs.iter().map(|d| d.len() + 1).sum();
        assert_eq!(
            (web.train_tokens + web.val_tokens + web.test_tokens) as usize,
            total
        );
        let code_r = &report.manifest.domains[1];
        assert_eq!(
            (code_r.train_docs, code_r.val_docs, code_r.test_docs),
            (2, 1, 1)
        );
        assert_eq!(code_r.val_tokens + code_r.test_tokens, 7 + 8);

        let cache = TokenCache::open(&cache_dir).unwrap();
        assert_eq!(cache.domains(), ["web", "code"]);
        let held: Vec<Vec<u32>> = [Split::Val, Split::Test]
            .iter()
            .map(|&s| {
                let v = cache.held_out(s, 1);
                let mut ids = vec![0u32; v.len()];
                v.copy_to(0, &mut ids);
                ids
            })
            .collect();
        let doc = |t: &str| -> Vec<u32> { t.bytes().map(u32::from).chain([256]).collect() };
        assert!(
            held == [doc("fn c()"), doc("fn dd()")] || held == [doc("fn dd()"), doc("fn c()")],
            "{held:?}"
        );
        // Every train document ends with the separator.
        let train = cache.train(0);
        assert_eq!(train.get(train.len() - 1), 256);
        let fp = cache.fingerprint();
        drop(cache);

        let again = prepare(&spec).unwrap();
        assert!(again.up_to_date);
        assert_eq!(TokenCache::open(&cache_dir).unwrap().fingerprint(), fp);

        // The same options give the same split; a new seed, a different one.
        spec.force = true;
        let forced = prepare(&spec).unwrap();
        assert_eq!(forced.manifest.domains, report.manifest.domains);
        assert_eq!(TokenCache::open(&cache_dir).unwrap().fingerprint(), fp);
        spec.force = false;
        spec.seed = 1;
        assert!(!prepare(&spec).unwrap().up_to_date);

        // Held-out tokens are capped, each split on its own.
        spec.max_val_tokens = 5;
        let capped = prepare(&spec).unwrap();
        for d in &capped.manifest.domains {
            assert_eq!((d.val_tokens, d.test_tokens), (5, 5), "{}", d.name);
        }
        assert!(capped.manifest.domains[0].val_tokens_uncapped > 5);

        // Without a test split every held-out document validates.
        spec.max_val_tokens = DEFAULT_MAX_VAL_TOKENS;
        spec.test_fraction = 0.0;
        let no_test = prepare(&spec).unwrap();
        let web = &no_test.manifest.domains[0];
        assert_eq!((web.val_docs, web.test_docs, web.test_tokens), (2, 0, 0));
    }

    #[test]
    fn failures_leave_the_old_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.jsonl");
        std::fs::write(&src, jsonl(&["x", "y", "z"])).unwrap();
        let cache_dir = dir.path().join("cache");
        let spec = PrepareSpec::new(&cache_dir, vec![("a".into(), src.clone())]);
        prepare(&spec).unwrap();
        let before = std::fs::read(cache_dir.join(MANIFEST_FILE)).unwrap();

        std::fs::write(&src, "{\"text\":\"x\"}\n{oops\n").unwrap();
        let err = prepare(&spec).unwrap_err().to_string();
        assert!(err.contains("a.jsonl:2"), "{err}");
        assert_eq!(
            std::fs::read(cache_dir.join(MANIFEST_FILE)).unwrap(),
            before
        );
        TokenCache::open(&cache_dir).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with('~'))
            .collect();
        assert!(leftovers.is_empty());

        std::fs::write(&src, jsonl(&["only one"])).unwrap();
        let err = prepare(&spec).unwrap_err().to_string();
        assert!(
            err.contains("domain \"a\"") && err.contains("at least 2"),
            "{err}"
        );
    }
}
