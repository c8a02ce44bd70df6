//! Each policy on a simulated environment with known per-domain loss
//! curves, through the library API.

use super::*;

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("d{i}")).collect()
}

fn policy(
    kind: PolicyKind,
    k: usize,
    params: &[&str],
    reference: Option<Vec<f64>>,
) -> Box<dyn OnlinePolicy> {
    let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    online::build(&PolicySpec {
        kind,
        prior: Mixture::uniform(names(k)).unwrap(),
        params: online::parse_params(&params).unwrap(),
        reference_losses: reference,
    })
    .unwrap()
}

fn argmax(w: &[f64]) -> usize {
    (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap()
}

/// A batch of `rows` rows sampled from the policy's weights; each sampled
/// domain reports its (noisy) loss. Returns per-domain observed losses.
fn sampled_losses(w: &[f64], truth: &[f64], rows: usize, rng: &mut StdRng) -> Vec<Option<f64>> {
    let mut out = vec![None; w.len()];
    for _ in 0..rows {
        let mut u: f64 = rng.random();
        let mut d = w.len() - 1;
        for (i, p) in w.iter().enumerate() {
            if u < *p {
                d = i;
                break;
            }
            u -= p;
        }
        out[d] = Some(truth[d] + 0.05 * (rng.random::<f64>() - 0.5));
    }
    out
}

#[test]
fn odm_shifts_weight_toward_the_highest_loss_domain() {
    // Constant training losses 2, 3, 4.5: the bandit's reward is the loss.
    let truth = [2.0, 3.0, 4.5];
    let mut p = policy(PolicyKind::Odm, 3, &[], None);
    let mut rng = StdRng::seed_from_u64(7);
    let none = [None; 3];
    for step in 0..2000 {
        let losses = sampled_losses(p.weights(), &truth, 4, &mut rng);
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &none,
        })
        .unwrap();
    }
    let w = p.weights().to_vec();
    assert_eq!(argmax(&w), 2, "{w:?}");
    assert!(w[2] > 1.0 / 3.0 && w[0] < 1.0 / 3.0, "{w:?}");
    assert!(w[0] < w[1] && w[1] < w[2], "{w:?}");
}

#[test]
fn doremi_shifts_weight_toward_the_largest_excess_loss() {
    // Excess over the reference: 0.1, 0.6, −0.2 (clipped to 0).
    let reference = vec![2.0, 2.0, 2.0];
    let current = [2.1, 2.6, 1.8];
    let mut p = policy(PolicyKind::Doremi, 3, &["eta=0.1"], Some(reference));
    let losses: Vec<Option<f64>> = current.iter().map(|&l| Some(l)).collect();
    let none = [None; 3];
    for step in 0..200 {
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &none,
        })
        .unwrap();
    }
    let w = p.weights();
    assert_eq!(argmax(w), 1, "{w:?}");
    assert!(w[0] > w[2], "positive excess beats clipped: {w:?}");
    // The output is the average over updates, still led by domain 1.
    let avg = p.result();
    assert_eq!(argmax(avg.weights()), 1, "{avg:?}");
    assert!(avg.weights()[1] < w[1], "the average lags the last weights");
}

#[test]
fn aioli_shifts_weight_toward_the_domain_whose_training_helps_most() {
    // Linear dynamic law L ← L − A w per interval: training on domain 2 lowers
    // every domain's loss (column 2 has the largest sum), domain 0 only itself.
    let a = [
        [0.020, 0.000, 0.010],
        [0.000, 0.010, 0.015],
        [0.000, 0.005, 0.030],
    ];
    let mut losses = [4.0, 4.0, 4.0];
    let mut p = policy(PolicyKind::Aioli, 3, &["round_updates=8", "eta=20"], None);
    let mut rng = StdRng::seed_from_u64(3);
    let none = [None; 3];
    for step in 0..80u64 {
        let w = p.weights().to_vec();
        for i in 0..3 {
            let drop: f64 = (0..3).map(|j| a[i][j] * w[j]).sum();
            losses[i] -= drop + 0.0005 * (rng.random::<f64>() - 0.5);
        }
        let obs: Vec<Option<f64>> = losses.iter().map(|&l| Some(l)).collect();
        p.observe(&Observation {
            step,
            losses: &obs,
            tokens: &none,
        })
        .unwrap();
    }
    let learned = p.result();
    let w = learned.weights();
    assert_eq!(argmax(w), 2, "{w:?}");
    assert!(w[2] > 0.5, "{w:?}");
}

#[test]
fn ado_shifts_weight_toward_the_domain_still_learning() {
    // Domain 0 is nearly saturated (small β), domain 1 keeps improving.
    let law = |d: usize, n: f64| {
        if d == 0 {
            2.0 + 0.5 * n.powf(-0.3)
        } else {
            2.0 + 40.0 * n.powf(-0.3)
        }
    };
    let mut p = policy(PolicyKind::Ado, 2, &[], None);
    let mut tokens = [1.0f64; 2];
    for step in 0..300u64 {
        let w = p.weights().to_vec();
        for d in 0..2 {
            tokens[d] += 4096.0 * w[d];
        }
        let losses: Vec<Option<f64>> = (0..2).map(|d| Some(law(d, tokens[d]))).collect();
        let toks: Vec<Option<f64>> = tokens.iter().map(|&n| Some(n)).collect();
        p.observe(&Observation {
            step,
            losses: &losses,
            tokens: &toks,
        })
        .unwrap();
    }
    let w = p.weights();
    assert!(w[1] > 0.8, "{w:?}");
}

#[test]
fn a_bad_observation_leaves_the_policy_unchanged() {
    for kind in [
        PolicyKind::Odm,
        PolicyKind::Aioli,
        PolicyKind::Doremi,
        PolicyKind::Ado,
    ] {
        let mut p = policy(kind, 2, &[], Some(vec![1.0, 1.0]));
        let before = p.to_state();
        let bad = [Some(f64::NAN), Some(1.0)];
        let toks = [Some(1.0), Some(1.0)];
        assert!(p
            .observe(&Observation {
                step: 1,
                losses: &bad,
                tokens: &toks
            })
            .is_err());
        assert_eq!(p.to_state(), before, "{kind:?}");
    }
}
