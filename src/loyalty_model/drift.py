"""Feature drift: how far the rows being scored have moved from the rows the model learnt on.

At training, each watched feature of the model's input matrix (model.to_matrix: floats,
categoricals as codes) gets a reference histogram over the rows of the latest campaigns (the
test split: the training population nearest in time to a scoring date): up to ten
bins at its deciles (one bin per category for a categorical), plus one bin for missing values.
At scoring, the same bins are counted over every row scored and compared with the population
stability index, PSI = sum over bins of (a - e) * ln(a / e), a and e the scored and reference
shares (each at least 1e-4). Usual reading: below 0.1 stable, 0.1-0.25 a shift worth a look,
above 0.25 a large one. Only the follower's own features are watched (FOLLOWER_LEVEL): those of
the influencer and the brand are constant within an audience and a request, so they would
always look shifted. The figures say where to look, not that the model is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BINS = 10
FLOOR = 1e-4  # the share an empty bin is given, so that PSI stays finite
# features of the follower (f_*, fi_*, fb_*): those of the influencer (inf_*) and the brand
# (br_*) take one value per audience or brand, so a request about one brand and a few
# influencers differs from the training campaigns of many by construction, not by drift
FOLLOWER_LEVEL = ("f_", "fi_", "fb_")


def watched(names) -> list[str]:
    """The features drift is measured on (FOLLOWER_LEVEL)."""
    return [n for n in names if n.startswith(FOLLOWER_LEVEL)]


@dataclass(frozen=True)
class FeatureReference:
    """Per feature: the inner bin edges and the training share of each bin (the last bin:
    missing values)."""

    rows: int
    edges: dict[str, tuple[float, ...]]
    shares: dict[str, tuple[float, ...]]

    @classmethod
    def of(cls, matrix: pd.DataFrame, categorical: tuple[str, ...] = ()) -> FeatureReference:
        """The reference of a model input matrix (model.to_matrix of the training rows)."""
        edges = {}
        for name in matrix.columns:
            x = matrix[name].to_numpy(dtype="float64")
            seen = x[~np.isnan(x)]
            if name in categorical:  # codes 0..k-1: one bin each
                top = int(seen.max()) if len(seen) else 0
                edges[name] = tuple(float(c) + 0.5 for c in range(top))
            elif len(seen):
                qs = np.quantile(seen, np.linspace(0, 1, BINS + 1)[1:-1])
                edges[name] = tuple(float(e) for e in np.unique(qs))
            else:
                edges[name] = ()
        ref = cls(len(matrix), edges, {})
        counts = ref.counts(matrix)
        shares = {k: tuple(float(v) for v in c / max(len(matrix), 1)) for k, c in counts.items()}
        return cls(len(matrix), edges, shares)

    def counts(self, matrix: pd.DataFrame) -> dict[str, np.ndarray]:
        """Rows of `matrix` per bin of each feature (missing values in the last bin)."""
        out = {}
        for name, edges in self.edges.items():
            x = matrix[name].to_numpy(dtype="float64")
            missing = np.isnan(x)
            bins = np.searchsorted(np.asarray(edges, dtype="float64"), x[~missing], side="right")
            c = np.bincount(bins, minlength=len(edges) + 2).astype("int64")
            c[len(edges) + 1] = int(missing.sum())
            out[name] = c
        return out

    def psi(self, counts: dict[str, np.ndarray]) -> dict[str, float]:
        """PSI of each feature, from the scored rows' counts per bin."""
        out = {}
        for name, c in counts.items():
            total = c.sum()
            if not total:
                continue
            a = np.maximum(c / total, FLOOR)
            e = np.maximum(np.asarray(self.shares[name]), FLOOR)
            out[name] = float(np.sum((a - e) * np.log(a / e)))
        return out

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "edges": {k: list(v) for k, v in self.edges.items()},
            "shares": {k: list(v) for k, v in self.shares.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureReference:
        return cls(
            int(d["rows"]),
            {k: tuple(v) for k, v in d["edges"].items()},
            {k: tuple(v) for k, v in d["shares"].items()},
        )


@dataclass
class DriftCounter:
    """Counts per bin summed over the batches scored."""

    reference: FeatureReference
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0

    def add(self, matrix: pd.DataFrame) -> None:
        for name, c in self.reference.counts(matrix).items():
            self.counts[name] = self.counts.get(name, 0) + c
        self.rows += len(matrix)

    def summary(self, threshold: float) -> dict:
        """What the manifest records: PSI per feature, the features above `threshold`."""
        psi = self.reference.psi(self.counts) if self.rows else {}
        flagged = sorted((k for k, v in psi.items() if v > threshold), key=lambda k: -psi[k])
        return {
            "reference_rows": self.reference.rows,
            "rows_scored": self.rows,
            "threshold": threshold,
            "flagged": flagged,
            "psi": {k: round(v, 6) for k, v in sorted(psi.items())},
        }
