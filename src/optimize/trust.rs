//! Trust region: keep the optimum within KL(w‖prior) ≤ r of the prior.
//!
//! A law fitted on a sweep is trustworthy near where the runs put their
//! weight and extrapolates badly far from it: on the real 10-domain corpus a
//! scale-aware law's unconstrained optimum (KL ≈ 0.9 from the natural
//! shares) lost to natural on the 8×-token target model, KL ≈ 0.2 still lost,
//! KL ≈ 0.05 beat natural on 3 seeds of 3 (uniform on 2) (docs/benchmarks.md). The radius is a
//! constraint rather than a penalty weight so it means the same whatever the
//! target's units. It is enforced through the proposers' own KL penalty: the
//! smallest extra λ whose optimum lies inside the ball, found by bisection on
//! log λ (every proposer already takes λ, so none needs a constrained variant).

use super::constraints::kl;
use super::{Proposal, ProposeContext, Proposer};
use crate::error::Result;
use crate::law::FittedLaw;

/// How the trust region was met, for provenance and the printed summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrustOutcome {
    pub radius: f64,
    /// KL(w‖prior) of the unconstrained optimum.
    pub kl_unconstrained: f64,
    /// KL(w‖prior) of the returned optimum.
    pub kl: f64,
    /// Extra λ added to the context's own (0 when the ball did not bind).
    pub lambda: f64,
    /// The proposer could not reach the ball (e.g. `search` with no observed
    /// run inside it): the returned mixture is the closest it found.
    pub reached: bool,
}

/// Bisection steps on log λ once a bracketing λ is known.
const BISECT: usize = 12;
/// λ values tried upward (×4 each) before giving up on reaching the ball.
const GROW: usize = 24;

/// Run `proposer` so that its optimum lies within KL ≤ `radius` of the prior.
pub fn propose_within(
    proposer: &dyn Proposer,
    law: &dyn FittedLaw,
    ctx: &ProposeContext,
    radius: f64,
) -> Result<(Proposal, TrustOutcome)> {
    let prior = ctx.prior.align(ctx.domains)?;
    let dist = |p: &Proposal| kl(p.mixture.weights(), prior.weights());
    let with = |extra: f64| -> Result<Proposal> {
        let c = ProposeContext {
            kl_weight: ctx.kl_weight + extra,
            ..*ctx
        };
        proposer.propose(law, &c)
    };
    let free = proposer.propose(law, ctx)?;
    let kl_free = dist(&free);
    let done = |p: Proposal, lambda: f64, reached: bool| {
        let out = TrustOutcome {
            radius,
            kl_unconstrained: kl_free,
            kl: dist(&p),
            lambda,
            reached,
        };
        Ok((p, out))
    };
    if kl_free <= radius {
        return done(free, 0.0, true);
    }
    // λ's natural scale is the target's: start a thousandth of its size.
    let scale = law.predict(prior.weights()).abs().max(1e-6);
    let mut lo = 0.0f64;
    let mut hi = 1e-3 * scale;
    let mut best = with(hi)?;
    let mut grown = 0;
    while dist(&best) > radius && grown < GROW {
        lo = hi;
        hi *= 4.0;
        best = with(hi)?;
        grown += 1;
    }
    if dist(&best) > radius {
        return done(best, hi, false);
    }
    for _ in 0..BISECT {
        let mid = if lo > 0.0 { (lo * hi).sqrt() } else { hi / 4.0 };
        let p = with(mid)?;
        if dist(&p) <= radius {
            hi = mid;
            best = p;
        } else {
            lo = mid;
        }
    }
    done(best, hi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::law::linear::FittedLinear;
    use crate::mixture::Mixture;
    use crate::optimize::constraints::Bounds;
    use crate::optimize::exact::Exact;

    #[test]
    fn the_optimum_moves_to_the_ball_edge_and_no_further() {
        let domains: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // Loss falls with weight on "a": the free optimum is all "a".
        let law = FittedLinear {
            intercept: 3.0,
            coef: vec![-1.0, 0.0, 0.5],
            alpha: 0.0,
        };
        let prior = Mixture::new(domains.clone(), vec![0.3, 0.4, 0.3]).unwrap();
        let bounds = Bounds::simplex(&domains);
        let ctx = ProposeContext {
            domains: &domains,
            prior: &prior,
            seed: 0,
            maximize: false,
            bounds: &bounds,
            kl_weight: 0.0,
            spread_weight: 0.0,
        };
        let exact = Exact::default();
        let (p, t) = propose_within(&exact, &law, &ctx, 0.05).unwrap();
        assert!(t.kl_unconstrained > 0.5, "{t:?}");
        assert!(t.reached && t.kl <= 0.05 && t.kl > 0.04, "{t:?}");
        assert!(p.mixture.weights()[0] > 0.3, "{:?}", p.mixture);
        // A ball that holds the free optimum leaves it alone.
        let (q, u) = propose_within(&exact, &law, &ctx, 10.0).unwrap();
        assert_eq!(u.lambda, 0.0);
        assert!(q.mixture.weights()[0] > 0.99);
    }
}
