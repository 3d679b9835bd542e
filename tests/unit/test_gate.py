from __future__ import annotations

from loyalty_model.config import GateConfig
from loyalty_model.gate import decide

GOOD = {"test_pr_auc": 0.20, "test_roc_auc": 0.80, "test_ece": 0.004, "test_log_loss": 0.08}


def test_better_model_is_promoted():
    champion = {**GOOD, "test_pr_auc": 0.15}
    d = decide(GOOD, champion, GateConfig(min_delta=0.01))
    assert d.promote and "better by 0.0500" in d.summary()


def test_worse_model_is_not_promoted():
    champion = {**GOOD, "test_pr_auc": 0.25}
    d = decide(GOOD, champion, GateConfig())
    assert not d.promote and "not better" in d.summary()


def test_tie_or_too_small_gain_is_not_promoted():
    assert not decide(GOOD, dict(GOOD), GateConfig()).promote
    champion = {**GOOD, "test_pr_auc": 0.195}
    assert not decide(GOOD, champion, GateConfig(min_delta=0.01)).promote


def test_lower_is_better_metrics():
    champion = {**GOOD, "test_log_loss": 0.09}
    assert decide(GOOD, champion, GateConfig(metric="test_log_loss")).promote
    champion = {**GOOD, "test_log_loss": 0.07}
    assert not decide(GOOD, champion, GateConfig(metric="test_log_loss")).promote


def test_floors_apply_even_without_a_champion():
    assert decide(GOOD, None, GateConfig()).promote
    bad = {**GOOD, "test_ece": 0.05}
    d = decide(bad, None, GateConfig(max_ece=0.02))
    assert not d.promote and "above the floor" in d.summary()
    weak = {**GOOD, "test_roc_auc": 0.55}
    assert not decide(weak, None, GateConfig()).promote


def test_missing_metric_blocks():
    d = decide(GOOD, None, GateConfig(metric="test_nonsense"))
    assert not d.promote and "no metric 'test_nonsense'" in d.summary()
