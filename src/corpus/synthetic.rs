//! The built-in synthetic corpus that `mixopt demo` prepares and optimizes over:
//! six byte-level domains with clearly different learnable structure, written in
//! the `--domains-dir` layout (`<dir>/<domain>/{train,val}.jsonl`).
//!
//! - `prose`: sentences from a small grammar;
//! - `dialog`: questions and answers over the same grammar and words (training
//!   on one helps the other);
//! - `code`: nested, bracketed code-like functions;
//! - `arith`: correct sums and products;
//! - `records`: `key=value;` records;
//! - `noise`: uniformly random CJK ideographs (nothing to learn, nothing that transfers).
//!
//! Deterministic for a seed.

use crate::error::{IoContext, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;

const DETS: &[&str] = &["the", "a", "every", "one", "that"];
const ADJS: &[&str] = &[
    "old", "small", "red", "quiet", "happy", "tall", "dark", "quick",
];
const NOUNS: &[&str] = &[
    "cat", "dog", "bird", "child", "farmer", "river", "house", "teacher", "horse", "garden",
    "boat", "king",
];
const VERBS: &[(&str, &str)] = &[
    ("sees", "see"),
    ("likes", "like"),
    ("finds", "find"),
    ("follows", "follow"),
    ("helps", "help"),
    ("watches", "watch"),
    ("carries", "carry"),
    ("calls", "call"),
];
const PREPS: &[&str] = &["near", "under", "behind", "with", "beside"];
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const CITIES: &[&str] = &[
    "paris", "oslo", "lima", "cairo", "delhi", "tokyo", "quito", "rome",
];
const IDENTS: &[&str] = &["x", "y", "n", "acc", "tmp", "count", "total", "idx"];
const FUNCS: &[&str] = &[
    "step", "merge", "scan", "fold", "apply", "reduce", "walk", "emit",
];

/// Demo domains and their share of training documents (the "natural" mixture):
/// noise is deliberately large so the natural mixture wastes capacity on it.
pub const DOMAINS: &[(&str, usize)] = &[
    ("prose", 600),
    ("dialog", 150),
    ("code", 300),
    ("arith", 250),
    ("records", 200),
    ("noise", 350),
];

/// The unlearnable domain: the demo's target excludes it.
pub const NOISE_DOMAIN: &str = "noise";

fn noun_phrase(rng: &mut StdRng) -> String {
    let det = DETS.choose(rng).copied().unwrap_or("the");
    let noun = NOUNS.choose(rng).copied().unwrap_or("cat");
    if rng.random_bool(0.5) {
        let adj = ADJS.choose(rng).copied().unwrap_or("old");
        format!("{det} {adj} {noun}")
    } else {
        format!("{det} {noun}")
    }
}

fn sentence(rng: &mut StdRng) -> String {
    let (verb, _) = *VERBS.choose(rng).unwrap_or(&VERBS[0]);
    let mut s = format!("{} {verb} {}", noun_phrase(rng), noun_phrase(rng));
    if rng.random_bool(0.4) {
        let prep = PREPS.choose(rng).copied().unwrap_or("near");
        s = format!("{s} {prep} {}", noun_phrase(rng));
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str() + ".",
        None => s,
    }
}

fn prose(rng: &mut StdRng) -> String {
    let n = rng.random_range(4..10);
    (0..n).map(|_| sentence(rng)).collect::<Vec<_>>().join(" ")
}

fn dialog(rng: &mut StdRng) -> String {
    let mut out = String::new();
    for _ in 0..rng.random_range(2..6) {
        let (verb3, verb) = *VERBS.choose(rng).unwrap_or(&VERBS[0]);
        let (a, b) = (noun_phrase(rng), noun_phrase(rng));
        if rng.random_bool(0.5) {
            out += &format!("Q: does {a} {verb} {b}?\nA: yes, {a} {verb3} {b}.\n");
        } else {
            out += &format!("Q: does {a} {verb} {b}?\nA: no, {a} does not {verb} {b}.\n");
        }
    }
    out
}

fn code_block(rng: &mut StdRng, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for _ in 0..rng.random_range(1..4) {
        let a = IDENTS.choose(rng).copied().unwrap_or("x");
        let b = IDENTS.choose(rng).copied().unwrap_or("y");
        match rng.random_range(0..4) {
            0 if depth < 3 => {
                out.push_str(&format!("{pad}if ({a} > {}) {{\n", rng.random_range(0..10)));
                code_block(rng, depth + 1, out);
                out.push_str(&format!("{pad}}}\n"));
            }
            1 if depth < 3 => {
                out.push_str(&format!(
                    "{pad}for ({a} in [{b}, {}]) {{\n",
                    rng.random_range(0..10)
                ));
                code_block(rng, depth + 1, out);
                out.push_str(&format!("{pad}}}\n"));
            }
            2 => out.push_str(&format!(
                "{pad}let {a} = ({b} + {}) * {b};\n",
                rng.random_range(1..10)
            )),
            _ => out.push_str(&format!(
                "{pad}{a} = {}({b}, [{a}]);\n",
                FUNCS.choose(rng).copied().unwrap_or("step")
            )),
        }
    }
}

fn code(rng: &mut StdRng) -> String {
    let mut out = String::new();
    for _ in 0..rng.random_range(1..3) {
        let f = FUNCS.choose(rng).copied().unwrap_or("step");
        out.push_str(&format!("fn {f}(x, y) {{\n"));
        code_block(rng, 1, &mut out);
        out.push_str("  return x;\n}\n");
    }
    out
}

fn arith(rng: &mut StdRng) -> String {
    let mut out = String::new();
    for _ in 0..rng.random_range(8..20) {
        let (a, b) = (rng.random_range(0..100u32), rng.random_range(0..100u32));
        if rng.random_bool(0.6) {
            out += &format!("{a}+{b}={}\n", a + b);
        } else {
            out += &format!("{}*{}={}\n", a % 13, b % 13, (a % 13) * (b % 13));
        }
    }
    out
}

fn records(rng: &mut StdRng) -> String {
    let mut id = rng.random_range(0..9000u32);
    let mut out = String::new();
    for _ in 0..rng.random_range(5..12) {
        id += 1;
        out += &format!(
            "id={id:04};name={};city={};age={}\n",
            NAMES.choose(rng).copied().unwrap_or("alice"),
            CITIES.choose(rng).copied().unwrap_or("rome"),
            rng.random_range(18..90)
        );
    }
    out
}

/// Uniformly random CJK ideographs: 3 UTF-8 bytes each, an alphabet no other
/// domain uses, so training on it teaches nothing that transfers (random
/// ASCII would at least teach the model the other domains' characters).
fn noise(rng: &mut StdRng) -> String {
    let n = rng.random_range(70..170);
    (0..n)
        .map(|_| char::from_u32(rng.random_range(0x4E00u32..0x9FA6)).unwrap_or('\u{4E00}'))
        .collect()
}

fn document(domain: &str, rng: &mut StdRng) -> String {
    match domain {
        "prose" => prose(rng),
        "dialog" => dialog(rng),
        "code" => code(rng),
        "arith" => arith(rng),
        "records" => records(rng),
        _ => noise(rng),
    }
}

/// Write the demo corpus under `dir` (one subdirectory per domain, 10% of each
/// domain's documents, at least 20, held out as `val.jsonl`). `scale` multiplies
/// the document counts.
pub fn write_demo_corpus(dir: &Path, seed: u64, scale: f64) -> Result<()> {
    for (i, (name, n_docs)) in DOMAINS.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let n_train = ((*n_docs as f64) * scale).round().max(2.0) as usize;
        let n_val = (n_train / 10).max(20);
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).at(&sub)?;
        for (split, n) in [("train", n_train), ("val", n_val)] {
            let path = sub.join(format!("{split}.jsonl"));
            let file = std::fs::File::create(&path).at(&path)?;
            let mut w = std::io::BufWriter::new(file);
            for k in 0..n {
                let text = document(name, &mut rng);
                let line = serde_json::json!({ "id": format!("{name}-{split}-{k}"), "text": text });
                writeln!(w, "{line}").at(&path)?;
            }
            w.flush().at(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_demo_corpus(a.path(), 1, 0.05).unwrap();
        write_demo_corpus(b.path(), 1, 0.05).unwrap();
        for (d, _) in DOMAINS {
            let fa = std::fs::read(a.path().join(d).join("train.jsonl")).unwrap();
            let fb = std::fs::read(b.path().join(d).join("train.jsonl")).unwrap();
            assert_eq!(fa, fb, "{d}");
            assert!(!fa.is_empty());
        }
    }

    #[test]
    fn arithmetic_is_correct() {
        let mut rng = StdRng::seed_from_u64(0);
        for line in arith(&mut rng).lines() {
            let (lhs, rhs) = line.split_once('=').unwrap();
            let rhs: u32 = rhs.parse().unwrap();
            if let Some((a, b)) = lhs.split_once('+') {
                assert_eq!(a.parse::<u32>().unwrap() + b.parse::<u32>().unwrap(), rhs);
            } else {
                let (a, b) = lhs.split_once('*').unwrap();
                assert_eq!(a.parse::<u32>().unwrap() * b.parse::<u32>().unwrap(), rhs);
            }
        }
    }
}
