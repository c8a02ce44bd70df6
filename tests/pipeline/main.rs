//! The offline pipeline driven through the binary: prepare → train → sweep →
//! fit → predict → optimize, and a sweep killed with SIGKILL then resumed.

use assert_cmd::Command;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod scale_and_demo;
mod sweep;
mod train;

fn mixopt() -> Command {
    let mut c = Command::cargo_bin("mixopt").unwrap();
    c.env("MIXOPT_QUIET", "1");
    c
}

/// A proxy small and short enough for tests (one run well under a second).
const TEST_PROXY: &str = include_str!("../data/test_proxy.toml");

/// Two domains with different structure: `alpha` cycles letters, `digits` counts.
fn write_corpus(dir: &Path) {
    for (name, make) in [
        (
            "alpha",
            Box::new(|i: usize| -> String {
                (0..300)
                    .map(|j| char::from(b'a' + ((i + j) % 7) as u8))
                    .collect()
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "digits",
            Box::new(|i: usize| -> String {
                (0..120).map(|j| format!("{} ", (i + j) % 10)).collect()
            }),
        ),
        (
            "words",
            Box::new(|i: usize| -> String { ["the cat", "a dog", "one bird"][i % 3].repeat(30) }),
        ),
    ] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let lines: Vec<String> = (0..60)
            .map(|i| serde_json::json!({ "text": make(i) }).to_string())
            .collect();
        std::fs::write(sub.join("docs.jsonl"), lines.join("\n") + "\n").unwrap();
    }
}

fn prepare(tmp: &Path) -> PathBuf {
    write_corpus(&tmp.join("corpus"));
    let cache = tmp.join("cache");
    let mut cmd = mixopt();
    cmd.arg("prepare").arg("--cache").arg(&cache);
    for d in ["alpha", "digits", "words"] {
        cmd.arg("--domain").arg(format!(
            "{d}={}",
            tmp.join("corpus").join(d).join("docs.jsonl").display()
        ));
    }
    cmd.assert().success();
    std::fs::write(tmp.join("test.toml"), TEST_PROXY).unwrap();
    cache
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `val_loss` column of `mixopt train`'s table, by domain.
fn val_loss(stdout: &str, domain: &str) -> f64 {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(domain))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loss for {domain} in:\n{stdout}"))
}

/// Drops the wall-clock line so two runs' outputs compare equal.
fn without_wall(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("wall"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn data_rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn sweep_args(tmp: &Path, cache: &Path, out: &Path, runs: usize, jobs: usize) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["sweep", "--seed", "5", "--runs"]
        .map(OsString::from)
        .to_vec();
    a.push(runs.to_string().into());
    a.push("--jobs".into());
    a.push(jobs.to_string().into());
    a.push("--proxy".into());
    a.push(tmp.join("test.toml").into());
    a.push("--cache".into());
    a.push(cache.into());
    a.push("--out".into());
    a.push(out.into());
    // Row counts below are the sampled runs; the noise floor has its own test.
    a.push("--noise-seeds".into());
    a.push("0".into());
    a
}

fn sweep_cmd(tmp: &Path, cache: &Path, out: &Path, runs: usize, jobs: usize) -> Command {
    let mut c = mixopt();
    c.args(sweep_args(tmp, cache, out, runs, jobs));
    c
}

/// Losses of each run id (columns after the first seven), wall time dropped.
fn by_id(rows: &[String]) -> std::collections::BTreeMap<String, String> {
    rows.iter()
        .map(|r| {
            let cells: Vec<&str> = r.split(',').collect();
            let mut kept = cells.clone();
            kept.remove(4); // wall_s
            (cells[0].to_string(), kept.join(","))
        })
        .collect()
}
