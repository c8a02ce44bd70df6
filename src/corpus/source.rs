//! Corpus stage, input side: where a domain's documents come from and how they
//! are read. A domain path (file, directory or glob) resolves to a list of
//! source files; each file streams its documents, one `String` at a time, to a
//! callback, so a domain never has to fit in memory.
//!
//! Formats, chosen by extension: `.txt` (the whole file is one document),
//! `.jsonl` (one JSON object per line, the text in a named string field), and
//! `.parquet` (a string column). `.txt` and `.jsonl` may be compressed with gzip
//! (`.gz`) or zstd (`.zst`). Empty documents are skipped everywhere, as are blank
//! lines in jsonl.

use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The extensions `resolve` accepts, for error messages.
pub const SUPPORTED: &str =
    ".txt, .jsonl, .parquet (.txt and .jsonl also gzip .gz or zstd .zst compressed)";

/// Base names a directory may use to give its own train/validation split.
const SPLIT_STEMS: [&str; 2] = ["train", "val"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Txt,
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How to read one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub kind: Kind,
    pub compression: Compression,
}

impl Format {
    /// The format a file name says it has; `None` for anything unsupported.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let (rest, compression) = if let Some(r) = name.strip_suffix(".gz") {
            (r, Compression::Gzip)
        } else if let Some(r) = name.strip_suffix(".zst") {
            (r, Compression::Zstd)
        } else {
            (name.as_str(), Compression::None)
        };
        let kind = if rest.ends_with(".txt") {
            Kind::Txt
        } else if rest.ends_with(".jsonl") {
            Kind::Jsonl
        } else if rest.ends_with(".parquet") && compression == Compression::None {
            Kind::Parquet
        } else {
            return None;
        };
        Some(Format { kind, compression })
    }
}

/// The files of one domain: either one pool that prepare splits by seed, or a
/// split the data already carries (a directory holding train and val files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainFiles {
    Pooled(Vec<PathBuf>),
    Presplit {
        train: Vec<PathBuf>,
        val: Vec<PathBuf>,
    },
}

/// Resolve a domain path: a file, a glob, or a directory. A directory whose
/// top level holds both train and val files (`train.jsonl`, `train-00001.jsonl.zst`,
/// `val.jsonl`, …) gives exactly those as a ready split; any other directory
/// gives every supported file below it, sorted. `domain` only names the domain
/// in error messages.
pub fn resolve(domain: &str, spec: &Path) -> Result<DomainFiles> {
    let text = spec.to_string_lossy();
    if !spec.exists() && text.contains(['*', '?', '[']) {
        let files = resolve_glob(domain, &text)?;
        return Ok(DomainFiles::Pooled(files));
    }
    let meta = std::fs::metadata(spec).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "domain {domain:?}: {} does not exist",
                spec.display()
            ))
        } else {
            Error::io(spec, e)
        }
    })?;
    if meta.is_dir() {
        if let Some(split) = presplit_in(spec) {
            return Ok(split);
        }
        // Validation files without training files: pooling them would train
        // on the held-out text (and the split would pretend otherwise).
        if let Some(val) = val_only_in(spec) {
            return Err(Error::invalid(format!(
                "domain {domain:?}: {} has validation files ({}) but no train files; \
                 pooling them would train on validation data. Add train.* files beside them, \
                 or give the files to split explicitly (a file or glob, e.g. --domain {domain}='{}/*.jsonl')",
                spec.display(),
                val.iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.display()
            )));
        }
        let mut files = Vec::new();
        walk_dir(spec, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid(format!(
                "domain {domain:?}: directory {} holds no {SUPPORTED} files",
                spec.display()
            )));
        }
        Ok(DomainFiles::Pooled(files))
    } else {
        check_supported(spec)?;
        Ok(DomainFiles::Pooled(vec![spec.to_path_buf()]))
    }
}

fn resolve_glob(domain: &str, pattern: &str) -> Result<Vec<PathBuf>> {
    // Shell semantics: `*` does not match a leading dot.
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::new()
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| Error::invalid(format!("domain {domain:?}: bad glob {pattern:?}: {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let p = e.path().to_path_buf();
            Error::io(p, std::io::Error::from(e))
        })?;
        if path.is_file() {
            check_supported(&path)?;
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(format!(
            "domain {domain:?}: glob {pattern:?} matched no files"
        )));
    }
    files.sort();
    Ok(files)
}

fn check_supported(path: &Path) -> Result<()> {
    match Format::of(path) {
        Some(_) => Ok(()),
        None => Err(Error::invalid(format!(
            "{}: unsupported file type (expected {SUPPORTED})",
            path.display()
        ))),
    }
}

/// The split a file name claims: `train` for `train.jsonl`, `train-00001.jsonl.zst`
/// or `train_0.parquet`, likewise `val`; `None` for any other name.
fn split_role(file_name: &str) -> Option<&'static str> {
    let stem = file_name.split('.').next()?;
    SPLIT_STEMS.into_iter().find(|role| {
        stem.strip_prefix(role)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_']))
    })
}

/// The supported files of `dir` (not below it) named as train and as val
/// shards, each sorted.
fn shards_in(dir: &Path) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for path in std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
    {
        if !path.is_file() || Format::of(&path).is_none() {
            continue;
        }
        match path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(split_role)
        {
            Some("train") => train.push(path),
            Some(_) => val.push(path),
            None => {}
        }
    }
    train.sort();
    val.sort();
    Some((train, val))
}

/// The val shards of `dir`, when there are such files but no train shards.
fn val_only_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let (train, val) = shards_in(dir)?;
    (train.is_empty() && !val.is_empty()).then_some(val)
}

/// The train and val shards of `dir`, when there are both (any supported extension).
fn presplit_in(dir: &Path) -> Option<DomainFiles> {
    let (train, val) = shards_in(dir)?;
    (!train.is_empty() && !val.is_empty()).then_some(DomainFiles::Presplit { train, val })
}

/// Every supported, non-hidden file below `dir` (other files are ignored, so a
/// README or a manifest beside the data does no harm).
fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk_dir(&path, out)?;
        } else if Format::of(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Stream the documents of one file to `emit`, in file order. Returns how many
/// documents were emitted. An error from `emit` stops reading and is returned.
pub fn read_documents(
    path: &Path,
    text_field: &str,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<usize> {
    read_documents_counting(path, text_field, &|_| {}, emit)
}

/// [`read_documents`], also reporting progress: `on_read(n)` after every `n`
/// bytes read from the file on disk (before decompression), so the calls sum to
/// the file size once it is read to the end.
pub fn read_documents_counting(
    path: &Path,
    text_field: &str,
    on_read: &dyn Fn(u64),
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<usize> {
    let format = Format::of(path).ok_or_else(|| {
        Error::invalid(format!(
            "{}: unsupported file type (expected {SUPPORTED})",
            path.display()
        ))
    })?;
    match format.kind {
        Kind::Parquet => {
            let n = super::parquet_text::read_text_column(path, text_field, emit)?;
            on_read(std::fs::metadata(path).at(path)?.len());
            Ok(n)
        }
        Kind::Txt => {
            let mut bytes = Vec::new();
            open_decoded(path, format.compression, on_read)?
                .read_to_end(&mut bytes)
                .at(path)?;
            let text = String::from_utf8(bytes).map_err(|e| {
                Error::parse(
                    path,
                    0,
                    format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
                )
            })?;
            // A byte-order mark is an encoding marker, not text to train on.
            let text = match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_string(),
                None => text,
            };
            if text.is_empty() {
                return Ok(0);
            }
            emit(text)?;
            Ok(1)
        }
        Kind::Jsonl => {
            let decoded = open_decoded(path, format.compression, on_read)?;
            read_jsonl(
                path,
                BufReader::with_capacity(1 << 20, decoded),
                text_field,
                emit,
            )
        }
    }
}

/// A reader that reports how many bytes pass through it.
struct Counting<'a, R> {
    inner: R,
    on_read: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

fn open_decoded<'a>(
    path: &Path,
    compression: Compression,
    on_read: &'a dyn Fn(u64),
) -> Result<Box<dyn Read + 'a>> {
    let file = Counting {
        inner: File::open(path).at(path)?,
        on_read,
    };
    Ok(match compression {
        Compression::None => Box::new(file),
        // Multi-member gzip (concatenated .gz files) is common for shards.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).at(path)?),
    })
}

/// One JSON object per line; the document is the string in `text_field`.
/// Errors name `path:line` (1-based) and the field.
pub fn read_jsonl(
    path: &Path,
    mut reader: impl BufRead,
    text_field: &str,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<usize> {
    let mut line = Vec::new();
    let mut line_no = 0usize;
    let mut n_docs = 0usize;
    loop {
        line.clear();
        line_no += 1;
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::parse(path, line_no, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        // A UTF-8 byte-order mark opening the file is not part of the JSON.
        let body = match line_no {
            1 => line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line),
            _ => &line[..],
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::parse(path, line_no, format!("malformed JSON: {e}")))?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(Error::parse(
                path,
                line_no,
                format!("expected a JSON object, found {}", json_type(&value)),
            ));
        };
        let text = match object.remove(text_field) {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "field {text_field:?} is {}, not a string",
                        json_type(&other)
                    ),
                ))
            }
            None => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!("no field {text_field:?} (use --text-field to pick another)"),
                ))
            }
        };
        if text.is_empty() {
            continue;
        }
        emit(text)?;
        n_docs += 1;
    }
    Ok(n_docs)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(path: &Path, field: &str) -> Result<Vec<String>> {
        let mut docs = Vec::new();
        read_documents(path, field, &mut |t| {
            docs.push(t);
            Ok(())
        })?;
        Ok(docs)
    }

    #[test]
    fn formats_by_extension() {
        let f = |s: &str| Format::of(Path::new(s));
        assert_eq!(f("a.txt").map(|f| f.kind), Some(Kind::Txt));
        assert_eq!(
            f("a.JSONL.gz"),
            Some(Format {
                kind: Kind::Jsonl,
                compression: Compression::Gzip
            })
        );
        assert_eq!(
            f("a.jsonl.zst").map(|f| f.compression),
            Some(Compression::Zstd)
        );
        assert_eq!(f("a.parquet").map(|f| f.kind), Some(Kind::Parquet));
        assert_eq!(f("a.parquet.gz"), None);
        assert_eq!(f("a.csv"), None);
        assert_eq!(f("a.gz"), None);
    }

    #[test]
    fn jsonl_documents_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"text\":\"a\"}\n\n{\"text\":\"\",\"x\":1}\n{\"body\":\"b\",\"text\":\"c\"}\n",
        )
        .unwrap();
        assert_eq!(collect(&p, "text").unwrap(), ["a", "c"]);

        let cases = [
            ("{\"text\":\"a\"}\n{\"text\":\n", ":2: malformed JSON"),
            (
                "{\"text\":\"a\"}\n{\"body\":\"x\"}\n",
                ":2: no field \"text\"",
            ),
            (
                "{\"text\":5}\n",
                ":1: field \"text\" is a number, not a string",
            ),
            ("[1,2]\n", ":1: expected a JSON object, found an array"),
        ];
        for (content, expected) in cases {
            std::fs::write(&p, content).unwrap();
            let err = collect(&p, "text").unwrap_err().to_string();
            assert!(err.contains("d.jsonl") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn reads_gzip_and_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let content = "{\"text\":\"hello\"}\n{\"text\":\"world\"}\n";

        let gz = dir.path().join("d.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(content.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(collect(&gz, "text").unwrap(), ["hello", "world"]);

        let zst = dir.path().join("d.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(content.as_bytes(), 3).unwrap()).unwrap();
        assert_eq!(collect(&zst, "text").unwrap(), ["hello", "world"]);

        let txt = dir.path().join("d.txt.zst");
        std::fs::write(&txt, zstd::encode_all("one doc".as_bytes(), 3).unwrap()).unwrap();
        assert_eq!(collect(&txt, "text").unwrap(), ["one doc"]);

        // Corrupt compressed data is an error naming the file, not a panic.
        let bad = dir.path().join("bad.jsonl.gz");
        std::fs::write(&bad, b"not gzip at all").unwrap();
        let err = collect(&bad, "text").unwrap_err().to_string();
        assert!(err.contains("bad.jsonl.gz"), "{err}");
    }

    fn write_parquet(path: &Path, texts: &[&str]) {
        use parquet::data_type::{ByteArray, ByteArrayType};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use std::sync::Arc;
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message s { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT32 n; }",
            )
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut writer =
            SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(*t)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let ns: Vec<i32> = (0..texts.len() as i32).collect();
        col.typed::<parquet::data_type::Int32Type>()
            .write_batch(&ns, None, None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn reads_parquet_and_names_missing_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.parquet");
        write_parquet(&p, &["first doc", "", "second doc"]);
        assert_eq!(collect(&p, "text").unwrap(), ["first doc", "second doc"]);

        let err = collect(&p, "body").unwrap_err().to_string();
        assert!(
            err.contains("d.parquet") && err.contains("no column \"body\""),
            "{err}"
        );
        let err = collect(&p, "n").unwrap_err().to_string();
        assert!(err.contains("column \"n\" holds INT32"), "{err}");

        let corrupt = dir.path().join("c.parquet");
        std::fs::write(&corrupt, b"PAR1 this is not parquet").unwrap();
        let err = collect(&corrupt, "text").unwrap_err().to_string();
        assert!(
            err.contains("c.parquet") && err.contains("parquet"),
            "{err}"
        );
    }

    #[test]
    fn resolves_dirs_globs_and_presplit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("b.txt"), "b").unwrap();
        std::fs::write(d.join("sub/a.jsonl"), "").unwrap();
        std::fs::write(d.join("README.md"), "ignored").unwrap();
        std::fs::write(d.join(".hidden.txt"), "ignored").unwrap();
        let DomainFiles::Pooled(files) = resolve("x", d).unwrap() else {
            panic!("expected pooled files")
        };
        assert_eq!(files, [d.join("b.txt"), d.join("sub/a.jsonl")]);

        let pattern = d.join("*.txt");
        assert_eq!(
            resolve("x", &pattern).unwrap(),
            DomainFiles::Pooled(vec![d.join("b.txt")])
        );
        let err = resolve("x", &d.join("*.nothing")).unwrap_err().to_string();
        assert!(err.contains("matched no files"), "{err}");
        let err = resolve("x", &d.join("README.md")).unwrap_err().to_string();
        assert!(err.contains("README.md: unsupported file type"), "{err}");
        let err = resolve("x", &d.join("missing")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        assert_eq!(split_role("train.jsonl"), Some("train"));
        assert_eq!(split_role("val-00001.jsonl.zst"), Some("val"));
        assert_eq!(split_role("train_0.parquet"), Some("train"));
        assert_eq!(split_role("trainee.jsonl"), None);
        assert_eq!(split_role("validation.jsonl"), None);
        std::fs::write(d.join("sub/train.jsonl"), "").unwrap();
        std::fs::write(d.join("sub/val.jsonl"), "").unwrap();
        assert_eq!(
            resolve("x", &d.join("sub")).unwrap(),
            DomainFiles::Presplit {
                train: vec![d.join("sub/train.jsonl")],
                val: vec![d.join("sub/val.jsonl")],
            }
        );
    }
}
