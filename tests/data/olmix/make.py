"""Writes the Olmix-shaped swarm files in this folder with pandas, as Olmix
publishes its swarms: `ratios.csv` / `metrics.csv` with pandas' unnamed index
column, then `run`, `name`, `index`, then one column per domain
(`source:topic`) or metric. The numbers are synthetic (a known law plus
noise, seed 0), not Olmix's: the files test the format, and the law lets a
test check that the fit finds the structure.

    python3 tests/data/olmix/make.py   # needs pandas and pyarrow
"""

import pathlib

import numpy as np
import pandas as pd

HERE = pathlib.Path(__file__).parent
DOMAINS = [
    "dclm:adult_content",
    "dclm:science_math_and_technology",
    "dclm:software development",  # a space: carried as it is
    "stack-edu:Python",
    "stack-edu:Rust",
]
METRICS = {
    # metric: (direction of the synthetic effect per domain, base level)
    "arc_challenge:rc::olmes": ([0.0, -0.30, -0.05, -0.05, 0.0], 0.40),
    "minerva_math_algebra::olmes": ([0.1, -0.40, 0.0, -0.10, -0.05], 0.80),
    "codex_humaneval:3shot::none": ([0.1, 0.0, -0.20, -0.50, -0.40], 0.90),
    "mbpp:3shot::none": ([0.1, 0.0, -0.20, -0.45, -0.45], 0.85),
}


def main():
    rng = np.random.default_rng(0)
    n = 32
    # Per-level Dirichlet: sources, then topics within each source.
    src = rng.dirichlet([3.0, 1.5], size=n)
    dclm = rng.dirichlet([1.0, 2.0, 1.0], size=n)
    stack = rng.dirichlet([2.0, 1.0], size=n)
    w = np.concatenate([src[:, :1] * dclm, src[:, 1:] * stack], axis=1)
    runs = [f"olmix-swarm-{i:04d}-{rng.integers(1 << 30):08x}" for i in range(n)]
    meta = pd.DataFrame({"run": runs, "name": [f"swarm-{i:04d}" for i in range(n)], "index": range(n)})
    ratios = pd.concat([meta, pd.DataFrame(w, columns=DOMAINS)], axis=1)
    cols = {}
    for m, (eff, base) in METRICS.items():
        # Bits per byte: lower is better; diminishing returns in each weight.
        cols[m] = base + np.sqrt(w) @ np.array(eff) * 0.5 + rng.normal(0, 0.002, n)
    metrics = pd.concat([meta, pd.DataFrame(cols)], axis=1)
    ratios.to_csv(HERE / "ratios.csv")
    metrics.to_csv(HERE / "metrics.csv")
    ratios.to_parquet(HERE / "ratios.parquet")
    metrics.to_parquet(HERE / "metrics.parquet")


if __name__ == "__main__":
    main()
