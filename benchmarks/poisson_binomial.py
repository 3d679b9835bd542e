"""Our Poisson-binomial pmf (one dynamic-programming pass for every rate node) against
scipy.stats.poisson_binom (one call per node), on audiences of the sizes `predict` computes
exactly (up to intervals.EXACT_MAX followers): time and the largest difference.

    python benchmarks/poisson_binomial.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import poisson_binom

from loyalty_model.intervals import EXACT_MAX, poisson_binomial_pmf, rate_scales


def main() -> None:
    rng = np.random.default_rng(0)
    scales = rate_scales(0.2)  # the dispersion order of the demo model: 16 rate nodes
    for n in (50, 500, EXACT_MAX):
        p = rng.beta(1, 40, n)
        t0 = time.perf_counter()
        ours = poisson_binomial_pmf(p, scales)
        t1 = time.perf_counter()
        k = np.arange(len(ours))
        theirs = np.mean([poisson_binom.pmf(k, np.minimum(p * s, 1)) for s in scales], axis=0)
        t2 = time.perf_counter()
        print(
            f"{n:>5} followers, {len(scales)} nodes: ours {t1 - t0:6.3f} s, scipy {t2 - t1:6.3f} s "
            f"({(t2 - t1) / (t1 - t0):.0f}x), max |difference| {np.abs(ours - theirs).max():.1e}"
        )


if __name__ == "__main__":
    main()
