//! Corpus stage, output side: the token cache that `prepare` writes and
//! training memory-maps. Layout of a cache directory:
//!
//! - `<domain>.train.bin`, `<domain>.val.bin`, `<domain>.test.bin`: flat
//!   little-endian token ids (u16 when the vocabulary fits, else u32),
//!   documents concatenated, each followed by the separator id. Validation is
//!   what proxies are scored on and choices are made on; test is kept for
//!   judging a final answer. An evaluation-only domain has no training tokens;
//! - `manifest.json`: tokenizer, options, source files with hashes, and per-domain
//!   document and token counts. Written last, so its presence means the bins
//!   are complete.

use crate::error::{Error, IoContext, Result};
use crate::mixture::Mixture;
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use super::manifest::{
    content_fingerprint, token_width_for, DomainEntry, Manifest, Role, SourceFile, Split,
    TokenizerInfo, FORMAT_VERSION, MANIFEST_FILE,
};

/// A read-only view of one split's token ids.
#[derive(Clone, Copy, Debug)]
pub enum TokenView<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl TokenView<'_> {
    pub fn len(&self) -> usize {
        match self {
            TokenView::U16(s) => s.len(),
            TokenView::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i`. Panics when `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> u32 {
        match self {
            TokenView::U16(s) => u32::from(s[i]),
            TokenView::U32(s) => s[i],
        }
    }

    /// Copy `out.len()` tokens starting at `start`. Panics when the range runs
    /// past `len()`, like slice indexing.
    pub fn copy_to(&self, start: usize, out: &mut [u32]) {
        let end = start + out.len();
        match self {
            TokenView::U16(s) => {
                for (o, &t) in out.iter_mut().zip(&s[start..end]) {
                    *o = u32::from(t);
                }
            }
            TokenView::U32(s) => out.copy_from_slice(&s[start..end]),
        }
    }
}

/// One memory-mapped bin; `None` for an empty file (nothing to map).
struct MappedBin {
    map: Option<Mmap>,
}

impl MappedBin {
    fn open(path: &Path, n_tokens: u64, width: usize) -> Result<MappedBin> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let expected = n_tokens.saturating_mul(width as u64);
        if len != expected {
            return Err(Error::invalid(format!(
                "{}: {len} bytes, but manifest.json says {n_tokens} tokens x {width} bytes = {expected}; \
                 the cache is damaged, re-run mixopt prepare",
                path.display()
            )));
        }
        if len == 0 {
            return Ok(MappedBin { map: None });
        }
        // SAFETY: the bins are written once, then renamed into place; prepare
        // replaces them by rename, never in place, so the mapped bytes do not change.
        let map = unsafe { Mmap::map(&file) }.at(path)?;
        let bin = MappedBin { map: Some(map) };
        // Validate the cast once here so `view` cannot fail later.
        let ok = match width {
            2 => bytemuck::try_cast_slice::<u8, u16>(bin.bytes()).is_ok(),
            _ => bytemuck::try_cast_slice::<u8, u32>(bin.bytes()).is_ok(),
        };
        if !ok {
            return Err(Error::invalid(format!(
                "{}: mapping is not aligned for {width}-byte tokens",
                path.display()
            )));
        }
        Ok(bin)
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The largest id in the bin (None when empty).
    fn max_id(&self, width: usize) -> Option<u32> {
        use rayon::prelude::*;
        match self.view(width) {
            TokenView::U16(s) => s
                .par_chunks(1 << 20)
                .filter_map(|c| c.iter().max())
                .max()
                .map(|&m| u32::from(m)),
            TokenView::U32(s) => s
                .par_chunks(1 << 20)
                .filter_map(|c| c.iter().max())
                .max()
                .copied(),
        }
    }

    fn view(&self, width: usize) -> TokenView<'_> {
        // Length and alignment were checked in `open` (mmaps are page aligned);
        // an empty `&[u8]` may sit at an unaligned dangling address, so it is
        // special-cased.
        if self.map.is_none() {
            return if width == 2 {
                TokenView::U16(&[])
            } else {
                TokenView::U32(&[])
            };
        }
        if width == 2 {
            TokenView::U16(bytemuck::cast_slice(self.bytes()))
        } else {
            TokenView::U32(bytemuck::cast_slice(self.bytes()))
        }
    }
}

/// A prepared token cache, opened for training: the manifest plus one
/// memory map per split. Training domains come first (indexes `0..n_train`
/// of both `domains` and `eval_domains`), evaluation-only ones after.
pub struct TokenCache {
    dir: PathBuf,
    manifest: Manifest,
    domains: Vec<String>,
    eval_domains: Vec<String>,
    fingerprint: String,
    train: Vec<MappedBin>,
    val: Vec<MappedBin>,
    test: Vec<MappedBin>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("dir", &self.dir)
            .field("domains", &self.domains)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl TokenCache {
    /// Read `dir/manifest.json` and map every bin, checking each file's length
    /// against the manifest's token count.
    pub fn open(dir: &Path) -> Result<TokenCache> {
        if cfg!(target_endian = "big") {
            return Err(Error::invalid(
                "token caches are little-endian; this machine is big-endian",
            ));
        }
        let manifest = Manifest::load(dir)?;
        let width = manifest.token_width_bytes;
        let mut bins: [Vec<MappedBin>; 3] = Default::default();
        let vocab = manifest.tokenizer.vocab_size;
        for d in &manifest.domains {
            for ((out, file), n) in bins.iter_mut().zip(d.files()).zip(d.token_counts()) {
                let path = dir.join(file);
                let bin = MappedBin::open(&path, n, width)?;
                // Every id must index the model's embedding: say so here, by
                // file, rather than as a tensor error deep in training.
                // (A vocabulary the width cannot overflow needs no scan.)
                let may_overflow = (vocab as u64) < (1u64 << (8 * width));
                if let Some(max) = may_overflow
                    .then(|| bin.max_id(width))
                    .flatten()
                    .filter(|&m| m as usize >= vocab)
                {
                    return Err(Error::invalid(format!(
                        "{}: holds token id {max}, but {} gives tokenizer.vocab_size {vocab}; \
                         the cache is damaged or its manifest edited, re-run mixopt prepare",
                        path.display(),
                        dir.join(MANIFEST_FILE).display()
                    )));
                }
                out.push(bin);
            }
        }
        let [train, val, test] = bins;
        let names = |role: Option<Role>| {
            manifest
                .domains
                .iter()
                .filter(|d| role.is_none_or(|r| d.role == r))
                .map(|d| d.name.clone())
                .collect()
        };
        Ok(TokenCache {
            dir: dir.to_path_buf(),
            domains: names(Some(Role::Train)),
            eval_domains: names(None),
            fingerprint: content_fingerprint(&manifest),
            manifest,
            train,
            val,
            test,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Training domains in manifest order: what a mixture weighs; indexes for `train`.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Every evaluated domain: the training domains, then evaluation-only
    /// ones; indexes for `val`, `test` and `held_out`, and the order of a
    /// proxy's losses.
    pub fn eval_domains(&self) -> &[String] {
        &self.eval_domains
    }

    /// Number of token ids including the separator.
    pub fn vocab_size(&self) -> usize {
        self.manifest.tokenizer.vocab_size
    }

    pub fn separator_id(&self) -> u32 {
        self.manifest.tokenizer.separator_id
    }

    /// Panics when `domain >= domains().len()`.
    pub fn train(&self, domain: usize) -> TokenView<'_> {
        self.train[domain].view(self.manifest.token_width_bytes)
    }

    /// Panics when `domain >= eval_domains().len()`.
    pub fn val(&self, domain: usize) -> TokenView<'_> {
        self.held_out(Split::Val, domain)
    }

    /// Panics when `domain >= eval_domains().len()`.
    pub fn held_out(&self, split: Split, domain: usize) -> TokenView<'_> {
        let bins = match split {
            Split::Val => &self.val,
            Split::Test => &self.test,
        };
        bins[domain].view(self.manifest.token_width_bytes)
    }

    /// Training tokens of each training domain.
    pub fn n_train_tokens(&self) -> Vec<u64> {
        self.manifest
            .domains
            .iter()
            .filter(|d| d.role == Role::Train)
            .map(|d| d.train_tokens)
            .collect()
    }

    /// The mixture in which each domain weighs its share of training tokens.
    pub fn natural_mixture(&self) -> Result<Mixture> {
        let scores: Vec<f64> = self.n_train_tokens().iter().map(|&n| n as f64).collect();
        Mixture::from_scores(self.domains.clone(), &scores)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Hex digest identifying the cache contents: equal for two caches with the
    /// same bins, whatever their paths or file times.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// Streams token ids to a bin file (little-endian, fixed width), optionally
/// stopping after `limit` tokens (later writes are counted but dropped).
pub struct TokenWriter {
    path: PathBuf,
    out: BufWriter<File>,
    width: usize,
    written: u64,
    offered: u64,
    limit: u64,
}

impl TokenWriter {
    pub fn create(path: &Path, width: usize, limit: Option<u64>) -> Result<TokenWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let file = File::create(path).at(path)?;
        Ok(TokenWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            width,
            written: 0,
            offered: 0,
            limit: limit.unwrap_or(u64::MAX),
        })
    }

    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        self.offered += ids.len() as u64;
        let room = self.limit.saturating_sub(self.written);
        let take = ids.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        for &id in &ids[..take] {
            let r = if self.width == 2 {
                let id = u16::try_from(id).map_err(|_| {
                    Error::invalid(format!(
                        "{}: token id {id} does not fit 2-byte tokens",
                        self.path.display()
                    ))
                })?;
                self.out.write_all(&id.to_le_bytes())
            } else {
                self.out.write_all(&id.to_le_bytes())
            };
            r.at(&self.path)?;
        }
        self.written += take as u64;
        Ok(())
    }

    /// Append ids already encoded at this writer's width (little-endian bytes),
    /// e.g. copied from another bin.
    pub fn write_encoded(&mut self, bytes: &[u8]) -> Result<()> {
        let n = (bytes.len() / self.width) as u64;
        self.offered += n;
        let take = n.min(self.limit.saturating_sub(self.written));
        let n_bytes = usize::try_from(take).unwrap_or(usize::MAX) * self.width;
        self.out.write_all(&bytes[..n_bytes]).at(&self.path)?;
        self.written += take;
        Ok(())
    }

    /// Tokens written (after the limit).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Tokens offered (before the limit).
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Flush and sync; returns the number of tokens written.
    pub fn finish(self) -> Result<u64> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, train: u64, val: u64) -> DomainEntry {
        DomainEntry {
            name: name.into(),
            role: Role::Train,
            split: "seeded".into(),
            sources: vec![],
            train_file: format!("{name}.train.bin"),
            val_file: format!("{name}.val.bin"),
            test_file: format!("{name}.test.bin"),
            train_docs: 1,
            val_docs: 1,
            test_docs: 0,
            train_tokens: train,
            val_tokens: val,
            test_tokens: 0,
            val_tokens_uncapped: val,
            test_tokens_uncapped: 0,
        }
    }

    fn manifest(width: usize, domains: Vec<DomainEntry>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            mixopt_version: crate::VERSION.into(),
            tokenizer: TokenizerInfo {
                kind: "bytes".into(),
                path: None,
                sha256: None,
                vocab_size: if width == 2 { 257 } else { 70_000 },
                separator_id: if width == 2 { 256 } else { 69_999 },
            },
            token_width_bytes: width,
            text_field: "text".into(),
            val_fraction: 0.05,
            test_fraction: 0.0,
            seed: 0,
            max_val_tokens: 100,
            inputs_fingerprint: "x".into(),
            domains,
        }
    }

    fn write_bin(path: &Path, width: usize, ids: &[u32]) {
        let mut w = TokenWriter::create(path, width, None).unwrap();
        w.write(ids).unwrap();
        assert_eq!(w.finish().unwrap(), ids.len() as u64);
    }

    #[test]
    fn round_trip_u16_and_u32() {
        for width in [2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let big = if width == 2 { 256 } else { 69_999 };
            write_bin(&d.join("a.train.bin"), width, &[1, 2, big, 3, big]);
            write_bin(&d.join("a.val.bin"), width, &[7, big]);
            write_bin(&d.join("b.train.bin"), width, &[5, 5, 5, big, 9, 9, 9, big]);
            write_bin(&d.join("b.val.bin"), width, &[]);
            write_bin(&d.join("a.test.bin"), width, &[]);
            write_bin(&d.join("b.test.bin"), width, &[]);
            let m = manifest(width, vec![entry("a", 5, 2), entry("b", 8, 0)]);
            crate::mixture::write_json_atomic(&d.join(MANIFEST_FILE), &m).unwrap();

            let cache = TokenCache::open(d).unwrap();
            assert_eq!(cache.domains(), ["a", "b"]);
            assert_eq!(cache.separator_id(), big);
            assert_eq!(cache.n_train_tokens(), [5, 8]);
            let t = cache.train(0);
            assert_eq!((t.len(), t.get(2)), (5, big));
            let mut out = [0u32; 3];
            cache.train(1).copy_to(3, &mut out);
            assert_eq!(out, [big, 9, 9]);
            assert!(cache.val(1).is_empty());
            assert_eq!(cache.val(0).get(0), 7);
            let nat = cache.natural_mixture().unwrap();
            assert!((nat.weights()[0] - 5.0 / 13.0).abs() < 1e-12);
            assert_eq!(cache.manifest(), &m);
            assert_eq!(cache.fingerprint().len(), 64);
        }
    }

    #[test]
    fn damaged_and_missing_caches_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = TokenCache::open(d).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("mixopt prepare"),
            "{err}"
        );

        write_bin(&d.join("a.train.bin"), 2, &[1, 2, 256]);
        write_bin(&d.join("a.val.bin"), 2, &[1, 256]);
        write_bin(&d.join("a.test.bin"), 2, &[]);
        let m = manifest(2, vec![entry("a", 4, 2)]);
        crate::mixture::write_json_atomic(&d.join(MANIFEST_FILE), &m).unwrap();
        let err = TokenCache::open(d).unwrap_err().to_string();
        assert!(err.contains("a.train.bin: 6 bytes"), "{err}");

        std::fs::write(d.join(MANIFEST_FILE), "{\"format_version\": 1").unwrap();
        let err = TokenCache::open(d).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }

    #[test]
    fn writer_caps_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.bin");
        let mut w = TokenWriter::create(&p, 2, Some(3)).unwrap();
        w.write(&[1, 2]).unwrap();
        w.write(&[3, 4, 5]).unwrap();
        assert_eq!((w.written(), w.offered()), (3, 5));
        w.finish().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), [1, 0, 2, 0, 3, 0]);
        let mut w = TokenWriter::create(&p, 2, None).unwrap();
        assert!(w.write(&[70_000]).is_err());
    }
}
