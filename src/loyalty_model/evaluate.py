"""Metrics on held-out rows: follower level and audience (campaign) level."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from loyalty_model import btyd
from loyalty_model.contract import TIERS
from loyalty_model.intervals import AudienceAccumulator

if TYPE_CHECKING:
    from loyalty_model.features import FeatureSpec
    from loyalty_model.model import LoyaltyModel

ECE_BINS = 20
log = logging.getLogger(__name__)


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS):
    """(mean prediction, observed rate, rows) per equal-count bin of the predictions.
    Equal-count bins, because with rare positives almost every prediction falls in the
    first equal-width bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    groups = np.array_split(np.argsort(p, kind="stable"), min(bins, len(y))) if len(y) else []
    return (
        np.array([p[g].mean() for g in groups]),
        np.array([y[g].mean() for g in groups]),
        np.array([len(g) for g in groups]),
    )


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean prediction| over equal-count bins of the predictions,
    weighted by bin size."""
    if len(y) == 0:
        return float("nan")
    mean_p, observed, rows = calibration_bins(y, p, bins)
    return float((rows * np.abs(observed - mean_p)).sum() / rows.sum())


def top_share(y: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    """(lift, recall) among the top `share` of rows by prediction (ties broken by position)."""
    y = np.asarray(y, dtype=float)
    n = max(1, int(np.ceil(share * len(y))))
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:n]
    base = y.mean()
    lift = float(y[top].mean() / base) if base > 0 else float("nan")
    recall = float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan")
    return lift, recall


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE, lift and recall in the top 1 % and 10 %,
    base rate and mean prediction. AUCs are NaN with a single class."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    two = len(np.unique(y)) == 2
    out = {
        "roc_auc": float(roc_auc_score(y, p)) if two else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if two else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(np.mean((p - y) ** 2)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_p": float(p.mean()) if len(p) else float("nan"),
        "rows": float(len(y)),
    }
    for share, tag in ((0.01, "1pct"), (0.10, "10pct")):
        out[f"lift_top{tag}"], out[f"recall_top{tag}"] = top_share(y, p, share)
    return out


def campaign_audiences(
    frame: pd.DataFrame,
    p: np.ndarray,
    truth: np.ndarray | None = None,
    dispersion: float = 0.0,
):
    """Per campaign: followers, predicted expected loyal count with its 90 % interval (with
    the model's audience dispersion), the actual loyal count, and (simulated data) the true
    expected count."""
    df = frame[["campaign_id", "tier", "label"]].assign(p=np.asarray(p, dtype=float))
    if truth is not None:
        df["p_true"] = truth
    rows = []
    for cid, g in df.groupby("campaign_id", sort=True):
        a = AudienceAccumulator()
        a.add(g["p"].to_numpy())
        lo, hi = a.interval(dispersion)
        row = {
            "campaign_id": cid,
            "tier": g["tier"].iloc[0],
            "followers": len(g),
            "expected": a.m1,
            "low": lo,
            "high": hi,
            "actual": int(g["label"].sum()),
        }
        if truth is not None:
            row["true_expected"] = float(g["p_true"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


# A campaign's realised loyal rate ranks campaigns only when it rests on enough followers: with
# a handful (a nano audience in a sample of people), it is 0 or a large fraction by chance, and
# ranking by it rewards whatever correlates with audience size (on `small`, seed 7, the
# follower-count baseline "beat" the oracle, 0.47 to 0.29, over all 71 test campaigns).
MIN_CAMPAIGN_FOLLOWERS = 100


def audience_metrics(aud: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Spearman of predicted vs actual loyal rates across campaigns of at least
    MIN_CAMPAIGN_FOLLOWERS followers, and vs true rates across all (simulated data); MAE of
    counts; coverage of the 90 % intervals."""
    out: dict[str, float] = {}
    if len(aud) == 0:
        return out
    rate = aud["expected"] / aud["followers"]
    actual_rate = aud["actual"] / aud["followers"]
    big = (aud["followers"] >= MIN_CAMPAIGN_FOLLOWERS).to_numpy()
    out[f"{prefix}campaigns"] = float(len(aud))
    out[f"{prefix}campaigns_ranked"] = float(big.sum())
    out[f"{prefix}spearman_rate"] = _spearman(rate[big], actual_rate[big])
    out[f"{prefix}mae_count"] = float((aud["expected"] - aud["actual"]).abs().mean())
    inside = (aud["actual"] >= aud["low"]) & (aud["actual"] <= aud["high"])
    out[f"{prefix}interval_coverage"] = float(inside.mean())
    if "true_expected" in aud:
        true_rate = aud["true_expected"] / aud["followers"]
        out[f"{prefix}spearman_true_rate"] = _spearman(rate, true_rate)
        out[f"{prefix}mae_true_count"] = float(
            (aud["expected"] - aud["true_expected"]).abs().mean()
        )
    return out


def _spearman(a, b) -> float:
    if len(a) < 3 or np.ptp(np.asarray(a)) == 0 or np.ptp(np.asarray(b)) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def baseline_scores(
    parts: dict[str, pd.DataFrame], spec: FeatureSpec, seed: int = 0
) -> dict[str, tuple[np.ndarray, bool]]:
    """Scores of the simple rules people use, on the test rows: name -> (score, is_probability).

    - follower_count: rank audiences by reach (every follower of a bigger account scores higher);
    - engagement_rate: rank by the influencer's engagement rate (what most tools show);
    - logistic_regression: a linear model on the same features, fitted on the rows the
      model is fitted on (train+valid);
    - bg_nbd: the BG/NBD repeat-buying model (btyd.py) fitted per brand on the follower x
      brand purchase histories before the cutoffs of the same rows, scoring P(at least
      `min_purchases` purchases in the horizon) (bg_nbd_scores). A ranking score: it is a
      probability only for the brand's past buyers.
    """
    from loyalty_model.model import baseline_matrix, make_logistic_baseline

    test = parts["test"]
    out: dict[str, tuple[np.ndarray, bool]] = {
        "follower_count": (test["inf_log_followers"].astype(float).fillna(0).to_numpy(), False),
        "engagement_rate": (
            test["inf_engagement_rate_90d"].astype(float).fillna(0).to_numpy(),
            False,
        ),
    }
    fit_rows = pd.concat([parts["train"], parts["valid"]])
    lr = make_logistic_baseline(seed).fit(
        baseline_matrix(fit_rows, spec), fit_rows["label"].to_numpy()
    )
    out["logistic_regression"] = (lr.predict_proba(baseline_matrix(test, spec))[:, 1], True)
    out["bg_nbd"] = (bg_nbd_scores(fit_rows, test, spec.horizon_days, spec.min_purchases), False)
    return out


# -- the BG/NBD baseline ----------------------------------------------------------------------

# days from the follower's first purchase of the brand to the cutoff day (BG/NBD's age T)
BTYD_FIRST_PURCHASE = "fb_days_since_first_purchase"
# distinct days with a purchase of the brand before the cutoff day (BG/NBD's transactions)
BTYD_PURCHASE_DAYS = "fb_purchase_days_all"
# a brand with fewer past buyers in the fit rows (or none who bought twice) gets the fit of
# every brand's buyers together
BTYD_MIN_CUSTOMERS = btyd.MIN_CUSTOMERS


def _cutoff_day(frame: pd.DataFrame) -> np.ndarray:
    """The UTC day number of each row's cutoff (features use the days before it)."""
    from loyalty_model.features import cut_days

    return cut_days(frame["cutoff_ts"]).astype(float)


def btyd_histories(
    frame: pd.DataFrame, history_start_day: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(buyer, x, t_x, T) of each row, in days, from its follower x brand features: the
    brand's purchases before the cutoff day `fb_purchases_all` (x = purchases - 1), the days
    since the last `fb_days_since_purchase` (T - t_x) and since the first
    (BTYD_FIRST_PURCHASE, T). Rows without a purchase (buyer False) get zeros.

    Without the first-purchase column, T of a repeat buyer is estimated: their purchases
    before the last are spread over the time from `history_start_day` (the first day the
    data show a purchase) to the last, and the first of x of them falls on average 1 / (x + 1)
    of the way in. Exact for x = 0 (the first purchase is the last).

    Frames with the purchase days (BTYD_PURCHASE_DAYS, feature version 3) and the first
    purchase get the features' own histories (features.bg_nbd_histories: a transaction is a
    purchase day, x = purchase days - 1), those the BG/NBD features use."""
    if BTYD_PURCHASE_DAYS in frame and BTYD_FIRST_PURCHASE in frame:
        from loyalty_model.features import bg_nbd_histories

        return bg_nbd_histories(frame)
    n = frame["fb_purchases_all"].astype(float).fillna(0).to_numpy()
    recency = frame["fb_days_since_purchase"].astype(float).to_numpy()
    buyer = (n >= 1) & ~np.isnan(recency)
    x = np.where(buyer, n - 1, 0.0)
    since_last = np.where(buyer, recency, 0.0)
    if BTYD_FIRST_PURCHASE in frame:
        first = frame[BTYD_FIRST_PURCHASE].astype(float).to_numpy()
        age = np.where(buyer, np.fmax(first, since_last), 0.0)  # NaN: the last is the first
    else:
        start = np.nan if history_start_day is None else history_start_day
        span = np.fmax(_cutoff_day(frame) - start, since_last)  # NaN start: span = since_last
        age = since_last + (span - since_last) * x / (x + 1)
    return buyer, x, age - since_last, age


def bg_nbd_scores(
    fit_rows: pd.DataFrame, rows: pd.DataFrame, horizon_days: int, min_purchases: int
) -> np.ndarray:
    """The BG/NBD baseline: P(at least `min_purchases` purchases of the brand in the next
    `horizon_days` | the follower's purchase history of the brand before the cutoff), exact
    (btyd.prob_at_least), for each of `rows`.

    Fitted by maximum likelihood per brand on `fit_rows`' histories, one per follower and
    brand (the latest cutoff: the longest history; earlier cutoffs are the same history cut
    short), past buyers only — BG/NBD's population begins at a customer's first purchase.
    Brands with fewer than BTYD_MIN_CUSTOMERS buyers, or none who bought again, and brands
    absent from the fit rows use one fit over every brand's buyers. Only the follower's own
    purchases of the brand before each cutoff are used: no labels, no other feature.

    A follower who never bought the brand scores 0, below every buyer: BG/NBD has no model of
    a first purchase, and what it says of a customer whose only purchase lies ever further
    back tends to 0 (a just-acquired customer's P — x = 0, T = 0 — would rank every non-buyer
    above every lapsed customer, which nothing in the model supports)."""
    out = np.zeros(len(rows))
    start = None
    if BTYD_FIRST_PURCHASE not in fit_rows:
        buyer, _, _, _ = btyd_histories(fit_rows)
        since = fit_rows["fb_days_since_purchase"].astype(float).to_numpy()
        if buyer.any():
            start = float(np.min((_cutoff_day(fit_rows) - since)[buyer]))
        log.info("bg_nbd: no %s feature; first purchases estimated", BTYD_FIRST_PURCHASE)
    latest = fit_rows.sort_values("cutoff_ts", kind="stable").drop_duplicates(
        ["follower_id", "brand_id"], keep="last"
    )
    buyer, x, t_x, age = btyd_histories(latest, start)
    if not buyer.any():
        return out  # no past buyer to fit: no ranking
    brand = latest["brand_id"].astype(str).to_numpy()[buyer]
    x, t_x, age = x[buyer], t_x[buyer], age[buyer]
    pooled = btyd.fit_bg_nbd(x, t_x, age)
    fits: dict[str, btyd.BGNBD] = {}
    for b in np.unique(brand):
        m = brand == b
        if m.sum() >= BTYD_MIN_CUSTOMERS and (x[m] > 0).any():
            fits[b] = btyd.fit_bg_nbd(x[m], t_x[m], age[m])
    log.info(
        "bg_nbd: %d brands fitted, %d of them converged; pooled fit r=%.3g alpha=%.3g "
        "a=%.3g b=%.3g",
        len(fits),
        sum(f.converged for f in fits.values()),
        pooled.r,
        pooled.alpha,
        pooled.a,
        pooled.b,
    )
    buyer, x, t_x, age = btyd_histories(rows, start)
    brands = rows["brand_id"].astype(str).to_numpy()
    for b in np.unique(brands[buyer]):
        m = buyer & (brands == b)
        out[m] = btyd.prob_at_least(
            fits.get(b, pooled), min_purchases, horizon_days, x[m], t_x[m], age[m]
        )
    return out


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The metrics that make sense for a score that is not a probability."""
    y = np.asarray(y).astype(int)
    two = len(np.unique(y)) == 2
    out = {
        "roc_auc": float(roc_auc_score(y, score)) if two else float("nan"),
        "pr_auc": float(average_precision_score(y, score)) if two else float("nan"),
    }
    for share, tag in ((0.01, "1pct"), (0.10, "10pct")):
        out[f"lift_top{tag}"], out[f"recall_top{tag}"] = top_share(y, score, share)
    return out


def audience_rank_metrics(frame: pd.DataFrame, score: np.ndarray) -> dict[str, float]:
    """Spearman between a campaign-level score (mean over its rows) and the actual rate, over
    campaigns of at least MIN_CAMPAIGN_FOLLOWERS followers."""
    df = frame[["campaign_id", "label"]].assign(s=np.asarray(score, dtype=float))
    g = df.groupby("campaign_id").agg(s=("s", "mean"), rate=("label", "mean"), n=("s", "size"))
    g = g[g["n"] >= MIN_CAMPAIGN_FOLLOWERS]
    return {"audience_spearman_rate": _spearman(g["s"], g["rate"])}


@dataclass
class Evaluation:
    metrics: dict[str, float]
    baselines: pd.DataFrame  # one row per scorer on the test set
    audiences: pd.DataFrame  # per test campaign: expected vs actual
    test_scores: dict[str, np.ndarray]  # scorer -> scores on the test rows (for plots)
    # the model minus each baseline on the same test rows, with paired-bootstrap intervals
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)


def evaluate_model(
    model: LoyaltyModel,
    parts: dict[str, pd.DataFrame],
    truth: pd.DataFrame | None,
    seed=0,
    valid_p: np.ndarray | None = None,
    draws: int = 0,
):
    """Every metric of a trained model on valid and test, the oracle where ground truth is
    known (simulated data), and the baselines on the same test rows.

    `valid_p`: predictions for the valid rows from models that did not see them (out of fold),
    for a model that was refitted on train+valid; without it valid is scored by `model`.
    `draws`: paired-bootstrap draws of the model minus each baseline on the test rows
    (paired_differences); 0 skips them."""
    metrics: dict[str, float] = {}
    test_aud = pd.DataFrame()
    test_p = np.zeros(0)
    disp = model.calibrator.audience_dispersion
    for name in ("valid", "test"):
        part = parts[name].assign(tier=lambda d: tier_names(d))
        p = valid_p if name == "valid" and valid_p is not None else model.predict_proba(part)
        y = part["label"].to_numpy()
        metrics.update({f"{name}_{k}": v for k, v in binary_metrics(y, p).items()})
        p_true = _truth_for(part, truth)
        aud = campaign_audiences(part, p, p_true, disp)
        metrics.update(audience_metrics(aud, f"{name}_audience_"))
        for tier in TIERS:
            sub = aud[aud["tier"] == tier]
            if len(sub) >= 3:
                metrics.update(audience_metrics(sub, f"{name}_audience_{tier}_"))
        if p_true is not None:
            oracle = binary_metrics(y, p_true)
            metrics.update({f"{name}_oracle_{k}": v for k, v in oracle.items()})
            metrics[f"{name}_roc_auc_vs_oracle"] = metrics[f"{name}_roc_auc"] / oracle["roc_auc"]
            metrics.update(
                audience_metrics(
                    campaign_audiences(part, p_true, p_true), f"{name}_oracle_audience_"
                )
            )
        if name == "test":
            test_aud, test_p = aud, p
    table, scores = _baseline_table(model, parts, truth, metrics, seed)
    scores = {"model": test_p, **scores}
    differences = pd.DataFrame()
    if draws > 0:
        rivals = {k: v for k, v in scores.items() if k not in ("model", "oracle")}
        differences = paired_differences(parts["test"], test_p, rivals, draws, seed)
        metrics.update(best_baseline_metrics(differences))
    return Evaluation(metrics, table, test_aud, scores, differences)


def tier_names(d: pd.DataFrame) -> pd.Series:
    """The tier of each row from its `inf_tier` code; "unknown" without one."""
    if "inf_tier" not in d:
        return pd.Series("unknown", index=d.index)
    codes = d["inf_tier"].astype("float").fillna(-1).astype(int)
    return codes.map(lambda c: TIERS[c] if 0 <= c < len(TIERS) else "unknown")


def _truth_for(part: pd.DataFrame, truth: pd.DataFrame | None) -> np.ndarray | None:
    if truth is None:
        return None
    m = part[["campaign_id", "follower_id"]].merge(
        truth[["campaign_id", "follower_id", "p_true"]],
        how="left",
        on=["campaign_id", "follower_id"],
    )
    if m["p_true"].isna().any():  # ground truth of another world: ignore it
        return None
    return m["p_true"].to_numpy()


def _baseline_table(
    model: LoyaltyModel,
    parts: dict[str, pd.DataFrame],
    truth: pd.DataFrame | None,
    metrics: dict[str, float],
    seed: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    test = parts["test"]
    y = test["label"].to_numpy()
    rows = [
        {
            "scorer": "model (LightGBM)",
            **{k: metrics[f"test_{k}"] for k in ("roc_auc", "pr_auc", "log_loss", "ece")},
            **{k: metrics[f"test_{k}"] for k in ("lift_top1pct", "recall_top10pct")},
            "audience_spearman_rate": metrics.get("test_audience_spearman_rate", float("nan")),
        }
    ]
    scores = {}
    for name, (score, is_prob) in baseline_scores(parts, model.spec, seed).items():
        scores[name] = score
        row = {"scorer": name, **ranking_metrics(y, score)}
        if is_prob:
            full = binary_metrics(y, score)
            row.update({k: full[k] for k in ("log_loss", "ece")})
        row.update(audience_rank_metrics(test, score))
        rows.append(row)
    p_true = _truth_for(test, truth)
    if p_true is not None:
        scores["oracle"] = p_true
        full = binary_metrics(y, p_true)
        rows.append(
            {
                "scorer": "oracle (ground truth)",
                **{k: full[k] for k in ("roc_auc", "pr_auc", "log_loss", "ece")},
                **{k: full[k] for k in ("lift_top1pct", "recall_top10pct")},
                **audience_rank_metrics(test, p_true),
            }
        )
    cols = [
        "scorer",
        "roc_auc",
        "pr_auc",
        "log_loss",
        "ece",
        "lift_top1pct",
        "recall_top10pct",
        "audience_spearman_rate",
    ]
    return pd.DataFrame(rows).reindex(columns=cols), scores


# -- the model against each baseline: paired bootstrap over test waves ------------------------

BOOTSTRAP_LEVEL = 0.90
COMPARED = ("roc_auc", "pr_auc", "audience_spearman_rate")  # the metrics compared
# below this many test waves a bootstrap over them says nothing (one wave: every draw is the
# same): the differences are given without an interval
BOOTSTRAP_MIN_WAVES = 10
BEST_BASELINE = "best baseline"  # the row of the model against the best baseline of each draw


class _Ranked:
    """One scorer's test rows summarised for the ROC-AUC and PR-AUC of any reweighting of
    its units (a bootstrap draw counts each unit 0, 1, 2, ... times), exactly and without
    sorting again: for each positive row and each unit, how many of the unit's positives
    score at least as high, and how many of its negatives score higher and the same. Then
    a draw's metrics are matrix products (positives x units) with its counts. Ties count as
    one threshold, as in scikit-learn's roc_auc_score and average_precision_score."""

    def __init__(self, score: np.ndarray, y: np.ndarray, unit: np.ndarray, units: int) -> None:
        score = np.asarray(score, dtype=float)
        pos = np.asarray(y) == 1
        s_pos, self.unit_of_pos = score[pos], unit[pos]
        shape = (len(s_pos), units)
        self.pos_ge = np.zeros(shape, dtype=np.float32)
        self.neg_gt = np.zeros(shape, dtype=np.float32)
        self.neg_eq = np.zeros(shape, dtype=np.float32)
        order = np.argsort(unit, kind="stable")
        bounds = np.searchsorted(unit[order], np.arange(units + 1))
        for u in range(units):
            rows = order[bounds[u] : bounds[u + 1]]
            mine_pos = np.sort(score[rows][pos[rows]])
            mine_neg = np.sort(score[rows][~pos[rows]])
            self.pos_ge[:, u] = len(mine_pos) - np.searchsorted(mine_pos, s_pos, "left")
            below = np.searchsorted(mine_neg, s_pos, "left")
            upto = np.searchsorted(mine_neg, s_pos, "right")
            self.neg_gt[:, u] = len(mine_neg) - upto
            self.neg_eq[:, u] = upto - below
        self.positives = np.bincount(unit[pos], minlength=units).astype(np.float32)
        self.negatives = np.bincount(unit[~pos], minlength=units).astype(np.float32)

    def aucs(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ROC-AUC, PR-AUC) of each column of `counts` (units x draws): every row weighted
        by its unit's count; NaN where a draw has no positive or no negative."""
        c = counts.astype(np.float32)
        pos, neg = self.positives @ c, self.negatives @ c
        weight = c[self.unit_of_pos]  # each positive's own weight in each draw
        above, tied, ahead = self.neg_gt @ c, self.neg_eq @ c, self.pos_ge @ c
        with np.errstate(divide="ignore", invalid="ignore"):
            misordered = (weight * (above + 0.5 * tied)).sum(axis=0, dtype=float)
            roc = 1 - misordered / (pos.astype(float) * neg)
            taken = ahead + above + tied  # 0 only where the positive itself weighs 0
            precision = np.divide(ahead, taken, out=np.zeros_like(taken), where=taken > 0)
            ap = (weight * precision).sum(axis=0, dtype=float) / pos
        bad = (pos <= 0) | (neg <= 0)
        return np.where(bad, np.nan, roc), np.where(bad, np.nan, ap)


def _audience_spearman(rates: np.ndarray, scores: np.ndarray, copies: np.ndarray) -> float:
    """Spearman of campaign scores and actual rates, each campaign counted `copies` times."""
    keep = copies > 0
    return _spearman(np.repeat(scores[keep], copies[keep]), np.repeat(rates[keep], copies[keep]))


def paired_differences(
    test: pd.DataFrame,
    model_scores: np.ndarray,
    baselines: dict[str, np.ndarray],
    draws: int = 1000,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
) -> pd.DataFrame:
    """The model minus each baseline on ROC-AUC, PR-AUC and audience Spearman (COMPARED),
    scored on the same test rows, with a paired-bootstrap interval at `level`.

    The units drawn with replacement are campaign waves (a brand and a start time): the
    followers of a wave's influencers overlap and share the brand's moment, so rows and even
    campaigns of one wave are not independent. Every scorer is scored on the same draws
    (paired), so what the waves have in common cancels out of the differences. Audience
    Spearman is over the campaigns of at least MIN_CAMPAIGN_FOLLOWERS followers, each
    scored by its mean (audience_rank_metrics). One row per baseline and metric: the point
    difference on the test rows, the interval's ends (percentiles of the draws' differences),
    the share of draws in which the model is ahead, the waves drawn from and the baseline best
    on the test rows; and, with two baselines or more, a BEST_BASELINE row per metric: the
    model minus the best baseline of each draw, so that choosing the best on the same rows is
    part of the interval. With fewer than BOOTSTRAP_MIN_WAVES waves there is no interval
    (NaN ends): the differences alone."""
    y = test["label"].to_numpy()
    wave = test["brand_id"].astype(str) + "|" + test["cutoff_ts"].astype(str)
    unit, names = pd.factorize(wave, sort=True)
    n_units = len(names)
    scorers = {"model": np.asarray(model_scores, dtype=float)} | {
        k: np.asarray(v, dtype=float) for k, v in baselines.items()
    }
    ranked = {k: _Ranked(v, y, unit, n_units) for k, v in scorers.items()}
    camp = test[["campaign_id"]].assign(label=y, unit=unit)
    camp = camp.assign(**{f"s_{k}": v for k, v in scorers.items()})
    per = camp.groupby("campaign_id", sort=True).agg(
        unit=("unit", "first"),
        rate=("label", "mean"),
        n=("label", "size"),
        **{f"s_{k}": (f"s_{k}", "mean") for k in scorers},
    )
    per = per[per["n"] >= MIN_CAMPAIGN_FOLLOWERS]
    camp_unit, rates = per["unit"].to_numpy(), per["rate"].to_numpy()

    def scored(counts: np.ndarray) -> np.ndarray:
        """scorers x COMPARED x draws for counts of units x draws."""
        out = np.empty((len(scorers), len(COMPARED), counts.shape[1]))
        for j, k in enumerate(scorers):
            out[j, 0], out[j, 1] = ranked[k].aucs(counts)
            campaign_scores = per[f"s_{k}"].to_numpy()
            out[j, 2] = [
                _audience_spearman(rates, campaign_scores, counts[camp_unit, d])
                for d in range(counts.shape[1])
            ]
        return out

    point = scored(np.ones((n_units, 1), dtype=np.int64))[:, :, 0]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_units, (draws, n_units))
    counts = np.zeros((n_units, draws), dtype=np.int64)
    np.add.at(counts, (picks, np.arange(draws)[:, None]), 1)
    drawn = np.concatenate(
        [scored(counts[:, i : i + 100]) for i in range(0, draws, 100)], axis=2
    )  # in slices of 100 draws, to bound the products' memory
    tail = (1 - level) / 2
    few = n_units < BOOTSTRAP_MIN_WAVES

    def row(baseline: str, m: int, value: float, diff: np.ndarray, best: str) -> dict:
        diff = diff[np.isfinite(diff)]
        low = high = float("nan")
        if len(diff) and not few:
            low, high = (float(q) for q in np.quantile(diff, [tail, 1 - tail]))
        return {
            "baseline": baseline,
            "metric": COMPARED[m],
            "model": point[0, m],
            "baseline_value": value,
            "difference": point[0, m] - value,
            "low": low,
            "high": high,
            "model_ahead": float((diff > 0).mean()) if len(diff) and not few else float("nan"),
            "draws": float(len(diff)),
            "waves": float(n_units),
            "best_on_test": best,
        }

    rows = []
    who = list(scorers)
    for m in range(len(COMPARED)):
        values = point[1:, m]
        best = who[1 + int(np.nanargmax(values))] if np.isfinite(values).any() else ""
        rows += [
            row(who[j], m, point[j, m], drawn[0, m] - drawn[j, m], best) for j in range(1, len(who))
        ]
        if len(who) > 1 and best:
            # the best baseline is chosen on the same test rows: each draw compares the model
            # with the best baseline of that draw, so the choice is part of the interval
            with warnings.catch_warnings():  # a draw where no baseline scores: NaN, dropped
                warnings.simplefilter("ignore", RuntimeWarning)
                strongest = np.nanmax(drawn[1:, m], axis=0)
            rows.append(row(BEST_BASELINE, m, np.nanmax(values), drawn[0, m] - strongest, best))
    return pd.DataFrame(rows)


def best_baseline_metrics(differences: pd.DataFrame) -> dict[str, float]:
    """Per compared metric, the model minus the best baseline (BEST_BASELINE rows: the best
    chosen in each draw) and the ends of its paired-bootstrap interval:
    test_<metric>_minus_best_baseline[_low|_high] (NaN ends are not returned)."""
    out: dict[str, float] = {}
    for r in differences[differences["baseline"] == BEST_BASELINE].itertuples(index=False):
        key = f"test_{r.metric}_minus_best_baseline"
        out |= {key: r.difference, f"{key}_low": r.low, f"{key}_high": r.high}
    return {k: float(v) for k, v in out.items() if v == v}


# -- audiences against the simulator's counterfactual ground truth ----------------------------


@dataclass
class TruthComparison:
    metrics: dict[str, float]  # Spearman, top-k overlaps, counts
    tiers: pd.DataFrame  # per tier: predicted and true rate and cost per loyal customer


def _top(values: pd.Series, k: int, lowest: bool) -> set:
    v = values.dropna()
    order = v.sort_values(ascending=lowest, kind="stable")
    return set(order.index[:k])


def scenarios_of(truth: pd.DataFrame) -> list[tuple[str, str, pd.Timestamp]]:
    """(scenario_id, brand_id, as_of) of each scenario in ground_truth_audiences."""
    s = truth[["scenario_id", "brand_id", "as_of"]].drop_duplicates().sort_values("scenario_id")
    return [(r.scenario_id, r.brand_id, r.as_of) for r in s.itertuples()]


def truth_sample(truth: pd.DataFrame, max_followers: int) -> list[str] | None:
    """The influencers of one scenario's truth to score: None (all) when their followers in
    the data fit in `max_followers`; else a reproducible sample, in the MD5 order of the id,
    of whole audiences whose followers fit (at least one influencer)."""
    if truth["followers_in_data"].sum() <= max_followers:
        return None
    digest = truth["influencer_id"].map(lambda i: hashlib.md5(str(i).encode()).hexdigest())
    order = truth.assign(_digest=digest).sort_values("_digest", kind="stable")
    keep = (order["followers_in_data"].cumsum() <= max_followers).to_numpy(copy=True)
    keep[0] = True
    return sorted(order["influencer_id"][keep])


def truth_of_request(truth: pd.DataFrame | None, brand_id: str, as_of) -> pd.DataFrame | None:
    """The truth rows of the scenario matching a scoring request, if the simulator has one."""
    if truth is None:
        return None
    t = truth[(truth["brand_id"] == brand_id) & (truth["as_of"] == pd.Timestamp(as_of))]
    return t if len(t) else None


def audiences_against_truth(pred: pd.DataFrame, truth: pd.DataFrame) -> TruthComparison:
    """Audience predictions (`loyal_rate`, `cost_per_expected_loyal` per `influencer_id`, as
    in audience_scores) against the true ones of the same (brand, as-of) scenario
    (`true_loyal_rate`, `true_cost_per_loyal`, `tier`, as in ground_truth_audiences).

    Costs are compared over influencers with a price where both sides have a cost; rates over
    influencers with followers in the data. Top-k overlap: how many of the true k best are
    among the predicted k best (lowest cost, highest rate). The `*_cost_per_follower` metrics
    are the floor any ranking should clear: price per follower, which knows nothing about
    loyalty (every audience assumed to convert at the same rate)."""
    t = truth.set_index("influencer_id")
    p = pred.set_index("influencer_id").reindex(t.index)
    cost = pd.DataFrame({"pred": p["cost_per_expected_loyal"], "true": t["true_cost_per_loyal"]})
    cost = cost.astype(float).dropna()
    rate = pd.DataFrame({"pred": p["loyal_rate"], "true": t["true_loyal_rate"]})
    rate = rate.astype(float).dropna()
    m: dict[str, float] = {
        "priced_influencers": float(len(cost)),
        "rated_influencers": float(len(rate)),
        "spearman_cost": _spearman(cost["pred"], cost["true"]),
        "spearman_rate": _spearman(rate["pred"], rate["true"]),
    }
    per_follower = (t["price_per_post"] / t["follower_count"]).reindex(cost.index)
    m["spearman_cost_per_follower"] = _spearman(per_follower, cost["true"])
    m["top20_overlap_cost_per_follower"] = float(
        len(_top(per_follower, 20, True) & _top(cost["true"], 20, True))
    )
    for k in (10, 20):
        m[f"top{k}_overlap_cost"] = float(
            len(_top(cost["pred"], k, True) & _top(cost["true"], k, True))
        )
        m[f"top{k}_overlap_rate"] = float(
            len(_top(rate["pred"], k, False) & _top(rate["true"], k, False))
        )
    both = pd.DataFrame(
        {
            "tier": t["tier"],
            "rate": p["loyal_rate"].astype(float),
            "true_rate": t["true_loyal_rate"].astype(float),
            "cost": p["cost_per_expected_loyal"].astype(float),
            "true_cost": t["true_cost_per_loyal"].astype(float),
        }
    )
    tiers = (
        both.groupby("tier")
        .agg(
            influencers=("tier", "size"),
            mean_loyal_rate=("rate", "mean"),
            true_mean_loyal_rate=("true_rate", "mean"),
            median_cost_per_loyal=("cost", "median"),
            true_median_cost_per_loyal=("true_cost", "median"),
        )
        .reindex([x for x in TIERS if x in set(both["tier"])])
        .reset_index()
    )
    return TruthComparison(m, tiers)
