"""The evaluation figures a data scientist reads in every run: labelled axes, legends that
carry the AUCs, a colour bar on the SHAP summary, nothing cut off. On a model and frames the
tests build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from sklearn.metrics import average_precision_score, roc_auc_score

from loyalty_model import plots
from loyalty_model.card import number
from loyalty_model.config import ModelConfig
from loyalty_model.features import FeatureSpec
from loyalty_model.model import fit_trees

CFG = ModelConfig(learning_rate=0.3, min_child_samples=5, n_estimators=30, threads=1)


def _frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Two numeric features (one with missing values) and a categorical one; the label
    follows all three."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    gap = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    kind = rng.choice(["food", "tech", "toys"], size=n)
    logit = -2 + 1.5 * x + np.nan_to_num(gap) + np.where(kind == "tech", 1.0, 0.0)
    return pd.DataFrame(
        {
            "x": x,
            "fb_category_engagement_share_365d": gap,
            "kind": kind,
            "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


SPEC = FeatureSpec(
    "t", (7,), 0.0, 90, 2, False, ("x", "fb_category_engagement_share_365d", "kind"), ("kind",),
    {"kind": ("food", "tech", "toys")},
)  # fmt: skip


@pytest.fixture(scope="module")
def model_and_test():
    return fit_trees(_frame(seed=1), SPEC, CFG, 30), _frame(seed=2)


@pytest.fixture(scope="module")
def figures(model_and_test) -> dict[str, Figure]:
    model, test = model_and_test
    rng = np.random.default_rng(3)
    y = test["label"].to_numpy()
    scores = {
        "model": model.predict_proba(test),
        "follower_count": rng.integers(0, 4, len(test)).astype(float),  # many ties
        "logistic_regression": np.clip(0.5 * model.predict_proba(test) + 0.1 * y, 0, 1),
    }
    return plots.all_figures(model, test, scores) | {"scores": scores, "y": y}


NAMES = ["roc", "pr", "reliability", "gains", "importance", "shap_summary"]


def _drawn(fig: Figure):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _texts(fig: Figure) -> list[Text]:
    """Every text the figure draws: titles, axis labels, tick labels in view, legends,
    annotations."""
    out = []
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            out += [t.label1 for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]
        out += ax.texts
        if ax.get_legend():
            out += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for legend in fig.legends:
        out += legend.get_texts()
    out += fig.texts + ([fig._suptitle] if fig._suptitle is not None else [])
    return [t for t in out if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_cut_off(figures, name):
    """Every text drawn lies inside the figure (the old SHAP x-label ended in 'low to hig')."""
    fig = figures[f"plots/{name}.png"]
    renderer = _drawn(fig)
    box = fig.bbox
    texts = _texts(fig)
    assert texts
    for t in texts:
        e = t.get_window_extent(renderer)
        inside = (
            e.x0 >= box.x0 - 1 and e.y0 >= box.y0 - 1 and e.x1 <= box.x1 + 1 and e.y1 <= box.y1 + 1
        )
        assert inside, f"{name}: {t.get_text()!r} at {e.bounds} outside {box.bounds}"
    tight = fig.get_tightbbox(renderer)  # in inches
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01
    assert tight.x1 <= fig.get_figwidth() + 0.01 and tight.y1 <= fig.get_figheight() + 0.01


@pytest.mark.parametrize("name", NAMES)
def test_every_axis_is_labelled_and_every_figure_titled(figures, name):
    fig = figures[f"plots/{name}.png"]
    ax = fig.axes[0]
    assert ax.get_xlabel().strip() and (ax.get_title() or fig.get_suptitle()).strip()
    if name not in ("importance", "shap_summary"):  # feature names are the y axis there
        assert ax.get_ylabel().strip()


def test_the_importance_axis_says_what_it_measures(figures):
    ax = figures["plots/importance.png"].axes[0]
    assert "gain" in ax.get_xlabel()
    shares = [p.get_width() for p in ax.patches]
    assert sum(shares) <= 100 + 1e-9 and max(shares) > 0  # % of the total gain
    assert any("splits" in t.get_text() for t in ax.texts)


@pytest.mark.parametrize(
    ("name", "metric", "tag"),
    [("roc", roc_auc_score, "AUC"), ("pr", average_precision_score, "PR-AUC")],
)
def test_legends_carry_each_scorers_auc(figures, name, metric, tag):
    y, scores = figures["y"], figures["scores"]
    legend = [t.get_text() for t in figures[f"plots/{name}.png"].axes[0].get_legend().get_texts()]
    for scorer, s in scores.items():
        assert f"{scorer} ({tag} {number(metric(y, s))})" in legend, legend


def test_the_reliability_legend_carries_the_ece_of_probability_scorers_only(figures):
    legend = [
        t.get_text() for t in figures["plots/reliability.png"].axes[0].get_legend().get_texts()
    ]
    assert any(t.startswith("model (ECE ") for t in legend)
    assert not any(t.startswith("follower_count") for t in legend)  # a rank, not a probability


def test_the_shap_summary_has_a_labelled_colour_bar_and_greys_out_categories(model_and_test):
    model, test = model_and_test
    fig = plots.shap_summary(model, test)
    assert len(fig.axes) == 2, "the SHAP summary needs its colour bar"
    bar = fig.axes[1]
    assert bar.get_ylabel() == "feature value (low → high)"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["low", "high"]
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert set(rows) == {"x", "fb_category_engagement_share_365d", "kind"}
    # the categorical feature is one neutral colour, not a colour per integer code
    kind = rows.index("kind")
    for coll in ax.collections:
        ys = coll.get_offsets()[:, 1]
        if len(ys) and np.all(np.abs(ys - kind) < 0.5):
            assert coll.get_array() is None  # not mapped through the colour map
            assert np.unique(coll.get_facecolors()[:, :3], axis=0).shape[0] == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("categorical" in t for t in legend) and "missing value" in legend


def test_the_pr_curve_is_the_step_function_whose_area_is_the_pr_auc():
    """Straight lines between the points of a tied score (every follower of an influencer
    shares its follower count) promise precision that no threshold gives."""
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    s = np.array([3, 3, 3, 3, 2, 2, 1, 1, 1, 1], dtype=float)
    line = plots.pr(y, {"follower_count": s}).axes[0].get_lines()[0]
    assert line.get_drawstyle() == "steps-post"
    x, p = line.get_xdata(), line.get_ydata()
    area = float(np.sum((x[:-1] - x[1:]) * p[:-1]))  # recall falls along the line
    assert area == pytest.approx(average_precision_score(y, s))
    assert p.max() < 1  # no precision 1 at recall 0: no threshold gives it


def test_the_gains_curve_is_straight_across_tied_scores():
    y = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    s = np.array([2, 2, 2, 2, 1, 1, 1, 1], dtype=float)
    x, g = plots.gains_curve(y, s)
    np.testing.assert_allclose(x, [0, 0.5, 1])
    np.testing.assert_allclose(g, [0, 0.5, 1])  # not 0 for the first three rows by position
