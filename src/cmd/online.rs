//! `mixopt online`: serve mixture updates to a running trainer. Per-domain
//! losses in, new weights out — as JSON lines on stdin/stdout, or over HTTP
//! with `--listen`. State is persisted after every update (`--state`), so a
//! restarted process resumes with the same weights and the same future answers.

use crate::mixture::Mixture;
use crate::online::service::{error_json, Service};
use crate::online::{self, PolicyKind, PolicySpec};
use anyhow::Context;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Longest accepted JSON line on stdin.
const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy: odm (EXP3 bandit), aioli, doremi (needs --reference), ado.
    #[arg(long, value_enum)]
    pub policy: PolicyKind,
    /// Domains, comma-separated (default: the domains of --prior).
    #[arg(long, value_delimiter = ',')]
    pub domains: Vec<String>,
    /// Starting/prior mixture: a weights.json or "a=0.5,b=0.5" (default: uniform).
    #[arg(long)]
    pub prior: Option<String>,
    /// State file, rewritten atomically after every update; resumed if it exists.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Policy parameter override KEY=VALUE (repeatable; see docs/online.md).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// DoReMi reference losses: a JSON file {"domain": loss} (or a weights-style
    /// file with a "domains" object), or "a=2.1,b=3.4".
    #[arg(long)]
    pub reference: Option<String>,
    /// Serve HTTP on this address (e.g. 127.0.0.1:8377) instead of stdin/stdout.
    #[arg(long)]
    pub listen: Option<String>,
    /// HTTP: a request's head, and then its body, must arrive within this
    /// many seconds (slow or stalled clients are cut off).
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout_s: f64,
    /// Append one CSV row per committed update here (step, w_<domain>…,
    /// loss_<domain>…): the trajectory `mixopt export --schedule` reads.
    /// Resumed with --state; a new state refuses a file that already has rows.
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Benchmark: time this many policy updates on synthetic losses, print µs/update.
    #[arg(long, hide = true)]
    pub bench: Option<usize>,
}

/// Parse `--reference`: `{"d": loss}`, `{"domains": {"d": loss}}` or "d=loss,…".
pub fn load_reference(arg: &str, domains: &[String]) -> anyhow::Result<Vec<f64>> {
    let path = Path::new(arg);
    let map: std::collections::BTreeMap<String, f64> = if path.is_file() || arg.ends_with(".json") {
        let text =
            crate::store::fsio::read_text(path).with_context(|| format!("--reference {arg}"))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{arg}:{}: not JSON: {e}", e.line()))?;
        let obj = v.get("domains").cloned().unwrap_or(v);
        serde_json::from_value(obj).map_err(|e| {
            anyhow::anyhow!(
                "{arg}: expected {{\"domain\": loss, …}} (or a \"domains\" object): {e}"
            )
        })?
    } else {
        let mut m = std::collections::BTreeMap::new();
        for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, l) = part.split_once('=').with_context(|| {
                format!("--reference {arg:?}: expected NAME=LOSS, got {part:?}")
            })?;
            let l: f64 = l.trim().parse().map_err(|_| {
                anyhow::anyhow!("--reference: loss of {:?} is not a number: {l:?}", d.trim())
            })?;
            m.insert(d.trim().to_string(), l);
        }
        m
    };
    for k in map.keys() {
        anyhow::ensure!(
            domains.contains(k),
            "--reference {arg}: unknown domain {k:?} (known: {})",
            domains.join(", ")
        );
    }
    domains
        .iter()
        .map(|d| {
            map.get(d)
                .copied()
                .with_context(|| format!("--reference {arg}: no loss for domain {d:?}"))
        })
        .collect()
}

/// The prior over `--domains` (or the prior's own domains).
fn resolve_prior(args: &Args) -> anyhow::Result<Mixture> {
    let prior = match &args.prior {
        Some(p) => Some(Mixture::parse_or_load(p).with_context(|| format!("--prior {p}"))?),
        None => None,
    };
    Ok(match (prior, args.domains.is_empty()) {
        (Some(p), true) => p,
        (Some(p), false) => p
            .align(&args.domains)
            .with_context(|| format!("--prior against --domains {}", args.domains.join(",")))?,
        (None, false) => Mixture::uniform(args.domains.clone()).context("--domains")?,
        (None, true) => anyhow::bail!("give --domains a,b,c (or --prior weights.json)"),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let prior = resolve_prior(&args)?;
    let reference = match (&args.reference, args.policy) {
        (Some(r), _) => Some(load_reference(r, prior.domains())?),
        (None, PolicyKind::Doremi) => {
            anyhow::bail!("--policy doremi needs --reference (reference losses per domain)")
        }
        (None, _) => None,
    };
    let spec = PolicySpec {
        kind: args.policy,
        prior,
        params: online::parse_params(&args.params)?,
        reference_losses: reference,
    };
    if let Some(n) = args.bench {
        return bench(&spec, n);
    }
    let service = Service::open(&spec, args.state.as_deref(), args.trajectory.as_deref())?;
    if args.state.is_none() {
        eprintln!("mixopt online: no --state given, nothing will be persisted");
    }
    if !(args.request_timeout_s.is_finite() && args.request_timeout_s > 0.0) {
        anyhow::bail!(
            "--request-timeout-s {}: must be a number of seconds > 0",
            args.request_timeout_s
        );
    }
    let opts = online::http::ServeOptions {
        request_timeout: std::time::Duration::from_secs_f64(args.request_timeout_s),
        ..Default::default()
    };
    match &args.listen {
        Some(addr) => Ok(online::http::serve(service, addr, opts, |a| {
            eprintln!(
                "mixopt online: {} policy on http://{a} (POST /observe, GET /weights, GET /healthz)",
                args.policy.as_str()
            );
        })?),
        None => serve_lines(service),
    }
}

/// JSON lines: one line with the current weights at start, then one response
/// line per request line. Errors are `{"error": "line N: …"}` lines.
fn serve_lines(mut service: Service) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let say = |out: &mut std::io::StdoutLock, s: &str| -> anyhow::Result<bool> {
        match writeln!(out, "{s}").and_then(|_| out.flush()) {
            Ok(()) => Ok(true),
            // The trainer went away: stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    if !say(&mut out, &service.current())? {
        return Ok(());
    }
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        line_no += 1;
        let n = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let reply = if buf.len() > MAX_LINE_BYTES && !buf.ends_with(b"\n") {
            // Skip the rest of the overlong line without holding it.
            skip_line(&mut input)?;
            buf = Vec::new(); // give back the 1 MiB
            error_json(&format!(
                "line {line_no}: longer than {MAX_LINE_BYTES} bytes"
            ))
        } else {
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match service.observe_json(text) {
                Ok(r) => r,
                Err(e) => error_json(&format!("line {line_no}: {e}")),
            }
        };
        if !say(&mut out, &reply)? {
            return Ok(());
        }
    }
}

/// Consume input up to and including the next newline (or EOF), a buffer at
/// a time: memory stays bounded whatever the line's length.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let (done, used) = {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, chunk.len()),
            }
        };
        input.consume(used);
        if done {
            return Ok(());
        }
    }
}

/// Time `n` updates of the bare policy, and of the service path (parse,
/// update, persist to a temp state file), on synthetic decreasing losses.
fn bench(spec: &PolicySpec, n: usize) -> anyhow::Result<()> {
    let k = spec.prior.len();
    let mut policy = online::build(spec)?;
    let mut losses = vec![None; k];
    let mut tokens = vec![None; k];
    let mut times = Vec::with_capacity(n);
    for t in 0..n {
        for i in 0..k {
            let n_i = 1000.0 * (t + 1) as f64 * (1.0 + i as f64 / k as f64);
            losses[i] = Some(
                2.0 + (i as f64 * 0.1) + 5.0 * n_i.powf(-0.3) + 0.01 * ((t * 7 + i) % 5) as f64,
            );
            tokens[i] = Some(n_i);
        }
        let obs = online::Observation {
            step: t as u64,
            losses: &losses,
            tokens: &tokens,
        };
        let t0 = std::time::Instant::now();
        std::hint::black_box(policy.observe(&obs)?);
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let report = |what: &str, times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let q = |p: f64| {
            times
                .get(((times.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        println!(
            "{} {what}, {k} domains, {} updates: mean {mean:.2} µs, p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
            spec.kind.as_str(),
            times.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    };
    report("policy update", &mut times);
    let dir = std::env::temp_dir().join(format!("mixopt-online-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("state.json");
    let mut svc = Service::open(spec, Some(&state), None)?;
    let mut times = Vec::new();
    for t in 0..n.min(5000) {
        let body = serde_json::json!({
            "step": t,
            "losses": spec.prior.domains().iter().enumerate()
                .map(|(i, d)| (d.clone(), serde_json::json!(2.0 + 0.1 * i as f64 + 3.0 / (t + 1) as f64)))
                .collect::<serde_json::Map<_, _>>(),
            "tokens": spec.prior.domains().iter().enumerate()
                .map(|(i, d)| (d.clone(), serde_json::json!(1000.0 * (t + 1) as f64 * (1 + i) as f64)))
                .collect::<serde_json::Map<_, _>>(),
        })
        .to_string();
        let t0 = std::time::Instant::now();
        svc.observe_json(body.as_bytes())?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    report("request (parse + update + atomic state write)", &mut times);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
