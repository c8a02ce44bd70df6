//! Where proxies train: `--device cpu` (the default) or `--device cuda:N`
//! (needs a build with `--features cuda`; without it the error says so).

use crate::error::{Error, Result};
use candle_core::Device;

/// Parse `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
pub fn parse_device(arg: &str) -> Result<Device> {
    let arg = arg.trim();
    if arg == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match arg.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid(format!("--device {arg:?}: expected cpu, cuda or cuda:N"))
            })?,
        None => {
            return Err(Error::invalid(format!(
                "--device {arg:?}: expected cpu, cuda or cuda:N"
            )))
        }
    };
    Device::new_cuda(ordinal)
        .map_err(|e| Error::invalid(format!("--device {arg}: {e} ({})", hint(ordinal))))
}

/// What to check when `--device cuda:N` fails.
#[cfg(not(feature = "cuda"))]
fn hint(_ordinal: usize) -> String {
    "CUDA needs a build with `cargo build --release --features cuda`, e.g. bench/cuda_build.sh"
        .to_string()
}

#[cfg(feature = "cuda")]
fn hint(ordinal: usize) -> String {
    format!(
        "this is a CUDA build: it needs NVIDIA GPU {ordinal}, its driver (libcuda.so.1; \
         CUDA 13 needs driver >= 580) and CUDA 13's libcublas/libcurand/libnvrtc/libcudart \
         on the library path"
    )
}

/// Set candle's own intra-op thread count (it reads RAYON_NUM_THREADS on every
/// matmul; its element-wise pool is sized on first use). mixopt keeps it at 1
/// and parallelizes one level up instead (data-parallel shards within a run,
/// concurrent runs in a sweep): measured faster than candle's intra-op threads,
/// which leave every non-matmul op on one core. Called before any worker starts.
pub fn set_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        for bad in ["gpu", "cuda:x", "cuda0", ""] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
        match parse_device("cuda:0") {
            // A CUDA build on a machine with a GPU.
            Ok(dev) => assert!(cfg!(feature = "cuda") && dev.is_cuda()),
            // No CUDA in the build, or no GPU (or driver) on the machine: the
            // error says which to check.
            Err(e) => {
                let err = e.to_string();
                assert!(err.contains(&hint(0)), "{err}");
                let expect = if cfg!(feature = "cuda") {
                    "CUDA build"
                } else {
                    "--features cuda"
                };
                assert!(err.contains(expect), "{err}");
            }
        }
    }
}
