//! `mixopt bench`: benchmarks that print figures (never timed tests).
//!
//! `bench train` measures proxy training throughput — tokens/s, ms/step,
//! achieved GFLOP/s and peak RSS — and with `--vs-pytorch` runs
//! `bench/pytorch_proxy.py` (the same model, initialization, optimizer and
//! batch shape in PyTorch, same thread count) interleaved with it in the same
//! invocation, ending with `ratio mixopt/pytorch tokens/s = X.XX`.

use crate::corpus::cache::TokenCache;
use crate::corpus::prepare::{domains_in_dir, prepare, PrepareSpec};
use crate::mixture::Mixture;
use crate::proxy::sweep::SweepSpec;
use crate::proxy::train::train_proxy_with;
use crate::proxy::{ProxyConfig, TrainOptions};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Proxy training throughput (optionally beside PyTorch).
    Train(TrainBench),
    /// Sweep throughput: the same runs one after another on one thread, then
    /// on every core as concurrent runs, then as data-parallel runs.
    Sweep(SweepBench),
}

#[derive(Debug, clap::Args)]
pub struct SweepBench {
    /// Proxy preset: a TOML file or a built-in name.
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// Runs in each sweep.
    #[arg(long, default_value_t = 8)]
    pub runs: usize,
    /// Workers of the concurrent sweep (default: number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Optimizer steps per run instead of the preset's (large presets take
    /// minutes a run; runs/hour is then for this many steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Times to run the three sweeps, taking turns; the scaling printed is
    /// the median of the repeats' ratios.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PytorchAttention {
    Sdpa,
    Naive,
}

impl PytorchAttention {
    /// The flag value, also what `bench/pytorch_proxy.py --attention` takes.
    fn name(self) -> &'static str {
        match self {
            PytorchAttention::Sdpa => "sdpa",
            PytorchAttention::Naive => "naive",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TrainBench {
    /// Proxy preset: a TOML file or a built-in name (base, tiny, small, 1m, 60m).
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// Timed optimizer steps per measurement.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps before the timed ones (allocator and cache warm-up).
    #[arg(long, default_value_t = 3)]
    pub warmup_steps: usize,
    /// CPU threads (mixopt: data-parallel row shards; PyTorch: intra-op threads).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Measurements of each implementation, interleaved.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Token cache to train on (default: the demo corpus, built in a temporary directory).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also run bench/pytorch_proxy.py with the same shapes, interleaved.
    #[arg(long)]
    pub vs_pytorch: bool,
    /// Python interpreter for --vs-pytorch.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Path of the PyTorch reference script.
    #[arg(long, default_value = "bench/pytorch_proxy.py")]
    pub pytorch_script: PathBuf,
    /// PyTorch's attention: `sdpa` (its fused `scaled_dot_product_attention`,
    /// is_causal — the fair match for mixopt's fused attention) or `naive`
    /// (matmul, mask, softmax, matmul).
    #[arg(long, value_enum, default_value = "sdpa", requires = "vs_pytorch")]
    pub pytorch_attention: PytorchAttention,
    /// Where mixopt's proxy trains: cpu, or cuda:N (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The fused kernels' instruction set: auto (the best the CPU has),
    /// baseline, avx2 or avx512 — to measure what each buys.
    #[arg(long, default_value = "auto")]
    pub kernels: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Train(b) => bench_train(b),
        What::Sweep(b) => bench_sweep(b),
    }
}

/// Build the demo corpus's cache in a scratch directory.
fn scratch_cache(scratch: &std::path::Path) -> anyhow::Result<PathBuf> {
    crate::corpus::synthetic::write_demo_corpus(&scratch.join("corpus"), 0, 0.3)?;
    let mut spec = PrepareSpec::new(scratch.join("cache"), Vec::new());
    spec.domains = domains_in_dir(&scratch.join("corpus"))?;
    prepare(&spec)?;
    Ok(scratch.join("cache"))
}

/// Run id → validation losses of a runs table.
fn losses_by_run(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<f64>>> {
    let (_, rows) = crate::store::runs::read_runs(path)?;
    Ok(rows.into_iter().map(|r| (r.run_id, r.losses)).collect())
}

fn bench_sweep(b: SweepBench) -> anyhow::Result<()> {
    anyhow::ensure!(b.runs > 0, "--runs must be > 0");
    anyhow::ensure!(b.repeats > 0, "--repeats must be > 0");
    anyhow::ensure!(b.jobs != Some(0), "--jobs must be > 0");
    let jobs = b
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let scratch = std::env::temp_dir().join(format!("mixopt-bench-sweep-{}", std::process::id()));
    let mut proxy = ProxyConfig::load(&b.proxy)?;
    if let Some(steps) = b.steps {
        anyhow::ensure!(steps > 0, "--steps must be > 0");
        proxy.n_steps = steps;
        proxy.warmup_steps = proxy.warmup_steps.min(steps);
        proxy.check()?;
    }
    let tokens_per_run = (proxy.n_steps * proxy.batch_size * proxy.seq_len) as f64;
    println!("cpu: {}", cpu_description());
    println!(
        "bench sweep: proxy {}, {} runs of {} steps ({} tokens each), {jobs} cores; mixopt: {}",
        proxy.name,
        b.runs,
        proxy.n_steps,
        tokens_per_run,
        mixopt_kernels("cpu")
    );
    let result = (|| {
        let cache = scratch_cache(&scratch)?;
        let modes = [
            ("sequential", 1, 1),
            ("concurrent", jobs, 1),
            ("data-parallel", 1, jobs),
        ];
        // seconds[mode][repeat]; the losses of each mode's first sweep.
        let mut seconds = vec![Vec::new(); modes.len()];
        let mut losses = Vec::new();
        // Every concurrent sweep, in every repeat, against the first sequential one.
        let mut concurrent_identical = true;
        // The modes take turns, repeat after repeat, so a change in the
        // machine's speed during the benchmark (another tenant, a clock
        // change) falls on every mode alike and the ratios of one repeat's
        // adjacent sweeps are not skewed by it.
        for repeat in 0..b.repeats {
            for (m, &(label, j, threads)) in modes.iter().enumerate() {
                let out = scratch.join(format!("runs-{label}-{repeat}.csv"));
                let started = Instant::now();
                let spec = SweepSpec {
                    noise_seeds: 0,
                    workers: j,
                    threads_per_run: threads,
                    ..SweepSpec::new(cache.clone(), proxy.clone(), b.runs, out.clone())
                };
                crate::proxy::sweep::run(&spec)?;
                let s = started.elapsed().as_secs_f64();
                println!(
                    "{label:<13} {j} worker(s) × {threads} thread(s): {} runs in {s:.1} s = {:.0} runs/hour, {:.0} tokens/s",
                    b.runs,
                    b.runs as f64 / s * 3600.0,
                    b.runs as f64 * tokens_per_run / s
                );
                seconds[m].push(s);
                let l = losses_by_run(&out)?;
                if m == 1 {
                    concurrent_identical &= l == losses[0];
                }
                if repeat == 0 {
                    losses.push(l);
                }
            }
            if b.repeats > 1 {
                println!(
                    "repeat {}: concurrent/sequential = {:.2}, data-parallel/sequential = {:.2}",
                    repeat + 1,
                    seconds[0][repeat] / seconds[1][repeat],
                    seconds[0][repeat] / seconds[2][repeat]
                );
            }
        }
        println!(
            "concurrent: identical losses run by run: {}",
            concurrent_identical
        );
        // (|Δ|, run, sequential loss) for every loss of every run.
        let mut diffs: Vec<(f64, &str, f64)> = losses[0]
            .iter()
            .zip(losses[2].values())
            .flat_map(|((run, a), b)| {
                a.iter()
                    .zip(b)
                    .map(move |(x, y)| ((x - y).abs(), run.as_str(), *x))
            })
            .collect();
        diffs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(&(largest, run, loss)) = diffs.last() {
            println!(
                "data-parallel: loss differences from sequential (float summation order, amplified over the run): median {:.2e}, largest {largest:.2e} ({run}, a loss of {loss:.3})",
                diffs[diffs.len() / 2].0
            );
        }
        for (m, label) in [(1, "concurrent"), (2, "data-parallel")] {
            let mut ratios: Vec<f64> = (0..b.repeats)
                .map(|r| seconds[0][r] / seconds[m][r])
                .collect();
            let mid = median(&mut ratios); // sorts them
            let spread = if b.repeats > 1 {
                format!(
                    " (median of {} interleaved repeats; range {:.2}–{:.2})",
                    b.repeats,
                    ratios[0],
                    ratios[b.repeats - 1]
                )
            } else {
                String::new()
            };
            println!("sweep throughput {label}/sequential = {mid:.2}{spread}");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// One measurement.
struct Figures {
    tokens_per_s: f64,
    ms_per_step: f64,
    peak_rss_mib: f64,
}

/// Training FLOPs per token: 6 × (matrix parameters, lm_head included) for the
/// forward and backward matmuls, plus the attention products (QKᵀ and AV
/// counted over the full T×T, 2 · 2 · T · d per layer forward, ×3 with the
/// backward: the usual model-FLOPs count; the fused CPU attention skips 1/4
/// to 3/8 of the T×T products, so it does less arithmetic than this).
pub fn flops_per_token(cfg: &ProxyConfig, vocab: usize) -> f64 {
    let (d, l, t) = (cfg.d_model as f64, cfg.n_layers as f64, cfg.seq_len as f64);
    let matrices = l * (4.0 * d * d + 3.0 * d * cfg.d_ff as f64) + vocab as f64 * d;
    6.0 * matrices + 12.0 * l * t * d
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn bench_train(b: TrainBench) -> anyhow::Result<()> {
    anyhow::ensure!(b.steps > 0, "--steps must be > 0");
    anyhow::ensure!(b.threads > 0, "--threads must be > 0");
    anyhow::ensure!(b.repeats > 0, "--repeats must be > 0");
    crate::proxy::set_threads(1);
    if b.kernels != "auto" {
        crate::proxy::simd::set_kernel_isa(crate::proxy::simd::KernelIsa::parse(&b.kernels)?)
            .context("--kernels")?;
    }
    let mut cfg = ProxyConfig::load(&b.proxy)?;
    cfg.n_steps = b.warmup_steps + b.steps;
    cfg.warmup_steps = cfg.warmup_steps.min(cfg.n_steps);
    cfg.eval_windows = 1;
    cfg.check()?;

    let scratch = std::env::temp_dir().join(format!("mixopt-bench-{}", std::process::id()));
    let cache_dir = match &b.cache {
        Some(dir) => dir.clone(),
        None => scratch_cache(&scratch)?,
    };
    let result = measure_all(&b, &cfg, &cache_dir);
    if b.cache.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

fn measure_all(
    b: &TrainBench,
    cfg: &ProxyConfig,
    cache_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let cache = TokenCache::open(cache_dir)?;
    let mixture = Mixture::uniform(cache.domains().to_vec())?;
    let flops = flops_per_token(cfg, cache.vocab_size());
    println!(
        "bench train: proxy {} (L={}, d={}, heads={}, ff={}), B={} T={}, vocab {}, {} threads, {} timed steps after {} warm-up, {:.2} MFLOP/token",
        cfg.name, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.batch_size, cfg.seq_len,
        cache.vocab_size(), b.threads, b.steps, b.warmup_steps, flops / 1e6
    );
    println!("cpu: {}", cpu_description());
    println!("mixopt: {}", mixopt_kernels(&b.device));
    if b.vs_pytorch {
        println!(
            "pytorch: {}, {} attention",
            describe_pytorch(b)?,
            b.pytorch_attention.name()
        );
    }
    println!(
        "{:<10} {:>4} {:>12} {:>10} {:>9} {:>10}",
        "impl", "rep", "tokens/s", "ms/step", "GFLOP/s", "peak MiB"
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for rep in 0..b.repeats {
        let f = measure_mixopt(cfg, &cache, &mixture, b.warmup_steps, b.threads, &b.device)?;
        print_row("mixopt", rep, &f, flops);
        ours.push(f.tokens_per_s);
        if b.vs_pytorch {
            let f = measure_pytorch(b, cfg, cache.vocab_size())?;
            print_row("pytorch", rep, &f, flops);
            theirs.push(f.tokens_per_s);
        }
    }
    let m = median(&mut ours);
    println!(
        "median mixopt tokens/s = {m:.0} ({:.2} GFLOP/s)",
        m * flops / 1e9
    );
    if b.vs_pytorch {
        let p = median(&mut theirs);
        println!(
            "median pytorch tokens/s = {p:.0} ({:.2} GFLOP/s)",
            p * flops / 1e9
        );
        println!("ratio mixopt/pytorch tokens/s = {:.2}", m / p);
    }
    Ok(())
}

/// The CPU's model name and the vector instruction sets that matter here.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[cfg(target_arch = "x86_64")]
    let isa = {
        let has = |yes: bool, name: &'static str| yes.then_some(name);
        [
            has(std::arch::is_x86_feature_detected!("avx2"), "avx2"),
            has(std::arch::is_x86_feature_detected!("fma"), "fma"),
            has(std::arch::is_x86_feature_detected!("avx512f"), "avx512f"),
            has(std::arch::is_x86_feature_detected!("avx512bw"), "avx512bw"),
            has(
                std::arch::is_x86_feature_detected!("avx512vnni"),
                "avx512vnni",
            ),
            has(
                std::arch::is_x86_feature_detected!("avx512bf16"),
                "avx512bf16",
            ),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    };
    #[cfg(not(target_arch = "x86_64"))]
    let isa = String::new();
    format!("{model} [{isa}]")
}

/// What mixopt's CPU step runs on: gemm's microkernels (it picks AVX-512
/// when the CPU has avx512f — the `x86-v4` feature — else FMA) and the fused
/// kernels' set.
fn mixopt_kernels(device: &str) -> String {
    if device != "cpu" {
        return format!("device {device}");
    }
    #[cfg(target_arch = "x86_64")]
    let gemm = if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512f"
    } else if std::arch::is_x86_feature_detected!("fma") {
        "fma (avx2)"
    } else {
        "scalar"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let gemm = "neon or scalar";
    format!(
        "gemm microkernels {gemm}, fused kernels {}",
        crate::proxy::simd::KernelIsa::active().name()
    )
}

/// The reference side: torch's version and `get_cpu_capability()`.
fn describe_pytorch(b: &TrainBench) -> anyhow::Result<String> {
    let out = std::process::Command::new(&b.python)
        .arg(&b.pytorch_script)
        .arg("--describe")
        .output()
        .with_context(|| format!("running {} {}", b.python, b.pytorch_script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} --describe failed: {}",
        b.pytorch_script.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{} --describe: no JSON line", b.pytorch_script.display()))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    Ok(format!(
        "{}, cpu capability {}",
        field("impl"),
        field("cpu_capability")
    ))
}

fn print_row(name: &str, rep: usize, f: &Figures, flops: f64) {
    println!(
        "{name:<10} {rep:>4} {:>12.0} {:>10.1} {:>9.2} {:>10.1}",
        f.tokens_per_s,
        f.ms_per_step,
        f.tokens_per_s * flops / 1e9,
        f.peak_rss_mib
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn measure_mixopt(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    warmup_steps: usize,
    threads: usize,
    device: &str,
) -> anyhow::Result<Figures> {
    let opts = TrainOptions {
        device: crate::proxy::parse_device(device)?,
        threads,
        ..TrainOptions::default()
    };
    let mut timed_from = None;
    let mut timed_to = None;
    let started = Instant::now();
    train_proxy_with(cfg, cache, mixture, &opts, |step| {
        if step + 1 == warmup_steps {
            timed_from = Some(Instant::now());
        }
        if step + 1 == cfg.n_steps {
            timed_to = Some(Instant::now());
        }
    })?;
    let from = timed_from.unwrap_or(started);
    let to = timed_to.context("training ended before its last step")?;
    let steps = (cfg.n_steps - warmup_steps) as f64;
    let secs = (to - from).as_secs_f64();
    Ok(Figures {
        tokens_per_s: steps * (cfg.batch_size * cfg.seq_len) as f64 / secs,
        ms_per_step: 1000.0 * secs / steps,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn measure_pytorch(b: &TrainBench, cfg: &ProxyConfig, vocab: usize) -> anyhow::Result<Figures> {
    let arg = |name: &str, v: String| [format!("--{name}"), v];
    let args: Vec<String> = [
        arg("vocab", vocab.to_string()),
        arg("n-layers", cfg.n_layers.to_string()),
        arg("d-model", cfg.d_model.to_string()),
        arg("n-heads", cfg.n_heads.to_string()),
        arg("d-ff", cfg.d_ff.to_string()),
        arg("seq-len", cfg.seq_len.to_string()),
        arg("batch-size", cfg.batch_size.to_string()),
        arg("steps", b.steps.to_string()),
        arg("warmup-steps", b.warmup_steps.to_string()),
        arg("threads", b.threads.to_string()),
        arg("seed", "0".into()),
        arg("lr", cfg.lr_peak.to_string()),
        arg("weight-decay", cfg.weight_decay.to_string()),
        arg("init-std", cfg.init_std.to_string()),
        arg("rope-theta", cfg.rope_theta.to_string()),
        arg("grad-clip", cfg.grad_clip.to_string()),
        arg("attention", b.pytorch_attention.name().into()),
    ]
    .concat();
    let out = std::process::Command::new(&b.python)
        .arg(&b.pytorch_script)
        .args(&args)
        .env("OMP_NUM_THREADS", b.threads.to_string())
        .output()
        .with_context(|| format!("running {} {}", b.python, b.pytorch_script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        b.pytorch_script.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "{}: no JSON figures in its output",
                b.pytorch_script.display()
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{}: bad JSON {line:?}", b.pytorch_script.display()))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("{}: figure {k} missing", b.pytorch_script.display()))
    };
    Ok(Figures {
        tokens_per_s: num("tokens_per_s")?,
        ms_per_step: num("ms_per_step")?,
        peak_rss_mib: num("peak_rss_mib")?,
    })
}
