//! Fast seeded Gamma(α, 1) and Dirichlet draws for the simulation proposer's
//! candidates (`PriorSampler::sample_rows`); the sweep's mixtures keep
//! rand_distr's exact draws.

use rand::Rng;
use rand_distr::{Exp1, Open01, StandardNormal};

/// Gamma(α, 1) by Marsaglia and Tsang's method with its constants computed
/// once, and for α < 1 the boost G(α) = G(α + 1) · U^(1/α) computed as
/// exp(−E/α) with E ~ Exp(1) (= −ln U in distribution), skipping the
/// G(α + 1) draw when the factor underflows.
/// (rand_distr's `Gamma` draws the same distribution; here `powf` was 47% of
/// the simulation proposer's time with 64 domains, where most shapes are
/// tiny.) The sweep keeps rand_distr's exact draws, so its mixtures do not
/// change.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastGamma {
    /// Marsaglia–Tsang for shape a ≥ 1: d = a − 1/3, c = 1/√(9d).
    d: f64,
    c: f64,
    /// 1/α for α < 1, else 0.
    inv_shape: f64,
}

impl FastGamma {
    pub(super) fn new(shape: f64) -> Option<FastGamma> {
        if !(shape > 0.0 && shape.is_finite()) {
            return None;
        }
        let (a, inv_shape) = if shape < 1.0 {
            (shape + 1.0, 1.0 / shape)
        } else {
            (shape, 0.0)
        };
        let d = a - 1.0 / 3.0;
        Some(FastGamma {
            d,
            c: 1.0 / (9.0 * d).sqrt(),
            inv_shape,
        })
    }

    fn large<R: Rng>(&self, rng: &mut R) -> f64 {
        loop {
            let x: f64 = rng.sample(StandardNormal);
            let v_cbrt = 1.0 + self.c * x;
            if v_cbrt <= 0.0 {
                continue;
            }
            let v = v_cbrt * v_cbrt * v_cbrt;
            let u: f64 = rng.sample(Open01);
            let x2 = x * x;
            if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + self.d * (1.0 - v + v.ln()) {
                return self.d * v;
            }
        }
    }

    /// The exponent t of the boost factor e^t (α < 1 only): ln U = −E for
    /// E ~ Exp(1), a ziggurat draw with no logarithm.
    fn exponent<R: Rng>(&self, rng: &mut R) -> f64 {
        let e: f64 = rng.sample(Exp1);
        -e * self.inv_shape
    }
}

/// G(α+1) for α+1 ≤ 2 exceeds this with probability below 1e-24.
const LN_GAMMA_BOUND: f64 = 4.1; // ln 60
/// Components below 2^-60 of the total do not change the normalized weights
/// at f64 precision (and fall far under `min_weight`).
const LN_NEGLIGIBLE: f64 = -41.6; // ln 2^-60

/// Unnormalized Dirichlet draws `x` (one per domain) from `gammas`. For the
/// tiny shapes of many-domain priors the boost exponents are drawn first;
/// the component with the largest one is completed and bounds the total from
/// below, and components that cannot reach 2^-60 of it are set to 0 without
/// drawing their G(α + 1) or taking an exponential (most of them, at small
/// concentrations). Exact up to those negligible components.
pub(super) fn fast_dirichlet<R: Rng>(
    gammas: &[Option<FastGamma>],
    rng: &mut R,
    x: &mut [f64],
    t: &mut [f64],
) {
    let mut lead: Option<usize> = None;
    for (i, g) in gammas.iter().enumerate() {
        match g {
            None => {
                x[i] = 0.0;
                t[i] = f64::NEG_INFINITY;
            }
            Some(g) if g.inv_shape == 0.0 => {
                x[i] = g.large(rng);
                t[i] = f64::NEG_INFINITY;
            }
            Some(g) => {
                t[i] = g.exponent(rng);
                x[i] = f64::NAN; // pending
                if lead.is_none_or(|j| t[i] > t[j]) {
                    lead = Some(i);
                }
            }
        }
    }
    let Some(lead) = lead else { return };
    let complete = |i: usize, rng: &mut R| {
        gammas[i]
            .as_ref()
            .map_or(0.0, |g| g.large(rng) * t[i].exp())
    };
    x[lead] = complete(lead, rng);
    let floor = x
        .iter()
        .filter(|v| !v.is_nan())
        .fold(0.0f64, |m, &v| m.max(v));
    let cut = if floor > 0.0 {
        floor.ln() + LN_NEGLIGIBLE - LN_GAMMA_BOUND
    } else {
        f64::NEG_INFINITY
    };
    for i in 0..x.len() {
        if x[i].is_nan() {
            // e^t below 2^-1074 is 0 whatever G(α + 1) is.
            x[i] = if t[i] < cut || t[i] < -750.0 {
                0.0
            } else {
                complete(i, rng)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn fast_gamma_matches_the_gamma_distribution() {
        // Mean α and variance α of Gamma(α, 1), for tiny, small and large shapes.
        let mut rng = StdRng::seed_from_u64(5);
        for alpha in [0.02, 0.3, 1.0, 2.5, 9.0] {
            let g = [FastGamma::new(alpha)];
            let n = 200_000;
            let (mut x, mut t) = ([0.0], [0.0]);
            let xs: Vec<f64> = (0..n)
                .map(|_| {
                    fast_dirichlet(&g, &mut rng, &mut x, &mut t);
                    x[0]
                })
                .collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Standard error of the mean is sqrt(α/n); of the variance ~ sqrt(6α²/n) for small α.
            assert!(
                (mean - alpha).abs() < 6.0 * (alpha / n as f64).sqrt(),
                "α {alpha}: mean {mean}"
            );
            assert!(
                (var - alpha).abs() < 0.05 * alpha + 0.01,
                "α {alpha}: var {var}"
            );
        }
    }
}
