//! `--format regmix`: RegMix's mixture config YAML: `train:` maps each
//! training dataset (the domain's path) to its weight, `valid:` each
//! validation dataset to 1.0.
//!
//! Syntax checked against RegMix `mixture_config/config_1b/regmix.yaml`
//! (`train: {train_the_pile_arxiv: 0.0012, ...}`, `valid:
//! {valid_the_pile_pile_cc: 1.0}`, `model_name: ...`) and
//! `mixture_config/synthesize_mixture.py`, which writes the same keys. The
//! `valid:` map lists the domains' `valid` paths from paths.toml, or the
//! training keys when there are none. Every domain is kept. No schedule:
//! one file per phase.
//!
//! Both maps are keyed by path, so a path two domains share appears once:
//! its training weights are summed, its validation entry kept once.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, Artifact, Plan};
use crate::error::Result;

pub struct RegMix;

impl super::Exporter for RegMix {
    fn name(&self) -> &'static str {
        "regmix"
    }
    fn summary(&self) -> &'static str {
        "RegMix mixture YAML (train: / valid:)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let mut train: Vec<(String, f64, String)> = Vec::new();
        let mut valid: Vec<(String, Node)> = Vec::new();
        for ((d, v), t) in phase
            .weights
            .domains
            .iter()
            .zip(&phase.weights.values)
            .zip(&phase.weights.text)
        {
            let e = plan.paths.get(d);
            let n = e.train.len();
            for p in &e.train {
                let (w, text) = if n == 1 {
                    (*v, t.clone())
                } else {
                    (v / n as f64, super::rounding::plain(v / n as f64))
                };
                match train.iter_mut().find(|(q, _, _)| q == p) {
                    Some(entry) => {
                        entry.1 += w;
                        entry.2 = super::rounding::plain(entry.1);
                    }
                    None => train.push((p.clone(), w, text)),
                }
            }
            let vlist = if plan.paths.has_valid() {
                &e.valid
            } else {
                &e.train
            };
            for p in vlist {
                if !valid.iter().any(|(q, _)| q == p) {
                    valid.push((p.clone(), Node::num("1.0")));
                }
            }
        }
        let train = train
            .into_iter()
            .map(|(p, _, t)| (p, Node::num(t)))
            .collect();
        let doc = Node::map()
            .with("train", Node::Map(train))
            .with("valid", Node::Map(valid));
        let mut text = header_comment("#", "regmix", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{Exporter, PathMap};

    #[test]
    fn shared_paths_appear_once() {
        let mut plan = crate::export::testing::plan("a=0.5,b=0.25,c=0.25");
        plan.paths = PathMap::parse(
            std::path::Path::new("p.toml"),
            "[a]\ntrain = \"x\"\nvalid = \"v\"\n[b]\ntrain = \"x\"\nvalid = \"v\"\n[c]\ntrain = \"y\"\nvalid = \"w\"\n",
            &plan.domains,
        )
        .unwrap();
        let text = &RegMix.render(&plan).unwrap()[0].text;
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(v["train"]["x"].as_f64(), Some(0.75), "{text}");
        assert_eq!(v["train"].as_mapping().unwrap().len(), 2);
        assert_eq!(v["valid"].as_mapping().unwrap().len(), 2);
        assert_eq!(text.matches("\n  v: 1.0").count(), 1, "{text}");
    }
}
