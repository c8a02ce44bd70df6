"""LightGBM reference for mixopt's mixing laws on RegMix's 1M-proxy runs.

Fits LightGBM with RegMix's settings (regression, 1000 rounds, learning rate
0.01, seed 42, LightGBM defaults otherwise) on the 512 train runs, target
`metric/the_pile_pile_cc_val_loss`, and prints Spearman/Pearson (x100), MSE,
MAE for: 5-fold CV on the train runs, train->test with no early stopping, and
train->test the way RegMix's script does it (early stopping, 3 rounds, on the
test runs themselves -- which peeks at the scored data; shown for reference).

Usage: python bench/regmix_lightgbm.py DATA_DIR  (needs lightgbm, numpy)
"""

import csv
import sys
import time

import lightgbm as lgb
import numpy as np

TARGET = "metric/the_pile_pile_cc_val_loss"


def read(path, id_col="index"):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0].keys() if c != id_col]
    ids = [r[id_col] for r in rows]
    return ids, cols, np.array([[float(r[c]) for c in cols] for r in rows])


def load(data_dir, split):
    ids_m, _, x = read(f"{data_dir}/{split}_mixture_1m.csv")
    ids_l, cols, losses = read(f"{data_dir}/{split}_pile_loss_1m.csv")
    by_id = {i: k for k, i in enumerate(ids_l)}
    y = losses[[by_id[i] for i in ids_m], cols.index(TARGET)]
    return x, y


def ranks(v):
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    # average ties
    for val in np.unique(v):
        idx = np.where(v == val)[0]
        if len(idx) > 1:
            r[idx] = r[idx].mean()
    return r


def scores(pred, y):
    sp = np.corrcoef(ranks(pred), ranks(y))[0, 1]
    pe = np.corrcoef(pred, y)[0, 1]
    return 100 * sp, 100 * pe, float(np.mean((pred - y) ** 2)), float(np.mean(np.abs(pred - y)))


# RegMix's regression.ipynb hyper_params (LightGBM defaults otherwise:
# num_leaves 31, min_data_in_leaf 20, max_bin 255, lambda_l2 0).
PARAMS = {
    "boosting_type": "gbdt",
    "objective": "regression",
    "metric": ["l1", "l2"],
    "learning_rate": 1e-2,
    "seed": 42,
    "verbosity": -1,
    # One thread: 512 rows are too few to share, and OpenMP spin-waiting on a
    # busy 2-core machine made multi-threaded fits several times slower.
    "num_threads": 1,
}
ROUNDS = 1000


def fit(x, y, valid=None):
    train = lgb.Dataset(x, y)
    if valid is None:
        return lgb.train(PARAMS, train, num_boost_round=ROUNDS)
    vx, vy = valid
    return lgb.train(
        PARAMS,
        train,
        num_boost_round=ROUNDS,
        valid_sets=[lgb.Dataset(vx, vy, reference=train)],
        callbacks=[lgb.early_stopping(stopping_rounds=3, first_metric_only=False, verbose=False)],
    )


def main():
    data_dir = sys.argv[1]
    xtr, ytr = load(data_dir, "train")
    xte, yte = load(data_dir, "test")

    # 5-fold CV on the train runs (shuffled folds, seed 0).
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ytr))
    oof = np.zeros(len(ytr))
    t0 = time.time()
    for k in range(5):
        lo, hi = k * len(ytr) // 5, (k + 1) * len(ytr) // 5
        held = order[lo:hi]
        train = np.concatenate([order[:lo], order[hi:]])
        m = fit(xtr[train], ytr[train])
        oof[held] = m.predict(xtr[held])
    cv_s = time.time() - t0
    cv = scores(oof, ytr)

    t0 = time.time()
    m = fit(xtr, ytr)
    fit_s = time.time() - t0
    plain = scores(m.predict(xte), yte)

    m = fit(xtr, ytr, valid=(xte, yte))
    peek = scores(m.predict(xte, num_iteration=m.best_iteration), yte)

    print(f"lightgbm {lgb.__version__}: 5-fold CV on train (x100)  "
          f"spearman {cv[0]:6.2f} pearson {cv[1]:6.2f} mse {cv[2]:.6f} mae {cv[3]:.6f}  ({cv_s:.2f} s for 5 fits)")
    print(f"lightgbm train->test, 1000 rounds       "
          f"spearman {plain[0]:6.2f} pearson {plain[1]:6.2f} mse {plain[2]:.6f} mae {plain[3]:.6f}  ({fit_s:.2f} s per fit)")
    print(f"lightgbm train->test, RegMix's script   "
          f"spearman {peek[0]:6.2f} pearson {peek[1]:6.2f} mse {peek[2]:.6f} mae {peek[3]:.6f}  "
          f"(early stopping on the test runs: best round {m.best_iteration})")


if __name__ == "__main__":
    main()
