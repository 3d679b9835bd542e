"""The model card: a one-page markdown summary of a training run.

Numbers are written for a reader: metrics to three significant digits (more only where two
that are compared would otherwise read the same), counts as whole numbers with thousands
separators, shares as percentages."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loyalty_model.config import Config
from loyalty_model.contract import TIERS
from loyalty_model.evaluate import (
    BEST_BASELINE,
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_MIN_WAVES,
    MIN_CAMPAIGN_FOLLOWERS,
)
from loyalty_model.gate import LOWER_IS_BETTER
from loyalty_model.intervals import INTERVAL

if TYPE_CHECKING:
    from loyalty_model.training import TrainingOutcome

# what a reader calls each metric of the baseline table (and of gate.metric, without test_)
METRIC_NAMES = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "log_loss": "log loss",
    "ece": "ECE",
    "brier": "Brier score",
    "lift_top1pct": "lift in the top 1 %",
    "recall_top10pct": "recall in the top 10 %",
    "audience_spearman_rate": "audience Spearman",
}
# interval coverage of a tier at least this far from the nominal level is said in words
FAR_FROM_NOMINAL = 0.10
NOT_BASELINES = ("model", "oracle")  # rows of the baseline table that are not baselines


def number(v, digits: int = 3) -> str:
    """`digits` significant digits, never an exponent, thousands separators; 'n/a' for a
    missing or non-finite value. 0.075388 -> 0.0754, 10.1999 -> 10.2, 2842503.0 -> 2,842,503."""
    if v is None or v is pd.NA:
        return "n/a"
    v = float(v)
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{decimals}f}"


def count(v) -> str:
    """A whole number with thousands separators ('n/a' for a missing one)."""
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{round(float(v)):,}"


def percent(share, digits: int = 3) -> str:
    """A share as a percentage: whole percents from 10 % up, else `digits` significant
    digits: 0.9296 -> '93 %', 0.0171 -> '1.71 %'."""
    if share is None or share is pd.NA or not math.isfinite(float(share)):
        return "n/a"
    p = 100 * float(share)
    return f"{p:.0f} %" if abs(p) >= 10 or p == 0 else f"{number(p, digits)} %"


def pair(a: float, b: float) -> tuple[str, str]:
    """Two numbers that are compared, with as many digits (3 to 6) as it takes to tell them
    apart when they differ."""
    for digits in range(3, 7):
        x, y = number(a, digits), number(b, digits)
        if x != y or a == b:
            break
    return x, y


def _fmt(v) -> str:
    """A table cell: integers as counts, floats as metrics, anything else as text."""
    if v is None or v is pd.NA:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        return number(v)
    return str(v)


def table_md(df: pd.DataFrame) -> str:
    """A markdown table; integer columns print as counts, float columns as metrics."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _when(stamp: str) -> str:
    """A timestamp of the split or data window, to the minute: '2024-05-30 17:00 UTC'."""
    try:
        ts = pd.Timestamp(stamp)
    except (ValueError, TypeError):
        return str(stamp)
    if ts is pd.NaT:
        return "n/a"
    zone = " UTC" if ts.tzinfo is not None and ts.utcoffset() == pd.Timedelta(0) else ""
    return ts.strftime("%Y-%m-%d %H:%M") + zone


def _lower_is_better(metric: str) -> bool:
    return any(tag in metric for tag in LOWER_IS_BETTER)


def gate_metric_verdict(cfg: Config, result: TrainingOutcome) -> str:
    """In words: does a baseline beat the model on the metric the promotion gate compares
    (gate.metric), and by how much. The oracle is a ceiling, not a baseline."""
    metric = cfg.gate.metric
    col = metric.removeprefix("test_")
    name = METRIC_NAMES.get(col, col)
    table = result.evaluation.baselines
    mine = result.metrics.get(metric, float("nan"))
    gate = f"the promotion gate's metric (`gate.metric: {metric}`)"
    if col not in table.columns:
        return f"The baselines are not scored on {name}, {gate}."
    if not math.isfinite(mine):
        return f"The model has no {name} on the test rows, {gate}."
    scorer = table["scorer"].astype(str)
    rows = table[~scorer.str.startswith(NOT_BASELINES)].dropna(subset=[col])
    if rows.empty:
        return f"The model's {name}, {gate}, is {number(mine)}; no baseline is scored on it."
    lower = _lower_is_better(col)
    rows = rows.sort_values(col, ascending=lower)
    better = rows[rows[col] < mine] if lower else rows[rows[col] > mine]
    if better.empty:
        best = rows.iloc[0]
        m, b = pair(mine, best[col])
        return (
            f"The model beats every baseline on {name}, {gate}: {m} against {b} for "
            f"{best['scorer']}, the best of them."
        )
    said = []
    for r in better.itertuples(index=False):
        b, m = pair(getattr(r, col), mine)
        said.append((str(r.scorer), b, m))
    if len(said) == 1:
        who, b, m = said[0]
        return f"**{who} beats the model on {name}** ({b} vs {m}), {gate}."
    others = ", ".join(f"{who} {b}" for who, b, _ in said)
    return (
        f"**{len(said)} baselines beat the model on {name}**, {gate}: {others}, against "
        f"{said[0][2]} for the model."
    )


def tier_audiences(result: TrainingOutcome) -> pd.DataFrame:
    """Per tier of the test campaigns: campaigns, their median followers, campaigns whose
    actual loyal count fell in the 90 % interval; Spearman and MAE from the metrics."""
    m = result.metrics
    aud = result.evaluation.audiences
    rows = []
    have = {"tier", "followers", "low", "high", "actual"} <= set(aud.columns)
    for t in TIERS:
        row: dict[str, object] = {"tier": t}
        if have:
            a = aud[aud["tier"] == t]
            n = len(a)
            covered = int(((a["actual"] >= a["low"]) & (a["actual"] <= a["high"])).sum())
            followers = float(a["followers"].median()) if n else float("nan")
            ranked = int((a["followers"] >= MIN_CAMPAIGN_FOLLOWERS).sum())
        else:
            n = m.get(f"test_audience_{t}_campaigns", float("nan"))
            n = 0 if n != n else round(n)
            cov = m.get(f"test_audience_{t}_interval_coverage", float("nan"))
            covered = round(cov * n) if cov == cov else 0
            followers = float("nan")
            ranked = m.get(f"test_audience_{t}_campaigns_ranked", float("nan"))
        row |= {
            "campaigns": n,
            "median_followers": followers,
            "ranked": ranked,
            "spearman": m.get(f"test_audience_{t}_spearman_rate", float("nan")),
            "mae": m.get(f"test_audience_{t}_mae_count", float("nan")),
            "covered": covered,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _binom_tail(k: int, n: int, p: float, below: bool) -> float:
    """P(X <= k) (below) or P(X >= k) for X ~ Binomial(n, p)."""
    from scipy.stats import binom

    return float(binom.cdf(k, n, p) if below else binom.sf(k - 1, n, p))


def coverage_words(tiers: pd.DataFrame, nominal: float = INTERVAL) -> list[str]:
    """A sentence for every tier whose interval coverage is at least FAR_FROM_NOMINAL from
    the nominal level (shortfalls first, the least likely by chance first), with how often
    intervals that are right would give a result that far over that many campaigns."""
    found = []
    for r in tiers.itertuples(index=False):
        n, k = int(r.campaigns), int(r.covered)
        if n == 0 or round(abs(k / n - nominal), 9) < FAR_FROM_NOMINAL:
            continue
        below = k / n < nominal
        tail = _binom_tail(k, n, nominal, below)
        fewer = "or fewer" if below else "or more"
        line = (
            f"**{r.tier} audiences were covered {percent(k / n)} of the time** against a "
            f"nominal {percent(nominal)} ({k} of {n} test campaigns; if the intervals were "
            f"right, {k} {fewer} of {n} would be covered {percent(tail, 2)} of the time)"
        )
        few = r.median_followers == r.median_followers and r.median_followers < 100
        if not below and few:
            line += (
                f": over audiences of a median {count(r.median_followers)} followers the "
                f"interval is a few whole counts, and covers more than {percent(nominal)} "
                "by construction"
            )
        found.append((not below, tail, line + "."))
    return [line for *_, line in sorted(found)]


def _tier_table(tiers: pd.DataFrame) -> str:
    lines = [
        f"| tier | campaigns | median followers | ranked (≥ {MIN_CAMPAIGN_FOLLOWERS} followers) | "
        "Spearman | MAE "
        f"(loyal customers) | {percent(INTERVAL)} interval covered |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tiers.itertuples(index=False):
        n = int(r.campaigns)
        covered = f"{percent(r.covered / n)} ({r.covered:,} of {n:,})" if n else "n/a"
        lines.append(
            f"| {r.tier} | {n:,} | {count(r.median_followers)} | {count(r.ranked)} | "
            f"{number(r.spearman)} | {number(r.mae)} | {covered} |"
        )
    return "\n".join(lines)


def _baseline_table(cfg: Config, table: pd.DataFrame) -> str:
    gate = cfg.gate.metric.removeprefix("test_")
    names = {
        c: METRIC_NAMES.get(c, c) + (" (gate)" if c == gate else "")
        for c in table.columns
        if c != "scorer"
    }
    return table_md(table.rename(columns=names))


def _signed(v: float) -> str:
    return "n/a" if not math.isfinite(float(v)) else ("+" if v >= 0 else "−") + number(abs(v))


def against_best_baselines(differences: pd.DataFrame) -> list[str]:
    """Per compared metric, in words: the model minus the best baseline (the best of each
    bootstrap draw: evaluate.BEST_BASELINE) with its paired-bootstrap interval, and whether
    the interval clears zero."""
    if differences.empty:
        return []
    out = []
    for r in differences[differences["baseline"] == BEST_BASELINE].itertuples(index=False):
        name = METRIC_NAMES.get(r.metric, r.metric)
        m, b = pair(r.model, r.baseline_value)
        said = (
            f"{name}: model {m} against {b} for {r.best_on_test}, the best baseline on the test "
            f"rows; difference {_signed(r.difference)}"
        )
        if not (math.isfinite(r.low) and math.isfinite(r.high)):
            out.append(
                f"{said}; only {count(r.waves)} test campaign waves, too few for an interval "
                f"(at least {BOOTSTRAP_MIN_WAVES}): **not established**."
            )
            continue
        verdict = (
            "the model is ahead"
            if r.low > 0
            else "the baselines are ahead"
            if r.high < 0
            else "**not distinguishable**"
        )
        out.append(
            f"{said}, {percent(BOOTSTRAP_LEVEL)} interval [{_signed(r.low)}, {_signed(r.high)}]"
            f" (against the best baseline of each draw): {verdict}."
        )
    return out


def _differences_table(differences: pd.DataFrame) -> str:
    lines = [
        f"| baseline | metric | model | baseline | difference | {percent(BOOTSTRAP_LEVEL)} "
        "interval | draws with the model ahead |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in differences.itertuples(index=False):
        known = math.isfinite(r.low) and math.isfinite(r.high)
        interval = f"[{_signed(r.low)}, {_signed(r.high)}]" if known else "n/a"
        lines.append(
            f"| {r.baseline} | {METRIC_NAMES.get(r.metric, r.metric)} | {number(r.model)} | "
            f"{number(r.baseline_value)} | {_signed(r.difference)} | {interval} | "
            f"{percent(r.model_ahead)} |"
        )
    return "\n".join(lines)


def _differences_section(differences: pd.DataFrame) -> str:
    if differences.empty:
        return ""
    waves, draws = count(differences["waves"].iloc[0]), count(differences["draws"].max())
    intro = _para(
        "The model minus each baseline on the same test rows, with a paired-bootstrap "
        f"{percent(BOOTSTRAP_LEVEL)} interval: {draws} draws of the {waves} test campaign "
        "waves (a brand and a start time) with replacement, every scorer scored on the same "
        "draws. An interval that contains 0 means the test campaigns cannot tell the two apart. "
        f"The rows '{BEST_BASELINE}' compare the model with the best baseline of each draw, so "
        "that picking the best on the same rows is part of the interval; with fewer than "
        f"{BOOTSTRAP_MIN_WAVES} waves there is no interval."
    )
    return f"## Model against each baseline (paired bootstrap)\n\n{intro}\n\n" + (
        _differences_table(differences) + "\n\n"
    )


def _para(*sentences: str) -> str:
    """Sentences as one paragraph, wrapped at 96 characters (markdown joins the lines)."""
    text = " ".join(s for s in sentences if s)
    return textwrap.fill(text, width=96, break_long_words=False, break_on_hyphens=False)


def model_card(cfg: Config, result: TrainingOutcome, version: str | None = None) -> str:
    """The card. List items stay on one line each: the HTML report's markdown reader takes a
    wrapped line for the start of a paragraph."""
    m, s, w = result.metrics, result.sizes, result.window
    nan = float("nan")
    spec = result.model.spec
    lab = cfg.label
    gate = cfg.gate
    attribution = (
        ", the first attributed to the campaign's influencer" if lab.require_attribution else ""
    )
    oracle = ""
    if "test_oracle_roc_auc" in m:
        ratio = m.get("test_roc_auc_vs_oracle", nan)
        oracle = _para(
            "On this simulated world the ground-truth probabilities reach test ROC-AUC "
            f"{number(m['test_oracle_roc_auc'])}; the model reaches {number(100 * ratio)} % "
            "of it."
        )
    split_rows = "\n".join(
        f"| {name} | {count(s[f'{name}_rows'])} rows, {count(s[f'{name}_campaigns'])} "
        f"campaigns, from {_when(w[f'{name}_from'])}, base rate "
        f"{percent(s[f'{name}_base_rate'])} |"
        for name in ("train", "valid", "test")
    )
    tiers = tier_audiences(result)
    verdict = gate_metric_verdict(cfg, result)
    against = "".join(
        f"\n- {line}" for line in against_best_baselines(result.evaluation.differences)
    )
    n_test, covered = int(tiers["campaigns"].sum()), int(tiers["covered"].sum())
    overall = m.get("test_audience_interval_coverage", nan)
    nominal = percent(INTERVAL)
    coverage = (
        f"{covered:,} of {n_test:,} test campaigns ({percent(overall)})"
        if n_test
        else f"{percent(overall)} of the test campaigns"
    )
    far = coverage_words(tiers)
    points = f"{round(100 * FAR_FROM_NOMINAL)} points"
    if far:
        tier_lines = "\n".join(f"- {line}" for line in far)
        by_tier = f"Coverage by tier, where it is {points} or more from the nominal {nominal}:"
        by_tier += f"\n\n{tier_lines}"
        rows = tiers[tiers["campaigns"] > 0]
        share = rows["covered"] / rows["campaigns"]
        off = (share - INTERVAL).abs().round(9) >= FAR_FROM_NOMINAL
        named = rows["tier"] + " " + share.map(percent)
        low = list(named[off & (share < INTERVAL)])
        high = list(named[off & (share > INTERVAL)])
        said = [f"{', '.join(low)} below nominal"] if low else []
        said += [f"{', '.join(high)} above"] if high else []
        glance_cov = f"by tier {'; '.join(said)} (tier table below)."
    else:
        by_tier = _para(f"Every tier's coverage is within {points} of the nominal {nominal}.")
        glance_cov = f"every tier within {points} of it."
    ece, auc = m.get("test_ece", nan), m.get("test_roc_auc", nan)
    floors_hold = ece <= gate.max_ece and auc >= gate.min_roc_auc
    floors = (
        f"Test ECE {number(ece)} (the gate allows at most {gate.max_ece:g}) and ROC-AUC "
        f"{number(auc)} (at least {gate.min_roc_auc:g}): the gate's floors "
        + ("hold." if floors_hold else "**do not hold**.")
    )
    ranked = m.get("test_audience_campaigns_ranked", nan)
    title = f"# Model card: {cfg.tracking.model_name}{f' v{version}' if version else ''}"
    predicts = _para(
        "**Predicts** the probability that a follower of an influencer becomes a brand-loyal "
        f"customer of a brand: at least {lab.min_purchases} purchases of the brand within "
        f"{lab.horizon_days} days after the campaign start{attribution}. Used as expected "
        "counts per audience."
    )
    features = _para(
        f"Split by campaign start time (never random). Features: version {spec.version}, "
        f"{len(spec.names)} point-in-time features over windows "
        f"{', '.join(map(str, spec.windows))} days (events of days before the cutoff day only)."
    )
    model = _para(
        f"LightGBM: {count(m.get('best_iteration', nan))} trees by early stopping on "
        "validation log loss, then refitted on train+valid with "
        f"{count(m.get('final_trees', nan))} trees. Calibration "
        f"**{result.model.calibrator.method}** and audience dispersion τ² = "
        f"{number(result.model.calibrator.audience_dispersion)}, both fitted on out-of-fold "
        "predictions over train+valid (folds by campaign wave). Validation metrics are out of "
        "fold; test metrics are those of the registered model."
    )
    after_table = _para(
        verdict,
        "The ranking baselines (follower count, engagement rate) are not probabilities: they "
        "have no log loss or ECE.",
    )
    follower = _para(
        f"Follower level (test): ROC-AUC {number(auc)}, PR-AUC "
        f"{number(m.get('test_pr_auc', nan))}, log loss {number(m.get('test_log_loss', nan))}, "
        f"Brier {number(m.get('test_brier', nan))}, ECE {number(ece)}; lift in the top 1 % "
        f"{number(m.get('test_lift_top1pct', nan))} (recall "
        f"{number(m.get('test_recall_top1pct', nan))}), in the top 10 % "
        f"{number(m.get('test_lift_top10pct', nan))} (recall "
        f"{number(m.get('test_recall_top10pct', nan))})."
    )
    audience = _para(
        "Audience level (per test campaign, expected vs actual loyal count): Spearman of rates "
        f"{number(m.get('test_audience_spearman_rate', nan))} over the {count(ranked)} "
        f"campaigns of at least {MIN_CAMPAIGN_FOLLOWERS} followers, mean absolute error "
        f"{number(m.get('test_audience_mae_count', nan))} loyal customers; the {nominal} "
        f"intervals covered the actual count in {coverage}.",
    )
    tier_note = _para(
        "Spearman and MAE are given for tiers of at least 3 test campaigns; Spearman needs 3 "
        f"of them with at least {MIN_CAMPAIGN_FOLLOWERS} followers."
    )
    return f"""{title}

{predicts}

## At a glance

- {verdict}
- {floors}{against}
- The {nominal} audience intervals covered the actual loyal count in {coverage}; \
{glance_cov}

## Data

| | |
|---|---|
| data directory | `{cfg.data.dir}` |
| events | {count(s["events"])} (last event {_when(w["data_end"])}) |
{split_rows}
| excluded | {count(s["campaigns_excluded_open_window"])} campaigns, label window not closed |

{features}

## Model

{model}

## Test metrics against baselines (same test rows)

{_baseline_table(cfg, result.evaluation.baselines)}

{after_table}

{_differences_section(result.evaluation.differences)}{oracle}

{follower}

{audience}

{_tier_table(tiers)}

{tier_note}

{by_tier}

{_truth_section(result)}
## Known limits

- Scores are for followers present in `follows` at the cutoff. Audience counts and costs carry \
their loyal rate over to `follower_count`; where `follows` holds a small sample of an audience, \
the rate rests on few followers and the interval is wide.
- Events on the cutoff day itself are not used (features use whole days before it).
- The 90 % audience interval covers chance given the probabilities, a campaign-level rate \
uncertainty (τ² above) estimated from past campaigns and, on whole audiences, the sampling of \
the followers in the data; a campaign unlike the past ones has more, and so has a brand whose \
history lies outside the training range (its level can be off by a factor, not only its \
interval).
- Realised loyal counts per campaign are small and noisy: audience Spearman against realised \
rates is bounded well below 1 even for perfect probabilities (see the oracle row where \
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
