"""Why does the model stay below the oracle? Re-fit on the same rows with the simulator's
hidden variables added, to separate what the features cannot see from what the data allow;
and how sure is the comparison with the logistic-regression baseline?

    python benchmarks/auc_gap.py [--data DIR] [--seed 7]

DIR must be a `small` world written by `loyalty-model simulate --preset small --seed SEED`
(the world is rebuilt from preset and seed to read its hidden variables and each campaign's
effect).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from loyalty_model import simulation as sim
from loyalty_model.config import load_config
from loyalty_model.evaluate import MIN_CAMPAIGN_FOLLOWERS, _spearman, evaluate_model
from loyalty_model.model import fit
from loyalty_model.training import fit_and_calibrate, fit_and_evaluate


def hidden(world: sim.World, frame: pd.DataFrame) -> pd.DataFrame:
    fol = frame["follower_id"].str[1:].astype(int).to_numpy()
    inf = frame["influencer_id"].str[1:].astype(int).to_numpy()
    brand = frame["brand_id"].str[1:].astype(int).to_numpy()
    key = world.fw_inf.astype(np.int64) * len(world.fol_bot) + world.fw_fol
    pos = np.searchsorted(key, inf.astype(np.int64) * len(world.fol_bot) + fol)
    return pd.DataFrame(
        {
            "h_affinity": world.fw_affinity[pos],
            "h_purchase_propensity": world.fol_purchase_z[fol],
            "h_loyalty_propensity": world.fol_loyalty_z[fol],
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


def campaign_effect(world: sim.World, frame: pd.DataFrame) -> np.ndarray:
    """Each row's campaign effect (how well the campaign lands); no feature can see it."""
    return sim.campaign_effects(world)[frame["campaign_id"].str[1:].astype(int).to_numpy()]


def paired_bootstrap(test: pd.DataFrame, a: np.ndarray, b: np.ndarray, n: int = 500):
    """90 % intervals of (a - b) in PR-AUC and in audience Spearman (vs actual rates, over
    campaigns of at least MIN_CAMPAIGN_FOLLOWERS followers, as evaluate does), resampling
    test campaigns."""
    from sklearn.metrics import average_precision_score

    df = test[["campaign_id", "label"]].assign(a=a, b=b)
    camps = df["campaign_id"].unique()
    per = {c: g for c, g in df.groupby("campaign_id")}
    rates = df.groupby("campaign_id")[["a", "b", "label"]].mean()
    rates["n"] = df.groupby("campaign_id").size()
    rng = np.random.default_rng(0)
    d_pr, d_sp = [], []
    for _ in range(n):
        pick = rng.choice(camps, len(camps))
        rows = pd.concat([per[c] for c in pick])
        d_pr.append(
            average_precision_score(rows["label"], rows["a"])
            - average_precision_score(rows["label"], rows["b"])
        )
        r = rates.loc[pick]
        r = r[r["n"] >= MIN_CAMPAIGN_FOLLOWERS]
        d_sp.append(_spearman(r["a"], r["label"]) - _spearman(r["b"], r["label"]))
    return np.nanpercentile(d_pr, [5, 95]), np.nanpercentile(d_sp, [5, 95])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo_out/data")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    cfg = load_config(None, [f"data.dir={args.data}"])
    result = fit_and_evaluate(cfg)
    world = sim.build_world(sim.PRESETS["small"], args.seed)
    truth = pd.read_parquet(f"{args.data}/ground_truth.parquet")
    parts = {
        k: v.join(hidden(world, v)).merge(
            truth[["campaign_id", "follower_id", "p_true"]], on=["campaign_id", "follower_id"]
        )
        for k, v in result.frames.items()
    }
    for v in parts.values():
        v["h_campaign_effect"] = campaign_effect(world, v)
    test = parts["test"]
    y = test["label"].to_numpy()
    oracle = roc_auc_score(y, test["p_true"])
    spec = result.model.spec
    h_names = tuple(c for c in test.columns if c.startswith("h_") and c != "h_campaign_effect")
    print(
        f"test rows {len(test):,}, positives {int(y.sum())}, campaigns "
        f"{test['campaign_id'].nunique()}, training rows {len(parts['train']):,}"
    )
    print(
        f"{'refit on the same rows with':46s} ROC-AUC  x oracle  PR-AUC  aud. Spearman (true)"
        "  | logistic regression: PR-AUC  aud. Spearman"
    )

    def report(label, metrics, baselines):
        auc = metrics["test_roc_auc"]
        sp, sp_true = (metrics[f"test_audience_spearman_{k}"] for k in ("rate", "true_rate"))
        lr = baselines.set_index("scorer").loc["logistic_regression"]
        print(
            f"{label:46s} {auc:.4f}  {auc / oracle:.3f}     {metrics['test_pr_auc']:.4f}  "
            f"{sp:.3f} ({sp_true:.3f})         |  {lr['pr_auc']:.4f}  "
            f"{lr['audience_spearman_rate']:.3f}"
        )

    report("features (the model)", result.metrics, result.evaluation.baselines)
    for label, names in (
        ("features + hidden variables", spec.names + h_names),
        (
            "features + hidden variables + campaign effect",
            (*spec.names, *h_names, "h_campaign_effect"),
        ),
    ):
        s2 = replace(spec, names=names)
        m, valid_p, _ = fit_and_calibrate(parts["train"], parts["valid"], s2, cfg.model)
        ev = evaluate_model(m, parts, None, valid_p=valid_p)
        report(label, ev.metrics | _true(m, parts), ev.baselines)
    print("\nwhich hidden variable do the features miss most? (one added at a time, ROC-AUC)")
    for h in h_names:
        s2 = replace(spec, names=(*spec.names, h))
        m = fit(parts["train"], parts["valid"], s2, cfg.model)
        auc = roc_auc_score(y, m.predict_proba(test))
        print(f"  features + {h:28s} {auc:.4f}  ({auc / oracle:.3f} x oracle)")
    # the oracle's own ranking with the label noise it cannot remove: AUC on its own draws
    rng = np.random.default_rng(0)
    draws = [roc_auc_score(rng.random(len(y)) < test["p_true"], test["p_true"]) for _ in range(20)]
    print(f"oracle ROC-AUC {oracle:.4f}; on resampled labels {np.mean(draws):.4f}", end="")
    print(f" +- {np.std(draws):.4f}")
    lr = result.evaluation.test_scores["logistic_regression"]
    model_p = result.evaluation.test_scores["model"]
    pr, sp = paired_bootstrap(test, model_p, lr)
    print(
        "model - logistic regression, 90 % bootstrap interval over test campaigns: "
        f"PR-AUC [{pr[0]:+.4f}, {pr[1]:+.4f}], audience Spearman [{sp[0]:+.3f}, {sp[1]:+.3f}]"
    )


def _true(model, parts) -> dict[str, float]:
    """Audience Spearman against the true rates (ground truth kept in the frames)."""
    test = parts["test"]
    rates = test.assign(p=model.predict_proba(test)).groupby("campaign_id")[["p", "p_true"]].mean()
    return {"test_audience_spearman_true_rate": _spearman(rates["p"], rates["p_true"])}


if __name__ == "__main__":
    main()
