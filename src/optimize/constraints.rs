//! Constraints on the optimized mixture and the objective every proposer
//! minimizes. Constraints are per-domain bounds lo_i ≤ w_i ≤ hi_i on the
//! simplex: `--min NAME=W`, `--max NAME=W`, and the repetition limit
//! w_i·B ≤ avail_i·E (a token budget B may use at most E epochs of a domain's
//! available tokens), which is an upper bound hi_i = avail_i·E/B. The
//! feasible set is a "capped simplex"; `Bounds` checks it is non-empty (an
//! infeasible request is an error naming the constraint) and projects onto it.

use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::Mixture;

/// Requested constraints, by domain name (raw, from the command line).
#[derive(Debug, Clone, Default)]
pub struct ConstraintSpec {
    pub min: Vec<(String, f64)>,
    pub max: Vec<(String, f64)>,
    /// Training tokens of the run the mixture is for.
    pub budget_tokens: Option<f64>,
    /// Epochs allowed over each domain's available tokens (same for all).
    pub max_epochs: Option<f64>,
    /// Available tokens per domain, in the law's domain order.
    pub available_tokens: Option<Vec<f64>>,
}

/// Validated bounds in the law's domain order, with the reason for each
/// upper bound (for error messages and the weights file).
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub domains: Vec<String>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    pub hi_reason: Vec<String>,
}

fn index_of(domains: &[String], name: &str, flag: &str) -> Result<usize> {
    domains.iter().position(|d| d == name).ok_or_else(|| {
        Error::invalid(format!(
            "{flag} {name}: unknown domain (the law's domains: {})",
            domains.join(", ")
        ))
    })
}

impl ConstraintSpec {
    /// Resolve against the law's domains and check feasibility.
    pub fn check(&self, domains: &[String]) -> Result<Bounds> {
        let d = domains.len();
        let mut lo = vec![0.0; d];
        let mut hi = vec![1.0; d];
        let mut hi_reason = vec![String::new(); d];
        for (name, w) in &self.min {
            let i = index_of(domains, name, "--min")?;
            if !(w.is_finite() && (0.0..=1.0).contains(w)) {
                return Err(Error::invalid(format!(
                    "--min {name}={w}: a weight must be in [0, 1]"
                )));
            }
            lo[i] = *w;
        }
        for (name, w) in &self.max {
            let i = index_of(domains, name, "--max")?;
            if !(w.is_finite() && (0.0..=1.0).contains(w)) {
                return Err(Error::invalid(format!(
                    "--max {name}={w}: a weight must be in [0, 1]"
                )));
            }
            if *w < hi[i] {
                hi[i] = *w;
                hi_reason[i] = format!("--max {name}={w}");
            }
        }
        match (self.budget_tokens, self.max_epochs, &self.available_tokens) {
            (None, None, _) => {}
            (Some(b), Some(e), Some(avail)) => {
                if !(b.is_finite() && b > 0.0) {
                    return Err(Error::invalid(format!(
                        "--budget-tokens {b}: must be > 0"
                    )));
                }
                if !(e.is_finite() && e > 0.0) {
                    return Err(Error::invalid(format!("--max-epochs {e}: must be > 0")));
                }
                if avail.len() != d {
                    return Err(Error::invalid(format!(
                        "available tokens for {} domains, the law has {d}",
                        avail.len()
                    )));
                }
                for i in 0..d {
                    let cap = avail[i] * e / b;
                    if cap < hi[i] {
                        hi[i] = cap;
                        hi_reason[i] = format!(
                            "{}: {:.0} available tokens × {e} epochs / budget {b:.0} tokens = {cap:.4}",
                            domains[i], avail[i]
                        );
                    }
                }
            }
            (Some(_), Some(_), None) => {
                return Err(Error::invalid(
                    "--budget-tokens needs each domain's available tokens: --cache DIR or --available NAME=TOKENS",
                ))
            }
            _ => {
                return Err(Error::invalid(
                    "--budget-tokens and --max-epochs go together (w_i·budget ≤ available_i·epochs)",
                ))
            }
        }
        for i in 0..d {
            if lo[i] > hi[i] + 1e-12 {
                return Err(Error::invalid(format!(
                    "constraints cannot be met: --min {}={} exceeds its upper limit {:.4} ({})",
                    domains[i], lo[i], hi[i], hi_reason[i]
                )));
            }
        }
        let sum_lo: f64 = lo.iter().sum();
        if sum_lo > 1.0 + 1e-9 {
            return Err(Error::invalid(format!(
                "constraints cannot be met: the --min weights sum to {sum_lo:.4} > 1"
            )));
        }
        let sum_hi: f64 = hi.iter().sum();
        if sum_hi < 1.0 - 1e-9 {
            let capped: Vec<&str> = hi_reason
                .iter()
                .filter(|r| !r.is_empty())
                .map(String::as_str)
                .collect();
            return Err(Error::invalid(format!(
                "constraints cannot be met: the upper limits sum to {sum_hi:.4} < 1 \
                 (raise --max-epochs or lower --budget-tokens; limits: {})",
                capped.join("; ")
            )));
        }
        Ok(Bounds {
            domains: domains.to_vec(),
            lo,
            hi,
            hi_reason,
        })
    }
}

impl Bounds {
    /// No constraint beyond the simplex.
    pub fn simplex(domains: &[String]) -> Bounds {
        let d = domains.len();
        Bounds {
            domains: domains.to_vec(),
            lo: vec![0.0; d],
            hi: vec![1.0; d],
            hi_reason: vec![String::new(); d],
        }
    }

    pub fn is_simplex(&self) -> bool {
        self.lo.iter().all(|&l| l == 0.0) && self.hi.iter().all(|&h| h >= 1.0)
    }

    /// Does `w` satisfy the bounds (within `tol`) and sum to 1?
    pub fn contains(&self, w: &[f64], tol: f64) -> bool {
        (w.iter().sum::<f64>() - 1.0).abs() <= tol
            && w.iter()
                .zip(self.lo.iter().zip(&self.hi))
                .all(|(v, (l, h))| *v >= l - tol && *v <= h + tol)
    }

    /// Euclidean projection: w_i = clip(v_i − τ, lo_i, hi_i) with Σw = 1
    /// (τ by bisection; Σw is monotone in τ).
    pub fn project(&self, v: &[f64]) -> Vec<f64> {
        self.solve_scalar(|tau| {
            v.iter()
                .zip(self.lo.iter().zip(&self.hi))
                .map(|(x, (l, h))| (x - tau).clamp(*l, *h))
                .collect()
        })
    }

    /// KL (Bregman) projection of a positive vector, the mirror-descent step:
    /// w_i = clip(v_i·s, lo_i, hi_i) with Σw = 1 (s = e^{−τ}).
    pub fn project_kl(&self, v: &[f64]) -> Vec<f64> {
        self.solve_scalar(|tau| {
            let s = (-tau).exp();
            v.iter()
                .zip(self.lo.iter().zip(&self.hi))
                .map(|(x, (l, h))| (x * s).clamp(*l, *h))
                .collect()
        })
    }

    /// Find τ with Σ f(τ) = 1 for a non-increasing f by bisection.
    fn solve_scalar(&self, f: impl Fn(f64) -> Vec<f64>) -> Vec<f64> {
        let sum = |tau: f64| f(tau).iter().sum::<f64>();
        let (mut a, mut b) = (-1.0, 1.0);
        while sum(a) < 1.0 && a > -1e6 {
            a *= 2.0;
        }
        while sum(b) > 1.0 && b < 1e6 {
            b *= 2.0;
        }
        for _ in 0..200 {
            let m = 0.5 * (a + b);
            if sum(m) > 1.0 {
                a = m;
            } else {
                b = m;
            }
            if b - a < 1e-15 {
                break;
            }
        }
        let mut w = f(0.5 * (a + b));
        // Remove the bisection's last rounding from a free coordinate.
        let err = w.iter().sum::<f64>() - 1.0;
        if let Some(i) = (0..w.len()).find(|&i| {
            let t = w[i] - err;
            t >= self.lo[i] && t <= self.hi[i]
        }) {
            w[i] -= err;
        }
        w
    }
}

/// What a proposer minimizes: sign·law(w) + λ·KL(w‖prior) + β·spread(w),
/// with sign = −1 when maximizing. KL uses the prior smoothed by 1e-6 so a
/// domain the prior lacks costs a finite amount.
pub struct Objective<'a> {
    pub law: &'a dyn FittedLaw,
    pub maximize: bool,
    pub kl_weight: f64,
    pub prior: Vec<f64>,
    pub spread_weight: f64,
}

impl<'a> Objective<'a> {
    pub fn new(law: &'a dyn FittedLaw, maximize: bool, prior: &Mixture) -> Self {
        let d = prior.len() as f64;
        let prior = prior
            .weights()
            .iter()
            .map(|p| (p + 1e-6) / (1.0 + 1e-6 * d))
            .collect();
        Objective {
            law,
            maximize,
            kl_weight: 0.0,
            prior,
            spread_weight: 0.0,
        }
    }

    /// `value` for many mixtures, with the law evaluated in one batch.
    pub fn values(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        let mut v = self.law.predict_batch(rows);
        for (vi, w) in v.iter_mut().zip(rows) {
            if self.maximize {
                *vi = -*vi;
            }
            if self.kl_weight > 0.0 {
                *vi += self.kl_weight * kl(w, &self.prior);
            }
            if self.spread_weight > 0.0 {
                *vi += self.spread_weight * self.law.predict_spread(w).unwrap_or(0.0);
            }
        }
        v
    }

    pub fn value(&self, w: &[f64]) -> f64 {
        let p = self.law.predict(w);
        let mut v = if self.maximize { -p } else { p };
        if self.kl_weight > 0.0 {
            v += self.kl_weight * kl(w, &self.prior);
        }
        if self.spread_weight > 0.0 {
            v += self.spread_weight * self.law.predict_spread(w).unwrap_or(0.0);
        }
        v
    }
}

/// KL(w‖p) = Σ w_i ln(w_i/p_i) (0·ln 0 = 0).
pub fn kl(w: &[f64], p: &[f64]) -> f64 {
    w.iter()
        .zip(p)
        .filter(|(wi, _)| **wi > 0.0)
        .map(|(wi, pi)| wi * (wi / pi).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn projections_land_in_the_bounds() {
        let spec = ConstraintSpec {
            min: vec![("d0".into(), 0.1)],
            max: vec![("d1".into(), 0.2)],
            ..Default::default()
        };
        let b = spec.check(&names(3)).unwrap();
        for v in [
            vec![0.0, 0.9, 0.1],
            vec![5.0, -1.0, 2.0],
            vec![0.3, 0.3, 0.4],
        ] {
            let w = b.project(&v);
            assert!(b.contains(&w, 1e-12), "{w:?}");
            let pos: Vec<f64> = v.iter().map(|x: &f64| x.abs() + 1e-3).collect();
            let k = b.project_kl(&pos);
            assert!(b.contains(&k, 1e-12), "{k:?}");
        }
        // A feasible point projects to itself.
        let w = b.project(&[0.3, 0.2, 0.5]);
        assert!((w[0] - 0.3).abs() < 1e-12 && (w[2] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn infeasible_requests_name_the_constraint() {
        let d = names(2);
        let e = |s: ConstraintSpec| s.check(&d).unwrap_err().to_string();
        let m = e(ConstraintSpec {
            min: vec![("d0".into(), 0.7), ("d1".into(), 0.5)],
            ..Default::default()
        });
        assert!(m.contains("--min") && m.contains("1.2"), "{m}");
        let m = e(ConstraintSpec {
            budget_tokens: Some(1e9),
            max_epochs: Some(1.0),
            available_tokens: Some(vec![1e8, 2e8]),
            ..Default::default()
        });
        assert!(
            m.contains("upper limits sum to 0.3") && m.contains("d1"),
            "{m}"
        );
        let m = e(ConstraintSpec {
            min: vec![("d0".into(), 0.5)],
            max: vec![("d0".into(), 0.4)],
            ..Default::default()
        });
        assert!(
            m.contains("--min d0=0.5") && m.contains("--max d0=0.4"),
            "{m}"
        );
        assert!(e(ConstraintSpec {
            min: vec![("zz".into(), 0.1)],
            ..Default::default()
        })
        .contains("unknown domain"));
        assert!(e(ConstraintSpec {
            budget_tokens: Some(1e9),
            max_epochs: Some(1.0),
            ..Default::default()
        })
        .contains("--available"));
    }

    #[test]
    fn repetition_limit_is_an_upper_bound() {
        let b = ConstraintSpec {
            budget_tokens: Some(1e9),
            max_epochs: Some(4.0),
            available_tokens: Some(vec![5e7, 1e10]),
            ..Default::default()
        }
        .check(&names(2))
        .unwrap();
        assert!((b.hi[0] - 0.2).abs() < 1e-12 && b.hi[1] == 1.0);
    }
}
