"""LightGBM on the same table and protocol as `mixopt fit --law gbdt` at
scale (bench/fit_scale.sh): target = mean of all loss columns, 5-fold CV
(its own seeded shuffle) then one fit on all runs, RegMix's settings (1000
rounds, learning rate 0.01, LightGBM defaults otherwise), every core
(num_threads = os.cpu_count()) unless THREADS is given. Prints CV Spearman,
the time of the 6 fits and per fit.

Usage: python bench/lightgbm_scale.py PREFIX [THREADS]   (needs lightgbm, numpy)
"""

import os
import sys
import time

import lightgbm as lgb
import numpy as np


def read(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, 1:]


prefix = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
x = read(prefix + "_mix.csv")
y = read(prefix + "_loss.csv").mean(axis=1)
n = len(y)
params = {"objective": "regression", "learning_rate": 0.01, "seed": 42,
          "num_threads": threads, "verbose": -1}
order = np.random.RandomState(0).permutation(n)
pred = np.zeros(n)
t0 = time.time()
for f in range(5):
    held = order[f * n // 5:(f + 1) * n // 5]
    train = np.setdiff1d(order, held)
    m = lgb.train(params, lgb.Dataset(x[train], y[train]), num_boost_round=1000)
    pred[held] = m.predict(x[held])
lgb.train(params, lgb.Dataset(x, y), num_boost_round=1000)
dt = time.time() - t0


def ranks(v):
    r = np.empty(len(v))
    r[np.argsort(v, kind="mergesort")] = np.arange(len(v))
    return r


rho = np.corrcoef(ranks(pred), ranks(y))[0, 1]
print(f"LightGBM {lgb.__version__}, {threads} thread(s), {n} runs x {x.shape[1]} domains: "
      f"5-fold CV spearman {100 * rho:.2f}; 5 CV fits + 1 fit of 1000 rounds in {dt:.1f} s "
      f"({dt / 6:.2f} s per fit)")
