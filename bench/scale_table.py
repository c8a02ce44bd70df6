"""A synthetic, seeded fitting table at scale for bench/fit_scale.sh: N runs
over D domains, written as RegMix-style CSVs (PREFIX_mix.csv: index + one
weight column per domain; PREFIX_loss.csv: index + one loss column per
domain). Mixtures are drawn like mixopt's sweep (prior p, tempered p^0.5,
Dirichlet with a log-uniform concentration in [0.1, 5]); each domain's loss
falls with the log of its own weight, has a few cross-domain terms, and
Gaussian noise (sd 0.01).

Usage: python3 bench/scale_table.py N D SEED PREFIX   (stdlib only)
"""

import math
import random
import sys

n, d, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
prior = [rng.random() ** 2 + 0.01 for _ in range(d)]
z = sum(prior)
prior = [p / z for p in prior]
tp = [p ** 0.5 for p in prior]
z = sum(tp)
tp = [t / z for t in tp]
base = [2.0 + rng.random() for _ in range(d)]
gain = [0.2 + 0.6 * rng.random() for _ in range(d)]
pairs = [(rng.randrange(d), rng.randrange(d), rng.uniform(-0.3, 0.3)) for _ in range(d)]
with open(out + "_mix.csv", "w") as fm, open(out + "_loss.csv", "w") as fl:
    fm.write("index," + ",".join(f"d{i}" for i in range(d)) + "\n")
    fl.write("index," + ",".join(f"loss_d{i}" for i in range(d)) + "\n")
    for k in range(n):
        s = math.exp(math.log(0.1) + rng.random() * (math.log(5) - math.log(0.1)))
        x = [rng.gammavariate(max(s * t, 1e-3), 1.0) for t in tp]
        sx = sum(x)
        x = [v / sx for v in x]
        losses = []
        for i in range(d):
            loss = base[i] - 0.1 * gain[i] * math.log(x[i] + 1e-3)
            for a, b, c in pairs:
                if a == i:
                    loss += c * x[b]
            losses.append(loss + rng.gauss(0, 0.01))
        fm.write(f"{k}," + ",".join(f"{v:.6g}" for v in x) + "\n")
        fl.write(f"{k}," + ",".join(f"{v:.6g}" for v in losses) + "\n")
