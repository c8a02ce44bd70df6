//! Corpus stage, reading: stream one source file's documents, one `String` at
//! a time, to a callback, so a domain never has to fit in memory. Empty
//! documents are skipped everywhere, as are blank lines in jsonl; errors name
//! the file and line.

use super::source::{Compression, Format, Kind, SUPPORTED};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

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
}
