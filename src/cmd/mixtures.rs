//! `mixopt mixtures`: list the published mixtures compiled in from
//! `mixtures/` (usable by name wherever a mixture is taken), or show one
//! with its weights and source; `--domains` maps it onto your domain names
//! first (the alias table, or `NAME@aliases.toml`).

use crate::mixture::library;
use crate::mixture::Mixture;
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A published mixture to show (with `@aliases.toml` to map it); all are listed without one.
    pub name: Option<String>,
    /// Map the mixture onto these domains (comma-separated), as `--prior` would.
    #[arg(long, value_delimiter = ',')]
    pub domains: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(name) = args.name else {
        println!("{:<20} {:>7}  source", "name", "domains");
        for n in library::names() {
            let f = library::file(n).context("a published mixture does not parse")?;
            let source = f
                .provenance
                .get("source")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            println!("{n:<20} {:>7}  {source}", f.domains.len());
        }
        return Ok(());
    };
    let base = name.split('@').next().unwrap_or(&name);
    let m = if args.domains.is_empty() {
        Mixture::parse_or_load(&name)?
    } else {
        Mixture::resolve_for(&name, &args.domains)?
    };
    if let Some(f) = library::file(base) {
        for key in ["name", "what", "source", "url", "verified"] {
            if let Some(v) = f.provenance.get(key).and_then(|v| v.as_str()) {
                println!("{key:<9} {v}");
            }
        }
    }
    println!("{:<28} {:>8}", "domain", "weight");
    for (d, w) in m.iter() {
        println!("{d:<28} {w:>8.4}");
    }
    Ok(())
}
