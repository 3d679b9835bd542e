"""Metric functions against hand-computed values; calibration on a miscalibrated toy model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from loyalty_model import evaluate
from loyalty_model.model import Calibrator, audience_dispersion, fit_calibrator


def test_ece_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.8])
    # two equal-count bins: {0.1, 0.3} mean 0.2 vs rate 0; {0.6, 0.8} mean 0.7 vs rate 1
    assert evaluate.expected_calibration_error(y, p, bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    assert evaluate.expected_calibration_error(y, p, bins=1) == pytest.approx(abs(0.5 - 0.45))


def test_lift_and_recall_by_hand():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.linspace(1, 0, 10)  # row 0 ranked first
    lift, recall = evaluate.top_share(y, p, 0.10)
    assert lift == pytest.approx(1.0 / 0.2) and recall == pytest.approx(0.5)
    lift, recall = evaluate.top_share(y, p, 0.5)
    assert lift == pytest.approx((2 / 5) / 0.2) and recall == pytest.approx(1.0)


def test_binary_metrics_by_hand():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.2, 0.8, 0.4, 0.6])
    m = evaluate.binary_metrics(y, p)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 4)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.6, 0.6])))
    assert m["base_rate"] == 0.5 and m["mean_p"] == pytest.approx(0.5)


def test_single_class_gives_nan_aucs_not_errors():
    m = evaluate.binary_metrics(np.zeros(5), np.full(5, 0.1))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])
    assert m["log_loss"] == pytest.approx(-np.log(0.9))


def test_audience_metrics_by_hand():
    aud = pd.DataFrame(
        {
            "campaign_id": ["a", "b", "c"],
            "tier": ["nano", "micro", "macro"],
            "followers": [100, 100, 100],
            "expected": [1.0, 2.0, 3.0],
            "low": [0, 0, 1],
            "high": [3, 4, 6],
            "actual": [0, 5, 3],
            "true_expected": [1.5, 2.5, 2.0],
        }
    )
    m = evaluate.audience_metrics(aud, "x_")
    assert m["x_mae_count"] == pytest.approx((1 + 3 + 0) / 3)
    assert m["x_interval_coverage"] == pytest.approx(2 / 3)  # b: 5 is above 4
    assert m["x_spearman_rate"] == pytest.approx(1 - 6 * 2 / (3 * 8))  # ranks 1,3,2
    assert m["x_spearman_true_rate"] == pytest.approx(0.5)  # ranks 1,3,2 vs 1,2,3
    assert m["x_mae_true_count"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m["x_campaigns_ranked"] == 3


def test_small_campaigns_do_not_rank_realised_rates():
    """Four followers make a realised rate of 0 or 25 %: such campaigns stay out of the
    Spearman against realised rates (not out of the one against true rates)."""
    rows = [("big1", 400, 4.0, 3, 4.0), ("big2", 400, 8.0, 9, 8.0), ("big3", 400, 6.0, 6, 6.0)]
    rows += [(f"tiny{k}", 4, 0.1 * k, k % 2, 0.1 * (7 - k)) for k in range(1, 7)]
    aud = pd.DataFrame(
        rows, columns=["campaign_id", "followers", "expected", "actual", "true_expected"]
    )
    aud = aud.assign(tier="nano", low=0, high=aud.followers)
    m = evaluate.audience_metrics(aud, "")
    assert m["campaigns"] == 9 and m["campaigns_ranked"] == 3
    assert m["spearman_rate"] == pytest.approx(1.0)  # the three big campaigns agree
    assert m["spearman_true_rate"] < 1.0  # over all nine


def test_calibration_fixes_a_miscalibrated_model():
    rng = np.random.default_rng(0)
    true_p = rng.beta(1, 30, 20_000)
    y = (rng.random(len(true_p)) < true_p).astype(int)
    raw = np.clip(true_p * 3, 0, 0.99)  # overconfident by a factor of 3
    cal, scores = fit_calibrator(y, raw, seed=1)
    assert cal.method in ("sigmoid", "isotonic")
    assert scores[cal.method] < scores["none"]
    assert log_loss(y, cal.apply(raw)) < log_loss(y, raw)
    assert abs(cal.apply(raw).mean() - y.mean()) < 0.1 * y.mean()
    assert Calibrator.from_dict(cal.to_dict()) == cal


def test_calibration_leaves_a_calibrated_model_alone():
    rng = np.random.default_rng(1)
    p = rng.beta(1, 30, 20_000)
    y = (rng.random(len(p)) < p).astype(int)
    cal, scores = fit_calibrator(y, p, seed=1)
    assert scores["none"] <= scores["isotonic"]

    def near_identity(q: np.ndarray) -> bool:
        """q barely moves p anywhere and keeps the mean at the base rate."""
        return np.abs(q - p).max() < 0.05 and abs(q.mean() - y.mean()) < 0.1 * y.mean()

    # whichever method wins ("none" here; a sigmoid with a ~ 1, b ~ 0 would do), p stays put
    assert near_identity(cal.apply(p))
    assert log_loss(y, cal.apply(p)) <= log_loss(y, p) + 1e-3
    # the check has teeth: a calibrator that doubles p, or one flat at the base rate, fails it
    assert not near_identity(Calibrator("sigmoid", a=1.0, b=float(np.log(2))).apply(p))
    assert not near_identity(np.full_like(p, y.mean()))


def test_too_few_positives_to_calibrate():
    cal, scores = fit_calibrator(np.array([0] * 50 + [1] * 2), np.full(52, 0.1))
    assert cal.method == "none" and scores == {}


def test_audience_dispersion_by_hand():
    # two audiences of 4 followers at p = 0.5: expected 2, binomial variance 1 each;
    # actual 4 and 0 -> squared errors 4 and 4, minus variance: 3 + 3 over expected^2 4 + 4
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.full(8, 0.5)
    g = np.array(["a"] * 4 + ["b"] * 4)
    assert audience_dispersion(y, p, g) == pytest.approx(6 / 8)
    # audiences that vary less than independent followers would: no dispersion
    assert audience_dispersion(np.array([1, 1, 0, 0, 1, 1, 0, 0]), p, g) == 0.0
    assert audience_dispersion(y, p, np.array(["a"] * 8)) == 0.0  # one audience: unknown


def test_calibrator_keeps_its_dispersion_and_reads_older_files():
    spread = {"nano": 0.01, "mega": 0.002}
    c = Calibrator("sigmoid", a=1.1, b=0.2, audience_dispersion=0.25, audience_spread=spread)
    assert Calibrator.from_dict(c.to_dict()) == c
    assert Calibrator.from_dict(json.loads(json.dumps(c.to_dict()))) == c  # as saved
    old = {"method": "none", "a": 1.0, "b": 0.0, "x": [], "y": []}
    assert Calibrator.from_dict(old).audience_dispersion == 0.0
    assert Calibrator.from_dict(old).audience_spread == {}


def test_audiences_against_truth_counts_overlaps_and_ranks():
    from loyalty_model.evaluate import audiences_against_truth

    n = 30
    ids = [f"i{k:02d}" for k in range(n)]
    true_rate = np.linspace(0.01, 0.06, n)
    price = np.full(n, 100.0)
    price[0] = np.nan  # no price: no cost on either side
    truth = pd.DataFrame(
        {
            "influencer_id": ids,
            "tier": ["nano"] * 10 + ["micro"] * 20,
            "true_loyal_rate": true_rate,
            "true_cost_per_loyal": price / (true_rate * 1000),
            "price_per_post": price,
            "follower_count": 1000,
        }
    )
    # predictions: the true order, except the two best rates swapped with the two worst
    rate = true_rate.copy()
    rate[[0, 1, -2, -1]] = rate[[-2, -1, 0, 1]]
    pred = pd.DataFrame(
        {
            "influencer_id": ids[::-1],
            "loyal_rate": rate[::-1],
            "cost_per_expected_loyal": (price / (rate * 1000))[::-1],
        }
    )
    r = audiences_against_truth(pred, truth)
    assert r.metrics["priced_influencers"] == n - 1 and r.metrics["rated_influencers"] == n
    assert r.metrics["top10_overlap_rate"] == 8 and r.metrics["top20_overlap_rate"] == 18
    assert r.metrics["top10_overlap_cost"] == 8
    assert 0 < r.metrics["spearman_rate"] < 1
    perfect = audiences_against_truth(
        truth.assign(
            loyal_rate=truth.true_loyal_rate, cost_per_expected_loyal=truth.true_cost_per_loyal
        ),
        truth,
    )
    assert perfect.metrics["spearman_cost"] == pytest.approx(1.0)
    assert perfect.metrics["top20_overlap_cost"] == 20
    # the floor: price per follower is the same for all here, so it cannot rank at all
    assert np.isnan(r.metrics["spearman_cost_per_follower"])
    tiers = r.tiers.set_index("tier")
    assert list(tiers.index) == ["nano", "micro"] and tiers.loc["nano", "influencers"] == 10
    assert tiers.loc["micro", "true_mean_loyal_rate"] == pytest.approx(true_rate[10:].mean())


def test_truth_sample_keeps_whole_audiences_within_the_cap_in_a_fixed_order():
    from loyalty_model.evaluate import truth_sample

    t = pd.DataFrame({"influencer_id": [f"i{k}" for k in range(20)], "followers_in_data": 10})
    assert truth_sample(t, 200) is None  # everything fits: no sample
    some = truth_sample(t, 55)
    assert len(some) == 5 and set(some) < set(t.influencer_id)
    assert truth_sample(t.iloc[::-1], 55) == some  # the row order does not matter
    assert set(truth_sample(t, 95)) > set(some)  # a larger cap keeps the smaller sample
    assert len(truth_sample(t, 3)) == 1  # at least one influencer, even above the cap


def _btyd_frame(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Train/valid/test feature frames of one brand: follower x brand purchase histories
    (purchases before the cutoff day, days since the last and the first of them) and the
    two influencer columns the other baselines read."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)

    def rows(n, cutoff, prefix):
        purchases = rng.poisson(0.8, n) * rng.integers(0, 2, n)  # half never bought
        first = rng.uniform(20, 400, n).round()
        last = np.where(purchases > 1, (first * rng.uniform(0, 1, n)).round().clip(1), first)
        return pd.DataFrame(
            {
                "campaign_id": f"c-{prefix}",
                "follower_id": [f"{prefix}{k}" for k in range(n)],
                "influencer_id": "i1",
                "brand_id": "b1",
                "cutoff_ts": pd.Timestamp(cutoff),
                "fb_purchases_all": purchases,
                "fb_days_since_purchase": np.where(purchases > 0, last, np.nan),
                "fb_days_since_first_purchase": np.where(purchases > 0, first, np.nan),
                "inf_log_followers": rng.normal(10, 1, n),
                "inf_engagement_rate_90d": rng.uniform(0, 0.1, n),
                "label": rng.integers(0, 2, n),
            }
        )

    test = pd.DataFrame(
        {
            "campaign_id": "c-test",
            "follower_id": ["loyal", "one_off", "never"],
            "influencer_id": "i1",
            "brand_id": "b1",
            "cutoff_ts": pd.Timestamp("2025-06-01"),
            # 9 purchases over the last 300 days, the last 4 days ago; one, 200 days ago; none
            "fb_purchases_all": [9, 1, 0],
            "fb_days_since_purchase": [4.0, 200.0, np.nan],
            "fb_days_since_first_purchase": [300.0, 200.0, np.nan],
            "inf_log_followers": [10.0, 10.0, 10.0],
            "inf_engagement_rate_90d": [0.05, 0.05, 0.05],
            "label": [1, 0, 0],
        }
    )
    parts = {
        "train": rows(300, "2025-01-01", "t"),
        "valid": rows(100, "2025-03-01", "v"),
        "test": test,
    }
    spec = SimpleNamespace(
        names=("inf_log_followers", "fb_purchases_all"),
        categorical=(),
        categories={},
        horizon_days=90,
        min_purchases=2,
    )
    return parts, spec


@pytest.mark.parametrize("first_purchase_known", [True, False])
def test_bg_nbd_baseline_ranks_a_repeat_buyer_above_a_one_off_buyer(first_purchase_known):
    parts, spec = _btyd_frame()
    if not first_purchase_known:  # estimated from the start of the purchase history
        parts = {k: v.drop(columns=evaluate.BTYD_FIRST_PURCHASE) for k, v in parts.items()}
    scores = evaluate.baseline_scores(parts, spec)
    score, is_probability = scores["bg_nbd"]
    loyal, one_off, never = score
    assert loyal > one_off > never == 0.0
    assert 0 < loyal < 1 and not is_probability


def test_bg_nbd_is_a_row_of_the_baseline_table():
    from types import SimpleNamespace

    parts, spec = _btyd_frame()
    metrics = {
        f"test_{k}": 0.5
        for k in ("roc_auc", "pr_auc", "log_loss", "ece", "lift_top1pct", "recall_top10pct")
    }
    table, scores = evaluate._baseline_table(
        SimpleNamespace(spec=spec), parts, None, metrics, seed=0
    )
    row = table.set_index("scorer").loc["bg_nbd"]
    assert row["roc_auc"] == 1.0  # the one loyal follower of three ranked first
    assert np.isnan(row["log_loss"])  # a ranking score: no log loss, no ECE
    assert list(scores["bg_nbd"]) == list(evaluate.baseline_scores(parts, spec)["bg_nbd"][0])


# -- paired bootstrap of the model against the baselines ----------------------------------


def test_weighted_aucs_equal_scikit_learns_with_ties_and_units_left_out():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    n, units = 2_000, 12
    y = (rng.random(n) < 0.1).astype(int)
    score = np.round(rng.random(n) + 0.4 * y, 1)  # rounded: many ties
    unit = rng.integers(0, units, n)
    ranked = evaluate._Ranked(score, y, unit, units)
    counts = rng.integers(0, 3, (units, 5))  # some units drawn 0 times
    counts[:, 0] = 1
    roc, ap = ranked.aucs(counts)
    for d in range(5):
        w = counts[unit, d]
        assert roc[d] == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-6)
        assert ap[d] == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-6)


def _test_rows(n_waves: int = 30, per_campaign: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_waves):
        start = pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=7 * w)
        for c in range(2):  # two campaigns per wave
            rate = rng.uniform(0.02, 0.2)
            rows.append(
                pd.DataFrame(
                    {
                        "campaign_id": f"c{w}_{c}",
                        "brand_id": f"b{w % 3}",
                        "cutoff_ts": start,
                        "p": rate,
                        "label": (rng.random(per_campaign) < rate).astype(int),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_a_model_that_knows_the_rates_beats_noise_and_ties_with_itself():
    test = _test_rows()
    rng = np.random.default_rng(1)
    noise = rng.random(len(test))
    d = evaluate.paired_differences(
        test, test["p"].to_numpy(), {"noise": noise, "same": test["p"].to_numpy()}, draws=200
    )
    assert set(d["metric"]) == set(evaluate.COMPARED) and (d["waves"] == 30).all()
    vs_noise = d[d["baseline"] == "noise"].set_index("metric")
    assert (vs_noise["low"] > 0).all(), vs_noise  # ahead on every metric, beyond chance
    assert (vs_noise["model_ahead"] > 0.95).all()
    same = d[d["baseline"] == "same"]
    assert (same[["difference", "low", "high"]].abs().to_numpy() < 1e-12).all()
    point = evaluate.ranking_metrics(test["label"], test["p"])
    assert vs_noise.loc["pr_auc", "model"] == pytest.approx(point["pr_auc"])
    assert vs_noise.loc["roc_auc", "model"] == pytest.approx(point["roc_auc"])
    spearman = evaluate.audience_rank_metrics(test, test["p"].to_numpy())
    assert vs_noise.loc["audience_spearman_rate", "model"] == pytest.approx(
        spearman["audience_spearman_rate"]
    )


def test_the_bootstrap_is_reproducible_and_paired():
    test = _test_rows(seed=2)
    rng = np.random.default_rng(5)
    other = test["p"].to_numpy() + rng.normal(0, 0.05, len(test))
    a = evaluate.paired_differences(test, test["p"].to_numpy(), {"other": other}, 300, seed=9)
    b = evaluate.paired_differences(test, test["p"].to_numpy(), {"other": other}, 300, seed=9)
    pd.testing.assert_frame_equal(a, b)
    c = evaluate.paired_differences(test, test["p"].to_numpy(), {"other": other}, 300, seed=10)
    assert not np.allclose(a["low"], c["low"])
    # paired: the same draws score both sides, so swapping them mirrors the interval exactly
    x, z = (test["p"].to_numpy() + rng.normal(0, 0.05, len(test)) for _ in range(2))
    xz = evaluate.paired_differences(test, x, {"z": z}, 300, seed=1).set_index("metric")
    zx = evaluate.paired_differences(test, z, {"x": x}, 300, seed=1).set_index("metric")
    xz, zx = xz[xz["baseline"] == "z"], zx[zx["baseline"] == "x"]
    np.testing.assert_allclose(xz["low"], -zx["high"], atol=1e-12)
    np.testing.assert_allclose(xz["high"], -zx["low"], atol=1e-12)
    np.testing.assert_allclose(xz["difference"], -zx["difference"], atol=1e-12)


def test_too_few_waves_give_no_interval_and_the_card_says_so():
    test = _test_rows(n_waves=3)  # the bootstrap of 3 waves would draw the same few sets
    rng = np.random.default_rng(1)
    d = evaluate.paired_differences(test, test["p"].to_numpy(), {"noise": rng.random(len(test))})
    assert d["low"].isna().all() and d["high"].isna().all() and (d["waves"] == 3).all()
    assert d["difference"].notna().all()
    assert evaluate.best_baseline_metrics(d) == {
        f"test_{m}_minus_best_baseline": pytest.approx(
            d.loc[(d["baseline"] == "noise") & (d["metric"] == m), "difference"].item()
        )
        for m in evaluate.COMPARED
    }
    from loyalty_model.card import against_best_baselines

    said = against_best_baselines(d)
    assert len(said) == 3 and all("too few for an interval" in line for line in said)


def test_the_best_baseline_is_chosen_in_every_draw():
    """Against the best of two equal baselines the model is behind more often than against
    either one: the interval of the best-of-each-draw row sits below both single rows."""
    test = _test_rows(seed=3)
    rng = np.random.default_rng(4)
    model, b1, b2 = (test["p"].to_numpy() + rng.normal(0, 0.05, len(test)) for _ in range(3))
    d = evaluate.paired_differences(test, model, {"b1": b1, "b2": b2}, 500, seed=2)
    for metric, rows in d.groupby("metric"):
        rows = rows.set_index("baseline")
        best = rows.loc[evaluate.BEST_BASELINE]
        assert best["best_on_test"] in ("b1", "b2")
        assert best["baseline_value"] == rows.loc[["b1", "b2"], "baseline_value"].max()
        assert best["low"] <= rows.loc[["b1", "b2"], "low"].min() + 1e-12, metric
        assert best["model_ahead"] <= rows.loc[["b1", "b2"], "model_ahead"].min()


def test_best_baseline_metrics_read_the_best_of_each_draw_rows():
    d = pd.DataFrame(
        [
            ("lr", "pr_auc", 0.01, -0.01, 0.03),
            ("best baseline", "pr_auc", 0.01, -0.02, 0.025),
            ("best baseline", "roc_auc", 0.1, 0.05, float("nan")),
        ],
        columns=["baseline", "metric", "difference", "low", "high"],
    )
    assert evaluate.best_baseline_metrics(d) == {
        "test_pr_auc_minus_best_baseline": 0.01,
        "test_pr_auc_minus_best_baseline_low": -0.02,
        "test_pr_auc_minus_best_baseline_high": 0.025,
        "test_roc_auc_minus_best_baseline": 0.1,
        "test_roc_auc_minus_best_baseline_low": 0.05,
    }
