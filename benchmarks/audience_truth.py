"""Audience predictions against the simulator's counterfactual ground truth.

For every scoring scenario of a simulated world (simulation.json: a brand and an as-of date
when the simulator knows every audience's true loyal rate), score all audiences with a model
and compare with the truth: Spearman of predicted vs true cost per loyal customer over the
priced influencers, overlap of the predicted and true top 10 / top 20 (by cost and by rate),
and the tier table. For reference, the same comparison for: ranking by price per follower (no
loyalty information); the ranking the files made before output schema 2.0 (price over expected
loyal customers among the followers scored); the model with the nano audiences' rates replaced
by the truth; a predictor that knows every hidden variable of the world but each influencer's
persuasion; and the model over influencers with at least 30 followers in the data. The truth is
over the followers in the data: the tier table adds the share of the spread of true rates that
is the sampling noise of those followers (where it is large, the truth ranks samples).

    python benchmarks/audience_truth.py [--data DIR] [--model URI] [--out FILE.json]

DIR: a simulated world (default demo_out/data, the world `make demo` builds); URI: an MLflow
model (default the champion in MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from loyalty_model import engines, io, tracking
from loyalty_model import simulation as sim
from loyalty_model.config import TrackingConfig
from loyalty_model.evaluate import audiences_against_truth, scenarios_of
from loyalty_model.scoring import THIN_SAMPLE
from loyalty_model.simulation.truth import Scenario, scenario_truth
from loyalty_model.training import audiences_against_scenarios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("demo_out/data"))
    ap.add_argument("--model", default="models:/audience-loyalty@champion")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    truth = io.read_truth_audiences(args.data)
    if truth is None:
        raise SystemExit(f"{args.data} has no ground_truth_audiences.parquet (not simulated)")
    model, ref = tracking.load_for_scoring(args.model, TrackingConfig())
    con = engines.duckdb_connection()
    io.register_tables(con, args.data)
    check = audiences_against_scenarios(con, model, truth)
    bounds = _without_persuasion(args.data, truth)
    rows = []
    for sc, aud in zip(check.scenarios.to_dict("records"), check.audiences, strict=True):
        t = truth[truth["scenario_id"] == sc["scenario_id"]]
        before = audiences_against_truth(
            aud.assign(cost_per_expected_loyal=aud.price_per_post / aud.expected_loyal_scored), t
        )
        rows.append(
            {
                **sc,
                "true_count_inside_interval": _truth_inside_interval(aud, t),
                "scored_scale_spearman_cost": before.metrics["spearman_cost"],
                "scored_scale_top20_overlap_cost": before.metrics["top20_overlap_cost"],
                **_nano_perfect(aud, t),
                **bounds.get(sc["scenario_id"], {}),
                "spearman_cost_30_followers": audiences_against_truth(
                    aud, t[t["followers_in_data"] >= THIN_SAMPLE]
                ).metrics["spearman_cost"],
            }
        )
    tiers = check.tiers.merge(_sampling_noise(args.data, truth), on=["scenario_id", "tier"])
    table = pd.DataFrame(rows).assign(as_of=lambda d: d["as_of"].astype(str).str[:10])
    pd.set_option("display.width", 200)
    print(f"model {ref.uri} (version {ref.version}), data {args.data}")
    print(table.round(3).to_string(index=False))
    print("\ntiers (per scenario):")
    print(tiers.round(4).to_string(index=False))
    means = table.drop(columns=["scenario_id", "brand_id", "as_of"]).mean()
    print("\nmean over scenarios:")
    print(means.round(3).to_string())
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "model": ref,
                    "scenarios": rows,
                    "mean": means.to_dict(),
                    "tiers": tiers.to_dict("records"),
                },
                indent=2,
                default=str,
            )
        )


def _sampling_noise(data: Path, truth: pd.DataFrame) -> pd.DataFrame:
    """Per scenario and tier: the share of the spread of the true rates across audiences that
    is the sampling noise of their followers in the data (the variance of p_true within an
    audience over its followers, averaged, divided by the variance of the rates). The truth is
    over the followers in the data; where this share is large, it ranks samples, not
    audiences."""
    rows = pd.read_parquet(data / "ground_truth_scoring.parquet")
    within = (
        rows.groupby(["scenario_id", "influencer_id"])["p_true"]
        .agg(var="var", n="size")
        .reset_index()
    )
    m = truth.merge(within, on=["scenario_id", "influencer_id"])
    m = m[m["n"] >= 2]
    out = m.groupby(["scenario_id", "tier"]).apply(
        lambda g: (g["var"] / g["n"]).mean() / g["true_loyal_rate"].var(), include_groups=False
    )
    return out.rename("sampling_noise_share").reset_index()


def _nano_perfect(aud: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """The comparison again with the nano audiences' rates replaced by the truth: how much of
    the gap the smallest audiences (a handful of followers each in a uniform sample) make."""
    t = truth.set_index("influencer_id")
    a = aud.set_index("influencer_id")
    nano = (a["tier"] == "nano") & a["loyal_rate"].notna()
    a.loc[nano, "loyal_rate"] = t.loc[a.index[nano], "true_loyal_rate"]
    a["cost_per_expected_loyal"] = a["price_per_post"] / (a["loyal_rate"] * a["follower_count"])
    m = audiences_against_truth(a.reset_index(), truth).metrics
    return {
        "nano_true_spearman_cost": m["spearman_cost"],
        "nano_true_top20_overlap_cost": m["top20_overlap_cost"],
    }


def _without_persuasion(data: Path, truth: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per scenario: how a predictor that knows every hidden variable of the world except each
    influencer's persuasion (how well they sell: hidden from every feature, learnt only from
    their past campaigns) would compare with the truth. The world is rebuilt from the preset
    and seed in simulation.json."""
    meta = json.loads((data / "simulation.json").read_text())
    w = sim.build_world(sim.PRESETS[meta["preset"]], meta["seed"])
    blind = dataclasses.replace(w, inf_persuasion=np.zeros_like(w.inf_persuasion))
    states = sim.draw_outcomes(w).brand_states
    scenarios = [
        Scenario(sid, int(brand[1:]), int(as_of.timestamp()))
        for sid, brand, as_of in scenarios_of(truth)
    ]
    _, guess = scenario_truth(blind, scenarios, states)
    guess = guess.to_pandas().rename(
        columns={"true_loyal_rate": "loyal_rate", "true_cost_per_loyal": "cost_per_expected_loyal"}
    )
    out = {}
    for s in scenarios:
        m = audiences_against_truth(
            guess[guess["scenario_id"] == s.scenario_id],
            truth[truth["scenario_id"] == s.scenario_id],
        ).metrics
        out[s.scenario_id] = {
            "no_persuasion_spearman_cost": m["spearman_cost"],
            "no_persuasion_top20_overlap_cost": m["top20_overlap_cost"],
        }
    return out


def _truth_inside_interval(aud: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Share of audiences whose true expected loyal count lies in the predicted 90 % interval
    (not a coverage of outcomes: the interval is for a realised count; informative only)."""
    m = aud.merge(truth, on="influencer_id").dropna(subset=["expected_loyal"])
    inside = (m.true_expected_loyal >= m.expected_loyal_low) & (
        m.true_expected_loyal <= m.expected_loyal_high
    )
    return float(inside.mean())


if __name__ == "__main__":
    main()
