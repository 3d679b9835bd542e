"""Evaluation plots as matplotlib figures (the caller saves or logs them).

ROC and PR curves (each scorer's AUC in the legend), reliability diagram (ECE in the legend,
90 % intervals of the observed rates), cumulative gains, feature importance (share of the total
gain, with split counts), and a SHAP summary from LightGBM's own `pred_contrib` (no extra
dependency). Every figure uses constrained layout, so that titles, axis labels, legends and
colour bars stay inside it; each scorer has one colour in every figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from loyalty_model.card import number
from loyalty_model.evaluate import ECE_BINS, calibration_bins, expected_calibration_error
from loyalty_model.model import LoyaltyModel, to_matrix

PROBABILITY_SCORERS = ("model", "logistic_regression", "oracle")
COLOURS = {
    "model": "tab:blue",
    "logistic_regression": "tab:red",
    "follower_count": "tab:orange",
    "engagement_rate": "tab:green",
    "oracle": "tab:purple",
}
_SPARE = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
LABELS = {"oracle": "oracle (ground truth)"}
DPI = 120
CATEGORICAL_COLOUR = "0.55"  # a neutral grey: category codes have no order to colour by
MISSING_COLOUR = "black"
Z90 = 1.6448536269514722  # the normal quantile of a two-sided 90 % interval


def _style(name: str, i: int) -> dict:
    """The same colour for a scorer in every figure; the model drawn thicker, on top."""
    colour = COLOURS.get(name, _SPARE[i % len(_SPARE)])
    if name == "model":
        return {"color": colour, "lw": 2.0, "zorder": 3}
    return {"color": colour, "lw": 1.2, "zorder": 2}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _rows(y: np.ndarray) -> str:
    positives = int(np.sum(y))
    rate = positives / len(y) if len(y) else float("nan")
    return f"test: {len(y):,} followers, {positives:,} loyal ({number(100 * rate)} %)"


def _fig(title: str, size: tuple[float, float] = (6.4, 4.8)):
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _auc(metric, y: np.ndarray, s) -> float:
    """The metric, NaN when the rows hold a single class (no curve to measure)."""
    return float(metric(y, s)) if len(np.unique(y)) == 2 else float("nan")


def roc(y, scores: dict[str, np.ndarray]) -> Figure:
    y = np.asarray(y).astype(int)
    fig, ax = _fig(f"ROC curve\n{_rows(y)}")
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, s)
        auc = _auc(roc_auc_score, y, s)
        ax.plot(fpr, tpr, label=f"{_label(name)} (AUC {number(auc)})", **_style(name, i))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance (AUC 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.set_xlabel("false positive rate (share of non-loyal followers above the threshold)")
    ax.set_ylabel("true positive rate (recall)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pr(y, scores: dict[str, np.ndarray]) -> Figure:
    """Precision against recall as the step function whose area is the PR-AUC (average
    precision): straight lines between the points of a score with many ties (every follower
    of an influencer has that influencer's follower count) would promise precision no
    threshold gives. sklearn's closing point (recall 0, precision 1) is not a threshold
    either: the first step is drawn at the precision of the highest threshold instead."""
    y = np.asarray(y).astype(int)
    fig, ax = _fig(f"Precision-recall curve\n{_rows(y)}")
    for i, (name, s) in enumerate(scores.items()):
        prec, rec, _ = precision_recall_curve(y, s)
        if len(prec) > 1:
            prec = np.r_[prec[:-1], prec[-2]]
        ap = _auc(average_precision_score, y, s)
        ax.plot(
            rec,
            prec,
            drawstyle="steps-post",
            label=f"{_label(name)} (PR-AUC {number(ap)})",
            **_style(name, i),
        )
    base = float(np.mean(y)) if len(y) else float("nan")
    ax.axhline(base, color="k", ls=":", lw=1, label=f"base rate {number(base)} (a random ranking)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.set_xlabel("recall (share of loyal followers above the threshold)")
    ax.set_ylabel("precision (loyal share above the threshold)")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _wilson(successes: np.ndarray, n: np.ndarray, z: float = Z90) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion (sensible at 0 successes too)."""
    n = np.maximum(np.asarray(n, dtype=float), 1)
    p = np.asarray(successes, dtype=float) / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def reliability(y, scores: dict[str, np.ndarray], bins: int = ECE_BINS) -> Figure:
    """Observed loyal rate against mean prediction per equal-count bin (the ECE's bins), with
    the 90 % interval of each observed rate: how far from the diagonal chance alone goes."""
    y = np.asarray(y, dtype=float)
    k = max(1, min(bins, len(y)))
    fig, ax = _fig(
        f"Reliability diagram\n{_rows(y)}\n"
        f"{k} equal-count bins of {len(y) // k:,} followers, as in the ECE"
    )
    hi = 0.0
    for i, (name, s) in enumerate(scores.items()):
        mp, obs, rows = calibration_bins(y, s, bins)
        if len(mp) == 0:
            continue
        lo_ci, hi_ci = _wilson(obs * rows, rows)
        ece = expected_calibration_error(y, s, bins)
        style = _style(name, i)
        ax.errorbar(
            mp,
            obs,
            yerr=[np.maximum(obs - lo_ci, 0), np.maximum(hi_ci - obs, 0)],
            fmt="o-",
            ms=3,
            elinewidth=0.8,
            capsize=2,
            label=f"{_label(name)} (ECE {number(ece)})",
            **style,
        )
        hi = max(hi, float(np.max(mp)), float(np.max(hi_ci)))
    hi = 1.05 * hi if hi > 0 else 1.0
    ax.plot([0, hi], [0, hi], "k:", lw=1, label="perfectly calibrated")
    ax.set(xlim=(0, hi), ylim=(0, hi))
    ax.set_xlabel("mean predicted probability in the bin")
    ax.set_ylabel("observed loyal rate in the bin (bars: 90 % interval)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def gains_curve(y, s) -> tuple[np.ndarray, np.ndarray]:
    """(share of followers targeted, share of loyal followers reached), best scores first.
    Followers with tied scores are targeted together: the curve is straight across a tie
    (what any order within it gives on average), as the ROC curve is, not the order the
    rows happen to be in."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    if len(y) == 0:
        return np.zeros(1), np.zeros(1)
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(ss) != 0), len(ss) - 1]  # end of each tie
    reached = np.cumsum(ys)[last] / max(y.sum(), 1)
    return np.r_[0.0, (last + 1) / len(y)], np.r_[0.0, reached]


def gains(y, scores: dict[str, np.ndarray]) -> Figure:
    y = np.asarray(y, dtype=float)
    fig, ax = _fig(f"Cumulative gains\n{_rows(y)}")
    for i, (name, s) in enumerate(scores.items()):
        x, g = gains_curve(y, s)
        top10 = float(np.interp(0.10, x, g))
        ax.plot(x, g, label=f"{_label(name)} ({number(100 * top10)} %)", **_style(name, i))
    base = float(y.mean()) if len(y) else 0.0
    ax.plot([0, base, 1], [0, 1, 1], color="0.5", ls="--", lw=1, label="perfect ranking")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random (10 %)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("followers targeted, highest scores first")
    ax.set_ylabel("loyal followers reached")
    ax.legend(
        fontsize=8,
        loc="lower right",
        title="loyal followers in the top 10 %",
        title_fontsize=8,
    )
    return fig


def importance(model: LoyaltyModel, top: int = 20) -> Figure:
    """Each feature's share of the model's total gain (the training loss reduction of the
    splits on it, summed over the trees), with the number of those splits."""
    imp = model.importance()
    total = float(imp["gain"].sum())
    shown = imp.head(top).iloc[::-1]
    share = 100 * shown["gain"].to_numpy(dtype=float) / (total if total > 0 else 1.0)
    fig = Figure(figsize=(7.5, 0.3 * len(shown) + 1.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(shown))
    ax.barh(pos, share, color="tab:blue")
    ax.set_yticks(pos, shown["feature"], fontsize=8)
    for y, (v, n) in enumerate(zip(share, shown["splits"], strict=True)):
        ax.text(v, y, f" {int(n):,} splits", va="center", fontsize=7, color="0.3")
    ax.set_xlim(0, max(float(share.max(initial=0)), 1e-9) * 1.3)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"Feature importance: top {len(shown)} of {len(imp)} features by total gain",
        fontsize=11,
    )
    ax.set_xlabel(
        "share of the model's total gain (%)\n"
        "gain: the training loss reduction of the splits on a feature, over all trees",
        fontsize=9,
    )
    return fig


def shap_values(model: LoyaltyModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row contributions to the raw score (log-odds), from LightGBM's pred_contrib."""
    x = to_matrix(frame, model.spec)
    contrib = model.booster.predict(x.to_numpy(), pred_contrib=True)
    return pd.DataFrame(contrib[:, :-1], columns=x.columns, index=frame.index)


def _swarm(values: np.ndarray, rng: np.random.Generator, width: float = 0.4, bins: int = 50):
    """Vertical offsets that spread each row's points in proportion to how many share its
    SHAP value (a beeswarm's outline, without its quadratic packing)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return np.zeros(0)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        density = np.ones(len(v))
    else:
        idx = np.minimum(((v - lo) / (hi - lo) * bins).astype(int), bins - 1)
        counts = np.bincount(idx, minlength=bins)
        density = counts[idx] / counts.max()
    return rng.uniform(-1, 1, len(v)) * width * np.sqrt(density)


def shap_summary(
    model: LoyaltyModel, frame: pd.DataFrame, top: int = 15, seed: int = 0, rows: int = 3000
) -> Figure:
    """One row of points per feature (the `top` by mean |SHAP|), one point per sampled test
    row at its SHAP value, coloured by the feature's value (its percentile among the sampled
    rows: low blue, high red). Categorical features are grey (their codes have no order) and
    missing values black."""
    sample = frame.sample(n=min(len(frame), rows), random_state=seed)
    sv = shap_values(model, sample)
    x = to_matrix(sample, model.spec)
    order = list(sv.abs().mean().sort_values(ascending=False).index[:top][::-1])
    categorical = set(model.spec.categorical)
    cmap, norm = colormaps["coolwarm"], Normalize(0.0, 1.0)
    fig = Figure(figsize=(7.5, 0.36 * len(order) + 2.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(seed)
    seen_missing = seen_categorical = False
    for i, col in enumerate(order):
        v = sv[col].to_numpy()
        raw = x[col].to_numpy()
        y = i + _swarm(v, rng)
        missing = np.isnan(raw)
        ok = ~missing
        point = {"s": 5, "alpha": 0.6, "linewidths": 0, "rasterized": True}
        if col in categorical:
            seen_categorical = True
            ax.scatter(v[ok], y[ok], color=CATEGORICAL_COLOUR, **point)
        else:
            pct = pd.Series(raw[ok]).rank(pct=True).to_numpy()
            ax.scatter(v[ok], y[ok], c=pct, cmap=cmap, norm=norm, **point)
        if missing.any():
            seen_missing = True
            ax.scatter(v[missing], y[missing], color=MISSING_COLOUR, **point)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.axvline(0, color="k", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("SHAP value: contribution to the model's log-odds (before calibration)")
    fig.suptitle(
        f"SHAP summary: top {len(order)} of {len(model.spec.names)} features by mean |SHAP|\n"
        f"{len(sample):,} test rows, LightGBM pred_contrib",
        fontsize=11,
    )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, aspect=25, pad=0.01)
    bar.set_ticks([0, 1], labels=["low", "high"])
    bar.set_label("feature value (low → high)")
    bar.solids.set_rasterized(True)
    handles = []
    if seen_categorical:
        handles.append(_dot(CATEGORICAL_COLOUR, "categorical feature (no order to colour by)"))
    if seen_missing:
        handles.append(_dot(MISSING_COLOUR, "missing value"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    return fig


def _dot(colour: str, label: str) -> Line2D:
    return Line2D([], [], ls="", marker="o", ms=5, color=colour, label=label)


def all_figures(model: LoyaltyModel, test: pd.DataFrame, scores: dict[str, np.ndarray]) -> dict:
    """File name -> figure, for logging as artifacts. `scores` maps scorer -> test scores
    (probabilities for the reliability diagram: pass only probability scorers there)."""
    y = test["label"].to_numpy()
    probs = {k: v for k, v in scores.items() if k in PROBABILITY_SCORERS}
    return {
        "plots/roc.png": roc(y, scores),
        "plots/pr.png": pr(y, scores),
        "plots/reliability.png": reliability(y, probs),
        "plots/gains.png": gains(y, scores),
        "plots/importance.png": importance(model),
        "plots/shap_summary.png": shap_summary(model, test),
    }
