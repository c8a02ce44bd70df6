//! Export stage: put a mixture (weights.json) or a multi-phase schedule (from
//! an online trajectory) into the config of the framework that will train the
//! real model.
//!
//! The seam is `Exporter`: a plan (phases of printed weights + each domain's
//! paths) in, one or more text artifacts out. One implementation per file;
//! adding a format is one file and one line in `EXPORTERS`. Exporters whose
//! framework has no schedule of its own get one config per phase (`export`
//! does the splitting), so every format handles schedules.
//!
//! Shared conventions (documented in docs/export.md):
//! - weights are printed as `rounding` produced them (`--round`, `--min-weight`);
//! - formats that list datasets leave out domains whose weight is 0 in that
//!   phase; formats that are weight maps (json, yaml, doremi, regmix,
//!   levanter) keep them;
//! - a domain with several paths has its weight split equally among them
//!   where the framework weights each path.

pub mod docs;
pub mod doremi;
pub mod gpt_neox;
pub mod hf;
pub mod json;
pub mod levanter;
pub mod litdata;
pub mod llm_foundry;
pub mod megatron;
pub mod nanotron;
pub mod olmo_core;
pub mod paths;
pub mod regmix;
pub mod rounding;
pub mod schedule;
pub mod torchtitan;
pub mod tree;
pub mod yaml;

pub use crate::store::trajectory::Trajectory;
pub use paths::{DomainPaths, PathMap};
pub use rounding::{RoundingSpec, Weights};
pub use schedule::SchedulePhase;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// From `start_step` on (0 for a static mixture), train on `weights`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub start_step: u64,
    pub weights: Weights,
}

/// What to export. Invariant: at least one phase; every phase has the same
/// domains (in the same order) and `paths` has exactly those domains.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub domains: Vec<String>,
    pub phases: Vec<Phase>,
    pub paths: PathMap,
    /// Seed for formats whose sampler takes one (hf, litdata, torchtitan, nanotron).
    pub seed: u64,
    /// Sequences per optimizer step of the real run (Levanter aligns schedule
    /// phases to its mixture blocks with it).
    pub batch_size: Option<u64>,
    /// Levanter's `mixture_block_size` (sequences per deterministic block).
    pub mixture_block_size: u64,
    /// Mean tokens per document of each domain (plan order), for formats whose
    /// sampler draws documents rather than tokens (`docs`); None = unknown.
    pub doc_tokens: Option<Vec<f64>>,
}

/// Levanter's default `mixture_block_size`.
pub const DEFAULT_MIXTURE_BLOCK_SIZE: u64 = 2048;

/// One output text. `tag` (e.g. `per_split`, `phase2`) is inserted before the
/// output file's extension; `ext` replaces that extension when set.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub tag: Option<String>,
    pub ext: Option<&'static str>,
    pub text: String,
}

impl Artifact {
    pub fn main(text: String) -> Artifact {
        Artifact {
            tag: None,
            ext: None,
            text,
        }
    }

    pub fn extra(tag: &str, ext: &'static str, text: String) -> Artifact {
        Artifact {
            tag: Some(tag.to_string()),
            ext: Some(ext),
            text,
        }
    }
}

/// A pretraining framework's config format.
pub trait Exporter: Sync {
    /// The `--format` name.
    fn name(&self) -> &'static str;
    /// One line for `--help` and docs.
    fn summary(&self) -> &'static str;
    /// Whether one config can hold a multi-phase schedule; if not, `export`
    /// renders one config per phase.
    fn schedules(&self) -> bool {
        false
    }
    /// Render the plan (one phase unless `schedules()`). The first artifact is
    /// the main one.
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>>;
    /// Warnings for the user about this plan in this format (printed on
    /// stderr by `export`), e.g. what could not be known.
    fn notes(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }
}

/// The notes of `format` for `plan`.
pub fn notes(format: &str, plan: &Plan) -> Result<Vec<String>> {
    Ok(exporter(format)?.notes(plan))
}

/// The registry: one line per format.
pub const EXPORTERS: &[&dyn Exporter] = &[
    &json::Json,
    &yaml::Yaml,
    &megatron::Megatron,
    &gpt_neox::GptNeox,
    &olmo_core::OlmoCore,
    &llm_foundry::LlmFoundry,
    &nanotron::Nanotron,
    &levanter::Levanter,
    &hf::Hf,
    &litdata::LitData,
    &torchtitan::TorchTitan,
    &doremi::DoReMi,
    &regmix::RegMix,
];

pub fn known_formats() -> Vec<&'static str> {
    EXPORTERS.iter().map(|e| e.name()).collect()
}

pub fn exporter(name: &str) -> Result<&'static dyn Exporter> {
    EXPORTERS
        .iter()
        .copied()
        .find(|e| e.name() == name)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown format {name:?} (known: {})",
                known_formats().join(", ")
            ))
        })
}

/// Render `plan` in `format`, one config per phase where the format has no
/// schedule of its own (tagged `phase1`, `phase2`, …).
pub fn export(format: &str, plan: &Plan) -> Result<Vec<Artifact>> {
    let e = exporter(format)?;
    if plan.phases.is_empty() {
        return Err(Error::invalid("nothing to export: no phases"));
    }
    if plan.phases.len() == 1 || e.schedules() {
        return e.render(plan);
    }
    let mut out = Vec::new();
    for (i, phase) in plan.phases.iter().enumerate() {
        let one = Plan {
            phases: vec![phase.clone()],
            ..plan.clone()
        };
        let phase_tag = format!("phase{}", i + 1);
        for mut a in e.render(&one)? {
            a.tag = Some(match a.tag {
                Some(t) => format!("{phase_tag}.{t}"),
                None => phase_tag.clone(),
            });
            out.push(a);
        }
    }
    Ok(out)
}

/// Where each artifact goes when the main output is `out`:
/// `cfg.yaml` + tag `phase2` → `cfg.phase2.yaml`; + ext `json` → `cfg.phase2.json`.
pub fn artifact_path(out: &Path, a: &Artifact) -> PathBuf {
    if a.tag.is_none() && a.ext.is_none() {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "export".into());
    let ext = a
        .ext
        .map(str::to_string)
        .or_else(|| out.extension().map(|e| e.to_string_lossy().to_string()));
    let mut name = stem;
    if let Some(t) = &a.tag {
        name.push('.');
        name.push_str(t);
    }
    if let Some(e) = ext {
        name.push('.');
        name.push_str(&e);
    }
    out.with_file_name(name)
}

/// One weighted dataset path of a phase, as frameworks that weight each path
/// see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedPath {
    pub domain: String,
    pub path: String,
    /// Printed weight (the domain's, or its equal share when it has several paths).
    pub weight: String,
}

/// A data split of paths.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// The phase's non-zero domains expanded to their train (or valid) paths.
pub fn weighted_paths(plan: &Plan, phase: &Phase, valid: bool) -> Vec<WeightedPath> {
    weighted_split(plan, phase, if valid { Split::Valid } else { Split::Train })
}

/// The phase's non-zero domains expanded to their paths of `split`.
pub fn weighted_split(plan: &Plan, phase: &Phase, split: Split) -> Vec<WeightedPath> {
    let mut out = Vec::new();
    for ((d, v), text) in phase
        .weights
        .domains
        .iter()
        .zip(&phase.weights.values)
        .zip(&phase.weights.text)
    {
        if *v <= 0.0 {
            continue;
        }
        let entry = plan.paths.get(d);
        let list = match split {
            Split::Train => &entry.train,
            Split::Valid => &entry.valid,
            Split::Test => &entry.test,
        };
        for p in list {
            let weight = if list.len() == 1 {
                text.clone()
            } else {
                rounding::plain(v / list.len() as f64)
            };
            out.push(WeightedPath {
                domain: d.clone(),
                path: p.clone(),
                weight,
            });
        }
    }
    out
}

/// The comment line every format that allows comments starts with.
pub fn header_comment(prefix: &str, format: &str, plan: &Plan) -> String {
    let mut s = format!("{prefix} written by `mixopt export --format {format}`");
    if plan.phases.len() == 1 && plan.phases[0].start_step > 0 {
        s.push_str(&format!(
            " (schedule phase from step {})",
            plan.phases[0].start_step
        ));
    }
    s.push('\n');
    s
}

/// The only phase of a one-phase plan (exporters without schedules get these).
pub fn single(plan: &Plan) -> &Phase {
    &plan.phases[0]
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::mixture::Mixture;

    /// A two-domain plan with names standing in for paths.
    pub fn plan(spec: &str) -> Plan {
        let m = Mixture::parse_spec(spec).unwrap();
        let w = RoundingSpec::default().apply(&m).unwrap();
        Plan {
            domains: m.domains().to_vec(),
            phases: vec![Phase {
                start_step: 0,
                weights: w,
            }],
            paths: PathMap::names_only(m.domains()),
            seed: 0,
            batch_size: None,
            mixture_block_size: DEFAULT_MIXTURE_BLOCK_SIZE,
            doc_tokens: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_renders_and_unknown_is_listed() {
        let plan = testing::plan("web=0.75,code=0.25");
        for name in known_formats() {
            let a = export(name, &plan).unwrap();
            assert!(!a.is_empty() && !a[0].text.is_empty(), "{name}");
            assert!(a[0].text.contains("0.75"), "{name}: {}", a[0].text);
        }
        let e = export("megatorn", &plan).unwrap_err().to_string();
        assert!(e.contains("megatorn") && e.contains("megatron"), "{e}");
    }

    #[test]
    fn artifact_paths() {
        let out = Path::new("out/cfg.yaml");
        let a = Artifact::extra("per_split", "json", String::new());
        assert_eq!(artifact_path(out, &a), Path::new("out/cfg.per_split.json"));
        let mut b = Artifact::main(String::new());
        assert_eq!(artifact_path(out, &b), out);
        b.tag = Some("phase2".into());
        assert_eq!(artifact_path(out, &b), Path::new("out/cfg.phase2.yaml"));
    }
}
