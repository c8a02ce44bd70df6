//! Test helpers: seeded random tensors, so a failing kernel test reproduces
//! (candle's own `Tensor::randn` draws from an unseeded CPU generator).

use candle_core::{Device, Result, Shape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// The generator of one test (keep the seed a literal in the test).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// An f32 tensor of `shape` with entries drawn from N(mean, std²) by `rng`.
pub fn randn<S: Into<Shape>>(
    rng: &mut StdRng,
    mean: f32,
    std: f32,
    shape: S,
    dev: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let dist = Normal::new(mean, std).expect("a test passes a finite std > 0");
    let data: Vec<f32> = (0..shape.elem_count())
        .map(|_| dist.sample(&mut *rng))
        .collect();
    Tensor::from_vec(data, shape, dev)
}
