"""Benchmarks, reported as ratios against raw baselines measured in the same run.

    python benchmarks/bench.py [--presets small,medium] [--workdir DIR]

For each preset: simulate the world (seed 7), then measure
  1. feature engine: training features, events/s, against a raw DuckDB
     `GROUP BY follower_id, influencer_id` over the same events;
  2. scoring: `predict_proba` (feature frame -> probabilities) rows/s against raw
     `Booster.predict` on the same numpy matrix;
  3. the `loyalty-model predict` command end to end (subprocess): rows/s and peak memory
     (max RSS), with a model trained on `small` and registered in a temporary MLflow store.
Results print as a table and are written to WORKDIR/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "loyalty-model"


def run(cmd: list, env: dict) -> tuple[float, float, str]:
    """Run a CLI command; (seconds, peak RSS MiB of that child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    # each command in its own child so ru_maxrss of RUSAGE_CHILDREN is its own peak
    wrapper = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:]); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "file=sys.stderr); sys.exit(r.returncode)",
        *map(str, cmd),
    ]
    p = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    del before
    kb = int(next(ln.split()[1] for ln in p.stderr.splitlines() if ln.startswith("MAXRSS_KB")))
    return seconds, kb / 1024, p.stdout


def feature_and_model_bench(data: Path) -> dict:
    import numpy as np

    from loyalty_model import engines, features, io, spine
    from loyalty_model.config import load_config
    from loyalty_model.model import feature_spec, fit, to_matrix

    con = engines.duckdb_connection(threads=2)
    views = io.register_tables(con, data)
    tables = engines.ibis_tables(con, list(views))
    n_events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    t0 = time.perf_counter()
    con.execute(
        "CREATE TEMP TABLE raw_gb AS SELECT follower_id, influencer_id, count(*) AS n "
        "FROM events GROUP BY ALL"
    )
    raw_s = time.perf_counter() - t0
    cfg = load_config(None, [f"data.dir={data}"])
    end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
    sp = spine.training_spine(tables, cfg.label, end)
    t0 = time.perf_counter()
    frame = (
        features.build_features(sp.rows, tables, cfg.features, cfg.label).to_pyarrow().to_pandas()
    )
    feat_s = time.perf_counter() - t0
    names = features.feature_names(
        list(frame.columns), ["campaign_id", *features.SPINE_KEYS, "label"]
    )
    spec = feature_spec(
        frame,
        names,
        features.CATEGORICAL,
        version=features.FEATURE_VERSION,
        windows=cfg.features.windows,
        prior_strength=cfg.features.prior_strength,
        horizon_days=90,
        min_purchases=2,
        require_attribution=False,
    )
    cut = frame.cutoff_ts.sort_values().iloc[int(0.8 * len(frame))]
    model = fit(frame[frame.cutoff_ts < cut], frame[frame.cutoff_ts >= cut], spec, cfg.model)
    big = frame.sample(n=max(len(frame), 200_000), replace=True, random_state=0)
    t0 = time.perf_counter()
    model.predict_proba(big)
    ours_s = time.perf_counter() - t0
    x = to_matrix(big, spec).to_numpy()
    t0 = time.perf_counter()
    model.booster.predict(x)
    raw_pred_s = time.perf_counter() - t0
    return {
        "events": n_events,
        "training_rows": len(frame),
        "features": len(names),
        "features_seconds": round(feat_s, 2),
        "features_events_per_s": round(n_events / feat_s),
        "raw_groupby_events_per_s": round(n_events / raw_s),
        "features_vs_raw_groupby": round(raw_s / feat_s, 4),
        "trees": model.booster.num_trees(),
        "predict_rows": len(big),
        "predict_proba_rows_per_s": round(len(big) / ours_s),
        "raw_booster_rows_per_s": round(len(big) / raw_pred_s),
        "predict_proba_vs_raw_booster": round(raw_pred_s / ours_s, 3),
        "_np": np.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small", help="comma-separated presets to measure")
    ap.add_argument("--workdir", type=Path, default=None, help="where worlds and results go")
    ap.add_argument("--brand", default="b0004", help="brand scored by the predict command")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="loyalty-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    results: dict = {}
    worlds = {}
    for preset in ["small", *[p for p in args.presets.split(",") if p != "small"]]:
        data = work / preset
        if not (data / "events.parquet").exists():
            run([BIN, "simulate", "--preset", preset, "--seed", 7, "--out", data], env)
        worlds[preset] = data
    os.chdir(work)
    run([BIN, "train", "--data", worlds["small"]], env)
    for preset in args.presets.split(","):
        r = feature_and_model_bench(worlds[preset])
        secs, rss, _ = run(
            [
                BIN,
                "predict",
                "--data",
                worlds[preset],
                "--brand",
                args.brand,
                "--out",
                work / f"pred_{preset}",
            ],
            env,
        )
        rows = json.loads((work / f"pred_{preset}" / "manifest.json").read_text())["rows_written"][
            "follower_scores"
        ]
        r.update(
            {
                "predict_cli_rows": rows,
                "predict_cli_seconds": round(secs, 1),
                "predict_cli_rows_per_s": round(rows / secs),
                "predict_cli_peak_rss_mib": round(rss),
            }
        )
        r.pop("_np")
        results[preset] = r
    (work / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    keys = list(next(iter(results.values())))
    width = max(map(len, keys))
    print(f"{'':{width}}  " + "  ".join(f"{p:>14}" for p in results))
    for k in keys:
        print(f"{k:{width}}  " + "  ".join(f"{results[p][k]:>14,}" for p in results))
    print(f"\nresults: {work / 'bench.json'}")


if __name__ == "__main__":
    main()
