//! Columnar tables in and out: a runs table, a mixtures table, a metrics
//! table or predictions as Parquet (`.parquet`) or Arrow IPC (`.arrow`,
//! `.ipc`, `.feather`), through arrow record batches.
//!
//! In: the file is read batch by batch into the same `Table` a CSV becomes,
//! every cell as text (floats in their shortest round-trip form, so numbers
//! parse back to the same f64; nulls empty), so every check and error message
//! downstream is the one CSV input gets. Row `r` (0-based) of the file is
//! reported as "line" `r + 2`, the line it would have in the CSV that pandas
//! writes from the same frame (header on line 1). pandas stores a
//! non-default index as a column `__index_level_0__`; like the unnamed first
//! column of a pandas CSV it is dropped (`Table::offset`).
//!
//! Out: a CSV-shaped table (header + text cells) is written with typed
//! columns: Int64 where every cell is an integer that prints back the same,
//! Float64 where every cell is a number that prints back the same, else
//! Utf8; empty cells are nulls. Reading such a file gives back the cells
//! written, so `merge --out runs.parquet` then `fit --runs runs.parquet`
//! fits exactly what the CSV would give.

use super::Table;
use crate::error::{Error, IoContext, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// pandas' name for an index stored as a column.
const PANDAS_INDEX: &str = "__index_level_0__";

/// The columnar formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columnar {
    Parquet,
    ArrowIpc,
}

impl Columnar {
    pub fn of(path: &Path) -> Option<Columnar> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Some(Columnar::Parquet),
            "arrow" | "ipc" | "feather" => Some(Columnar::ArrowIpc),
            _ => None,
        }
    }
}

/// Whether `path` names a columnar table (Parquet or Arrow IPC, by extension).
pub(crate) fn is_parquet(path: &Path) -> bool {
    Columnar::of(path).is_some()
}

/// Every record batch of a Parquet or Arrow IPC file.
fn read_batches(path: &Path) -> Result<(Arc<Schema>, Vec<RecordBatch>)> {
    let file = std::fs::File::open(path).at(path)?;
    match Columnar::of(path) {
        Some(Columnar::ArrowIpc) => {
            let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| {
                Error::parse(path, 0, format!("not a readable Arrow IPC file: {e}"))
            })?;
            let schema = reader.schema();
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::parse(path, 0, format!("reading record batches: {e}")))?;
            Ok((schema, batches))
        }
        _ => {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| {
                        Error::parse(path, 0, format!("not a readable Parquet file: {e}"))
                    })?;
            let schema = builder.schema().clone();
            let reader = builder
                .build()
                .map_err(|e| Error::parse(path, 0, format!("reading rows: {e}")))?;
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::parse(path, 0, format!("reading rows: {e}")))?;
            Ok((schema, batches))
        }
    }
}

/// Read a whole Parquet or Arrow IPC file into a `Table` (cells as text;
/// nulls empty).
pub(crate) fn read(path: &Path) -> Result<Table> {
    let (schema, batches) = read_batches(path)?;
    let mut header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let drop = header.first().is_some_and(|h| h == PANDAS_INDEX);
    let mut rows = Vec::new();
    for batch in &batches {
        let columns: Vec<Vec<String>> = batch
            .columns()
            .iter()
            .skip(usize::from(drop))
            .map(|c| cells(c.as_ref()))
            .collect::<Result<_>>()
            .map_err(|e| Error::parse(path, rows.len() + 2, e.to_string()))?;
        for r in 0..batch.num_rows() {
            let line = rows.len() + 2;
            rows.push((line, columns.iter().map(|c| c[r].clone()).collect()));
        }
    }
    if drop {
        header.remove(0);
    }
    if header.is_empty() {
        return Err(Error::parse(path, 0, "no columns"));
    }
    Ok(Table {
        header,
        rows,
        offset: usize::from(drop),
    })
}

/// A column's values as the text a CSV cell would hold (shortest round-trip
/// form for floats; nulls empty).
fn cells(a: &dyn Array) -> Result<Vec<String>> {
    fn text<T: ToString>(a: &dyn Array, value: impl Fn(usize) -> T) -> Vec<String> {
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    String::new()
                } else {
                    value(i).to_string()
                }
            })
            .collect()
    }
    Ok(match a.data_type() {
        DataType::Null => vec![String::new(); a.len()],
        DataType::Boolean => text(a, |i| a.as_boolean().value(i)),
        DataType::Int8 => text(a, |i| a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => text(a, |i| a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => text(a, |i| a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => text(a, |i| a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => text(a, |i| a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => text(a, |i| a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => text(a, |i| a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => text(a, |i| a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => text(a, |i| a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => text(a, |i| a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => text(a, |i| a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => text(a, |i| a.as_string::<i64>().value(i)),
        DataType::Utf8View => text(a, |i| a.as_string_view().value(i)),
        _ => {
            // Anything else (dates, decimals, nested) as arrow prints it.
            let options = arrow_cast::display::FormatOptions::default();
            let f = arrow_cast::display::ArrayFormatter::try_new(a, &options)
                .map_err(|e| Error::invalid(format!("formatting cells: {e}")))?;
            text(a, |i| f.value(i))
        }
    })
}

/// How a column of text cells is stored.
fn column_type(cells: &[&str]) -> DataType {
    let present = || cells.iter().filter(|c| !c.is_empty());
    if present().all(|c| c.parse::<i64>().is_ok_and(|v| v.to_string() == *c)) {
        DataType::Int64
    } else if present().all(|c| c.parse::<f64>().is_ok_and(|v| v.to_string() == *c)) {
        DataType::Float64
    } else {
        DataType::Utf8
    }
}

fn column_array(cells: &[&str], ty: &DataType) -> ArrayRef {
    fn some<'a>(c: &&'a str) -> Option<&'a str> {
        (!c.is_empty()).then_some(*c)
    }
    match ty {
        DataType::Int64 => Arc::new(
            cells
                .iter()
                .map(|c| some(c).and_then(|c| c.parse::<i64>().ok()))
                .collect::<Int64Array>(),
        ),
        DataType::Float64 => Arc::new(
            cells
                .iter()
                .map(|c| some(c).and_then(|c| c.parse::<f64>().ok()))
                .collect::<Float64Array>(),
        ),
        _ => Arc::new(cells.iter().map(some).collect::<StringArray>()),
    }
}

/// One record batch from a CSV-shaped table (types per `column_type`).
fn to_batch(header: &[String], rows: &[Vec<String>]) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(header.len());
    let mut arrays = Vec::with_capacity(header.len());
    for (c, name) in header.iter().enumerate() {
        let col: Vec<&str> = rows
            .iter()
            .map(|r| r.get(c).map_or("", String::as_str))
            .collect();
        let ty = column_type(&col);
        arrays.push(column_array(&col, &ty));
        fields.push(Field::new(name, ty, true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::invalid(format!("building a record batch: {e}")))
}

/// Write a CSV-shaped table (header + text cells) to `path` as Parquet or
/// Arrow IPC (by its extension), atomically.
pub(crate) fn write(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<()> {
    let batch = to_batch(header, rows)?;
    let bad = |e: &dyn std::fmt::Display| Error::invalid(format!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    match Columnar::of(path) {
        Some(Columnar::Parquet) => {
            use parquet::basic::{Compression, ZstdLevel};
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
                    .map_err(|e| bad(&e))?;
            w.write(&batch).map_err(|e| bad(&e))?;
            w.close().map_err(|e| bad(&e))?;
        }
        Some(Columnar::ArrowIpc) => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(&mut bytes, &batch.schema())
                .map_err(|e| bad(&e))?;
            w.write(&batch).map_err(|e| bad(&e))?;
            w.finish().map_err(|e| bad(&e))?;
        }
        None => {
            return Err(Error::invalid(format!(
                "{}: not a columnar file name (.parquet, .arrow, .ipc, .feather)",
                path.display()
            )))
        }
    }
    super::fsio::write_atomic(path, &bytes)
}

/// Write CSV bytes (a header line, then rows) to `path` as Parquet or Arrow IPC.
pub(crate) fn write_csv_bytes(path: &Path, csv_bytes: &[u8]) -> Result<()> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_bytes);
    let mut records = r.records();
    let header: Vec<String> = match records.next() {
        Some(h) => h
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect(),
        None => return Err(Error::invalid(format!("{}: no header", path.display()))),
    };
    let rows = records
        .map(|r| {
            r.map(|r| r.iter().map(str::to_string).collect::<Vec<_>>())
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    write(path, &header, &rows)
}

/// A columnar file as CSV bytes (header line, one line per row, `\n` ends),
/// for code that keeps a table's lines (`merge`).
pub(crate) fn to_csv_bytes(path: &Path) -> Result<Vec<u8>> {
    let t = read(path)?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::invalid(format!("{}: {e}", path.display()));
    w.write_record(&t.header).map_err(csv_err)?;
    for (_, row) in &t.rows {
        w.write_record(row).map_err(csv_err)?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Vec<String>, Vec<Vec<String>>) {
        let header = ["run_id", "seed", "w_web", "loss_web", "note"]
            .map(String::from)
            .to_vec();
        let rows = vec![
            ["run00001", "3", "0.1", "2.5", ""]
                .map(String::from)
                .to_vec(),
            ["run00002", "4", "0.30000000000000004", "1e-7", "a, b"]
                .map(String::from)
                .to_vec(),
            ["0007", "", "1", "3", "x"].map(String::from).to_vec(),
        ];
        (header, rows)
    }

    #[test]
    fn parquet_and_ipc_round_trip_cells_and_types() {
        let dir = tempfile::tempdir().unwrap();
        let (header, rows) = table();
        for name in ["t.parquet", "t.arrow"] {
            let p = dir.path().join(name);
            write(&p, &header, &rows).unwrap();
            let (schema, _) = read_batches(&p).unwrap();
            let types: Vec<DataType> = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            // "0007" keeps run_id text; "1e-7" prints back as 0.0000001, so
            // loss_web stays text too (what was written is what is read).
            assert_eq!(
                types,
                [
                    DataType::Utf8,
                    DataType::Int64,
                    DataType::Float64,
                    DataType::Utf8,
                    DataType::Utf8
                ],
                "{name}"
            );
            let t = read(&p).unwrap();
            assert_eq!(t.header, header);
            let back: Vec<Vec<String>> = t.rows.iter().map(|(_, r)| r.clone()).collect();
            assert_eq!(back, rows, "{name}");
            assert_eq!(t.rows[2].0, 4, "row 2 is CSV line 4");
            let csv = String::from_utf8(to_csv_bytes(&p).unwrap()).unwrap();
            assert!(
                csv.starts_with("run_id,seed,w_web,loss_web,note\nrun00001,3,0.1,2.5,\n"),
                "{csv}"
            );
        }
        let bad = dir.path().join("bad.arrow");
        std::fs::write(&bad, b"not arrow").unwrap();
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.arrow") && e.contains("Arrow IPC"), "{e}");
        assert!(write(&dir.path().join("t.csv"), &header, &rows).is_err());
    }
}
