#!/usr/bin/env python3
"""The end-to-end benchmark's table (bench/e2e.sh): mixture x target-model test
losses, paired by seed against natural and uniform, for the `mean` target and
the held-out domain; per-domain losses; stage wall times; and how well the
scale-aware and the single-scale law rank the evaluated mixtures (Spearman).
Standard library only (a clean machine has Python and nothing more)."""

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys


def mean(v):
    return sum(v) / len(v)


def sd(v):
    if len(v) < 2:
        return float("nan")
    m = mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = mean(ra), mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den > 0 else float("nan")


def kl(w, p):
    return sum(wi * math.log(wi / p[d]) for d, wi in w.items() if wi > 0)


def parse_train(path, domains):
    """Per-domain losses from `mixopt train`'s printed table."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] in domains:
                try:
                    out[parts[0]] = float(parts[2])
                except ValueError:
                    pass
    missing = [d for d in domains if d not in out]
    if missing:
        sys.exit(f"{path}: no loss for {', '.join(missing)}")
    return out


def predict(binary, law, names, weights, domains):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index"] + domains)
    for n in names:
        w.writerow([n] + [weights[n].get(d, 0.0) for d in domains])
    path = law + ".candidates.csv"
    with open(path, "w") as f:
        f.write(buf.getvalue())
    res = subprocess.run(
        [binary, "predict", "--law", law, "--mixtures", path],
        check=True, capture_output=True, text=True,
    )
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    return {r["id"]: float(r["prediction"]) for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--held-out", required=True)
    ap.add_argument("--seeds", type=int, required=True)
    a = ap.parse_args()
    W = a.work
    v = json.load(open(os.path.join(W, "validate.json")))
    domains = v["domains"]
    trained = [d for d in domains if d != a.held_out]
    seeds = v["seeds"]
    weights = {c["name"]: c["weights"] for c in v["candidates"]}
    names = [c["name"] for c in v["candidates"]]
    losses = {n: {} for n in names}
    for r in v["runs"]:
        losses[r["candidate"]][r["seed"]] = r["losses"]
    for s in seeds:
        p = os.path.join(W, f"odm-{s}.txt")
        losses.setdefault("odm (online)", {})[s] = parse_train(p, domains)
    names.append("odm (online)")

    def target(n, s, what):
        l = losses[n][s]
        return mean([l[d] for d in trained]) if what == "mean" else l[what]

    natural = weights["natural"]
    print(f"# End-to-end: target model {v['proxy']} ({v['n_tokens']:,} tokens), "
          f"split {v['split']}, seeds {', '.join(map(str, seeds))}\n")
    for what, label in (("mean", "mean test loss (trained domains)"),
                        (a.held_out, f"held-out `{a.held_out}` test loss")):
        print(f"## {label}\n")
        print("| mixture | KL to natural | loss (mean ± sd) | vs natural: Δ (wins) | vs uniform: Δ (wins) |")
        print("|---|---|---|---|---|")
        for n in names:
            t = [target(n, s, what) for s in seeds]
            cells = []
            for ref in ("natural", "uniform"):
                if n == ref:
                    cells.append("—")
                    continue
                d = [target(n, s, what) - target(ref, s, what) for s in seeds]
                wins = sum(1 for x in d if x < 0)
                cells.append(f"{mean(d):+.4f} ({wins}/{len(d)})")
            k = f"{kl(weights[n], natural):.3f}" if n in weights else "online"
            spread = "" if len(t) < 2 else f" ± {sd(t):.4f}"
            print(f"| {n} | {k} | {mean(t):.4f}{spread} | {cells[0]} | {cells[1]} |")
        print()

    print("## Per-domain test losses (mean over seeds) and worst domain\n")
    print("| mixture | " + " | ".join(domains) + " | worst |")
    print("|---|" + "---|" * (len(domains) + 1))
    for n in names:
        per = {d: mean([losses[n][s][d] for s in seeds]) for d in domains}
        worst = max(trained, key=lambda d: per[d])
        print(f"| {n} | " + " | ".join(f"{per[d]:.3f}" for d in domains)
              + f" | {worst} {per[worst]:.3f} |")
    print()

    print("## Weights\n")
    statics = [n for n in names if n in weights]
    print("| domain | " + " | ".join(statics) + " |")
    print("|---|" + "---|" * len(statics))
    for d in trained:
        print(f"| {d} | " + " | ".join(f"{weights[n].get(d, 0.0):.3f}" for n in statics) + " |")
    print()

    print("## Does the law rank the target model's mixtures? (Spearman over the static mixtures)\n")
    print("| target | scale-aware law (`fit` default) | single-scale log-linear |")
    print("|---|---|---|")
    for what, scaled, single in (("mean", "law-mean.json", "single-mean.json"),
                                 (a.held_out, "law-heldout.json", "single-heldout.json")):
        actual = [mean([target(n, s, what) for s in seeds]) for n in statics]
        cells = []
        for law in (scaled, single):
            p = predict(a.bin, os.path.join(W, law), statics, weights, trained)
            cells.append(f"{spearman([p[n] for n in statics], actual):+.2f}")
        print(f"| {what} | {cells[0]} | {cells[1]} |")
    print(f"\n({len(statics)} mixtures; few points, so read it beside the larger "
          "comparison in docs/benchmarks.md.)\n")

    print("## Wall time per stage (s)\n")
    print("| stage | seconds |")
    print("|---|---|")
    total = 0.0
    with open(os.path.join(W, "stages.tsv")) as f:
        for line in f:
            name, sec = line.rstrip("\n").split("\t")
            total += float(sec)
            print(f"| {name} | {float(sec):.0f} |")
    print(f"| total | {total:.0f} |")


if __name__ == "__main__":
    main()
