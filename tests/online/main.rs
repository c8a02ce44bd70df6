//! Online mixing: each policy on a simulated environment with known per-domain
//! loss curves (library API, milliseconds), then `mixopt online` driven as a
//! process — JSON lines and HTTP, state save → restart → identical answers,
//! malformed requests — and `mixopt train --schedule` end to end.

use mixopt::online::{self, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use mixopt::Mixture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

mod http;
mod policies;
mod schedule;
mod service;

fn bin() -> String {
    env!("CARGO_BIN_EXE_mixopt").to_string()
}

/// Requests for `k` domains with losses falling like a power law.
fn requests(k: usize, n: usize, from: usize) -> Vec<String> {
    (from..from + n)
        .map(|t| {
            let losses: Vec<String> = (0..k)
                .map(|i| {
                    format!(
                        "\"d{i}\":{}",
                        2.0 + i as f64 * 0.3 + 3.0 * ((t + 1) as f64).powf(-0.4)
                    )
                })
                .collect();
            let tokens: Vec<String> = (0..k)
                .map(|i| format!("\"d{i}\":{}", (t + 1) * 1000 * (i + 1)))
                .collect();
            format!(
                "{{\"step\":{},\"losses\":{{{}}},\"tokens\":{{{}}}}}",
                (t + 1) * 10,
                losses.join(","),
                tokens.join(",")
            )
        })
        .collect()
}

/// Run `mixopt online` over `lines`; returns its stdout lines.
fn online_lines(args: &[&str], state: &Path, lines: &[String]) -> Vec<String> {
    let mut child = Command::new(bin())
        .arg("online")
        .args(args)
        .arg("--state")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}
