"""Plans against the simulator's counterfactual truth, and the planner's time and memory.

For a scoring scenario of a simulated world (default: the first, s1) and a few budgets: each
plan `loyalty-model plan` compares (planner, best single influencer, reach buyer, macro/mega
only) in expected unique loyal customers (the model) and in true ones (the simulator's outcome
model with every chosen campaign at once), and the plan an oracle planner makes from the true
probabilities. Scores once, then plans each budget from the same predictions.

    python benchmarks/plan_truth.py --data DIR [--budgets 50000,250000] [--scenario s1]
        [--model URI]

DIR: a simulated world (`loyalty-model simulate --preset small --seed 7 --out DIR`) and a
champion in the tracking store (MLFLOW_TRACKING_URI) trained on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import loyalty_model as lm
from loyalty_model import io, planner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--budgets", default="50000,250000")
    ap.add_argument("--scenario", default="s1")
    ap.add_argument("--model", default=None, help="MLflow model URI (default: the champion)")
    args = ap.parse_args()
    data = Path(args.data)
    sc = next(
        s
        for s in json.loads((data / "simulation.json").read_text())["scoring_scenarios"]
        if s["scenario_id"] == args.scenario
    )
    truth = pd.read_parquet(
        data / "ground_truth_scoring.parquet", filters=[("scenario_id", "==", args.scenario)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for budget in (float(b) for b in args.budgets.split(",")):
            kw = (
                {"as_of": sc["as_of"], "model": args.model}
                if first is None
                else {"predictions": first.files["predictions"]}
            )
            t0 = time.perf_counter()
            result = lm.plan(data, sc["brand_id"], budget, Path(tmp) / f"p{budget:.0f}", **kw)
            wall = time.perf_counter() - t0
            first = first or result
            report(result, truth, budget, wall)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GiB")


def report(result, truth: pd.DataFrame, budget: float, wall: float) -> None:
    s = result.summary
    pred = Path(result.files["predictions"])
    fmt = "parquet"
    aud = io.read_frame(pred / f"audience_scores.{fmt}", fmt)
    followers = io.read_frame(pred / f"follower_scores.{fmt}", fmt)
    cost, _ = planner.candidate_costs(aud, None)
    fraction = s["sample"]["fraction"]
    inst = planner.instance(followers, aud, cost, fraction)
    # the same problem on the true single-campaign probabilities: the oracle's plan, and how
    # much the planner's formula (1 - prod (1 - p)) overstates a plan's exact truth
    key = ["follower_id", "influencer_id"]
    true_p = truth.set_index(key)["p_true"].reindex(pd.MultiIndex.from_frame(followers[key]))
    true_followers = followers.assign(p_loyal=true_p.to_numpy())
    true_aud = aud.assign(expected_loyal=_true_expected(true_followers, aud))
    oracle_inst = planner.instance(true_followers, true_aud, cost, fraction)
    oracle = planner.optimise(oracle_inst, budget)
    print(
        f"\nbudget {budget:,.0f} {s['currency']}: {s['candidates']['with_cost']} candidates, "
        f"{len(followers):,} follower rows, sample fraction {fraction:.4g} "
        f"({s['sample']['source']});"
        f" plan {wall:.1f}s in all, {result.planning_seconds:.2f}s choosing the four plans"
    )
    head = ("plan", "n", "cost", "expected", "90 % interval", "true", "formula on true p")
    print("{:12s} {:>3s} {:>10s} {:>10s} {:>19s} {:>10s} {:>18s}".format(*head))
    covered = 0
    idx = {k: i for i, k in enumerate(inst.ids)}
    for name, p in s["plans"].items():
        if p is None:
            print(f"{name:12s} no plan fits")
            continue
        lo, hi = p["interval"]
        true = result.truth[name]
        covered += lo <= true <= hi
        formula = oracle_inst.value([idx[i] for i in p["influencers"]])
        print(
            f"{name:12s} {len(p['influencers']):3d} {p['cost']:10,.0f} "
            f"{p['expected_unique_loyal']:10,.0f} {lo:9,.0f}-{hi:9,.0f} {true:10,.0f} "
            f"{formula:18,.0f}"
        )
    print(
        f"{'oracle':12s} {len(oracle.chosen):3d} {inst.cost[list(oracle.chosen)].sum():10,.0f} "
        f"{'':10s} {'':19s} {planner.true_value(inst, oracle.chosen, truth):10,.0f}"
    )
    plans = sum(1 for p in s["plans"].values() if p)
    print(f"intervals covering the true value: {covered} of {plans}")


def _true_expected(true_followers: pd.DataFrame, aud: pd.DataFrame) -> np.ndarray:
    """expected_loyal with the true probabilities: the true rate times the whole audience."""
    rate = true_followers.groupby("influencer_id")["p_loyal"].mean().reindex(aud["influencer_id"])
    whole = np.maximum(
        aud["follower_count"].to_numpy(float), aud["followers_scored"].to_numpy(float)
    )
    return rate.to_numpy() * whole


if __name__ == "__main__":
    main()
