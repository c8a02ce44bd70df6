//! Corpus stage: one domain's documents → its train, validation and test bins.
//!
//! The held-out documents of a domain (a seeded draw of whole documents, the
//! domain's own `val.*` files, or — for an evaluation-only domain — all of its
//! documents) are put in a seeded order and dealt between the validation split
//! (what proxies are scored on and every automatic choice is made on) and the
//! test split (what a final comparison is judged on, never tuned on), each
//! capped at `max_val_tokens`. Called by [`super::prepare`], one domain per task.

use crate::corpus::cache::{DomainEntry, Role, TokenWriter};
use crate::corpus::prepare::{Context, Plan};
use crate::corpus::source::{self, DomainFiles};
use crate::error::{Error, IoContext, Result};
use memmap2::Mmap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// A domain tokenized into temporary bins, not yet in place.
pub(crate) struct Built {
    pub entry: DomainEntry,
    /// (temporary, final file name) per split.
    pub files: Vec<(PathBuf, String)>,
}

impl Built {
    pub fn remove_temporaries(&self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

struct Counts {
    train_docs: u64,
    train_tokens: u64,
    held: Held,
}

/// Documents and tokens of the validation and test splits.
#[derive(Default)]
struct Held {
    val_docs: u64,
    test_docs: u64,
    val_tokens: u64,
    test_tokens: u64,
    val_tokens_uncapped: u64,
    test_tokens_uncapped: u64,
}

/// The three temporary bins of a domain.
struct Tmp {
    train: PathBuf,
    val: PathBuf,
    test: PathBuf,
}

/// Tokenize one domain into temporary bins. `Ok(None)` when another domain
/// failed first and this one stopped early.
pub(crate) fn build_domain(plan: &Plan, ctx: &Context) -> Result<Option<Built>> {
    let dir = &ctx.spec.cache_dir;
    let names = ["train", "val", "test"].map(|s| format!("{}.{s}.bin", plan.name));
    let tmps = names.clone().map(|n| dir.join(format!("{n}.tmp~")));
    let tmp = Tmp {
        train: tmps[0].clone(),
        val: tmps[1].clone(),
        test: tmps[2].clone(),
    };
    let result = match (&plan.files, plan.role) {
        (DomainFiles::Pooled(files), Role::Train) => build_pooled(plan, files, &tmp, ctx),
        (DomainFiles::Presplit { train, val }, Role::Train) => {
            build_presplit(plan, train, val, &tmp, ctx)
        }
        (files, Role::Eval) => {
            let all: Vec<PathBuf> = match files {
                DomainFiles::Pooled(f) => f.clone(),
                DomainFiles::Presplit { train, val } => train.iter().chain(val).cloned().collect(),
            };
            build_eval_only(plan, &all, &tmp, ctx)
        }
    };
    let counts = match result {
        Ok(Some(c)) => c,
        other => {
            for t in &tmps {
                let _ = std::fs::remove_file(t);
            }
            return other.map(|_| None);
        }
    };
    let split = match (plan.role, &plan.files) {
        (Role::Eval, _) => "all held out",
        (_, DomainFiles::Pooled(_)) => "seeded",
        (_, DomainFiles::Presplit { .. }) => "given",
    };
    let [train_file, val_file, test_file] = names;
    let h = &counts.held;
    Ok(Some(Built {
        entry: DomainEntry {
            name: plan.name.clone(),
            role: plan.role,
            split: split.to_string(),
            sources: plan.sources.clone(),
            train_file: train_file.clone(),
            val_file: val_file.clone(),
            test_file: test_file.clone(),
            train_docs: counts.train_docs,
            val_docs: h.val_docs,
            test_docs: h.test_docs,
            train_tokens: counts.train_tokens,
            val_tokens: h.val_tokens,
            test_tokens: h.test_tokens,
            val_tokens_uncapped: h.val_tokens_uncapped,
            test_tokens_uncapped: h.test_tokens_uncapped,
        },
        files: tmps
            .into_iter()
            .zip([train_file, val_file, test_file])
            .collect(),
    }))
}

/// Tokens of every document in `files`, each followed by the separator, to
/// `out`; returns (documents, tokens other than separators). `None` on abort.
/// `on_doc_end` gets the token offset where each document ends.
fn tokenize_files(
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

/// Documents tokenized into one temporary bin with their end offsets.
struct Pool {
    path: PathBuf,
    ends: Vec<u64>,
    n_content: u64,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tokenize_pool(plan: &Plan, files: &[PathBuf], ctx: &Context) -> Result<Option<Pool>> {
    let path = ctx.spec.cache_dir.join(format!("{}.all.tmp~", plan.name));
    let mut all = TokenWriter::create(&path, ctx.width, None)?;
    let mut pool = Pool {
        path,
        ends: Vec::new(),
        n_content: 0,
    };
    let ends = &mut pool.ends;
    let Some((_, n_content)) = tokenize_files(files, &mut all, ctx, &mut |end| ends.push(end))?
    else {
        return Ok(None);
    };
    all.finish()?;
    pool.n_content = n_content;
    Ok(Some(pool))
}

/// Held-out documents a pooled domain of `n_docs` gives up: the share asked
/// for, at least one (validation) and, when a test split is kept and the domain
/// can spare it, two (one each); never all of them.
fn n_held_out(n_docs: usize, ctx: &Context) -> usize {
    let want = (n_docs as f64 * ctx.spec.val_fraction).round() as usize;
    let least = if ctx.spec.test_fraction > 0.0 { 2 } else { 1 };
    want.max(least).min(n_docs - 1).max(1)
}

/// A domain with its own split: train files → train bin; val files are the
/// held-out documents, dealt between validation and test.
fn build_presplit(
    plan: &Plan,
    train: &[PathBuf],
    val: &[PathBuf],
    tmp: &Tmp,
    ctx: &Context,
) -> Result<Option<Counts>> {
    let name = &plan.name;
    let mut train_out = TokenWriter::create(&tmp.train, ctx.width, None)?;
    let Some((train_docs, train_content)) =
        tokenize_files(train, &mut train_out, ctx, &mut |_| {})?
    else {
        return Ok(None);
    };
    let train_tokens = train_out.finish()?;
    if train_docs == 0 || train_content == 0 {
        return Err(Error::invalid(format!(
            "domain {name:?}: no training text in {}",
            list(train)
        )));
    }
    let Some(pool) = tokenize_pool(plan, val, ctx)? else {
        return Ok(None);
    };
    if pool.n_content == 0 || pool.ends.is_empty() {
        return Err(Error::invalid(format!(
            "domain {name:?}: no validation text in {}",
            list(val)
        )));
    }
    let order = seeded_order(
        pool.ends.len(),
        pool.ends.len(),
        domain_seed(ctx.spec.seed, name),
    );
    let held = write_splits(&pool, &order, None, tmp, ctx)?;
    Ok(Some(Counts {
        train_docs,
        train_tokens,
        held,
    }))
}

/// A pooled domain: tokenize everything into one temporary bin, draw the
/// held-out documents by seed, then copy whole documents into the bins.
fn build_pooled(
    plan: &Plan,
    files: &[PathBuf],
    tmp: &Tmp,
    ctx: &Context,
) -> Result<Option<Counts>> {
    let name = &plan.name;
    let Some(pool) = tokenize_pool(plan, files, ctx)? else {
        return Ok(None);
    };
    let n_docs = pool.ends.len();
    if n_docs < 2 {
        return Err(Error::invalid(format!(
            "domain {name:?}: {n_docs} document(s) in {}; need at least 2 to hold one out for validation",
            list(files)
        )));
    }
    if pool.n_content == 0 {
        return Err(Error::invalid(format!(
            "domain {name:?}: zero tokens after tokenizing {}",
            list(files)
        )));
    }
    let k = n_held_out(n_docs, ctx);
    let order = seeded_order(n_docs, k, domain_seed(ctx.spec.seed, name));
    let mut train = TokenWriter::create(&tmp.train, ctx.width, None)?;
    let held = write_splits(&pool, &order, Some(&mut train), tmp, ctx)?;
    Ok(Some(Counts {
        train_docs: (n_docs - k) as u64,
        train_tokens: train.finish()?,
        held,
    }))
}

/// An evaluation-only domain: every document is held out; no training tokens.
fn build_eval_only(
    plan: &Plan,
    files: &[PathBuf],
    tmp: &Tmp,
    ctx: &Context,
) -> Result<Option<Counts>> {
    let name = &plan.name;
    let Some(pool) = tokenize_pool(plan, files, ctx)? else {
        return Ok(None);
    };
    if pool.n_content == 0 || pool.ends.is_empty() {
        return Err(Error::invalid(format!(
            "evaluation domain {name:?}: no text in {}",
            list(files)
        )));
    }
    let n = pool.ends.len();
    let order = seeded_order(n, n, domain_seed(ctx.spec.seed, name));
    let train = TokenWriter::create(&tmp.train, ctx.width, None)?;
    let held = write_splits(&pool, &order, None, tmp, ctx)?;
    Ok(Some(Counts {
        train_docs: 0,
        train_tokens: train.finish()?,
        held,
    }))
}

/// Whether the `i`-th held-out document (in seeded order) goes to test:
/// a fraction `f` of them, spread evenly along the order, the first one always
/// to validation (a domain with one held-out document has no test split).
pub fn goes_to_test(i: usize, f: f64) -> bool {
    ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
}

/// Copy documents from the pool: those in `held_order` to validation or test
/// (in that seeded order, each split capped, so a cap keeps a random subset),
/// the others — when `train` is given — to train in corpus order.
fn write_splits(
    pool: &Pool,
    held_order: &[usize],
    train: Option<&mut TokenWriter>,
    tmp: &Tmp,
    ctx: &Context,
) -> Result<Held> {
    let file = std::fs::File::open(&pool.path).at(&pool.path)?;
    // SAFETY: a private temporary file this module just wrote and nothing else writes.
    let map = unsafe { Mmap::map(&file) }.at(&pool.path)?;
    let width = ctx.width;
    let ends = &pool.ends;
    let doc_bytes = |i: usize| {
        let start = if i == 0 { 0 } else { ends[i - 1] } as usize * width;
        &map[start..ends[i] as usize * width]
    };
    if let Some(train) = train {
        let mut is_held = vec![false; ends.len()];
        for &i in held_order {
            is_held[i] = true;
        }
        for (i, _) in is_held.iter().enumerate().filter(|(_, h)| !**h) {
            train.write_encoded(doc_bytes(i))?;
        }
    }
    let cap = Some(ctx.spec.max_val_tokens);
    let mut val = TokenWriter::create(&tmp.val, width, cap)?;
    let mut test = TokenWriter::create(&tmp.test, width, cap)?;
    let mut held = Held::default();
    for (k, &i) in held_order.iter().enumerate() {
        if goes_to_test(k, ctx.spec.test_fraction) {
            test.write_encoded(doc_bytes(i))?;
            held.test_docs += 1;
        } else {
            val.write_encoded(doc_bytes(i))?;
            held.val_docs += 1;
        }
    }
    held.val_tokens_uncapped = val.offered();
    held.test_tokens_uncapped = test.offered();
    held.val_tokens = val.finish()?;
    held.test_tokens = test.finish()?;
    Ok(held)
}

/// A per-domain seed, so adding or removing a domain leaves the others' splits alone.
pub fn domain_seed(seed: u64, domain: &str) -> u64 {
    let digest = Sha256::digest(format!("{seed}/{domain}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// `k` of the indices `0..n` in a seeded random order.
pub fn seeded_order(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_order_is_deterministic() {
        let a = seeded_order(100, 5, 7);
        assert_eq!(a, seeded_order(100, 5, 7));
        assert_ne!(a, seeded_order(100, 5, 8));
        assert_eq!(a.len(), 5);
        assert_ne!(domain_seed(0, "a"), domain_seed(0, "b"));
    }

    #[test]
    fn test_share_is_spread_along_the_order() {
        let picks: Vec<bool> = (0..6).map(|i| goes_to_test(i, 0.5)).collect();
        assert_eq!(picks, [false, true, false, true, false, true]);
        assert!((0..100).all(|i| !goes_to_test(i, 0.0)));
        let third = (0..99).filter(|&i| goes_to_test(i, 1.0 / 3.0)).count();
        assert_eq!(third, 33);
    }
}
