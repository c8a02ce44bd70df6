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

use crate::corpus::cache::{
    self, Manifest, Role, SourceFile, TokenizerInfo, FORMAT_VERSION, MANIFEST_FILE,
};
use crate::corpus::source::{self, DomainFiles};
use crate::corpus::split::{build_domain, Built};
use crate::corpus::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, write_json_atomic};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// 5% of documents held out: RegMix-style proxies only need a stable estimate
/// of each domain's loss, not a large test set.
pub const DEFAULT_VAL_FRACTION: f64 = 0.05;
/// Half of the held-out documents of each domain form the test split: what a
/// final comparison is judged on, apart from the validation split that proxies
/// are scored on and choices are made on.
pub const DEFAULT_TEST_FRACTION: f64 = 0.5;
/// 256 Ki validation tokens per domain keeps one evaluation of a tiny proxy
/// over ~10 domains to seconds on a CPU.
pub const DEFAULT_MAX_VAL_TOKENS: u64 = 262_144;
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// One domain to prepare: a name and a file, directory or glob, and whether
/// it is trained on or only evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSource {
    pub name: String,
    pub path: PathBuf,
    pub role: Role,
}

impl DomainSource {
    /// Parse `NAME=PATH` (the `--domain` flag).
    pub fn parse(arg: &str) -> Result<DomainSource> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--domain {arg:?}: expected NAME=PATH")))?;
        let (name, path) = (name.trim(), path.trim());
        if path.is_empty() {
            return Err(Error::invalid(format!("--domain {arg:?}: empty PATH")));
        }
        Ok(DomainSource {
            name: name.to_string(),
            path: PathBuf::from(path),
            role: Role::Train,
        })
    }
}

/// Every non-hidden subdirectory of `dir` as a domain named after it, sorted
/// (the layout `shared/corpus/build_corpus.sh` writes: `DIR/<domain>/{train,val}.jsonl`).
pub fn domains_in_dir(dir: &Path) -> Result<Vec<DomainSource>> {
    let mut domains = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_dir() && !name.starts_with('.') {
            domains.push(DomainSource {
                name: name.to_string(),
                path: path.clone(),
                role: Role::Train,
            });
        }
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    if domains.is_empty() {
        return Err(Error::invalid(format!(
            "--domains-dir {}: no subdirectories (expected one per domain)",
            dir.display()
        )));
    }
    Ok(domains)
}

/// What to prepare and how. Build with [`PrepareSpec::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct PrepareSpec {
    pub domains: Vec<DomainSource>,
    pub cache_dir: PathBuf,
    /// A HuggingFace `tokenizer.json`; `None` for byte-level.
    pub tokenizer: Option<PathBuf>,
    /// JSON field / parquet column holding the text.
    pub text_field: String,
    /// Share of documents held out when a domain has no split of its own; in (0, 1).
    pub val_fraction: f64,
    /// Share of each domain's held-out documents that form the test split; in [0, 1).
    pub test_fraction: f64,
    pub seed: u64,
    /// Cap on each domain's validation tokens, and on its test tokens.
    pub max_val_tokens: u64,
    /// Rebuild even when the cache is up to date.
    pub force: bool,
}

impl PrepareSpec {
    pub fn new(cache_dir: impl Into<PathBuf>, domains: Vec<(String, PathBuf)>) -> PrepareSpec {
        PrepareSpec {
            domains: domains
                .into_iter()
                .map(|(name, path)| DomainSource {
                    name,
                    path,
                    role: Role::Train,
                })
                .collect(),
            cache_dir: cache_dir.into(),
            tokenizer: None,
            text_field: DEFAULT_TEXT_FIELD.to_string(),
            val_fraction: DEFAULT_VAL_FRACTION,
            test_fraction: DEFAULT_TEST_FRACTION,
            seed: 0,
            max_val_tokens: DEFAULT_MAX_VAL_TOKENS,
            force: false,
        }
    }

    /// Validate everything that can be checked without reading the data.
    pub fn check(&self) -> Result<()> {
        if self.domains.is_empty() {
            return Err(Error::invalid(
                "no domains: give --domain NAME=PATH or --domains-dir DIR",
            ));
        }
        for (i, d) in self.domains.iter().enumerate() {
            check_file_safe_name(&d.name)?;
            if self.domains[..i].iter().any(|e| e.name == d.name) {
                return Err(Error::invalid(format!(
                    "domain {:?} is given twice",
                    d.name
                )));
            }
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(Error::invalid(format!(
                "--val-fraction {}: must lie strictly between 0 and 1",
                self.val_fraction
            )));
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(Error::invalid(format!(
                "--test-fraction {}: must lie in [0, 1)",
                self.test_fraction
            )));
        }
        if !self.domains.iter().any(|d| d.role == Role::Train) {
            return Err(Error::invalid(
                "no training domains: every domain is evaluation-only",
            ));
        }
        if self.max_val_tokens == 0 {
            return Err(Error::invalid("--max-val-tokens must be at least 1"));
        }
        if self.text_field.is_empty() {
            return Err(Error::invalid("--text-field must not be empty"));
        }
        Ok(())
    }
}

/// Domain names become file names in the cache: on top of the general rule,
/// no empty, `.` or `..` path components.
fn check_file_safe_name(name: &str) -> Result<()> {
    check_domain_name(name)?;
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::invalid(format!(
            "domain name {name:?}: empty, '.' or '..' path components are not allowed"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub cache_dir: PathBuf,
    /// True when nothing needed tokenizing (the cache already matched).
    pub up_to_date: bool,
    /// Per-domain counts are its `domains`.
    pub manifest: Manifest,
}

impl PrepareReport {
    fn new(cache_dir: &Path, up_to_date: bool, manifest: Manifest) -> PrepareReport {
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
    let outcomes = run_parallel(&plans, |plan| {
        let result = build_domain(plan, &ctx);
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        result
    });
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

/// Run `f` over the plans on up to `available_parallelism` threads; results
/// come back in plan order.
fn run_parallel<T: Send>(plans: &[Plan], f: impl Fn(&Plan) -> T + Sync) -> Vec<T> {
    let n_threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(plans.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<T>> = (0..plans.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n_threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= plans.len() {
                            break done;
                        }
                        done.push((i, f(&plans[i])));
                    }
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        slots[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots.into_iter().flatten().collect()
}

fn files_of(files: &DomainFiles) -> impl Iterator<Item = (&Path, &'static str)> {
    let (pool, train, val): (&[PathBuf], &[PathBuf], &[PathBuf]) = match files {
        DomainFiles::Pooled(p) => (p, &[], &[]),
        DomainFiles::Presplit { train, val } => (&[], train, val),
    };
    pool.iter()
        .map(|p| (p.as_path(), "pool"))
        .chain(train.iter().map(|p| (p.as_path(), "train")))
        .chain(val.iter().map(|p| (p.as_path(), "val")))
}

/// Size, times, inode and sha256 of each source; the hash is reused from the
/// old manifest only when size, mtime, ctime and inode are all unchanged
/// (git's rule for its index: see `SourceFile::ctime_ns`).
fn describe_sources(
    files: &DomainFiles,
    known: &HashMap<String, &SourceFile>,
) -> Result<Vec<SourceFile>> {
    files_of(files)
        .map(|(path, role)| {
            let meta = std::fs::metadata(path).at(path)?;
            let size_bytes = meta.len();
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok());
            let (ctime_ns, inode) = change_stamp(&meta);
            let shown = absolute_display(path);
            let sha256 = match known.get(&shown) {
                Some(k)
                    if k.size_bytes == size_bytes
                        && mtime_ns.is_some()
                        && k.mtime_ns == mtime_ns
                        && ctime_ns.is_some()
                        && k.ctime_ns == ctime_ns
                        && k.inode == inode =>
                {
                    k.sha256.clone()
                }
                _ => source::sha256_file(path)?,
            };
            Ok(SourceFile {
                path: shown,
                role: role.to_string(),
                size_bytes,
                mtime_ns,
                ctime_ns: ctime_ns.filter(|&c| settled(c)),
                inode,
                sha256,
            })
        })
        .collect()
}

/// A file's ctime (ns) and inode, where the platform has them.
#[cfg(unix)]
fn change_stamp(meta: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let ns = u64::try_from(meta.ctime())
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|s| s.checked_add(u64::try_from(meta.ctime_nsec()).ok()?));
    (ns, Some(meta.ino()))
}

#[cfg(not(unix))]
fn change_stamp(_: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// A change time at least 2 s old: a later write lands on a later clock tick
/// even on coarse-timestamp filesystems, so the stamp identifies the contents
/// just hashed. (A file changed in the last 2 s is re-hashed next time.)
fn settled(ctime_ns: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.saturating_sub(ctime_ns) >= 2_000_000_000
}

fn absolute_display(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// sha256 over everything that decides the bins' contents: the format, the
/// tokenizer (by hash), the options and, per domain, the sources' roles, sizes
/// and hashes (not their paths, so moving a corpus keeps the cache valid).
fn inputs_fingerprint(spec: &PrepareSpec, tokenizer: &TokenizerInfo, plans: &[Plan]) -> String {
    let domains: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| {
            let sources: Vec<serde_json::Value> = p
                .sources
                .iter()
                .map(|s| serde_json::json!([s.role, s.size_bytes, s.sha256]))
                .collect();
            serde_json::json!({ "name": p.name, "role": p.role, "sources": sources })
        })
        .collect();
    let inputs = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "tokenizer": [tokenizer.kind, tokenizer.sha256, tokenizer.vocab_size],
        "text_field": spec.text_field,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
        "seed": spec.seed,
        "max_val_tokens": spec.max_val_tokens,
        "domains": domains,
    });
    hex::encode(Sha256::digest(inputs.to_string().as_bytes()))
}

/// Every bin the manifest names exists with the length it records.
fn bins_intact(dir: &Path, manifest: &Manifest) -> bool {
    let width = manifest.token_width_bytes as u64;
    manifest.domains.iter().all(|d| {
        d.files().into_iter().zip(d.token_counts()).all(|(f, n)| {
            std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() == n.saturating_mul(width))
        })
    })
}

/// The cache is current. If sources moved or were touched without changing,
/// record their new paths and times (so the next run skips hashing); else
/// leave every file alone.
fn refresh_source_times(
    dir: &Path,
    mut manifest: Manifest,
    plans: &[Plan],
) -> Result<PrepareReport> {
    // Learning a change stamp the manifest lacks is no reason to rewrite it
    // (the next run re-hashes that file again, which is always safe).
    let differs = |old: &SourceFile, new: &SourceFile| {
        let known = |s: &SourceFile| SourceFile {
            ctime_ns: s.ctime_ns.and(old.ctime_ns),
            inode: s.inode.and(old.inode),
            ..s.clone()
        };
        *old != known(new)
    };
    let mut changed = false;
    for (d, p) in manifest.domains.iter_mut().zip(plans) {
        if d.sources.len() != p.sources.len()
            || d.sources.iter().zip(&p.sources).any(|(o, n)| differs(o, n))
        {
            d.sources = p.sources.clone();
            changed = true;
        }
    }
    if changed {
        write_json_atomic(&dir.join(MANIFEST_FILE), &manifest)?;
    }
    Ok(PrepareReport::new(dir, true, manifest))
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

    #[test]
    fn spec_checks() {
        let ok = PrepareSpec::new("c", vec![("a".into(), "x".into())]);
        assert!(ok.check().is_ok());
        for (name, bad) in [
            ("dup", {
                let mut s = ok.clone();
                s.domains.push(s.domains[0].clone());
                s
            }),
            (
                "fraction",
                PrepareSpec {
                    val_fraction: 1.0,
                    ..ok.clone()
                },
            ),
            (
                "name",
                PrepareSpec::new("c", vec![("a,b".into(), "x".into())]),
            ),
            (
                "dots",
                PrepareSpec::new("c", vec![("../a".into(), "x".into())]),
            ),
            ("none", PrepareSpec::new("c", vec![])),
        ] {
            assert!(bad.check().is_err(), "{name}");
        }
        assert!(DomainSource::parse("noequals").is_err());
        assert_eq!(
            DomainSource::parse("a=b=c").unwrap(),
            DomainSource {
                name: "a".into(),
                path: "b=c".into(),
                role: Role::Train,
            }
        );
    }
}
