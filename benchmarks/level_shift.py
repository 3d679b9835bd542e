"""Why is the model's level off on the test period? Mean predictions against truth by split,
the features whose SHAP contribution shifts most from train to test, and the fixes tried:
the shipped pipeline (out-of-fold calibration on train+valid, refit) against the earlier one
(fit on train, calibrate on the validation quarter), and two that did not help.

    python benchmarks/level_shift.py [--data DIR]

DIR: a simulated world (with ground_truth.parquet), e.g. `small`, seed 7 (`make demo`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd

from loyalty_model import io
from loyalty_model.config import load_config
from loyalty_model.evaluate import evaluate_model
from loyalty_model.model import fit, fit_calibrator
from loyalty_model.plots import shap_values
from loyalty_model.training import fit_and_evaluate

ALL_HISTORY = (
    "fi_follow_days",
    "f_purchases_all",
    "f_brands_purchased",
    "fb_purchases_all",
    "fb_category_purchases_all",
    "inf_past_campaigns",
    "br_buyers",
    "br_past_campaigns",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo_out/data")
    args = ap.parse_args()
    pd.set_option("display.width", 160)
    cfg = load_config(None, [f"data.dir={args.data}"])
    r = fit_and_evaluate(cfg)
    truth = io.read_ground_truth(args.data)
    rows = []
    for name, f in r.frames.items():
        t = f.merge(truth, on=["campaign_id", "follower_id"])
        rows.append(
            {
                "split": name,
                "mean_p": r.model.predict_proba(f).mean(),
                "mean_p_true": t["p_true"].mean(),
                "loyal_rate": f["label"].mean(),
            }
        )
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    sv = pd.DataFrame({k: shap_values(r.model, f).mean() for k, f in r.frames.items()})
    sv["shift"] = sv["test"] - sv["train"]
    top = sv.sort_values("shift").tail(6)
    means = {
        c: {k: pd.to_numeric(f[c], errors="coerce").mean() for k, f in r.frames.items()}
        for c in top.index
    }
    print("\nlargest upward SHAP shifts (mean log-odds contribution) and feature means:")
    print(top.join(pd.DataFrame(means).T, rsuffix="_mean").round(4).to_string())

    def refit(spec, train_rows):
        """The earlier pipeline: fit on train, calibrate on the validation quarter."""
        m = fit(train_rows, r.frames["valid"], spec, cfg.model)
        valid = r.frames["valid"]
        cal, _ = fit_calibrator(valid["label"].to_numpy(), m.predict_raw(valid))
        cal = replace(cal, audience_dispersion=r.model.calibrator.audience_dispersion)
        m = replace(m, calibrator=cal)
        return evaluate_model(m, r.frames, truth).metrics

    trials = {"as trained (out-of-fold calibration, refit)": r.metrics}
    trials["fit on train, calibrate on valid"] = refit(r.model.spec, r.frames["train"])
    spec = r.model.spec
    kept = tuple(n for n in spec.names if n not in ALL_HISTORY)
    trials["without all-history features"] = refit(replace(spec, names=kept), r.frames["train"])
    tr = r.frames["train"]
    one_year = tr["cutoff_ts"] >= tr["cutoff_ts"].min() + pd.Timedelta(days=365 - 150)
    trials["train on cutoffs with >= 365 d history"] = refit(spec, tr[one_year])
    print("\ntest:")
    for name, m in trials.items():
        print(
            f"{name:44s} mean_p {m['test_mean_p']:.4f} (true {m['test_oracle_mean_p']:.4f}) "
            f"ROC-AUC {m['test_roc_auc']:.4f} ECE {m['test_ece']:.4f} "
            f"coverage {m['test_audience_interval_coverage']:.2f}"
        )


if __name__ == "__main__":
    main()
