"""The model card: a one-page markdown summary of a training run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from loyalty_model.config import Config
from loyalty_model.contract import TIERS

if TYPE_CHECKING:
    from loyalty_model.training import TrainingOutcome


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4f}"
    return str(v)


def table_md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def model_card(cfg: Config, result: TrainingOutcome, version: str | None = None) -> str:
    m, s, w = result.metrics, result.sizes, result.window
    spec = result.model.spec
    lab = cfg.label
    attribution = (
        ", the first attributed to the campaign's influencer" if lab.require_attribution else ""
    )
    oracle = ""
    if "test_oracle_roc_auc" in m:
        oracle = (
            f"\nOn this simulated world the ground-truth probabilities reach test ROC-AUC "
            f"{m['test_oracle_roc_auc']:.4f}; the model reaches "
            f"{m['test_roc_auc_vs_oracle']:.3f} of it.\n"
        )
    split_rows = "\n".join(
        f"| {name} | {s[f'{name}_rows']:,.0f} rows, {s[f'{name}_campaigns']:.0f} campaigns, "
        f"from {w[f'{name}_from']}, base rate {s[f'{name}_base_rate']:.4f} |"
        for name in ("train", "valid", "test")
    )
    tiers = [
        f"| {t} | {_fmt(m.get(f'test_audience_{t}_campaigns', float('nan')))} | "
        f"{_fmt(m.get(f'test_audience_{t}_spearman_rate', float('nan')))} | "
        f"{_fmt(m.get(f'test_audience_{t}_mae_count', float('nan')))} | "
        f"{_fmt(m.get(f'test_audience_{t}_interval_coverage', float('nan')))} |"
        for t in TIERS
    ]
    return f"""# Model card: {cfg.tracking.model_name}{f" v{version}" if version else ""}

**Predicts** the probability that a follower of an influencer becomes a brand-loyal customer of
a brand: at least {lab.min_purchases} purchases of the brand within {lab.horizon_days} days
after the campaign start{attribution}. Used as expected counts per audience.

## Data

| | |
|---|---|
| data directory | `{cfg.data.dir}` |
| events | {s["events"]:,.0f} (last event {w["data_end"]}) |
{split_rows}
| excluded | {s["campaigns_excluded_open_window"]:.0f} campaigns, label window not closed |

Split by campaign start time (never random). Features: version {spec.version}, {len(spec.names)}
point-in-time features over windows {", ".join(map(str, spec.windows))} days (events of days
before the cutoff day only).

## Model

LightGBM: {m["best_iteration"]:.0f} trees by early stopping on validation log loss, then refitted
on train+valid with {m["final_trees"]:.0f} trees. Calibration **{result.model.calibrator.method}**
and audience dispersion τ² = {result.model.calibrator.audience_dispersion:.3f}, both fitted on
out-of-fold predictions over train+valid (folds by campaign wave). Validation metrics are out
of fold; test metrics are those of the registered model.

## Test metrics against baselines (same test rows)

{table_md(result.evaluation.baselines)}
{oracle}
Follower level (test): ROC-AUC {m["test_roc_auc"]:.4f}, PR-AUC {m["test_pr_auc"]:.4f}, log loss
{m["test_log_loss"]:.4f}, Brier {m["test_brier"]:.5f}, ECE {m["test_ece"]:.4f}, lift in the top
1 % {m["test_lift_top1pct"]:.2f} (recall {m["test_recall_top1pct"]:.3f}), top 10 %
{m["test_lift_top10pct"]:.2f} (recall {m["test_recall_top10pct"]:.3f}).

Audience level (per test campaign, expected vs actual loyal count): Spearman of rates
{_fmt(m.get("test_audience_spearman_rate", float("nan")))}, MAE
{_fmt(m.get("test_audience_mae_count", float("nan")))}, 90 % interval coverage
{_fmt(m.get("test_audience_interval_coverage", float("nan")))}.

| tier | campaigns | Spearman | MAE | coverage |
|---|---|---|---|---|
{chr(10).join(tiers)}

{_truth_section(result)}
## Known limits

- Scores are for followers present in `follows` at the cutoff. Audience counts and costs carry
  their loyal rate over to `follower_count`; where `follows` holds a small sample of an audience,
  the rate rests on few followers and the interval is wide.
- Events on the cutoff day itself are not used (features use whole days before it).
- The 90 % audience interval covers chance given the probabilities, a campaign-level rate
  uncertainty (τ² above) estimated from past campaigns and, on whole audiences, the sampling of
  the followers in the data; a campaign unlike the past ones has more, and so has a brand whose
  history lies outside the training range (its level can be off by a factor, not only its
  interval).
- Realised loyal counts per campaign are small and noisy: audience Spearman against realised
  rates is bounded well below 1 even for perfect probabilities (see the oracle row where
  ground truth is known).
"""


def _truth_section(result: TrainingOutcome) -> str:
    """Audiences against the simulator's counterfactual truth (simulated data only)."""
    check = result.truth
    if check is None:
        return ""
    per = check.scenarios.reindex(
        columns=[
            "scenario_id",
            "brand_id",
            "priced_influencers",
            "spearman_cost",
            "top10_overlap_cost",
            "top20_overlap_cost",
            "spearman_rate",
            "top20_overlap_rate",
            "spearman_cost_per_follower",
            "top20_overlap_cost_per_follower",
        ]
    ).astype({"priced_influencers": int, "top10_overlap_cost": int, "top20_overlap_cost": int})
    per = per.astype({"top20_overlap_rate": int, "top20_overlap_cost_per_follower": int})
    sc = check.scenarios
    sampled = ""
    if (
        "influencers_scored" in sc
        and (sc["influencers_scored"] < sc["influencers_in_scenario"]).any()
    ):
        sampled = (
            f"\nA scenario with more followers than `evaluation.truth_max_followers` was scored on "
            f"a reproducible sample of whole audiences: {int(sc['influencers_scored'].sum()):,} of "
            f"{int(sc['influencers_in_scenario'].sum()):,} influencers over the scenarios "
            f"({int(sc['followers_scored'].sum()):,} followers); rankings and top-k overlaps are "
            "among the sampled influencers.\n"
        )
    tiers = (
        check.tiers.drop(columns="scenario_id")
        .groupby("tier", sort=False)
        .mean()
        .reset_index()
        .astype({"influencers": int})
        .rename(
            columns={
                "mean_loyal_rate": "mean rate",
                "true_mean_loyal_rate": "true mean rate",
                "median_cost_per_loyal": "median cost per loyal",
                "true_median_cost_per_loyal": "true median cost per loyal",
            }
        )
    )
    return f"""## Audiences against the simulator's ground truth

For each scoring scenario of the simulated world (a brand and an as-of date when the simulator
knows every audience's true loyal rate had the influencer run the campaign), every audience was
scored with this model and compared with the truth: Spearman of predicted vs true cost per
loyal customer over the priced influencers, and how many of the true 10 / 20 best are among the
predicted 10 / 20 best (by cost; by loyal rate). The last two columns are the floor: ranking
by price per follower, which knows nothing about loyalty. The truth is over the followers in the
data, so it cannot show what carrying a thin sample's rate over to a whole audience costs
(`benchmarks/audience_truth.py` gives more).
{sampled}
{table_md(per)}

Per tier, the mean over the scenarios of: the mean predicted and true loyal rate, and the median
predicted and true cost per loyal customer (whole audiences):

{table_md(tiers)}
"""
