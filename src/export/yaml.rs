//! `--format yaml`: the same document as `json` in block YAML
//! (`domains:` map + `order:`; a schedule as `phases:`), for configs that are
//! YAML (Hydra, OmegaConf) to include. Syntax per YAML 1.2 (yaml.org spec).

use super::tree::to_yaml;
use super::{header_comment, Artifact, Plan};
use crate::error::Result;

pub struct Yaml;

impl super::Exporter for Yaml {
    fn name(&self) -> &'static str {
        "yaml"
    }
    fn summary(&self) -> &'static str {
        "domains/order (or phases) as YAML"
    }
    fn schedules(&self) -> bool {
        true
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let mut text = header_comment("#", "yaml", plan);
        text.push_str(&to_yaml(&super::json::document(plan)));
        Ok(vec![Artifact::main(text)])
    }
}
