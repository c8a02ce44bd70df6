//! The sidecar a sweep writes beside its runs table (`<runs>.meta.json`):
//! read back by `fit` (the prior, a mixture reuse) and `merge`.

use super::meta_paths;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The sidecar a sweep writes beside its runs table (`<runs>.meta.json`, see
/// `store::meta_paths`) as JSON, with the file it came from; None if absent.
pub fn read_sidecar(data: &Path) -> Result<Option<(std::path::PathBuf, serde_json::Value)>> {
    let Some(meta) = meta_paths(data).into_iter().find(|m| m.is_file()) else {
        return Ok(None);
    };
    let text = super::fsio::read_text(&meta)?;
    let value = serde_json::from_str(&text)
        .map_err(|e| Error::parse(&meta, e.line(), format!("not JSON: {e}")))?;
    Ok(Some((meta, value)))
}

/// The frozen part a sweep with `--reuse` records in its sidecar, if any.
pub fn read_sidecar_reuse(data: &Path) -> Result<Option<crate::mixture::reuse::Reuse>> {
    let Some((meta, value)) = read_sidecar(data)? else {
        return Ok(None);
    };
    match value.get("reuse") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(r) => serde_json::from_value(r.clone())
            .map(Some)
            .map_err(|e| Error::parse(&meta, 0, format!("\"reuse\": {e}"))),
    }
}

/// The `"prior": {domain: weight}` a sweep records in the sidecar of its runs
/// table, if there is one.
pub fn read_sidecar_prior(data: &Path) -> Result<Option<BTreeMap<String, f64>>> {
    let Some((meta, value)) = read_sidecar(data)? else {
        return Ok(None);
    };
    let Some(prior) = value.get("prior") else {
        return Ok(None);
    };
    let prior: BTreeMap<String, f64> = serde_json::from_value(prior.clone()).map_err(|e| {
        Error::parse(
            &meta,
            0,
            format!("\"prior\" must map domain to weight: {e}"),
        )
    })?;
    Ok(Some(prior))
}
