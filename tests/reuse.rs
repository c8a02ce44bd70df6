//! Mixture reuse on a synthetic law (Olmix's case study, in miniature): a
//! previous optimum over four domains exists; a fifth source is added. Full
//! recomputation sweeps all five domains again; reuse freezes the four old
//! domains' ratios into one virtual domain and sweeps only it and the new
//! source. With a fifth of the runs, reuse's composed mixture reaches the
//! same true target as the full recomputation.
//!
//! The "proxy runs" are evaluations of a known law (Data-Mixing-Law shape,
//! per-domain loss c + k·exp(t·w), plus seeded noise), so the test is fast
//! and its true optimum is known.

use mixopt::law::{fit_law, FitOptions, Target};
use mixopt::mixture::reuse::Reuse;
use mixopt::mixture::sampler::{PriorSampler, SamplerConfig};
use mixopt::mixture::Mixture;
use mixopt::optimize::exact::Exact;
use mixopt::optimize::{Bounds, ProposeContext, Proposer};
use mixopt::store::RunsData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DOMAINS: [&str; 5] = ["web", "code", "books", "math", "papers"];

/// True per-domain validation loss: each domain learns mostly from itself
/// (diagonal) and a little from the others (off-diagonal transfer).
fn losses(w: &[f64]) -> Vec<f64> {
    let c = [2.0, 1.2, 2.4, 1.0, 1.6];
    let k = [1.5, 1.8, 1.2, 2.0, 1.4];
    let diag = [-2.5, -4.0, -2.0, -5.0, -3.0];
    (0..5)
        .map(|i| {
            let s: f64 = (0..5)
                .map(|j| if i == j { diag[i] * w[j] } else { -0.6 * w[j] })
                .sum();
            c[i] + k[i] * s.exp()
        })
        .collect()
}

fn target(w: &[f64]) -> f64 {
    losses(w).iter().sum::<f64>() / 5.0
}

/// "Proxy runs" on `mixtures` (leaf weights), with seeded noise.
fn runs(mixtures: &[Mixture], seed: u64) -> RunsData {
    let mut rng = StdRng::seed_from_u64(seed);
    RunsData {
        ids: (0..mixtures.len()).map(|i| format!("r{i}")).collect(),
        domains: DOMAINS.map(String::from).to_vec(),
        weights: mixtures.iter().map(|m| m.weights().to_vec()).collect(),
        metric_names: DOMAINS.map(String::from).to_vec(),
        metrics: mixtures
            .iter()
            .map(|m| {
                losses(m.weights())
                    .into_iter()
                    .map(|l| l + rng.random_range(-0.002..0.002))
                    .collect()
            })
            .collect(),
        source: "synthetic".into(),
    }
}

/// Fit the log-linear law (Olmix's default) to `data` and minimize it
/// exactly: the proposed mixture.
fn fit_and_optimize(data: &RunsData, prior: &Mixture) -> Mixture {
    let t = Target::parse("mean", &data.metric_names).unwrap();
    let law = fit_law(
        data,
        &t,
        &FitOptions {
            law: "loglinear".into(),
            ..FitOptions::default()
        },
    )
    .unwrap();
    let bounds = Bounds::simplex(&data.domains);
    let ctx = ProposeContext {
        domains: &data.domains,
        prior,
        seed: 0,
        maximize: false,
        bounds: &bounds,
        kl_weight: 0.0,
        spread_weight: 0.0,
    };
    Exact::default()
        .propose(law.fitted.as_ref(), &ctx)
        .unwrap()
        .mixture
}

/// The true optimum over the simplex, by the same exact proposer on the
/// true target.
fn true_optimum(domains: &[String], prior: &Mixture) -> Mixture {
    struct Truth;
    impl mixopt::law::FittedLaw for Truth {
        fn predict(&self, x: &[f64]) -> f64 {
            target(x)
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
    let bounds = Bounds::simplex(domains);
    let ctx = ProposeContext {
        domains,
        prior,
        seed: 0,
        maximize: false,
        bounds: &bounds,
        kl_weight: 0.0,
        spread_weight: 0.0,
    };
    Exact::default().propose(&Truth, &ctx).unwrap().mixture
}

#[test]
fn reuse_reaches_full_recomputation_with_a_fifth_of_the_runs() {
    let domains: Vec<String> = DOMAINS.map(String::from).to_vec();
    let natural =
        Mixture::parse_spec("web=0.45,code=0.2,books=0.15,math=0.05,papers=0.15").unwrap();

    // The previous optimum, found before `papers` existed: the true optimum
    // with papers at 0 (what an earlier search over four domains gave).
    let old: Vec<String> = domains[..4].to_vec();
    struct Old;
    impl mixopt::law::FittedLaw for Old {
        fn predict(&self, x: &[f64]) -> f64 {
            target(&[x[0], x[1], x[2], x[3], 0.0])
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
    let old_prior = natural.align(&domains).unwrap();
    let old_prior = Mixture::from_scores(old.clone(), &old_prior.weights()[..4]).unwrap();
    let bounds = Bounds::simplex(&old);
    let previous = Exact::default()
        .propose(
            &Old,
            &ProposeContext {
                domains: &old,
                prior: &old_prior,
                seed: 0,
                maximize: false,
                bounds: &bounds,
                kl_weight: 0.0,
                spread_weight: 0.0,
            },
        )
        .unwrap()
        .mixture;

    // Full recomputation: 80 runs over all five domains.
    let full_runs = 80;
    let sampled = PriorSampler::new(&natural, SamplerConfig::default(), 1)
        .unwrap()
        .sample(full_runs)
        .unwrap();
    let full = fit_and_optimize(&runs(&sampled, 11), &natural);

    // Reuse: 16 runs over (reused, papers), expanded to leaves for training.
    let reuse = Reuse::plan(&previous, &domains, &[]).unwrap();
    let reduced_prior = reuse.reduce(&natural).unwrap();
    let reuse_runs = 16;
    let reduced = PriorSampler::new(&reduced_prior, SamplerConfig::default(), 2)
        .unwrap()
        .sample(reuse_runs)
        .unwrap();
    let leaves: Vec<Mixture> = reduced
        .iter()
        .map(|m| reuse.expand(m, &domains).unwrap())
        .collect();
    let data = runs(&leaves, 12).reduce(&reuse).unwrap();
    let reused = reuse
        .expand_leaves(&fit_and_optimize(&data, &reduced_prior))
        .unwrap();

    let best = target(true_optimum(&domains, &natural).weights());
    let (t_full, t_reuse, t_nat) = (
        target(full.weights()),
        target(reused.weights()),
        target(natural.weights()),
    );
    println!(
        "true target: optimum {best:.5}, full recomputation ({full_runs} runs) {t_full:.5}, \
         reuse ({reuse_runs} runs) {t_reuse:.5}, natural {t_nat:.5}"
    );
    println!("full:  {}\nreuse: {}", full.to_spec(), reused.to_spec());
    // Both far better than natural; reuse within 5% of the natural-to-optimum
    // gap of the full recomputation's true target.
    let gap = t_nat - best;
    assert!(
        t_full < t_nat - 0.5 * gap,
        "full recomputation did not improve"
    );
    assert!(
        t_reuse <= t_full + 0.05 * gap,
        "reuse {t_reuse} vs full {t_full} (gap {gap})"
    );
    assert!(reuse_runs * 5 <= full_runs);
}
