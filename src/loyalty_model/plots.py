"""Evaluation plots as matplotlib figures (the caller saves or logs them).

ROC and PR curves, reliability diagram, cumulative gains, feature importance (gain), and a
SHAP summary from LightGBM's own `pred_contrib` (no extra dependency).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
from sklearn.metrics import precision_recall_curve, roc_curve

from loyalty_model.evaluate import ECE_BINS, calibration_bins
from loyalty_model.model import LoyaltyModel, to_matrix


def _fig(title: str):
    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def _labelled(fig: Figure, ax, xlabel: str, ylabel: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig


def roc(y, scores: dict[str, np.ndarray]):
    fig, ax = _fig("ROC curve (test)")
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    return _labelled(fig, ax, "false positive rate", "true positive rate")


def pr(y, scores: dict[str, np.ndarray]):
    fig, ax = _fig("Precision-recall curve (test)")
    for name, s in scores.items():
        prec, rec, _ = precision_recall_curve(y, s)
        ax.plot(rec, prec, label=name)
    ax.axhline(np.mean(y), color="k", ls=":", lw=1, label="base rate")
    return _labelled(fig, ax, "recall", "precision")


def reliability(y, scores: dict[str, np.ndarray], bins: int = ECE_BINS):
    fig, ax = _fig("Reliability (test, equal-count bins, as in the ECE)")
    hi = 0.0
    for name, s in scores.items():
        mp, obs, _ = calibration_bins(y, s, bins)
        hi = max(hi, *mp, *obs)
        ax.plot(mp, obs, "o-", ms=3, label=name)
    ax.plot([0, hi], [0, hi], "k:", lw=1)
    return _labelled(fig, ax, "mean predicted probability", "observed loyal rate")


def gains(y, scores: dict[str, np.ndarray]):
    fig, ax = _fig("Cumulative gains (test)")
    y = np.asarray(y, dtype=float)
    x = np.arange(1, len(y) + 1) / len(y)
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s), kind="stable")
        ax.plot(x, np.cumsum(y[order]) / max(y.sum(), 1), label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    return _labelled(fig, ax, "share of followers targeted", "share of loyal customers reached")


def importance(model: LoyaltyModel, top: int = 20):
    imp = model.importance().head(top).iloc[::-1]
    fig = Figure(figsize=(7, 0.3 * len(imp) + 1.2), dpi=100)
    ax = fig.subplots()
    ax.barh(imp["feature"], imp["gain"])
    ax.set_title("Feature importance (total gain)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def shap_values(model: LoyaltyModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row contributions to the raw score (log-odds), from LightGBM's pred_contrib."""
    x = to_matrix(frame, model.spec)
    contrib = model.booster.predict(x.to_numpy(), pred_contrib=True)
    return pd.DataFrame(contrib[:, :-1], columns=x.columns, index=frame.index)


def shap_summary(model: LoyaltyModel, frame: pd.DataFrame, top: int = 15, seed: int = 0):
    sample = frame.sample(n=min(len(frame), 3000), random_state=seed)
    sv = shap_values(model, sample)
    x = to_matrix(sample, model.spec)
    order = sv.abs().mean().sort_values(ascending=False).index[:top][::-1]
    fig = Figure(figsize=(7, 0.35 * len(order) + 1.5), dpi=100)
    ax = fig.subplots()
    rng = np.random.default_rng(seed)
    for i, col in enumerate(order):
        vals = x[col].rank(pct=True).fillna(0.5).to_numpy()
        ax.scatter(
            sv[col], i + rng.uniform(-0.3, 0.3, len(sv)), c=vals, cmap="coolwarm", s=4, alpha=0.6
        )
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("SHAP value (contribution to log-odds); colour: feature value, low to high")
    ax.set_title("SHAP summary (test sample, LightGBM pred_contrib)")
    fig.tight_layout()
    return fig


def all_figures(model: LoyaltyModel, test: pd.DataFrame, scores: dict[str, np.ndarray]) -> dict:
    """File name -> figure, for logging as artifacts. `scores` maps scorer -> test scores
    (probabilities for the reliability diagram: pass only probability scorers there)."""
    y = test["label"].to_numpy()
    probs = {k: v for k, v in scores.items() if k in ("model", "logistic_regression", "oracle")}
    return {
        "plots/roc.png": roc(y, scores),
        "plots/pr.png": pr(y, scores),
        "plots/reliability.png": reliability(y, probs),
        "plots/gains.png": gains(y, scores),
        "plots/importance.png": importance(model),
        "plots/shap_summary.png": shap_summary(model, test),
    }
