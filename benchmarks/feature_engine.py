"""The feature build against its reference and a raw group-by, in one process, alternating.

    python benchmarks/feature_engine.py DATA_DIR [--rounds 2]

For the training spine of DATA_DIR: wall and CPU seconds of features.build_features and of
tests/reference_features.py (the range-join build before it was optimised), alternating so
that a busy machine slows both alike, and their ratio to a raw DuckDB
`GROUP BY follower_id, influencer_id` over the events. CPU seconds are steadier than wall
seconds on a shared machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w, _cpu() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a data directory (loyalty-model simulate --out)")
    ap.add_argument("--rounds", type=int, default=2, help="measurements of each build")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.reference_features import reference_features

    from loyalty_model import engines, features, io, spine
    from loyalty_model.config import load_config

    cfg = load_config(None)
    con = engines.duckdb_connection(threads=2)
    views = io.register_tables(con, args.data)
    tables = engines.ibis_tables(con, list(views))
    end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
    rows = spine.training_spine(tables, cfg.label, end).rows
    n_events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    raw = _measure(
        lambda: con.execute(
            "CREATE OR REPLACE TEMP TABLE raw_gb AS "
            "SELECT follower_id, influencer_id, count(*) AS n FROM events GROUP BY ALL"
        )
    )
    builds = {"build_features": features.build_features, "reference": reference_features}
    print(f"{n_events:,} events; raw group-by wall {raw[0]:.2f} s, CPU {raw[1]:.2f} s")
    print("| build | round | wall s | CPU s | ratio to raw (wall) | ratio to raw (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for name, fn in builds.items():
            w, c = _measure(lambda fn=fn: fn(rows, tables, cfg.features, cfg.label).to_pyarrow())
            print(f"| {name} | {r + 1} | {w:.2f} | {c:.2f} | {raw[0] / w:.4f} | {raw[1] / c:.4f} |")


if __name__ == "__main__":
    main()
