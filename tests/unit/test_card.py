"""The model card as its reader sees it: counts as whole numbers, metrics to a few
significant digits, a baseline that beats the model on the gate metric named in words, and
interval coverage by tier against the nominal level. On a training outcome the test builds."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from loyalty_model.card import count, model_card, number, pair, percent, table_md
from loyalty_model.config import load_config
from loyalty_model.evaluate import Evaluation
from loyalty_model.features import FeatureSpec
from loyalty_model.training import TrainingOutcome

COLS = ["roc_auc", "pr_auc", "log_loss", "ece", "lift_top1pct", "recall_top10pct"]


def _baselines(lr_pr_auc: float = 0.0766) -> pd.DataFrame:
    rows = [
        ["model (LightGBM)", 0.77168, 0.075388, 0.0782, 0.00698, 10.1999, 0.377, 0.541],
        ["follower_count", 0.5507, 0.0194, np.nan, np.nan, 1.51, 0.105, -0.265],
        ["logistic_regression", 0.7696, lr_pr_auc, 0.0798, 0.00847, 10.2, 0.382, 0.522],
        ["oracle (ground truth)", 0.8612, 0.1442, 0.0687, 0.000977, 14.4, 0.555, 0.803],
    ]
    return pd.DataFrame(rows, columns=["scorer", *COLS, "audience_spearman_rate"])


def _audiences() -> pd.DataFrame:
    """Per test campaign: micro covered 19 of 25 times (76 %), mid 9 of 10, mega 2 of 3."""
    rows = []
    for tier, n, covered, followers in (
        ("micro", 25, 19, 40),
        ("mid", 10, 9, 300),
        ("mega", 3, 2, 9000),
    ):
        for i in range(n):
            inside = i < covered
            rows.append(
                {
                    "campaign_id": f"{tier}{i}",
                    "tier": tier,
                    "followers": followers,
                    "expected": 2.0,
                    "low": 1,
                    "high": 4,
                    "actual": 2 if inside else 7,
                }
            )
    return pd.DataFrame(rows)


def _outcome(baselines: pd.DataFrame | None = None) -> TrainingOutcome:
    aud = _audiences()
    metrics = {
        "test_roc_auc": 0.77168,
        "test_pr_auc": 0.075388,
        "test_log_loss": 0.0782,
        "test_brier": 0.016412,
        "test_ece": 0.00698,
        "test_lift_top1pct": 10.1999,
        "test_recall_top1pct": 0.102,
        "test_lift_top10pct": 3.77,
        "test_recall_top10pct": 0.377,
        "test_audience_spearman_rate": 0.5414,
        "test_audience_campaigns_ranked": 13.0,
        "test_audience_mae_count": 4.7997,
        "test_audience_interval_coverage": 30 / 38,
        "best_iteration": 536.0,
        "final_trees": 660.0,
    }
    for tier, sub in aud.groupby("tier"):
        metrics[f"test_audience_{tier}_campaigns"] = float(len(sub))
        metrics[f"test_audience_{tier}_mae_count"] = 1.23456
        metrics[f"test_audience_{tier}_interval_coverage"] = float((sub["actual"] <= 4).mean())
    sizes = {"events": 2842503.0, "campaigns_excluded_open_window": 56.0}
    window = {"data_end": "2025-12-30 23:59:58+00:00"}
    for part, rows, campaigns in (("train", 57545, 222), ("valid", 13298, 48), ("test", 1, 38)):
        sizes |= {
            f"{part}_rows": float(rows),
            f"{part}_campaigns": float(campaigns),
            f"{part}_base_rate": 0.016457,
        }
        window[f"{part}_from"] = "2024-05-30 17:00:00+00:00"
    spec = FeatureSpec("2", (7, 30), 0.0, 90, 2, False, ("a", "b"), (), {})
    model = SimpleNamespace(
        spec=spec, calibrator=SimpleNamespace(method="sigmoid", audience_dispersion=0.09381)
    )
    evaluation = Evaluation(metrics, _baselines() if baselines is None else baselines, aud, {})
    return TrainingOutcome(model, metrics, sizes, {}, {}, evaluation, window)


@pytest.fixture(scope="module")
def card() -> str:
    return model_card(load_config(None), _outcome(), "7")


def test_numbers_read_as_numbers():
    assert number(0.075388) == "0.0754"
    assert number(0.77168) == "0.772"
    assert number(10.1999) == "10.2"
    assert number(2842503.0) == "2,842,503"
    assert number(-0.26466) == "-0.265"
    assert number(0.0) == "0"
    assert number(float("nan")) == number(None) == "n/a"
    assert count(33.0) == "33" and count(57545.0) == "57,545"
    assert percent(0.9296) == "93 %" and percent(0.017078) == "1.71 %"
    assert pair(0.07541, 0.07544) == ("0.07541", "0.07544")  # told apart when they differ
    assert pair(0.0766, 0.075388) == ("0.0766", "0.0754")


def test_table_cells_print_integers_as_counts_and_floats_as_metrics():
    df = pd.DataFrame({"tier": ["nano"], "campaigns": [1234], "mae": [0.30293], "x": [np.nan]})
    assert table_md(df).splitlines()[-1] == "| nano | 1,234 | 0.303 | n/a |"


def test_the_card_prints_counts_as_integers(card):
    assert not re.search(r"\d\.0000\b", card), "a count printed as a float"
    assert "2,842,503" in card and "57,545 rows, 222 campaigns" in card
    assert "| micro | 25 | 40 |" in card  # campaigns, median followers
    assert "536 trees" in card and "660 trees" in card
    assert "0.0754" in card and "0.075388" not in card  # metrics to 3 significant digits


def test_without_the_audience_table_tier_counts_come_from_the_metrics_as_integers():
    """The card once printed `| nano | 33.0000 |` from the float metrics."""
    outcome = _outcome()
    outcome.metrics |= {
        "test_audience_nano_campaigns": 33.0,
        "test_audience_nano_interval_coverage": 25 / 33,
    }
    outcome.evaluation.audiences = pd.DataFrame()
    text = model_card(load_config(None), outcome)
    assert "| nano | 33 | n/a | n/a | n/a | n/a | 76 % (25 of 33) |" in text
    assert "**nano audiences were covered 76 % of the time**" in text
    assert "33.0" not in text


def test_the_card_names_a_baseline_that_beats_the_model_on_the_gate_metric(card):
    assert "**logistic_regression beats the model on PR-AUC** (0.0766 vs 0.0754)" in card
    assert "`gate.metric: test_pr_auc`" in card
    assert "oracle (ground truth) beats" not in card  # a ceiling, not a baseline


def test_the_card_says_when_the_model_beats_every_baseline_in_the_gates_direction():
    cfg = load_config(None)
    text = model_card(cfg, _outcome(_baselines(lr_pr_auc=0.07)))
    assert "The model beats every baseline on PR-AUC" in text
    assert "0.0754 against 0.0700 for logistic_regression" in text
    assert "beats the model" not in text
    # log loss: lower is better, so the model's 0.0782 beats logistic regression's 0.0798
    lower = model_card(load_config(None, ["gate.metric=test_log_loss"]), _outcome())
    assert "The model beats every baseline on log loss" in lower


def test_the_card_reports_coverage_by_tier_against_the_nominal_level(card):
    assert "**micro audiences were covered 76 % of the time** against a nominal 90 %" in card
    assert "(19 of 25 test campaigns;" in card
    assert "| micro | 25 | 40 | 0 | n/a | 1.23 | 76 % (19 of 25) |" in card
    assert "mid audiences were covered" not in card  # 9 of 10: at nominal
    assert "**mega audiences were covered 67 % of the time**" in card
    # how often right intervals would fall as short over that many campaigns (Binomial)
    from scipy.stats import binom

    assert f"{percent(binom.cdf(19, 25, 0.9), 2)} of the time" in card
    assert "in 30 of 38 test campaigns (79 %)" in card
    assert "micro 76 %, mega 67 % below nominal" in card  # at a glance


def test_the_cards_lists_survive_the_reports_markdown_reader(card):
    """One line per list item: the report's reader takes a wrapped line for a paragraph."""
    from loyalty_model.report import markdown_html

    html = markdown_html(card)
    limits = html.split("Known limits", 1)[1]
    assert limits.count("<li>") == 4 and "<p>" not in limits
    assert html.count("<li>") == 3 + 2 + 4  # at a glance, tiers far from nominal, limits


def test_the_card_says_whether_the_test_campaigns_can_tell_the_model_from_the_best_baseline():
    outcome = _outcome()
    lr, best = "logistic_regression", "best baseline"
    outcome.evaluation.differences = pd.DataFrame(
        [
            ("follower_count", "pr_auc", 0.075388, 0.0194, 0.056, 0.04, 0.07, 1.0),
            (lr, "pr_auc", 0.075388, 0.0766, -0.0012, -0.009, 0.006, 0.41),
            (best, "pr_auc", 0.075388, 0.0766, -0.0012, -0.01, 0.005, 0.35),
            (lr, "roc_auc", 0.77168, 0.7696, 0.0021, 0.0004, 0.0039, 0.97),
            (best, "roc_auc", 0.77168, 0.7696, 0.0021, 0.0004, 0.0039, 0.97),
        ],
        columns=[
            "baseline",
            "metric",
            "model",
            "baseline_value",
            "difference",
            "low",
            "high",
            "model_ahead",
        ],
    ).assign(draws=1000.0, waves=72.0, best_on_test=lr)
    text = model_card(load_config(None), outcome)
    glance = text.split("## Data")[0]
    assert (
        "PR-AUC: model 0.0754 against 0.0766 for logistic_regression, the best baseline on the "
        "test rows; difference −0.00120, 90 % interval [−0.0100, +0.00500] (against the best "
        "baseline of each draw): **not distinguishable**."
    ) in glance
    assert "ROC-AUC: model 0.772 against 0.770 for logistic_regression" in glance
    assert (
        "[+0.000400, +0.00390] (against the best baseline of each draw): the model is ahead."
        in (glance)
    )
    assert "## Model against each baseline (paired bootstrap)" in text
    assert "1,000 draws of the 72 test campaign waves" in text
    assert (
        "| follower_count | PR-AUC | 0.0754 | 0.0194 | +0.0560 | [+0.0400, +0.0700] | 100 % |"
        in (text)
    )
    assert "paired bootstrap" not in model_card(load_config(None), _outcome())  # none: no section
