"""Why does the model stay below the oracle? Re-fit on the same rows with the simulator's
hidden variables added, to separate what the features cannot see from what the data allow.

    python benchmarks/auc_gap.py [--data DIR] [--seed 7]

DIR must be a `small` world written by `loyalty-model simulate --preset small --seed SEED`
(the world is rebuilt from preset and seed to read its hidden variables).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from loyalty_model import simulate as sim
from loyalty_model.config import load_config
from loyalty_model.model import fit
from loyalty_model.train import train


def hidden(world: sim.World, frame: pd.DataFrame) -> pd.DataFrame:
    fol = frame["follower_id"].str[1:].astype(int).to_numpy()
    inf = frame["influencer_id"].str[1:].astype(int).to_numpy()
    brand = frame["brand_id"].str[1:].astype(int).to_numpy()
    key = world.fw_inf.astype(np.int64) * len(world.fol_bot) + world.fw_fol
    pos = np.searchsorted(key, inf.astype(np.int64) * len(world.fol_bot) + fol)
    return pd.DataFrame(
        {
            "h_affinity": world.fw_aff[pos],
            "h_purchase_propensity": world.fol_zp[fol],
            "h_loyalty_propensity": world.fol_zl[fol],
            "h_brand_match": ((world.fol_interests[fol] >> world.br_niche[brand]) & 1).astype(
                float
            ),
            "h_persuasion": world.inf_persuasion[inf],
            "h_brand_appeal": world.br_appeal[brand],
            "h_brand_repeat": world.br_repeat[brand],
            "h_bot": world.fol_bot[fol].astype(float),
        },
        index=frame.index,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo_out/data")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    cfg = load_config(None, [f"data.dir={args.data}"])
    result = train(cfg)
    world = sim.build_world(sim.PRESETS["small"], args.seed)
    truth = pd.read_parquet(f"{args.data}/ground_truth.parquet")
    parts = {
        k: v.join(hidden(world, v)).merge(
            truth[["campaign_id", "follower_id", "p_true"]], on=["campaign_id", "follower_id"]
        )
        for k, v in result.frames.items()
    }
    test = parts["test"]
    y = test["label"].to_numpy()
    oracle = roc_auc_score(y, test["p_true"])
    rows = [("features (the model)", roc_auc_score(y, result.model.predict_proba(test)))]
    spec = result.model.spec
    h_names = tuple(c for c in test.columns if c.startswith("h_"))
    for label, names in (
        ("features + hidden variables", spec.names + h_names),
        ("hidden variables only", h_names),
    ):
        s2 = replace(spec, names=names, categorical=spec.categorical if names != h_names else ())
        m = fit(parts["train"], parts["valid"], s2, cfg.model)
        rows.append((label, roc_auc_score(y, m.predict_proba(test))))
    for h in h_names:  # which hidden variable do the features miss most?
        s2 = replace(spec, names=(*spec.names, h))
        m = fit(parts["train"], parts["valid"], s2, cfg.model)
        rows.append((f"features + {h}", roc_auc_score(y, m.predict_proba(test))))
    # the oracle's own ranking with the label noise it cannot remove: AUC on its own draws
    rng = np.random.default_rng(0)
    draws = [roc_auc_score(rng.random(len(y)) < test["p_true"], test["p_true"]) for _ in range(20)]
    rows.append(("oracle (ground truth)", oracle))
    print(
        f"test rows {len(test):,}, positives {int(y.sum())}, training rows {len(parts['train']):,}"
    )
    print(f"oracle AUC on resampled labels: {np.mean(draws):.4f} +- {np.std(draws):.4f}")
    for label, auc in rows:
        print(f"{label:32s} ROC-AUC {auc:.4f}  ({auc / oracle:.3f} x oracle)")


if __name__ == "__main__":
    main()
