"""Budget planner: which influencers to book so that the most followers become loyal customers.

Followers of several booked influencers count once. A booking of the set S reaches follower f
through every chosen influencer f follows, and f becomes a loyal customer unless every one of
those campaigns fails to make them one: u_f(S) = 1 - prod over i in S of (1 - p_f,i), with
p_f,i the follower's `p_loyal` for influencer i.

**One scale.** Prices buy whole audiences (`follower_count`) and `follows` holds a sample of
them. A plan of one influencer is worth its `expected_loyal` in `audience_scores` (E_i, the
loyal rate of its followers scored times its whole audience). Followers shared by chosen
influencers are counted once by subtracting what the plan would otherwise count twice, on the
people-sample scale (each sampled person stands for 1 / s people, s the sample fraction the
data declare, or the one the candidates imply):

    expected unique loyal(S) = sum_{i in S} E_i  -  (1 / s) sum_f (sum_{i in S} p_f,i - u_f(S))

That is a modular term, sum_{i in S} (E_i - (1 / s) sum_f p_f,i), plus the weighted coverage
function (1 / s) sum_f u_f(S), so the value is submodular (and grows with each candidate
unless nearly all its followers are won already, when its gain is at most 0 and it is not
chosen). Choosing by marginal gain per cost with lazy evaluation of the gains (CELF,
Leskovec et al. 2007), by marginal gain alone, and the best single influencer within the
budget, and keeping the best of the three, is within (1 - 1/e) / 2 of the best plan under a
budget (Khuller, Moss & Naor 1999; Leskovec et al. 2007).

**What the formula assumes.** Campaigns act on a follower independently, and all of p counts
toward each: a follower's loyalty that would come without any campaign (buying the brand
anyway) is counted again by each further campaign that reaches them. Two influencers with
the same followers therefore add up to 1 - (1 - p)^2 per follower, not p. In the simulator a
second campaign does raise a follower's chance (both can convert them), but only its campaign
part; on `small` the overcount is 1.3 % of a 250,000 plan (docs/output_contract.md#plans).
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
    "followers_scored",
    "cost",
    "expected_loyal_alone",
    "marginal_expected_unique_loyal",
    "cumulative_expected_unique_loyal",
    "cumulative_cost",
)


@dataclass(frozen=True)
class Instance:
    """A planning problem: every (follower, candidate) row of the candidates' audiences, grouped
    by candidate, with the candidates' costs, their whole-audience values and the people-sample
    weight of a follower."""

    ids: np.ndarray  # candidate influencer ids, sorted (index j)
    follower_ids: np.ndarray  # per follower index: the follower's id
    cost: np.ndarray  # per candidate
    start: np.ndarray  # rows of candidate j: start[j]:start[j + 1]
    follower: np.ndarray  # per row: follower index
    p: np.ndarray  # per row: p_loyal
    alone: np.ndarray  # per candidate: expected loyal customers booked alone (E_i)
    whole: np.ndarray  # per candidate: its whole audience (follower_count, or more scored)
    people: float  # 1 / sample fraction: the people one sampled follower stands for

    @property
    def n(self) -> int:
        return len(self.ids)

    def rows(self, j: int) -> slice:
        return slice(self.start[j], self.start[j + 1])

    def scored(self, j: int) -> int:
        return int(self.start[j + 1] - self.start[j])

    def value(self, chosen: Sequence[int]) -> float:
        """Expected unique loyal customers of a set of candidates (indices)."""
        chosen = list(chosen)
        q = self.miss(chosen)
        twice = sum(float(self.p[self.rows(j)].sum()) for j in chosen) - float(np.sum(1 - q))
        return float(self.alone[chosen].sum()) - self.people * twice

    def miss(self, chosen: Sequence[int]) -> np.ndarray:
        """Per follower: the probability that no chosen campaign makes them loyal."""
        q = np.ones(len(self.follower_ids))
        for j in chosen:
            self.book(j, q)
        return q

    def book(self, j: int, q: np.ndarray) -> None:
        """Add candidate j's campaign to the miss probabilities `q` of a plan, in place."""
        r = self.rows(j)
        q[self.follower[r]] *= 1 - self.p[r]

    def gain(self, j: int, q: np.ndarray) -> float:
        """What candidate j adds to a plan whose followers' miss probabilities are `q`: its
        own value less the loyal customers it shares with the plan (counted once already)."""
        r = self.rows(j)
        return float(self.alone[j] - self.people * np.sum(self.p[r] * (1 - q[self.follower[r]])))

    def affordable(self, room: float) -> np.ndarray:
        """Per candidate: whether its cost fits `room`."""
        return _within(self.cost, room)

    def fits(self, j: int, room: float) -> bool:
        return bool(_within(self.cost[j], room))


def _within(cost, room: float):
    """cost <= room, with room for the rounding of amounts summed in floats."""
    return cost <= room * (1 + 1e-12) + 1e-9


def sample_fraction(audiences: pd.DataFrame) -> tuple[float, str]:
    """(s, where it comes from): the people-sample fraction overlaps are counted at. The one the
    data declare when every candidate with followers scored declares the same; else the share
    of the candidates' whole audiences that their followers scored make up."""
    a = audiences[audiences["followers_scored"] > 0]
    if a.empty:
        return 1.0, "none scored"
    declared = a["sample_fraction"].where(a["sample_fraction_declared"].astype(bool))
    if declared.notna().all() and np.allclose(declared, declared.iloc[0], rtol=1e-9):
        return float(declared.iloc[0]), "declared"
    whole = np.maximum(a["follower_count"].to_numpy(float), a["followers_scored"].to_numpy(float))
    return float(a["followers_scored"].sum() / whole.sum()), "implied by the candidates"


def instance(
    followers: pd.DataFrame, audiences: pd.DataFrame, cost: pd.Series, fraction: float
) -> Instance:
    """The planning problem of the candidates in `cost` (influencer_id -> cost): `followers`
    holds follower_id, influencer_id, p_loyal (follower_scores); `audiences` holds
    influencer_id, follower_count, followers_scored, expected_loyal (audience_scores);
    `fraction`: the people-sample fraction (sample_fraction)."""
    ids = np.array(sorted(cost.index), dtype=object)
    aud = audiences.set_index("influencer_id").reindex(ids)
    scored = aud["followers_scored"].fillna(0).to_numpy(dtype=float)
    rows = followers[followers["influencer_id"].isin(set(ids))]
    j = pd.Categorical(rows["influencer_id"], categories=ids).codes
    order = np.argsort(j, kind="stable")
    codes, uniques = pd.factorize(rows["follower_id"].to_numpy()[order])
    return Instance(
        ids=ids,
        follower_ids=np.asarray(uniques, dtype=object),
        cost=cost.reindex(ids).to_numpy(dtype=float),
        start=np.searchsorted(j[order], np.arange(len(ids) + 1)),
        follower=codes.astype(np.int64),
        p=rows["p_loyal"].to_numpy(dtype=float)[order],
        alone=aud["expected_loyal"].fillna(0).to_numpy(dtype=float),
        whole=np.maximum(aud["follower_count"].fillna(0).to_numpy(dtype=float), scored),
        people=1.0 / fraction,
    )


@dataclass(frozen=True)
class Choice:
    """A plan: candidate indices in the order chosen, and each one's marginal gain."""

    chosen: tuple[int, ...]
    gains: tuple[float, ...]
    by: str  # how it was chosen: a greedy rule, the best single, a comparison's rule
    evaluations: int = 0  # marginal gains computed (CELF's lazy evaluations)

    @property
    def value(self) -> float:
        return float(sum(self.gains))


def greedy(
    inst: Instance,
    budget: float,
    allowed: np.ndarray | None = None,
    max_influencers: int | None = None,
    per_cost: bool = True,
) -> Choice:
    """Greedy by marginal gain per cost (or by marginal gain alone, `per_cost=False`) with
    lazy evaluation (CELF): a candidate's gain can only shrink as others are chosen, so a
    stale gain is an upper bound and only the top of the queue needs recomputing. Candidates
    that no longer fit are dropped; ties go to the lower id. `allowed`: a mask of the
    candidates to choose from."""
    allowed = np.ones(inst.n, bool) if allowed is None else allowed
    q = np.ones(len(inst.follower_ids))

    def key(g: float, j: int) -> float:
        return -g / inst.cost[j] if per_cost else -g

    heap = [(key(inst.alone[j], j), j, 0, inst.alone[j]) for j in np.flatnonzero(allowed)]
    heap = [h for h in heap if inst.fits(h[1], budget)]
    heapq.heapify(heap)
    evaluations = 0
    chosen: list[int] = []
    gains: list[float] = []
    spent = 0.0
    while heap and (max_influencers is None or len(chosen) < max_influencers):
        _, j, fresh_at, g = heapq.heappop(heap)
        if not inst.fits(j, budget - spent):
            continue  # spending only grows: it will never fit
        if fresh_at != len(chosen):  # stale: recompute and put back
            g = inst.gain(j, q)
            evaluations += 1
            heapq.heappush(heap, (key(g, j), j, len(chosen), g))
            continue
        if g <= 0:
            break  # the best adds nothing: neither does any other
        chosen.append(int(j))
        gains.append(float(g))
        spent += inst.cost[j]
        inst.book(j, q)
    rule = "greedy by gain per cost" if per_cost else "greedy by gain"
    return Choice(tuple(chosen), tuple(gains), rule, evaluations)


def best_single(inst: Instance, budget: float, allowed: np.ndarray | None = None) -> Choice | None:
    """The one candidate within the budget with the most expected loyal customers (None when
    none fits or none is expected to bring any); ties go to the lower id."""
    allowed = np.ones(inst.n, bool) if allowed is None else allowed
    ok = allowed & inst.affordable(budget) & (inst.alone > 0)
    if not ok.any():
        return None
    j = int(np.argmax(np.where(ok, inst.alone, -np.inf)))
    return Choice((j,), (float(inst.alone[j]),), "best single")


def optimise(
    inst: Instance,
    budget: float,
    allowed: np.ndarray | None = None,
    max_influencers: int | None = None,
) -> Choice | None:
    """The best of greedy by gain per cost, greedy by gain and the best single candidate:
    within (1 - 1/e) / 2 of the best plan under the budget (with `max_influencers` as well,
    a heuristic; greedy by gain is what spends few slots well). None when no candidate fits
    or none is expected to bring anyone."""
    single = best_single(inst, budget, allowed)
    if single is None:
        return None
    tried = [
        greedy(inst, budget, allowed, max_influencers, per_cost=True),
        greedy(inst, budget, allowed, max_influencers, per_cost=False),
        single,
    ]
    best = max(tried, key=lambda c: c.value)  # the first of equals: per cost, then by gain
    return Choice(best.chosen, best.gains, best.by, sum(c.evaluations for c in tried))


def reach_buyer(
    inst: Instance, budget: float, follower_count: np.ndarray, max_influencers: int | None = None
) -> Choice | None:
    """The plan a buyer of reach makes: largest follower counts first, each one that still
    fits the budget (ties by id)."""
    chosen, spent = [], 0.0
    for j in np.lexsort((inst.ids, -follower_count)):
        if max_influencers is not None and len(chosen) >= max_influencers:
            break
        if inst.fits(j, budget - spent):
            chosen.append(int(j))
            spent += inst.cost[j]
    return None if not chosen else with_gains(inst, chosen, "largest audiences first")


def with_gains(inst: Instance, chosen: Sequence[int], by: str) -> Choice:
    """A plan of these candidates in this order, with each one's marginal gain."""
    q = np.ones(len(inst.follower_ids))
    gains = []
    for j in chosen:
        gains.append(inst.gain(j, q))
        inst.book(j, q)
    return Choice(tuple(int(j) for j in chosen), tuple(gains), by)


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

    The interval treats the people a plan reaches as one audience (intervals.py): its
    followers scored each loyal with probability 1 - prod (1 - p), a uniform sample of the
    people reached, and the model's campaign dispersion (tau^2) applied to the plan as a
    whole, not shrunk for its number of campaigns: the model's errors are shared by the
    audiences of one brand at one date (on `small` it overrated mega audiences by 45 % and
    macro ones by 22 %), so many campaigns do not average them out. The spread of
    probabilities is shrunk toward the chosen tiers' spreads, weighted by followers scored.
    A single influencer's interval is its own in audience_scores."""
    chosen = list(choice.chosen)
    q = inst.miss(chosen)
    rows = [inst.follower[inst.rows(j)] for j in chosen]
    reached = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    u = 1 - q[reached]  # every follower reached, even those whose p is 0
    value = inst.value(chosen)
    n_scored = np.array([inst.scored(j) for j in chosen], float)
    people = float(inst.whole[chosen].sum() - inst.people * (n_scored.sum() - len(u)))
    acc = AudienceAccumulator()
    acc.add(u)
    prior = None
    if spread:
        known = [
            (spread[t], n) for t, n in zip(tiers[chosen], n_scored, strict=True) if t in spread
        ]
        if known:
            prior = float(np.average([s for s, _ in known], weights=[n for _, n in known]))
    lo = hi = 0.0
    if acc.n and acc.m1 > 0:
        size = max(round(people), acc.n)
        lo_c, hi_c = acc.full_interval(size, dispersion, prior)
        scale = value / (acc.rate * size)  # the plan's own scale (whole audiences, overlaps)
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
            "followers_scored": np.array([inst.scored(j) for j in choice.chosen], np.int64),
            "cost": cost.astype(float),
            "expected_loyal_alone": inst.alone[list(choice.chosen)],
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

    `influencers`: influencer_id and price_per_post of every influencer of the data; `named`:
    the candidates (influencer_id, and optionally cost); None: every influencer. A cost given
    wins over `price_per_post`; candidates with neither are skipped and counted."""
    prices = influencers.set_index("influencer_id")["price_per_post"].astype("float64")
    if named is None:
        ids = pd.Index(sorted(prices.index))
        cost = prices.reindex(ids)
        source_file = pd.Series(False, index=ids)
    else:
        ids = pd.Index(named["influencer_id"].astype(str))
        if ids.empty:
            raise RequestError("candidates: no influencer named")
        if ids.has_duplicates:
            raise RequestError(
                f"candidates: influencer named twice, e.g. {ids[ids.duplicated()][0]}"
            )
        unknown = ids[~ids.isin(prices.index)]
        if len(unknown):
            raise RequestError(
                f"candidates: {len(unknown)} influencer(s) not in the data's influencers "
                f"table, e.g. {', '.join(map(str, unknown[:5]))}"
            )
        given = pd.Series(np.nan, index=ids)
        if "cost" in named:
            given = pd.to_numeric(named["cost"], errors="coerce").set_axis(ids).astype("float64")
            unreadable = named["cost"].notna().to_numpy() & given.isna().to_numpy()
            if unreadable.any():
                raise RequestError(
                    f"candidates: cost is not a number for {ids[unreadable][0]} "
                    f"({named['cost'][unreadable].iloc[0]!r})"
                )
        bad = given[given.notna() & ~(np.isfinite(given) & (given > 0))]
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


def true_value(inst: Instance, chosen: Sequence[int], truth: pd.DataFrame) -> float:
    """A plan's true unique loyal customers in the simulator, on the planner's scale: the
    counterfactual truth of the chosen influencers all running a campaign at the as-of date
    (`ground_truth_scoring` rows of the scenario: p_true, p_convert, p_repeat,
    other_purchases per follower and influencer) put through the planner's formula, each
    audience's true rate carried over to its whole audience and shared followers counted
    once at the people-sample weight."""
    from loyalty_model.simulation.truth import set_probabilities

    chosen = list(chosen)
    rows = truth[truth["influencer_id"].isin({str(inst.ids[j]) for j in chosen})]
    if rows.empty:
        return 0.0
    rate = rows.groupby("influencer_id")["p_true"].mean()
    alone = float(sum(rate.get(str(inst.ids[j]), 0.0) * inst.whole[j] for j in chosen))
    _, p = set_probabilities(
        rows["follower_id"].to_numpy(),
        rows["p_convert"].to_numpy(),
        rows["p_repeat"].to_numpy(),
        rows["other_purchases"].to_numpy(),
    )
    return alone - inst.people * float(rows["p_true"].sum() - p.sum())
