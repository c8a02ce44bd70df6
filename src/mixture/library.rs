//! Published mixtures, usable by name wherever a mixture is taken
//! (`--prior pile-doremi`, `train --mixture slimpajama-natural`, `report
//! --weights pile-regmix`, …). The weights files live in `mixtures/` (each
//! with its source in `provenance`) and are compiled into the binary, like
//! the proxy presets, so a name works from any directory.
//!
//! Names differ between tools (`Pile-CC`, `the_pile_pile_cc`, `pile_cc`):
//! `mixtures/aliases.toml` lists the other spellings of each published
//! domain, and a user's own table (`NAME@my_aliases.toml`) maps published
//! domains onto the user's domains — several onto one (summed) or onto ""
//! (left out, the rest renormalized). `resolve_for` does the mapping; a
//! published domain that maps to none of the user's domains is an error
//! naming it, never silently dropped.

use super::{Mixture, WeightsFile};
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Name → weights file text (`mixtures/NAME.json`).
const LIBRARY: &[(&str, &str)] = &[
    (
        "pile-natural",
        include_str!("../../mixtures/pile-natural.json"),
    ),
    (
        "pile-doremi",
        include_str!("../../mixtures/pile-doremi.json"),
    ),
    (
        "pile-regmix",
        include_str!("../../mixtures/pile-regmix.json"),
    ),
    (
        "redpajama-natural",
        include_str!("../../mixtures/redpajama-natural.json"),
    ),
    (
        "slimpajama-natural",
        include_str!("../../mixtures/slimpajama-natural.json"),
    ),
    (
        "dolma-v1-natural",
        include_str!("../../mixtures/dolma-v1-natural.json"),
    ),
];

/// `mixtures/aliases.toml`: published name → other spellings.
const ALIASES: &str = include_str!("../../mixtures/aliases.toml");

/// The names of the published mixtures.
pub fn names() -> Vec<&'static str> {
    LIBRARY.iter().map(|(n, _)| *n).collect()
}

/// The weights file of a published mixture (with its provenance).
pub fn file(name: &str) -> Option<WeightsFile> {
    let (_, text) = LIBRARY.iter().find(|(n, _)| *n == name)?;
    serde_json::from_str(text).ok()
}

/// A published mixture by name, over its published domain names.
pub fn get(name: &str) -> Option<Mixture> {
    let f = file(name)?;
    let weights: Vec<f64> = f.order.iter().map(|d| f.domains[d]).collect();
    // As published (rounded to 4 decimals, DoReMi's sum to 1.0001):
    // renormalized like any mixture.
    Mixture::new_in(f.order.clone(), weights, name).ok()
}

/// Lower-cased spelling → published name, from `mixtures/aliases.toml`.
fn shipped_aliases() -> BTreeMap<String, String> {
    let table: toml::Table = toml::from_str(ALIASES).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (canon, alts) in table {
        out.insert(canon.to_lowercase(), canon.clone());
        for a in alts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
        {
            out.insert(a.to_lowercase(), canon.clone());
        }
    }
    out
}

/// The published name a spelling stands for (itself if none).
fn canonical(name: &str, aliases: &BTreeMap<String, String>) -> String {
    aliases
        .get(&name.to_lowercase())
        .cloned()
        .unwrap_or_else(|| name.to_lowercase())
}

/// A user's alias table: published name → user domain ("" = leave out).
fn user_aliases(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        Error::parse(path, line, format!("not an alias table: {}", e.message()))
    })?;
    table
        .into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            other => Err(Error::parse(
                path,
                0,
                format!(
                    "{k:?}: expected a domain name (or \"\" to leave it out), got a {}",
                    other.type_str()
                ),
            )),
        })
        .collect()
}

/// `m` (published or any other names) as a mixture over `domains`: each of
/// its domains goes to the user domain of the same name, else to the one
/// the user's table names, else to the user domain that is another spelling
/// of it (shipped aliases, case ignored). Several may land on one domain
/// (summed); one mapped to "" is left out and the rest renormalized.
pub fn map_onto(
    m: &Mixture,
    domains: &[String],
    user: Option<&BTreeMap<String, String>>,
    what: &str,
) -> Result<Mixture> {
    let aliases = shipped_aliases();
    let mut weights = vec![0.0; domains.len()];
    let mut unmapped = Vec::new();
    for (d, w) in m.iter() {
        let target = if let Some(i) = domains.iter().position(|u| u == d) {
            Some(i)
        } else if let Some(u) = user.and_then(|t| t.get(d)) {
            if u.is_empty() {
                continue;
            }
            Some(domains.iter().position(|x| x == u).ok_or_else(|| {
                Error::invalid(format!(
                    "{what}: the alias table maps {d:?} to {u:?}, which is not a domain (domains: {})",
                    domains.join(", ")
                ))
            })?)
        } else {
            let c = canonical(d, &aliases);
            let hits: Vec<usize> = (0..domains.len())
                .filter(|&i| canonical(&domains[i], &aliases) == c)
                .collect();
            match hits.as_slice() {
                [i] => Some(*i),
                [] => None,
                many => {
                    return Err(Error::invalid(format!(
                        "{what}: {d:?} could be any of {}; say which in an alias table (NAME@aliases.toml)",
                        many.iter().map(|&i| domains[i].as_str()).collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        };
        match target {
            Some(i) => weights[i] += w,
            None => unmapped.push(d.to_string()),
        }
    }
    if !unmapped.is_empty() {
        return Err(Error::invalid(format!(
            "{what}: no domain for {} (domains: {}); map them in an alias table, \
             NAME@aliases.toml with lines like `published = \"yours\"` (or \"\" to leave one out)",
            unmapped.join(", "),
            domains.join(", ")
        )));
    }
    Mixture::from_scores(domains.to_vec(), &weights)
        .map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// A mixture argument over the given domains: a weights file, a published
/// mixture's name, a `a=0.5,b=0.5` spec, each optionally followed by
/// `@aliases.toml`; mapped onto `domains` (see `map_onto`).
pub fn resolve_for(arg: &str, domains: &[String]) -> Result<Mixture> {
    let (base, user) = match arg.rsplit_once('@') {
        Some((b, a)) if !Path::new(arg).is_file() && !b.is_empty() && a.ends_with(".toml") => {
            (b, Some(user_aliases(Path::new(a))?))
        }
        _ => (arg, None),
    };
    let m = Mixture::parse_or_load(base)?;
    if user.is_none() && m.domains().iter().all(|d| domains.contains(d)) {
        return m.align(domains);
    }
    let mapped = map_onto(&m, domains, user.as_ref(), base);
    if mapped.is_err() && user.is_none() && get(base).is_none() {
        // A user's own mixture naming an unknown domain: say that plainly.
        return m.align(domains);
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_mixture_loads_with_its_source() {
        for name in names() {
            let f = file(name).unwrap_or_else(|| panic!("{name}: not a weights file"));
            let m = get(name).unwrap_or_else(|| panic!("{name}: not a valid mixture"));
            assert_eq!(m.len(), f.domains.len(), "{name}");
            for key in ["source", "url", "verified"] {
                assert!(f.provenance.get(key).is_some(), "{name}: no {key}");
            }
        }
        assert!(shipped_aliases().len() > 50);
    }

    #[test]
    fn published_names_map_onto_other_spellings() {
        // RegMix's own column names.
        let regmix: Vec<String> = get("pile-regmix")
            .unwrap()
            .domains()
            .iter()
            .map(|d| format!("the_pile_{d}"))
            .collect();
        let m = resolve_for("pile-regmix", &regmix).unwrap();
        assert!((m.get("the_pile_pile_cc").unwrap() - 0.8701291419934237).abs() < 1e-12);
        // The Pile's pile_set_name spellings, case ignored.
        let doremi = get("pile-doremi").unwrap();
        let set_names: Vec<String> = ["PILE-CC", "Github"].map(String::from).to_vec();
        let e = map_onto(&doremi, &set_names, None, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no domain for") && e.contains("books3"), "{e}");
    }

    #[test]
    fn user_tables_sum_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "common_crawl = \"web\"\nc4 = \"web\"\ngithub = \"code\"\nbooks = \"\"\narxiv = \"\"\nwikipedia = \"\"\nstackexchange = \"code\"\n",
        )
        .unwrap();
        let domains: Vec<String> = ["web", "code"].map(String::from).to_vec();
        let m = resolve_for(&format!("slimpajama-natural@{}", p.display()), &domains).unwrap();
        let web = (0.522 + 0.267) / (0.522 + 0.267 + 0.052 + 0.033);
        assert!((m.get("web").unwrap() - web).abs() < 1e-9, "{m:?}");
        std::fs::write(&p, "common_crawl = \"nope\"\n").unwrap();
        let e = resolve_for(&format!("slimpajama-natural@{}", p.display()), &domains)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
