"""Where the feature build's time goes: each family built alone on materialised inputs.

    python benchmarks/feature_families.py DATA_DIR

For the training spine of DATA_DIR: wall and CPU seconds of a raw DuckDB `GROUP BY
follower_id, influencer_id` over the events (the baseline of `make bench`), of reducing the
events to daily rows (features.daily_events), of each feature family built on those daily
rows once they are a table, and of the whole build as one expression. The families' sum is
below the whole build's time by what sharing the inputs would save.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a data directory (loyalty-model simulate --out)")
    args = ap.parse_args()

    from loyalty_model import engines, io, spine
    from loyalty_model import features as f
    from loyalty_model.config import load_config

    cfg = load_config(None)
    con = engines.duckdb_connection(threads=2)
    views = io.register_tables(con, args.data)
    tables = engines.ibis_tables(con, list(views))
    backend = tables["events"]._find_backend()
    end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
    rows = spine.training_spine(tables, cfg.label, end).rows
    print("| stage | wall s | CPU s |\n|---|---:|---:|")

    def timed(name, fn):
        w, c = time.perf_counter(), _cpu()
        out = fn()
        print(f"| {name} | {time.perf_counter() - w:.2f} | {_cpu() - c:.2f} |", flush=True)
        return out

    def table(name, expr):  # materialised as a temporary table, read back as an Ibis table
        return backend.create_table(name, expr, temp=True)

    raw = "SELECT follower_id, influencer_id, count(*) AS n FROM events GROUP BY ALL"
    timed("raw group-by", lambda: con.execute(f"CREATE OR REPLACE TEMP TABLE raw_gb AS {raw}"))
    keys = timed("keys", lambda: table("b_keys", rows.select(*f.SPINE_KEYS).distinct()))
    daily = timed(
        "daily_events",
        lambda: table("b_daily", f.daily_events(tables["events"], keys.cutoff_ts.max())),
    )
    outcomes = timed("outcomes", lambda: table("b_out", f.campaign_outcomes(tables, cfg.label)))
    horizon, fc = cfg.label.horizon_days, cfg.features
    pdays = timed("purchase days", lambda: table("b_pdays", f.purchase_days(daily, horizon)))
    families = {
        "follower x influencer (fi_*)": lambda: f._follower_influencer(
            keys, daily, tables["follows"], fc
        ),
        "follower (f_*)": lambda: f._follower(keys, daily, pdays, fc, horizon),
        "follower x brand (fb_*)": lambda: f._follower_brand(keys, daily, tables, fc),
        "influencer (inf_*)": lambda: f._influencer(keys, tables, outcomes, fc),
        "brand (br_*)": lambda: f._brand(keys, daily, pdays, outcomes, fc, horizon),
        "labels (the spine)": lambda: rows,
    }
    for name, expr in families.items():
        timed(name, lambda expr=expr: expr().to_pyarrow())
    timed(
        "whole build, one expression",
        lambda: f.build_features(rows, tables, fc, cfg.label).to_pyarrow(),
    )


if __name__ == "__main__":
    main()
