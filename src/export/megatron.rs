//! `--format megatron`: Megatron-LM's weighted blend.
//!
//! Syntax checked against Megatron-LM `megatron/training/arguments.py`
//! (`--data-path`: "a list of weight prefix pairs e.g. weight1 prefix1 weight2
//! prefix2"; `--data-args-path`: a file holding that argument;
//! `--per-split-data-args-path`: "a json file with `train`, `valid`, `test`
//! keys") and `megatron/training/utils.py::get_blend_and_blend_per_split`
//! (the data-args file is read with `f.read().split()`; each per-split value
//! may be a whitespace-separated string; a null split has no data), and
//! loaded with megatron-core's `get_blend_from_list` by
//! `bench/frameworks_check.sh`.
//!
//! Artifacts: the data-args file (main; one `weight prefix` pair per line),
//! `<out>.per_split.json` (train = the blend, valid / test = the domains'
//! `valid` / `test` paths with the same weights, or null) and
//! `<out>.data_path.txt` (the `--data-path …` flag to paste on a command line).
//! Megatron has no blend schedule: a schedule becomes one set per phase.
//!
//! The blend is split on whitespace, so a path holding whitespace is refused
//! (naming it); a relative path starting with `-` would read as a flag and
//! is written `./-…` (the same file).

use super::tree::{to_json, Node};
use super::{single, weighted_split, Artifact, Plan, Split, WeightedPath};
use crate::error::{Error, Result};

pub struct Megatron;

/// A prefix as the blend can carry it.
fn prefix(p: &WeightedPath) -> Result<String> {
    if p.path.chars().any(char::is_whitespace) {
        return Err(Error::invalid(format!(
            "megatron: path {:?} of domain {:?} holds whitespace, which Megatron's blend splits on; \
             rename or link it (other formats carry it)",
            p.path, p.domain
        )));
    }
    Ok(if p.path.starts_with('-') {
        format!("./{}", p.path)
    } else {
        p.path.clone()
    })
}

fn blend(pairs: &[WeightedPath], sep: &str) -> Result<String> {
    Ok(pairs
        .iter()
        .map(|p| Ok(format!("{} {}", p.weight, prefix(p)?)))
        .collect::<Result<Vec<_>>>()?
        .join(sep))
}

impl super::Exporter for Megatron {
    fn name(&self) -> &'static str {
        "megatron"
    }
    fn summary(&self) -> &'static str {
        "Megatron-LM --data-args-path file, per-split JSON and --data-path string"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let train = weighted_split(plan, phase, Split::Train);
        let split = |s: Split| -> Result<Node> {
            let v = weighted_split(plan, phase, s);
            Ok(if v.is_empty() {
                Node::Null
            } else {
                Node::str(blend(&v, " ")?)
            })
        };
        let per_split = Node::map()
            .with("train", Node::str(blend(&train, " ")?))
            .with("valid", split(Split::Valid)?)
            .with("test", split(Split::Test)?);
        Ok(vec![
            Artifact::main(format!("{}\n", blend(&train, "\n")?)),
            Artifact::extra("per_split", "json", to_json(&per_split)),
            Artifact::extra(
                "data_path",
                "txt",
                format!("--data-path {}\n", blend(&train, " ")?),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Exporter;

    #[test]
    fn dash_paths_are_made_relative_and_spaces_refused() {
        let plan = crate::export::testing::plan("-web=0.5,code=0.5");
        let a = Megatron.render(&plan).unwrap();
        assert!(a[0].text.contains("0.5 ./-web\n"), "{}", a[0].text);
        let plan = crate::export::testing::plan("web text=0.5,code=0.5");
        let e = Megatron.render(&plan).unwrap_err().to_string();
        assert!(
            e.contains("\"web text\"") && e.contains("whitespace"),
            "{e}"
        );
    }
}
