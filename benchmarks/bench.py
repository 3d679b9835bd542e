"""Benchmarks, each reported as a ratio to a raw baseline measured in the same run.

    python benchmarks/bench.py [--presets small,medium] [--engines duckdb,spark] [--workdir bench]

Simulates each preset (seed 7) into WORKDIR/worlds unless already there, trains one model on
`small` (registered in WORKDIR/mlflow.db), then measures every stage in a child process of its
own, so that the peak RSS reported is that stage's alone (its whole process tree, Spark's JVM
and workers included, sampled every 0.2 s):

  features       the training feature build (labels included), run to the end without
                 keeping rows, against a raw `GROUP BY follower_id, influencer_id` over the
                 same events on the same engine (on Spark after a first job warmed the JVM)
  predict_proba  the packaged model (feature frame -> calibrated probabilities) against raw
                 LightGBM `Booster.predict`, on the rows `predict` scores
  predict        `loyalty_model.predict` for one brand, every influencer, end to end in a fresh
                 process (interpreter start, imports, validation, features, model, intervals,
                 writing), rows/s against raw `Booster.predict`; its stages follow as
                 `predict: STAGE` rows
  train          `loyalty_model.train` on `small`: seconds, and LightGBM's share of the wall
                 time after the feature build (its three fits over everything after the
                 features: evaluation, truth check, plots, logging, registration)

Prints one markdown table (stage, engine, preset, rows, seconds, rows/s, ratio, peak RSS) and
writes WORKDIR/results.json (after every stage). Timings on a shared machine are noisy:
compare ratios, rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


# -- stages, each run in a child process ----------------------------------------------------


def _tables(engine: str, data: Path, stack):
    """(config, DuckDB connection, Ibis tables on `engine`, a function that runs an Ibis
    expression to the end without keeping its rows, raw group-by seconds, events)."""
    from loyalty_model import compat, engines, io
    from loyalty_model.config import load_config

    cfg = load_config(None, [f"data.dir={data}"])
    con = stack.enter_context(engines.duckdb_session(cfg.duckdb))
    views = io.register_tables(con, data)
    n_events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    if engine == "duckdb":
        import ibis

        tables = engines.ibis_tables(con, list(views))
        backend = ibis.duckdb.from_connection(con)

        def run(expr) -> None:
            con.execute(f"CREATE OR REPLACE TEMP TABLE bench_out AS {backend.compile(expr)}")

        t0 = time.perf_counter()
        con.execute(
            "CREATE TEMP TABLE raw_gb AS SELECT follower_id, influencer_id, count(*) AS n "
            "FROM events GROUP BY ALL"
        )
        return cfg, con, tables, run, time.perf_counter() - t0, n_events
    from loyalty_model import spark

    session = stack.enter_context(engines.spark_session(cfg.spark))
    tables = spark.spark_tables(session, data)

    def run(expr) -> None:  # Spark's no-op sink: computes every row, keeps none
        compat.spark_dataframe(session, expr).write.format("noop").mode("overwrite").save()

    ev = tables["events"]
    raw = ev.group_by(["follower_id", "influencer_id"]).aggregate(n=ev.count())
    run(raw)  # a first job on a cold JVM pays for its start: not part of the baseline
    t0 = time.perf_counter()
    run(raw)
    return cfg, con, tables, run, time.perf_counter() - t0, n_events


def stage_features(data: Path, engine: str) -> list[dict]:
    """The training features (labels included), run to the end on `engine`."""
    import contextlib

    from loyalty_model import features, spine

    with contextlib.ExitStack() as stack:
        cfg, con, tables, run, raw_s, n_events = _tables(engine, data, stack)
        end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
        rows = spine.training_spine(tables, cfg.label, end).rows
        t0 = time.perf_counter()
        run(features.build_features(rows, tables, cfg.features, cfg.label))
        # and the BG/NBD parameters of each brand and cutoff day (their populations on the
        # engine, the fits here); adding the two columns to the frame is a numpy step
        pairs = rows.select("brand_id", "cutoff_ts").distinct().to_pandas()
        features.bg_nbd_fits(pairs, tables["events"], cfg.label.horizon_days)
        feat_s = time.perf_counter() - t0
    return [
        _row("raw group-by", engine, n_events, raw_s, None),
        _row("features", engine, n_events, feat_s, raw_s / feat_s),
    ]


def stage_predict_proba(data: Path, model_uri: str, brand: str) -> list[dict]:
    """The packaged model and raw Booster.predict on the rows `predict` scores: every follower
    of every influencer, for `brand`, as of the day after the last event."""
    import contextlib
    from datetime import timedelta

    from loyalty_model import features, spine, tracking
    from loyalty_model.config import load_config
    from loyalty_model.model import to_matrix
    from loyalty_model.scoring import check_spec

    model, _ = tracking.load_for_scoring(model_uri, load_config(None).tracking)
    fcfg, lcfg = check_spec(model)
    with contextlib.ExitStack() as stack:
        _, con, tables, *_ = _tables("duckdb", data, stack)
        end = con.execute("SELECT max(event_ts) FROM events").fetchall()[0][0]
        as_of = (end + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        rows = spine.scoring_spine(tables, brand, as_of)
        frame = features.collect_features(rows, tables, fcfg, lcfg)
    t0 = time.perf_counter()
    model.predict_proba(frame)
    ours = time.perf_counter() - t0
    x = to_matrix(frame, model.spec).to_numpy()
    t0 = time.perf_counter()
    model.booster.predict(x)
    raw = time.perf_counter() - t0
    return [
        _row("raw Booster.predict", "-", len(frame), raw, None),
        _row("predict_proba", "-", len(frame), ours, raw / ours),
    ]


def stage_predict(data: Path, engine: str, model_uri: str, brand: str, out: Path) -> list[dict]:
    import loyalty_model as lm

    r = lm.predict(data, brand, out, model=model_uri, engine=engine)
    n = r.rows["follower_scores"]
    rows = [_row("predict", engine, n, r.seconds, None)]
    for name, secs in r.stage_seconds.items():
        rows.append(_row(f"predict: {name}", engine, n, secs, None))
    return rows


def stage_train(data: Path, engine: str) -> list[dict]:
    """train end to end; LightGBM's share of its wall time after the feature build (its three
    fits over the whole rest: evaluation, truth check, plots, logging and registration)."""
    import loyalty_model as lm

    t0 = time.perf_counter()
    r = lm.train(None, data, engine=engine, cache=False)  # measure the build, not a hit
    secs = time.perf_counter() - t0
    m = r.metrics
    fits = m["early_stopping_fit_seconds"] + m["cross_fit_seconds"] + m["refit_seconds"]
    share = fits / (secs - m["feature_seconds"] - m.get("validation_seconds", 0.0))
    return [
        _row("train", engine, int(m["train_rows"] + m["valid_rows"]), secs, None, share=share),
        {"model_uri": r.model_uri},
    ]


def _row(stage, engine, rows, seconds, ratio, **extra) -> dict:
    return {
        "stage": stage,
        "engine": engine,
        "rows": int(rows),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
        "ratio": None if ratio is None else round(ratio, 4),
        **extra,
    }


# -- the driver -----------------------------------------------------------------------------


def _tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (from /proc): a Spark
    stage's JVM and Python workers included, which ru_maxrss misses (Spark does not wait for
    its JVM before the stage's process exits)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    pages, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                pages += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
        todo += children.get(pid, [])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: list[str], env: dict) -> tuple[list[dict], float]:
    """Run one stage in a fresh Python process: (its rows, the peak RSS of its process tree
    in MiB: sampled every 0.2 s, and never below the stage's own ru_maxrss)."""
    import threading

    p = subprocess.Popen(
        [sys.executable, str(HERE), "_stage", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, finished = [0.0], threading.Event()

    def sample() -> None:
        while not finished.wait(0.2):
            peak[0] = max(peak[0], _tree_rss_mib(p.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = p.communicate()
    finished.set()
    sampler.join()
    if p.returncode != 0:
        raise SystemExit(f"stage {args} failed:\n{err[-3000:]}")
    *_, last = out.strip().splitlines()
    payload = json.loads(last)
    return payload["rows"], round(max(peak[0], payload["peak_rss_mib"]))


def run_stage(argv: list[str]) -> None:
    import resource

    name, *rest = argv
    fn = {
        "features": lambda d, e: stage_features(Path(d), e),
        "predict_proba": lambda d, m, b: stage_predict_proba(Path(d), m, b),
        "predict": lambda d, e, m, b, o: stage_predict(Path(d), e, m, b, Path(o)),
        "train": lambda d, e: stage_train(Path(d), e),
    }[name]
    rows = fn(*rest)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rows": rows, "peak_rss_mib": round(max(own, kids) / 1024)}))


def simulate(preset: str, out: Path, env: dict) -> None:
    if (out / "simulation.json").exists():
        return
    bin_ = Path(sys.executable).parent / "loyalty-model"
    cmd = [str(bin_), "simulate", "--preset", preset, "--seed", "7", "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)


def table(rows: list[dict]) -> str:
    head = "| stage | engine | preset | rows | seconds | rows/s | ratio to raw | peak RSS MiB |"
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        if "share" in r:
            ratio = f"LightGBM share {r['share']:.2f}"
        rss = "" if r.get("peak_rss_mib") is None else f"{r['peak_rss_mib']:,}"
        rps = "" if r["rows_per_s"] is None else f"{r['rows_per_s']:,}"
        lines.append(
            f"| {r['stage']} | {r['engine']} | {r['preset']} | {r['rows']:,} | "
            f"{r['seconds']:,.2f} | {rps} | {ratio} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_stage":
        run_stage(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,medium", help="comma-separated presets")
    ap.add_argument("--engines", default="duckdb,spark", help="comma-separated engines")
    ap.add_argument("--workdir", type=Path, default=Path("bench"), help="worlds, store, results")
    ap.add_argument("--brand", default="b0004", help="brand scored by the predict stage")
    args = ap.parse_args()
    presets, engines = args.presets.split(","), args.engines.split(",")
    if "spark" in engines:
        from loyalty_model import engines as lm_engines
        from loyalty_model.config import load_config
        from loyalty_model.errors import LoyaltyModelError

        try:  # no pyspark, no Java: say so now, not after the DuckDB stages
            lm_engines.spark_preflight(load_config(None).spark)
        except LoyaltyModelError as exc:
            print(f"spark skipped: {str(exc).splitlines()[0]}", file=sys.stderr)
            engines.remove("spark")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": str(HERE.parent.parent / "src"),
    }
    worlds = {p: work / "worlds" / p for p in dict.fromkeys(["small", *presets])}
    for preset, path in worlds.items():
        print(f"world {preset}: {path}", file=sys.stderr)
        simulate(preset, path, env)
    results: list[dict] = []

    def record(args: list, preset: str) -> list[dict]:
        """Run a stage; its rows (with preset and peak RSS) join the results."""
        print(f"measuring {args[0]} on {preset} ...", file=sys.stderr, flush=True)
        rows, rss = child(args, env)
        rows = [{**r, "preset": preset, "peak_rss_mib": rss} for r in rows]
        results.extend(r for r in rows if "stage" in r)
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")  # so far
        return rows

    os.chdir(work)
    trained = record(["train", worlds["small"], "duckdb"], "small")
    model_uri = next(r["model_uri"] for r in trained if "model_uri" in r)
    for preset in presets:
        for engine in engines:
            record(["features", worlds[preset], engine], preset)
        rows = record(["predict_proba", worlds[preset], model_uri, args.brand], preset)
        raw_booster = next(r for r in rows if r["stage"] == "raw Booster.predict")["rows_per_s"]
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            for engine in engines:
                out = Path(tmp) / f"pred_{engine}"
                t0 = time.perf_counter()
                rows = record(
                    ["predict", worlds[preset], engine, model_uri, args.brand, out], preset
                )
                # end to end: the whole process, imports and interpreter start included
                whole, wall = rows[0], time.perf_counter() - t0
                whole.update(seconds=round(wall, 2), rows_per_s=round(whole["rows"] / wall))
                whole["ratio"] = round(whole["rows_per_s"] / raw_booster, 4)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
