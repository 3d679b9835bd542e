"""The model against every baseline, on one or more worlds: the baseline table (test rows)
and the model minus each baseline with paired-bootstrap 90 % intervals over test campaign
waves, as `loyalty-model train` logs them (baselines.csv, baseline_differences.csv), without
a tracking store.

    python benchmarks/baselines.py --data DIR [--data DIR2 ...] [--config C] [--set k=v ...]
        [--out results.json]

DIR: a data directory, e.g. `loyalty-model simulate --preset medium --seed 7 --out DIR` and
the same with `--purchase-only`. The feature cache applies as in `train` (LOYALTY_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from loyalty_model.card import table_md
from loyalty_model.config import load_config
from loyalty_model.evaluate import BEST_BASELINE
from loyalty_model.training import fit_and_evaluate

TARGETS = ("pr_auc", "audience_spearman_rate", "roc_auc")


def one_world(data: str, config: str | None, overrides: list[str]) -> dict:
    cfg = load_config(config, [*overrides, f"data.dir={data}"])
    t0 = time.perf_counter()
    outcome = fit_and_evaluate(cfg, stage=lambda s: print(f"  [{data}] {s}", flush=True))
    seconds = time.perf_counter() - t0
    ev = outcome.evaluation
    print(
        f"\n## {data}: {outcome.sizes['test_campaigns']:.0f} test campaigns, "
        f"{outcome.sizes['test_rows']:,.0f} test rows, {seconds:.0f} s\n"
    )
    use = outcome.feature_cache
    print(
        f"features: {outcome.timings['feature_seconds']:.1f} s, feature cache "
        f"{use.state if use else 'n/a'}"
        + (f" (built in {use.built_seconds:.1f} s)" if use and use.state == "hit" else "")
        + "\n"
    )
    print(table_md(ev.baselines))
    d = ev.differences
    if not d.empty:
        print("\nmodel minus each baseline (paired bootstrap, 90 %):\n")
        print(table_md(d))
        print()
        best = d[d["baseline"] == BEST_BASELINE].set_index("metric")
        for metric in TARGETS:
            if metric not in best.index:
                continue
            r = best.loc[metric]
            verdict = "ABOVE ZERO" if r["low"] > 0 else "not above zero"
            print(
                f"{metric}: model {r['model']:.4f} - best baseline ({r['best_on_test']} on the "
                f"test rows) {r['baseline_value']:.4f} = {r['difference']:+.4f} "
                f"[{r['low']:+.4f}, {r['high']:+.4f}] (best of each draw) {verdict}"
            )
    return {
        "data": data,
        "seconds": seconds,
        "sizes": outcome.sizes,
        "timings": outcome.timings,
        "baselines": ev.baselines.to_dict("records"),
        "differences": d.to_dict("records"),
        "metrics": {k: v for k, v in outcome.metrics.items() if k.startswith("test_")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="a data directory (repeat)")
    ap.add_argument("--config", default=None, help="a config file (default: built-in)")
    ap.add_argument("--set", action="append", default=[], help="section.key=value override")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    results = [one_world(d, args.config, args.set) for d in args.data]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
