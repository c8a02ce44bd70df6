//! A small ordered document tree that the exporters build and that prints as
//! YAML (block style) or JSON. Framework configs care about key order (people
//! read them), which `serde_json::Value` without `preserve_order` loses, and a
//! YAML emitter of our own keeps the dependency list short.
//!
//! Numbers are carried as already-formatted text so that a weight rounded to
//! D decimals prints exactly as rounded. Strings are always double-quoted with
//! JSON escapes, which are also valid YAML double-quoted scalars, so a path
//! such as `yes`, `1e3` or `a: b` can never be misread.

/// One node of a config document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Keys in insertion order.
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Str(String),
    /// A number, already formatted (must be a valid JSON number).
    Num(String),
    Bool(bool),
    Null,
    /// Printed in flow style (`[0, {"a": 0.5}]`) even inside block YAML.
    Flow(Box<Node>),
}

impl Node {
    pub fn map() -> Node {
        Node::Map(Vec::new())
    }

    /// Append `key: value` to a map (no-op on other nodes is a bug: panics in debug).
    pub fn with(mut self, key: &str, value: Node) -> Node {
        match &mut self {
            Node::Map(entries) => entries.push((key.to_string(), value)),
            _ => debug_assert!(false, "with() on a non-map node"),
        }
        self
    }

    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    pub fn num(text: impl Into<String>) -> Node {
        Node::Num(text.into())
    }

    pub fn int(v: u64) -> Node {
        Node::Num(v.to_string())
    }

    pub fn strs(items: &[String]) -> Node {
        Node::Seq(items.iter().map(|s| Node::str(s.as_str())).collect())
    }

    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Node::Str(_) | Node::Num(_) | Node::Bool(_) | Node::Null | Node::Flow(_)
        )
    }

    /// Whether block YAML prints this value on the key's own line.
    fn inline_in_yaml(&self) -> bool {
        match self {
            Node::Map(e) => e.is_empty(),
            // A list of flow items (Levanter's `[step, {...}]` pairs) reads
            // better one item per line.
            Node::Seq(items) => items
                .iter()
                .all(|i| i.is_scalar() && !matches!(i, Node::Flow(_))),
            _ => true,
        }
    }
}

/// A JSON string literal (also a YAML double-quoted scalar and a Python str).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Compact flow/JSON rendering: `{"a": 1, "b": [2, 3]}`.
pub fn flow(node: &Node) -> String {
    match node {
        Node::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), flow(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Node::Seq(items) => {
            let inner: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", inner.join(", "))
        }
        Node::Str(s) => quote(s),
        Node::Num(n) => n.clone(),
        Node::Bool(b) => b.to_string(),
        Node::Null => "null".into(),
        Node::Flow(inner) => flow(inner),
    }
}

/// Pretty JSON (two-space indent), keys in insertion order, trailing newline.
pub fn to_json(node: &Node) -> String {
    let mut out = String::new();
    json_into(node, 0, &mut out);
    out.push('\n');
    out
}

fn json_into(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent + 2);
    match node {
        Node::Map(entries) if !entries.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(&quote(k));
                out.push_str(": ");
                json_into(v, indent + 2, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        Node::Seq(items) if !items.is_empty() && !items.iter().all(Node::is_scalar) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad);
                json_into(v, indent + 2, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        other => out.push_str(&flow(other)),
    }
}

/// Keys that YAML 1.1 or 1.2 would read as something other than a string.
fn plain_key_ok(k: &str) -> bool {
    let mut chars = k.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let keyword = matches!(
        k.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null" | "nan" | "inf"
    );
    first_ok && rest_ok && !keyword
}

fn yaml_key(k: &str) -> String {
    if plain_key_ok(k) {
        k.to_string()
    } else {
        quote(k)
    }
}

/// Block-style YAML with two-space indent. The root must be a map.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    yaml_map_or_seq(node, 0, &mut out);
    out
}

fn yaml_map_or_seq(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&yaml_key(k));
                out.push(':');
                if v.inline_in_yaml() {
                    out.push(' ');
                    out.push_str(&flow(v));
                    out.push('\n');
                } else {
                    out.push('\n');
                    yaml_map_or_seq(v, indent + 2, out);
                }
            }
        }
        Node::Seq(items) => {
            for item in items {
                match item {
                    Node::Map(e) if !e.is_empty() => {
                        // Render the map two deeper, then put "- " where the
                        // first line's indent was.
                        let mut sub = String::new();
                        yaml_map_or_seq(item, indent + 2, &mut sub);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&sub[indent + 2..]);
                    }
                    Node::Seq(s) if !item.inline_in_yaml() && !s.is_empty() => {
                        out.push_str(&pad);
                        out.push_str("-\n");
                        yaml_map_or_seq(item, indent + 2, out);
                    }
                    other => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&flow(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Node {
        Node::map()
            .with("name", Node::str("mix"))
            .with("yes", Node::str("no"))
            .with("weights", Node::map().with("a", Node::num("0.25")))
            .with("paths", Node::strs(&["/x".into(), "y: z".into()]))
            .with(
                "stages",
                Node::Seq(vec![Node::map()
                    .with("start", Node::int(0))
                    .with("data", Node::map().with("b", Node::Bool(true)))]),
            )
            .with(
                "schedule",
                Node::Seq(vec![Node::Flow(Box::new(Node::Seq(vec![
                    Node::int(0),
                    Node::map().with("a", Node::num("1")),
                ])))]),
            )
            .with("empty", Node::map())
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let y = to_yaml(&doc());
        let expected = "name: \"mix\"\n\"yes\": \"no\"\nweights:\n  a: 0.25\n\
                        paths: [\"/x\", \"y: z\"]\nstages:\n  - start: 0\n    data:\n      b: true\n\
                        schedule:\n  - [0, {\"a\": 1}]\nempty: {}\n";
        assert_eq!(y, expected);
    }

    #[test]
    fn json_keeps_order_and_parses() {
        let j = to_json(&doc());
        assert!(j.find("\"name\"").unwrap() < j.find("\"weights\"").unwrap());
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["weights"]["a"], 0.25);
        assert_eq!(v["schedule"][0][1]["a"], 1);
    }
}
