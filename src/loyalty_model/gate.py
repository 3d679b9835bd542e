"""The promotion gate: may a challenger replace the champion? Pure: metrics in, decision out."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty_model.config import GateConfig

LOWER_IS_BETTER = ("log_loss", "brier", "ece", "mae")


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reasons: tuple[str, ...]

    def summary(self) -> str:
        verdict = "PROMOTE" if self.promote else "KEEP CHAMPION"
        return f"{verdict}: " + "; ".join(self.reasons)


def _better(metric: str, challenger: float, champion: float) -> float:
    """Improvement of challenger over champion, positive = better."""
    if any(tag in metric for tag in LOWER_IS_BETTER):
        return champion - challenger
    return challenger - champion


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, gate: GateConfig
) -> Verdict:
    """Challenger metrics (test_*) against the champion's metrics on the same test rows.

    Passes when every absolute floor holds and, if there is a champion, the gate metric
    improves by more than `min_delta` (a tie does not replace the champion)."""
    reasons: list[str] = []
    ok = True
    ece = challenger.get("test_ece", float("nan"))
    if not ece <= gate.max_ece:
        ok = False
        reasons.append(f"test_ece {ece:.4f} above the floor {gate.max_ece}")
    else:
        reasons.append(f"test_ece {ece:.4f} <= {gate.max_ece}")
    auc = challenger.get("test_roc_auc", float("nan"))
    if not auc >= gate.min_roc_auc:
        ok = False
        reasons.append(f"test_roc_auc {auc:.4f} below the floor {gate.min_roc_auc}")
    else:
        reasons.append(f"test_roc_auc {auc:.4f} >= {gate.min_roc_auc}")
    m = gate.metric
    if m not in challenger:
        return Verdict(False, (*reasons, f"challenger has no metric {m!r}"))
    if champion is None:
        reasons.append("no champion yet")
        return Verdict(ok, tuple(reasons))
    if m not in champion:
        return Verdict(False, (*reasons, f"champion has no metric {m!r} on this test set"))
    delta = _better(m, challenger[m], champion[m])
    if delta > gate.min_delta:
        reasons.append(
            f"{m} {challenger[m]:.4f} vs champion {champion[m]:.4f}: better by {delta:.4f} "
            f"> {gate.min_delta}"
        )
    else:
        ok = False
        reasons.append(
            f"{m} {challenger[m]:.4f} vs champion {champion[m]:.4f}: "
            f"{'better' if delta > 0 else 'not better'} by {delta:.4f}, needs > {gate.min_delta}"
        )
    return Verdict(ok, tuple(reasons))


CHAMPION_PREFIX = "champion_test_"


def champion_metrics(candidate_metrics: dict[str, float]) -> dict[str, float]:
    """The champion's test metrics a candidate's run recorded on the same test rows
    (`champion_test_X` -> `test_X`), ready for `decide`."""
    n = len(CHAMPION_PREFIX)
    return {
        "test_" + k[n:]: v for k, v in candidate_metrics.items() if k.startswith(CHAMPION_PREFIX)
    }
