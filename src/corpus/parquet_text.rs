//! The documents of a Parquet corpus shard: one string column, read as arrow
//! record batches (parquet's arrow reader, projected to that one column, so
//! other columns are never decoded).
//!
//! The column is named by its top-level name or, for a field inside a
//! struct, by its dotted path (`meta.text`); it must hold strings (Parquet
//! BYTE_ARRAY) and not be a list. Nulls and empty strings are skipped.

use crate::error::{Error, IoContext, Result};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::basic::Type as PhysicalType;
use std::fs::File;
use std::path::Path;

/// Rows per record batch.
const BATCH_ROWS: usize = 1024;

/// Call `emit` with every non-empty document of `column`; returns how many.
pub(crate) fn read_text_column(
    path: &Path,
    column: &str,
    emit: &mut dyn FnMut(String) -> Result<()>,
) -> Result<usize> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::parse(path, 0, format!("{what}: {e}"));
    let file = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad("not a readable parquet file", &e))?;
    let schema = builder.parquet_schema();
    let index = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == column)
        .ok_or_else(|| {
            let names: Vec<String> = (0..schema.num_columns())
                .map(|i| schema.column(i).path().string())
                .collect();
            Error::parse(
                path,
                0,
                format!(
                    "no column {column:?} (columns: {}; use --text-field to pick one)",
                    names.join(", ")
                ),
            )
        })?;
    let descr = schema.column(index);
    if descr.physical_type() != PhysicalType::BYTE_ARRAY {
        return Err(Error::parse(
            path,
            0,
            format!(
                "column {column:?} holds {}, not strings",
                descr.physical_type()
            ),
        ));
    }
    if descr.max_rep_level() > 0 {
        return Err(Error::parse(
            path,
            0,
            format!("column {column:?} is a list, not one string per row"),
        ));
    }
    let mask = ProjectionMask::leaves(schema, [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(&format!("reading column {column:?}"), &e))?;
    let (mut n_docs, mut n_values) = (0usize, 0usize);
    for batch in reader {
        let batch = batch.map_err(|e| bad(&format!("reading column {column:?}"), &e))?;
        // The projected batch holds the path from the top-level field down
        // to the leaf: step into each struct.
        let mut array: ArrayRef = batch.column(0).clone();
        let mut valid: Vec<bool> = (0..array.len()).map(|i| array.is_valid(i)).collect();
        for name in column.split('.').skip(1) {
            let child = array
                .as_struct_opt()
                .and_then(|s| s.column_by_name(name))
                .cloned()
                .ok_or_else(|| {
                    Error::parse(path, 0, format!("column {column:?}: no field {name:?}"))
                })?;
            for (i, v) in valid.iter_mut().enumerate() {
                *v &= child.is_valid(i);
            }
            array = child;
        }
        let values: Vec<&[u8]> = match array.data_type() {
            DataType::Utf8 => {
                let s = array.as_string::<i32>();
                (0..s.len()).map(|i| s.value(i).as_bytes()).collect()
            }
            DataType::LargeUtf8 => {
                let s = array.as_string::<i64>();
                (0..s.len()).map(|i| s.value(i).as_bytes()).collect()
            }
            DataType::Binary => {
                let b = array.as_binary::<i32>();
                (0..b.len()).map(|i| b.value(i)).collect()
            }
            DataType::LargeBinary => {
                let b = array.as_binary::<i64>();
                (0..b.len()).map(|i| b.value(i)).collect()
            }
            other => {
                return Err(Error::parse(
                    path,
                    0,
                    format!("column {column:?} is read as {other}, not strings"),
                ))
            }
        };
        for (value, _) in values.into_iter().zip(&valid).filter(|(_, ok)| **ok) {
            n_values += 1;
            let text = std::str::from_utf8(value).map_err(|_| {
                Error::parse(
                    path,
                    0,
                    format!("column {column:?}, value {n_values}: not valid UTF-8"),
                )
            })?;
            if !text.is_empty() {
                emit(text.to_string())?;
                n_docs += 1;
            }
        }
    }
    Ok(n_docs)
}
