"""The figures a simulate run prints and records in simulation.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from loyalty_model.contract import TIERS
from loyalty_model.simulation.entities import World
from loyalty_model.simulation.params import DAY, LABEL_HORIZON_DAYS


@dataclass(frozen=True)
class SimulationSummary:
    preset: str
    seed: int
    events: int
    followers: int
    bots: int
    follows: int
    influencers: int
    sample_fraction: float  # every person is in the data with this probability
    brands: int
    campaigns: int
    campaigns_closed: int
    training_rows: int
    loyal_rate: float  # realised, per exposed follower, closed campaigns
    true_rate_by_tier: dict[str, float]
    oracle_auc_holdout: float
    holdout_campaigns: int
    seconds: float
    purchase_only: bool = False  # written in a retailer's shape (simulation.retail)

    def to_dict(self) -> dict:
        return asdict(self)


def holdout_cut(start: np.ndarray, holdout_share: float = 0.25) -> int | None:
    """The campaign start after which rows are held out (the latest `holdout_share` of the
    distinct start times of `start`); None when there are fewer than two: all are held out."""
    starts = np.unique(start)
    if len(starts) < 2:
        return None
    return int(starts[int(np.floor((1 - holdout_share) * (len(starts) - 1)))])


def summarise(
    preset: str, w: World, gt: pa.Table, n_events: int, seconds: float, holdout_share: float = 0.25
) -> SimulationSummary:
    """Rates, the tier contrast and the oracle ROC-AUC on the latest campaigns."""
    from sklearn.metrics import roc_auc_score

    closed = gt["window_closed"].to_numpy(zero_copy_only=False)
    start = gt["cutoff_ts"].cast(pa.int64()).to_numpy()[closed]
    p = gt["p_true"].to_numpy()[closed]
    y = gt["loyal"].to_numpy(zero_copy_only=False)[closed]
    tier = gt["tier"].to_numpy(zero_copy_only=False)[closed]
    camp = gt["campaign_id"].to_numpy(zero_copy_only=False)[closed]
    cut = holdout_cut(start, holdout_share)
    held = start > cut if cut is not None else np.ones(len(start), bool)
    auc = float(roc_auc_score(y[held], p[held])) if len(np.unique(y[held])) == 2 else float("nan")
    by_tier = {t: round(float(p[tier == t].mean()), 5) for t in TIERS if (tier == t).any()}
    return SimulationSummary(
        preset=preset,
        seed=w.seed,
        events=n_events,
        followers=len(w.fol_bot),
        bots=int(w.fol_bot.sum()),
        follows=len(w.fw_inf),
        influencers=len(w.inf_tier),
        sample_fraction=w.preset.sample_fraction,
        brands=len(w.br_niche),
        campaigns=len(w.ca_inf),
        campaigns_closed=int((w.ca_start + LABEL_HORIZON_DAYS * DAY <= w.end).sum()),
        training_rows=int(closed.sum()),
        loyal_rate=round(float(y.mean()), 5) if len(y) else float("nan"),
        true_rate_by_tier=by_tier,
        oracle_auc_holdout=round(auc, 4),
        holdout_campaigns=len(np.unique(camp[held])),
        seconds=round(seconds, 1),
    )
