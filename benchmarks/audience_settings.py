"""Do other model settings rank audiences closer to the truth? Refit on the same rows with each
setting and compare every scoring scenario's audiences with the simulator's truth.

    python benchmarks/audience_settings.py [--data DIR] SETTING [SETTING ...]

A SETTING is `default`, config overrides joined by `;` (`model.min_child_samples=100;
model.num_leaves=15`), or `weight=A`: rows weighted by (rows of their campaign)^-A, so that
small campaigns (the nano audiences of a uniform sample of people) count for more. Features are
built once; each setting is fitted as `train` fits (early stopping, out-of-fold calibration,
refit on train+valid) and prints test ROC-AUC and the means over the scenarios of the
comparisons the model card reports.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from loyalty_model import engines, io, model, scoring, training
from loyalty_model.config import load_config
from loyalty_model.evaluate import audiences_against_truth, scenarios_of


@contextlib.contextmanager
def row_weights(power: float):
    """Fit every LightGBM model in the block with rows weighted by campaign size^-power."""
    plain = model._fit

    def weighted(est, frame, spec, **kw):
        size = frame.groupby("campaign_id")["label"].transform("size").to_numpy()
        return plain(est, frame, spec, sample_weight=size.astype(float) ** -power, **kw)

    model._fit = weighted
    try:
        yield
    finally:
        model._fit = plain


def scenario_frames(con, truth, spec) -> list[tuple[str, str, object, pd.DataFrame]]:
    """The feature frame of every scoring scenario, built once."""
    tables = engines.ibis_tables(con, ["events", "follows", "influencers", "brands", "campaigns"])
    holder = type("Spec", (), {"spec": spec})()
    out = []
    for sid, brand, as_of in scenarios_of(truth):
        batches = scoring.feature_batches(
            con, tables, brand, as_of.to_pydatetime(), None, holder, 10**7
        )
        out.append((sid, brand, as_of, pd.concat(batches, ignore_index=True)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("demo_out/data"))
    ap.add_argument("settings", nargs="+")
    args = ap.parse_args()
    cfg = load_config(Path("configs/default.yaml"), [f"data.dir={args.data}"])
    con = engines.duckdb_connection(threads=cfg.model.threads)
    frame, _ = training.build_training_frame(con, cfg)
    truth = io.read_truth_audiences(args.data)
    influencers = con.execute("SELECT * FROM influencers ORDER BY influencer_id").df()
    parts, _ = training.split(frame, cfg)
    spec = training.spec_of(parts["train"], cfg)
    scenarios = scenario_frames(con, truth, spec)
    rows = []
    for setting in args.settings:
        mcfg, weights = cfg.model, contextlib.nullcontext()
        if setting.startswith("weight="):
            weights = row_weights(float(setting.split("=", 1)[1]))
        elif setting != "default":
            overrides = [f"data.dir={args.data}", *setting.split(";")]
            mcfg = load_config(Path("configs/default.yaml"), overrides).model
        with weights:
            fitted, _, _ = training.fit_and_calibrate(parts["train"], parts["valid"], spec, mcfg)
        test = parts["test"]
        result = {
            "setting": setting,
            "test_roc_auc": roc_auc_score(test["label"], fitted.predict_proba(test)),
        }
        found = []
        for sid, brand, as_of, fr in scenarios:
            acc = {}  # feature_batches yields rows ordered by influencer
            scoring.accumulate(acc, [fr["influencer_id"].to_numpy()], fitted.predict_proba(fr))
            aud = scoring.audience_scores(
                acc,
                influencers,
                brand,
                as_of.to_pydatetime(),
                list(influencers["influencer_id"]),
                fitted.calibrator.audience_dispersion,
                fitted.calibrator.audience_spread,
            )
            found.append(audiences_against_truth(aud, truth[truth["scenario_id"] == sid]).metrics)
        means = pd.DataFrame(found).mean()
        keys = ["spearman_cost", "top10_overlap_cost", "top20_overlap_cost", "spearman_rate"]
        result.update({k: means[k] for k in keys})
        rows.append(result)
        print(pd.DataFrame([result]).round(3).to_string(index=False, header=len(rows) == 1))


if __name__ == "__main__":
    main()
