"""Cross-fitting folds one after the other (two LightGBM threads each, as before) against side
by side (`model.cross_fit`: joblib threads, one LightGBM thread per fold): time, CPU and
whether the out-of-fold predictions agree to the bit. Rounds alternate the two, so a change in
the machine's load hits both.

    python benchmarks/cross_fit.py [--data DIR] [--rounds 3]

DIR: a data directory, e.g. `small`, seed 7 (`make demo` writes it to demo_out/data).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from loyalty_model import engines, model, training
from loyalty_model.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo_out/data")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(None, [f"data.dir={args.data}"])
    frame, _ = training.build_training_frame(engines.duckdb_connection(), cfg)
    parts, _ = training.split(frame, cfg)
    spec = training.spec_of(parts["train"], cfg)
    trees = int(model.fit(parts["train"], parts["valid"], spec, cfg.model).booster.best_iteration)
    both = pd.concat([parts["train"], parts["valid"]], ignore_index=True)  # as fit_and_calibrate
    groups = training.waves(both)
    folds = cfg.model.calibration_folds

    def one_after_the_other() -> np.ndarray:
        out = np.empty(len(both))
        for fit_idx, score_idx in GroupKFold(n_splits=folds).split(both, groups=groups):
            m = model.fit_trees(both.iloc[fit_idx], spec, cfg.model, trees)
            out[score_idx] = m.predict_raw(both.iloc[score_idx])
        return out

    def side_by_side() -> np.ndarray:
        return model.cross_fit(both, spec, cfg.model, trees, groups, folds)

    print(f"{len(both):,} rows, {folds} folds, {trees} trees, threads {cfg.model.threads}")
    runs: dict[str, list[tuple[float, float]]] = {}
    results: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, fn in (
            ("one after the other", one_after_the_other),
            ("side by side", side_by_side),
        ):
            before = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            results[name] = fn()
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            runs.setdefault(name, []).append((wall, cpu))
            print(
                f"round {r + 1}  {name:20s} {wall:7.1f} s  cpu {cpu:7.1f} s  "
                f"load {os.getloadavg()[0]:.1f}"
            )
    for name, v in runs.items():
        print(
            f"median {name:20s} {statistics.median(w for w, _ in v):7.1f} s  "
            f"cpu {statistics.median(c for _, c in v):7.1f} s"
        )
    a, b = results.values()
    print(f"max |difference| of the out-of-fold predictions: {np.abs(a - b).max():.3g}")


if __name__ == "__main__":
    main()
