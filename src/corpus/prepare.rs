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
    self, DomainEntry, Manifest, SourceFile, TokenWriter, TokenizerInfo, FORMAT_VERSION,
    MANIFEST_FILE,
};
use crate::corpus::source::{self, DomainFiles};
use crate::corpus::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, write_json_atomic};
use memmap2::Mmap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// 5% of documents held out: RegMix-style proxies only need a stable estimate
/// of each domain's loss, not a large test set.
pub const DEFAULT_VAL_FRACTION: f64 = 0.05;
/// 256 Ki validation tokens per domain keeps one evaluation of a tiny proxy
/// over ~10 domains to seconds on a CPU.
pub const DEFAULT_MAX_VAL_TOKENS: u64 = 262_144;
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// One domain to prepare: a name and a file, directory or glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSource {
    pub name: String,
    pub path: PathBuf,
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
    pub seed: u64,
    pub max_val_tokens: u64,
    /// Rebuild even when the cache is up to date.
    pub force: bool,
}

impl PrepareSpec {
    pub fn new(cache_dir: impl Into<PathBuf>, domains: Vec<(String, PathBuf)>) -> PrepareSpec {
        PrepareSpec {
            domains: domains
                .into_iter()
                .map(|(name, path)| DomainSource { name, path })
                .collect(),
            cache_dir: cache_dir.into(),
            tokenizer: None,
            text_field: DEFAULT_TEXT_FIELD.to_string(),
            val_fraction: DEFAULT_VAL_FRACTION,
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

/// Per-domain counts, as in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainReport {
    pub name: String,
    pub train_docs: u64,
    pub val_docs: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub cache_dir: PathBuf,
    /// True when nothing needed tokenizing (the cache already matched).
    pub up_to_date: bool,
    pub manifest: Manifest,
    pub domains: Vec<DomainReport>,
}

impl PrepareReport {
    fn new(cache_dir: &Path, up_to_date: bool, manifest: Manifest) -> PrepareReport {
        let domains = manifest
            .domains
            .iter()
            .map(|d| DomainReport {
                name: d.name.clone(),
                train_docs: d.train_docs,
                val_docs: d.val_docs,
                train_tokens: d.train_tokens,
                val_tokens: d.val_tokens,
            })
            .collect();
        PrepareReport {
            cache_dir: cache_dir.to_path_buf(),
            up_to_date,
            manifest,
            domains,
        }
    }
}

/// A domain resolved to files, with their recorded sizes and hashes.
struct Plan {
    name: String,
    files: DomainFiles,
    sources: Vec<SourceFile>,
}

/// Everything a domain build reads but does not own.
struct Context<'a> {
    spec: &'a PrepareSpec,
    tokenizer: &'a TextTokenizer,
    width: usize,
    abort: &'a AtomicBool,
    bar: &'a indicatif::ProgressBar,
}

/// A domain tokenized into temporary bins, not yet in place.
struct Built {
    entry: DomainEntry,
    train_tmp: PathBuf,
    val_tmp: PathBuf,
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
    for d in &spec.domains {
        let files = source::resolve(&d.name, &d.path)?;
        let sources = describe_sources(&files, &known)?;
        plans.push(Plan {
            name: d.name.clone(),
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
        for b in &built {
            let _ = std::fs::remove_file(&b.train_tmp);
            let _ = std::fs::remove_file(&b.val_tmp);
        }
        return Err(e);
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        mixopt_version: crate::VERSION.to_string(),
        tokenizer: tokenizer_info,
        token_width_bytes: width,
        text_field: spec.text_field.clone(),
        val_fraction: spec.val_fraction,
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
        let train = dir.join(&b.entry.train_file);
        let val = dir.join(&b.entry.val_file);
        std::fs::rename(&b.train_tmp, &train).at(&train)?;
        std::fs::rename(&b.val_tmp, &val).at(&val)?;
    }
    write_json_atomic(&manifest_path, manifest)?;
    if let Some(old) = old {
        let keep: Vec<&str> = manifest
            .domains
            .iter()
            .flat_map(|d| [d.train_file.as_str(), d.val_file.as_str()])
            .collect();
        for d in &old.domains {
            for f in [&d.train_file, &d.val_file] {
                if !keep.contains(&f.as_str()) {
                    let _ = std::fs::remove_file(dir.join(f));
                }
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
            serde_json::json!({ "name": p.name, "sources": sources })
        })
        .collect();
    let inputs = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "tokenizer": [tokenizer.kind, tokenizer.sha256, tokenizer.vocab_size],
        "text_field": spec.text_field,
        "val_fraction": spec.val_fraction,
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
        [(&d.train_file, d.train_tokens), (&d.val_file, d.val_tokens)]
            .into_iter()
            .all(|(f, n)| {
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

/// Tokenize one domain into temporary bins. `Ok(None)` when another domain
/// failed first and this one stopped early.
fn build_domain(plan: &Plan, ctx: &Context) -> Result<Option<Built>> {
    let dir = &ctx.spec.cache_dir;
    let train_file = format!("{}.train.bin", plan.name);
    let val_file = format!("{}.val.bin", plan.name);
    let train_tmp = dir.join(format!("{train_file}.tmp~"));
    let val_tmp = dir.join(format!("{val_file}.tmp~"));
    let result = match &plan.files {
        DomainFiles::Pooled(files) => build_pooled(plan, files, &train_tmp, &val_tmp, ctx),
        DomainFiles::Presplit { train, val } => {
            build_presplit(plan, train, val, &train_tmp, &val_tmp, ctx)
        }
    };
    let counts = match result {
        Ok(Some(c)) => c,
        other => {
            let _ = std::fs::remove_file(&train_tmp);
            let _ = std::fs::remove_file(&val_tmp);
            return other.map(|_| None);
        }
    };
    let split = match plan.files {
        DomainFiles::Pooled(_) => "seeded",
        DomainFiles::Presplit { .. } => "given",
    };
    Ok(Some(Built {
        entry: DomainEntry {
            name: plan.name.clone(),
            split: split.to_string(),
            sources: plan.sources.clone(),
            train_file,
            val_file,
            train_docs: counts.train_docs,
            val_docs: counts.val_docs,
            train_tokens: counts.train_tokens,
            val_tokens: counts.val_tokens,
            val_tokens_uncapped: counts.val_tokens_uncapped,
        },
        train_tmp,
        val_tmp,
    }))
}

struct Counts {
    train_docs: u64,
    val_docs: u64,
    train_tokens: u64,
    val_tokens: u64,
    val_tokens_uncapped: u64,
}

/// Tokens of every document in `files`, each followed by the separator, to
/// `out`; returns (documents, tokens other than separators). `None` on abort.
fn tokenize_files(
    files: &[PathBuf],
    out: &mut TokenWriter,
    ctx: &Context,
) -> Result<Option<(u64, u64)>> {
    tokenize_files_with(files, out, ctx, &mut |_| {})
}

fn tokenize_files_with(
    files: &[PathBuf],
    out: &mut TokenWriter,
    ctx: &Context,
    on_doc_end: &mut dyn FnMut(u64),
) -> Result<Option<(u64, u64)>> {
    let sep = [ctx.tokenizer.separator_id()];
    let (mut n_docs, mut n_content) = (0u64, 0u64);
    for path in files {
        if ctx.abort.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let on_read = |n: u64| ctx.bar.inc(n);
        source::read_documents_counting(path, &ctx.spec.text_field, &on_read, &mut |text| {
            let ids = ctx
                .tokenizer
                .encode(&text)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            n_content += ids.len() as u64;
            out.write(&ids)?;
            out.write(&sep)?;
            n_docs += 1;
            on_doc_end(out.offered());
            Ok(())
        })?;
    }
    Ok(Some((n_docs, n_content)))
}

fn list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// A domain with its own split: train files → train bin, val files → val bin (capped).
fn build_presplit(
    plan: &Plan,
    train: &[PathBuf],
    val: &[PathBuf],
    train_tmp: &Path,
    val_tmp: &Path,
    ctx: &Context,
) -> Result<Option<Counts>> {
    let name = &plan.name;
    let mut train_out = TokenWriter::create(train_tmp, ctx.width, None)?;
    let Some((train_docs, train_content)) = tokenize_files(train, &mut train_out, ctx)? else {
        return Ok(None);
    };
    let train_tokens = train_out.finish()?;
    if train_docs == 0 || train_content == 0 {
        return Err(Error::invalid(format!(
            "domain {name:?}: no training text in {}",
            list(train)
        )));
    }
    let mut val_out = TokenWriter::create(val_tmp, ctx.width, Some(ctx.spec.max_val_tokens))?;
    let Some((val_docs, val_content)) = tokenize_files(val, &mut val_out, ctx)? else {
        return Ok(None);
    };
    let val_tokens_uncapped = val_out.offered();
    let val_tokens = val_out.finish()?;
    if val_docs == 0 || val_content == 0 {
        return Err(Error::invalid(format!(
            "domain {name:?}: no validation text in {}",
            list(val)
        )));
    }
    Ok(Some(Counts {
        train_docs,
        val_docs,
        train_tokens,
        val_tokens,
        val_tokens_uncapped,
    }))
}

/// A pooled domain: tokenize everything into one temporary bin, draw the
/// validation documents by seed, then copy whole documents into the two bins.
fn build_pooled(
    plan: &Plan,
    files: &[PathBuf],
    train_tmp: &Path,
    val_tmp: &Path,
    ctx: &Context,
) -> Result<Option<Counts>> {
    let name = &plan.name;
    let all_tmp = ctx.spec.cache_dir.join(format!("{name}.all.tmp~"));
    let result = (|| {
        let mut all = TokenWriter::create(&all_tmp, ctx.width, None)?;
        // Token offset where each document ends (its separator included).
        let mut ends: Vec<u64> = Vec::new();
        let tokenized = tokenize_files_with(files, &mut all, ctx, &mut |end| ends.push(end))?;
        let Some((n_docs, n_content)) = tokenized else {
            return Ok(None);
        };
        all.finish()?;
        if n_docs < 2 {
            return Err(Error::invalid(format!(
                "domain {name:?}: {n_docs} document(s) in {}; need at least 2 to hold one out for validation",
                list(files)
            )));
        }
        if n_content == 0 {
            return Err(Error::invalid(format!(
                "domain {name:?}: zero tokens after tokenizing {}",
                list(files)
            )));
        }
        let val_order = choose_val_docs(
            ends.len(),
            ctx.spec.val_fraction,
            domain_seed(ctx.spec.seed, name),
        );
        split_bin(&all_tmp, &ends, &val_order, train_tmp, val_tmp, ctx).map(Some)
    })();
    let _ = std::fs::remove_file(&all_tmp);
    result
}

/// Copy documents from the pooled bin: those not in `val_order` to train in
/// corpus order, those in it to val in `val_order`'s (random) order, capped, so
/// the cap keeps a random subset of the held-out documents.
fn split_bin(
    all_path: &Path,
    ends: &[u64],
    val_order: &[usize],
    train_tmp: &Path,
    val_tmp: &Path,
    ctx: &Context,
) -> Result<Counts> {
    let file = std::fs::File::open(all_path).at(all_path)?;
    // SAFETY: a private temporary file this function's caller just wrote and
    // nothing else writes.
    let map = unsafe { Mmap::map(&file) }.at(all_path)?;
    let width = ctx.width;
    let doc_bytes = |i: usize| {
        let start = if i == 0 { 0 } else { ends[i - 1] } as usize * width;
        &map[start..ends[i] as usize * width]
    };
    let mut is_val = vec![false; ends.len()];
    for &i in val_order {
        is_val[i] = true;
    }
    let mut train = TokenWriter::create(train_tmp, width, None)?;
    for (i, _) in is_val.iter().enumerate().filter(|(_, v)| !**v) {
        train.write_encoded(doc_bytes(i))?;
    }
    let mut val = TokenWriter::create(val_tmp, width, Some(ctx.spec.max_val_tokens))?;
    for &i in val_order {
        val.write_encoded(doc_bytes(i))?;
    }
    let val_tokens_uncapped = val.offered();
    Ok(Counts {
        train_docs: (ends.len() - val_order.len()) as u64,
        val_docs: val_order.len() as u64,
        train_tokens: train.finish()?,
        val_tokens: val.finish()?,
        val_tokens_uncapped,
    })
}

/// A per-domain seed, so adding or removing a domain leaves the others' splits alone.
fn domain_seed(seed: u64, domain: &str) -> u64 {
    let digest = Sha256::digest(format!("{seed}/{domain}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// Indices of the held-out documents, in a seeded random order:
/// round(n · fraction) of them, at least 1 and at most n − 1. Needs n ≥ 2.
pub fn choose_val_docs(n_docs: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let k = ((n_docs as f64 * fraction).round() as usize).clamp(1, n_docs.saturating_sub(1).max(1));
    let mut order: Vec<usize> = (0..n_docs).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::cache::TokenCache;

    fn jsonl(texts: &[&str]) -> String {
        texts
            .iter()
            .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
            .collect()
    }

    #[test]
    fn seeded_split_is_deterministic_and_bounded() {
        let a = choose_val_docs(100, 0.05, 7);
        assert_eq!(a, choose_val_docs(100, 0.05, 7));
        assert_ne!(a, choose_val_docs(100, 0.05, 8));
        assert_eq!(a.len(), 5);
        assert_eq!(choose_val_docs(2, 0.01, 0).len(), 1);
        assert_eq!(choose_val_docs(3, 0.99, 0).len(), 2);
        assert_ne!(domain_seed(0, "a"), domain_seed(0, "b"));
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
        std::fs::write(code.join("val.jsonl"), jsonl(&["fn c()"])).unwrap();

        let cache_dir = dir.path().join("cache");
        let mut spec = PrepareSpec::new(
            &cache_dir,
            vec![("web".into(), src.clone()), ("code".into(), code.clone())],
        );
        spec.val_fraction = 0.1;
        let report = prepare(&spec).unwrap();
        assert!(!report.up_to_date);
        let web = &report.domains[0];
        assert_eq!((web.train_docs, web.val_docs), (18, 2));
        let total: usize = docs.iter().map(|d| d.len() + 1).sum();
        assert_eq!((web.train_tokens + web.val_tokens) as usize, total);
        let code_r = &report.domains[1];
        assert_eq!((code_r.train_docs, code_r.val_docs), (2, 1));
        assert_eq!(code_r.val_tokens, 7);

        let cache = TokenCache::open(&cache_dir).unwrap();
        assert_eq!(cache.domains(), ["web", "code"]);
        let val = cache.val(1);
        let mut ids = vec![0u32; val.len()];
        val.copy_to(0, &mut ids);
        let mut expected: Vec<u32> = b"fn c()".iter().map(|&b| u32::from(b)).collect();
        expected.push(256);
        assert_eq!(ids, expected);
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

        // Validation tokens are capped.
        spec.max_val_tokens = 5;
        let capped = prepare(&spec).unwrap();
        assert_eq!(capped.domains[0].val_tokens, 5);
        assert_eq!(capped.domains[1].val_tokens, 5);
        assert!(capped.manifest.domains[0].val_tokens_uncapped > 5);
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
                PrepareSpec::new("c", vec![("a b".into(), "x".into())]),
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
                path: "b=c".into()
            }
        );
    }
}
