"""Budget planner: which influencers to book so that the most followers become loyal customers.

Followers of several booked influencers count once. A booking of the set S reaches follower f
through every chosen influencer f follows, and f becomes a loyal customer unless every one of
those campaigns fails to make them one:

    expected unique loyal(S) = sum over followers f of  w_f * (1 - prod over i in S of (1 - p_f,i))

with p_f,i the follower's `p_loyal` for influencer i, and w_f the people of the whole audiences
that the sampled follower stands for (below). This is a weighted coverage function: monotone and
submodular, so greedy choice by marginal gain per cost, with lazy evaluation of the gains
(CELF, Leskovec et al. 2007), together with the best single influencer that fits the budget,
is within (1 - 1/e) / 2 of the best plan under a budget.

**One scale.** Prices buy whole audiences (`follower_count`) and `follows` may hold a sample of
them. Each audience's extrapolation factor is its whole audience over its followers scored, as
in `audience_scores` (`expected_loyal = loyal_rate * follower_count`); a follower's weight
w_f is the mean factor of the candidate audiences it follows. For a uniform sample of people
(the simulator's design, declared in `influencers.sample_fraction`) every factor is about
1 / sample_fraction, and overlaps in the sample are the population's times that fraction;
a plan of one influencer whose followers follow no other candidate is worth exactly its
`expected_loyal`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loyalty_model.errors import RequestError
from loyalty_model.intervals import AudienceAccumulator

BIG_TIERS = ("macro", "mega")  # the reach buyer's usual picks: the macro-only comparison
PLAN_COLUMNS = (
    "step",
    "influencer_id",
    "tier",
    "category",
    "follower_count",
    "cost",
    "expected_loyal_alone",
    "marginal_expected_unique_loyal",
    "cumulative_expected_unique_loyal",
    "cumulative_cost",
)


@dataclass(frozen=True)
class Instance:
    """A planning problem: every (follower, candidate) row of the candidates' audiences, grouped
    by candidate, with the candidates' costs and the followers' weights."""

    ids: np.ndarray  # candidate influencer ids, sorted (index j)
    follower_ids: np.ndarray  # per follower index: the follower's id
    cost: np.ndarray  # per candidate
    start: np.ndarray  # rows of candidate j: start[j]:start[j + 1]
    follower: np.ndarray  # per row: follower index
    p: np.ndarray  # per row: p_loyal
    weight: np.ndarray  # per follower: people of the whole audiences it stands for
    factor: np.ndarray  # per candidate: whole audience / followers scored (0 when none)

    @property
    def n(self) -> int:
        return len(self.ids)

    def rows(self, j: int) -> slice:
        return slice(self.start[j], self.start[j + 1])

    def value(self, chosen: Sequence[int]) -> float:
        """Expected unique loyal customers of a set of candidates (indices)."""
        return float(np.sum(self.weight * (1 - self.miss(chosen))))

    def miss(self, chosen: Sequence[int]) -> np.ndarray:
        """Per follower: the probability that no chosen campaign makes them loyal."""
        q = np.ones(len(self.weight))
        for j in chosen:
            r = self.rows(j)
            q[self.follower[r]] *= 1 - self.p[r]
        return q


def instance(followers: pd.DataFrame, audiences: pd.DataFrame, cost: pd.Series) -> Instance:
    """The planning problem of the candidates in `cost` (influencer_id -> cost): `followers`
    holds follower_id, influencer_id, p_loyal (follower_scores); `audiences` holds
    influencer_id, follower_count, followers_scored (audience_scores)."""
    ids = np.array(sorted(cost.index), dtype=object)
    aud = audiences.set_index("influencer_id").reindex(ids)
    scored = aud["followers_scored"].fillna(0).to_numpy(dtype=float)
    whole = np.maximum(aud["follower_count"].fillna(0).to_numpy(dtype=float), scored)
    factor = np.where(scored > 0, whole / np.maximum(scored, 1), 0.0)
    rows = followers[followers["influencer_id"].isin(set(ids))]
    j = pd.Categorical(rows["influencer_id"], categories=ids).codes
    order = np.argsort(j, kind="stable")
    j = j[order]
    codes, uniques = pd.factorize(rows["follower_id"].to_numpy()[order])
    per_follower = np.bincount(codes, minlength=len(uniques))
    weight = np.bincount(codes, weights=factor[j], minlength=len(uniques))
    weight = weight / np.maximum(per_follower, 1)
    return Instance(
        ids=ids,
        follower_ids=np.asarray(uniques, dtype=object),
        cost=cost.reindex(ids).to_numpy(dtype=float),
        start=np.searchsorted(j, np.arange(len(ids) + 1)),
        follower=codes.astype(np.int64),
        p=rows["p_loyal"].to_numpy(dtype=float)[order],
        weight=weight,
        factor=factor,
    )


@dataclass(frozen=True)
class Choice:
    """A plan: candidate indices in the order chosen, and each one's marginal gain."""

    chosen: tuple[int, ...]
    gains: tuple[float, ...]
    by: str  # "greedy" or "best single" or a comparison's rule
    evaluations: int = 0  # marginal gains computed (CELF's lazy evaluations)

    @property
    def value(self) -> float:
        return float(sum(self.gains))


def greedy(
    inst: Instance,
    budget: float,
    allowed: np.ndarray | None = None,
    max_influencers: int | None = None,
) -> Choice:
    """Greedy by marginal gain per cost with lazy evaluation (CELF): a candidate's gain can
    only shrink as others are chosen, so a stale gain is an upper bound and only the top of
    the queue needs recomputing. Candidates that no longer fit are dropped; ties go to the
    lower id. `allowed`: a mask of the candidates to choose from."""
    allowed = np.ones(inst.n, bool) if allowed is None else allowed
    q = np.ones(len(inst.weight))

    def gain(j: int) -> float:
        r = inst.rows(j)
        f = inst.follower[r]
        return float(np.sum(inst.weight[f] * q[f] * inst.p[r]))

    heap = []
    for j in np.flatnonzero(allowed & (inst.cost <= budget)):
        g = gain(j)
        heap.append((-g / inst.cost[j], j, 0, g))
    heapq.heapify(heap)
    evaluations = len(heap)
    chosen: list[int] = []
    gains: list[float] = []
    spent = 0.0
    while heap and (max_influencers is None or len(chosen) < max_influencers):
        _, j, fresh_at, g = heapq.heappop(heap)
        if inst.cost[j] > budget - spent:
            continue  # spending only grows: it will never fit
        if fresh_at != len(chosen):  # stale: recompute and put back
            g = gain(j)
            evaluations += 1
            heapq.heappush(heap, (-g / inst.cost[j], j, len(chosen), g))
            continue
        if g <= 0:
            break  # the best ratio adds nothing: neither does any other
        chosen.append(j)
        gains.append(g)
        spent += inst.cost[j]
        r = inst.rows(j)
        q[inst.follower[r]] *= 1 - inst.p[r]
    return Choice(tuple(chosen), tuple(gains), "greedy", evaluations)


def best_single(inst: Instance, budget: float, allowed: np.ndarray | None = None) -> Choice | None:
    """The one candidate within the budget with the most expected loyal customers (None when
    none fits or none is expected to bring any)."""
    allowed = np.ones(inst.n, bool) if allowed is None else allowed
    best, best_value = None, 0.0
    for j in np.flatnonzero(allowed & (inst.cost <= budget)):
        v = inst.value([j])
        if v > best_value:  # ties: the lower id; no value at all is no plan
            best, best_value = j, v
    return None if best is None else Choice((int(best),), (best_value,), "best single")


def optimise(
    inst: Instance,
    budget: float,
    allowed: np.ndarray | None = None,
    max_influencers: int | None = None,
) -> Choice | None:
    """The better of the greedy plan and the best single candidate: within (1 - 1/e) / 2 of
    the best plan under the budget (Leskovec et al. 2007; with `max_influencers` as well, a
    heuristic). None when no candidate fits."""
    g = greedy(inst, budget, allowed, max_influencers)
    s = best_single(inst, budget, allowed)
    if s is None:
        return None
    if not g.chosen or s.value > g.value:
        return Choice(s.chosen, s.gains, s.by, g.evaluations)
    return g


def reach_buyer(
    inst: Instance, budget: float, follower_count: np.ndarray, max_influencers: int | None = None
) -> Choice | None:
    """The plan a buyer of reach makes: largest follower counts first, each one that still
    fits the budget (ties by id)."""
    chosen, spent = [], 0.0
    for j in np.lexsort((inst.ids, -follower_count)):
        if max_influencers is not None and len(chosen) >= max_influencers:
            break
        if inst.cost[j] <= budget - spent:
            chosen.append(int(j))
            spent += inst.cost[j]
    return None if not chosen else with_gains(inst, chosen, "largest audiences first")


def with_gains(inst: Instance, chosen: Sequence[int], by: str) -> Choice:
    """A plan of these candidates in this order, with each one's marginal gain."""
    values = [inst.value(chosen[: k + 1]) for k in range(len(chosen))]
    gains = np.diff(np.r_[0.0, values])
    return Choice(tuple(int(j) for j in chosen), tuple(float(g) for g in gains), by)


# -- what a plan is worth, in the words of the files -----------------------------------------


@dataclass(frozen=True)
class PlanSummary:
    label: str
    choice: Choice
    cost: float
    expected_unique_loyal: float
    interval: tuple[float, float]
    followers_reached: float  # people of the whole audiences reached (overlaps once)
    influencers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        v = self.expected_unique_loyal
        return {
            "label": self.label,
            "chosen_by": self.choice.by,
            "influencers": self.influencers,
            "cost": self.cost,
            "expected_unique_loyal": v,
            "interval": list(self.interval),
            "cost_per_expected_loyal": self.cost / v if v > 0 else None,
            "followers_reached": self.followers_reached,
        }


def assess(
    inst: Instance,
    choice: Choice,
    label: str,
    tiers: np.ndarray,
    dispersion: float = 0.0,
    spread: dict[str, float] | None = None,
) -> PlanSummary:
    """A plan's cost, expected unique loyal customers and 90 % interval.

    The interval treats the followers a plan reaches as one audience (intervals.py): each
    loyal with probability 1 - prod (1 - p), a uniform sample of the people reached. The
    campaigns' own effects are independent, so the campaign term is the model's dispersion
    shrunk by how evenly the plan spreads over its campaigns (sum g_i^2 / (sum g_i)^2, g_i
    the marginal gains); the spread of probabilities is shrunk toward the chosen tiers'
    spreads, weighted by followers scored. A single influencer's interval is its own in
    audience_scores when its followers follow no other candidate."""
    chosen = list(choice.chosen)
    q = inst.miss(chosen)
    reached = np.zeros(len(q), bool)
    for j in chosen:
        reached[inst.follower[inst.rows(j)]] = True
    u, w = 1 - q[reached], inst.weight[reached]
    value = float(np.sum(w * u))
    acc = AudienceAccumulator()
    acc.add(u)
    people = float(w.sum())
    gains = np.array(choice.gains)
    share = float(np.sum(gains**2) / np.sum(gains) ** 2) if gains.sum() > 0 else 1.0
    n_scored = np.array([inst.start[j + 1] - inst.start[j] for j in chosen], float)
    prior = None
    if spread:
        known = [
            (spread[t], n) for t, n in zip(tiers[chosen], n_scored, strict=True) if t in spread
        ]
        if known:
            prior = float(np.average([s for s, _ in known], weights=[n for _, n in known]))
    lo = hi = 0.0
    if acc.n and acc.m1 > 0:
        lo_c, hi_c = acc.full_interval(max(round(people), acc.n), dispersion * share, prior)
        scale = value / (acc.rate * max(round(people), acc.n))  # the weights' mean, not n/N
        lo, hi = float(np.floor(lo_c * scale)), float(np.ceil(hi_c * scale))
    return PlanSummary(
        label=label,
        choice=choice,
        cost=float(inst.cost[chosen].sum()),
        expected_unique_loyal=value,
        interval=(lo, hi),
        followers_reached=people,
        influencers=[str(inst.ids[j]) for j in chosen],
    )


def plan_table(inst: Instance, choice: Choice, audiences: pd.DataFrame) -> pd.DataFrame:
    """plan.parquet: the chosen influencers in the order chosen (docs/output_contract.md)."""
    aud = audiences.set_index("influencer_id")
    ids = [inst.ids[j] for j in choice.chosen]
    gains = np.array(choice.gains, float)
    cost = inst.cost[list(choice.chosen)]
    return pd.DataFrame(
        {
            "step": np.arange(1, len(ids) + 1, dtype=np.int64),
            "influencer_id": pd.array(ids, dtype="string"),
            "tier": pd.array(aud.loc[ids, "tier"].to_numpy(), dtype="string"),
            "category": pd.array(aud.loc[ids, "category"].to_numpy(), dtype="string"),
            "follower_count": aud.loc[ids, "follower_count"].to_numpy(dtype=np.int64),
            "cost": cost.astype(float),
            "expected_loyal_alone": [inst.value([j]) for j in choice.chosen],
            "marginal_expected_unique_loyal": gains,
            "cumulative_expected_unique_loyal": np.cumsum(gains),
            "cumulative_cost": np.cumsum(cost).astype(float),
        },
        columns=list(PLAN_COLUMNS),
    )


# -- candidates ------------------------------------------------------------------------------


def candidate_costs(
    influencers: pd.DataFrame, named: pd.DataFrame | None
) -> tuple[pd.Series, dict[str, int]]:
    """(influencer_id -> cost of each candidate with one, counts for the summary).

    `named`: the candidates file (influencer_id, and optionally cost); None: every influencer
    of the data. A cost from the file wins over `price_per_post`; candidates with neither are
    skipped and counted."""
    prices = influencers.set_index("influencer_id")["price_per_post"].astype("float64")
    if named is None:
        ids = pd.Index(sorted(prices.index))
        cost = prices.reindex(ids)
        source_file = pd.Series(False, index=ids)
    else:
        ids = pd.Index(named["influencer_id"].astype(str))
        unknown = ids[~ids.isin(prices.index)]
        if len(unknown):
            raise RequestError(
                f"candidates: {len(unknown)} influencer(s) not in the data's influencers "
                f"table, e.g. {', '.join(map(str, unknown[:5]))}"
            )
        given = (
            named.set_index(ids)["cost"].astype("float64")
            if "cost" in named
            else pd.Series(np.nan, index=ids)
        )
        bad = given[given.notna() & ~(given > 0)]
        if len(bad):
            raise RequestError(
                f"candidates: cost must be a positive amount, got {bad.iloc[0]!r} for "
                f"{bad.index[0]} ({len(bad)} such row(s))"
            )
        source_file = given.notna()
        cost = given.fillna(prices.reindex(ids))
    usable = cost[cost.notna() & (cost > 0)]
    counts = {
        "candidates": len(ids),
        "with_cost": len(usable),
        "cost_from_candidates_file": int(source_file.reindex(usable.index).sum()),
        "skipped_without_cost": int(len(ids) - len(usable)),
    }
    return usable.sort_index(), counts


def read_candidates(text: str) -> pd.DataFrame:
    """The candidates of `--candidates`: `@FILE` (a csv with an `influencer_id` column and
    optionally `cost`, or one id per line) or ids separated by commas."""
    import io as _io
    from pathlib import Path

    if text.startswith("@"):
        path = Path(text[1:])
        try:
            body = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RequestError(f"candidates file {path}: cannot read it ({exc})") from exc
        first = body.lstrip().splitlines()[0] if body.strip() else ""
        if "influencer_id" in first.split(","):
            frame = pd.read_csv(_io.StringIO(body), dtype={"influencer_id": str})
            if "cost" in frame and not pd.api.types.is_numeric_dtype(frame["cost"]):
                raise RequestError(f"candidates file {path}: column cost is not numeric")
        else:
            ids = [line.strip() for line in body.splitlines() if line.strip()]
            frame = pd.DataFrame({"influencer_id": ids})
        where = f"candidates file {path}"
    else:
        frame = pd.DataFrame({"influencer_id": [t.strip() for t in text.split(",") if t.strip()]})
        where = "candidates"
    if frame.empty:
        raise RequestError(f"{where}: no influencer named")
    dup = frame["influencer_id"][frame["influencer_id"].duplicated()]
    if len(dup):
        raise RequestError(f"{where}: influencer named twice, e.g. {dup.iloc[0]}")
    return frame


def true_value(inst: Instance, chosen: Sequence[int], truth: pd.DataFrame) -> float:
    """A plan's true unique loyal customers in the simulator, on the planner's scale: the
    counterfactual truth of the chosen influencers all running a campaign at the as-of date
    (`ground_truth_scoring` rows of the scenario: p_convert, p_repeat, other_purchases per
    follower and influencer), each follower weighted as the planner weighs them."""
    from loyalty_model.simulation.truth import set_probabilities

    ids = {str(inst.ids[j]) for j in chosen}
    rows = truth[truth["influencer_id"].isin(ids)]
    if rows.empty:
        return 0.0
    followers, p = set_probabilities(
        rows["follower_id"].to_numpy(),
        rows["p_convert"].to_numpy(),
        rows["p_repeat"].to_numpy(),
        rows["other_purchases"].to_numpy(),
    )
    weight = pd.Series(inst.weight, index=inst.follower_ids).reindex(followers)
    return float(np.sum(weight.fillna(weight.mean()).to_numpy() * p))
