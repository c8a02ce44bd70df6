//! Parquet tables in: a runs table, a mixtures table or a metrics table
//! written as Parquet (e.g. by pandas' `DataFrame.to_parquet`) is read into
//! the same `Table` a CSV becomes, every cell as text, so every check and
//! error message downstream is the one CSV input gets. Row `r` (0-based) of
//! the file is reported as "line" `r + 2`, the line it would have in the CSV
//! that pandas writes from the same frame (header on line 1).
//!
//! pandas stores a non-default index as a column `__index_level_0__`; like
//! the unnamed first column of a pandas CSV it is dropped (`Table::offset`).

use super::Table;
use crate::error::{Error, IoContext, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

/// pandas' name for an index stored as a column.
const PANDAS_INDEX: &str = "__index_level_0__";

/// Whether `path` names a Parquet file (by extension).
pub(crate) fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Read a whole Parquet file into a `Table` (cells as text; nulls empty).
pub(crate) fn read(path: &Path) -> Result<Table> {
    let file = std::fs::File::open(path).at(path)?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| Error::parse(path, 0, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let mut header: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let drop = header.first().is_some_and(|h| h == PANDAS_INDEX);
    let rows_iter = reader
        .get_row_iter(None)
        .map_err(|e| Error::parse(path, 0, format!("reading rows: {e}")))?;
    let mut rows = Vec::new();
    for (r, row) in rows_iter.enumerate() {
        let row = row.map_err(|e| Error::parse(path, r + 2, format!("reading row: {e}")))?;
        let mut cells: Vec<String> = row.get_column_iter().map(|(_, f)| cell(f)).collect();
        if drop {
            cells.remove(0);
        }
        rows.push((r + 2, cells));
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

/// A Parquet value as the text a CSV cell would hold (shortest round-trip
/// form for floats, so numbers parse back to the same f64).
fn cell(f: &Field) -> String {
    match f {
        Field::Null => String::new(),
        Field::Bool(b) => b.to_string(),
        Field::Byte(v) => v.to_string(),
        Field::Short(v) => v.to_string(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::UByte(v) => v.to_string(),
        Field::UShort(v) => v.to_string(),
        Field::UInt(v) => v.to_string(),
        Field::ULong(v) => v.to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        Field::Str(s) => s.clone(),
        other => other.to_string(),
    }
}
