"""`loyalty-model`: thin typer commands. Parse, call the library, print."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loyalty_model import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Predict the brand-loyal customers an influencer's audience will produce.",
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_INVALID = 2
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config value: section.key=value (repeatable)."),
]


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"loyalty-model {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write the simulated data directory to.")],
    preset: Annotated[
        str, typer.Option(help="World size: tiny (tests), small (demo), medium, large.")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; same preset and seed, same bytes.")] = 7,
) -> None:
    """Simulate an influencer world: the five contract tables plus ground truth.

    Writes events, follows, influencers, brands, campaigns (parquet), ground_truth.parquet
    (true probability per campaign x follower row), ground_truth_campaigns.parquet,
    ground_truth_scoring.parquet and ground_truth_audiences.parquet (the truth of a few
    brand x as-of scoring scenarios) and simulation.json. The folder is replaced atomically.
    """
    from loyalty_model.simulation import PRESETS
    from loyalty_model.simulation.files import write_world

    if preset not in PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    with console.status(f"simulating {preset} (seed {seed})"):
        summary = write_world(preset, seed, out)
    _print_summary(summary, out)


def _print_summary(s, out: Path) -> None:
    t = Table(title=f"simulated world: {s.preset}, seed {s.seed}", show_header=False)
    rows = [
        ("events", f"{s.events:,}"),
        ("followers (bots)", f"{s.followers:,} ({s.bots:,})"),
        ("follows", f"{s.follows:,}"),
        ("people sampled (of every audience)", f"{s.sample_fraction:.2%}"),
        ("influencers / brands", f"{s.influencers} / {s.brands}"),
        ("campaigns (label window closed)", f"{s.campaigns} ({s.campaigns_closed})"),
        ("training rows", f"{s.training_rows:,}"),
        ("loyal rate per exposed follower", f"{s.loyal_rate:.2%}"),
        *((f"  true rate, {tier}", f"{rate:.2%}") for tier, rate in s.true_rate_by_tier.items()),
        (
            "oracle ROC-AUC, held-out campaigns",
            f"{s.oracle_auc_holdout:.3f} ({s.holdout_campaigns} campaigns)",
        ),
        ("seconds", f"{s.seconds:.1f}"),
        ("written to", str(out)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help="Data directory holding the five tables.")],
) -> None:
    """Check a data directory against the data contract (docs/data_contract.md).

    Prints every problem found (table, column, rows affected, up to 5 example values).
    Exit code 0 when clean, 2 when not.
    """
    from loyalty_model import engines, io

    if not data.is_dir():
        _fail(f"data directory not found: {data}")
    problems = io.validate_dir(engines.duckdb_connection(), data)
    if not problems:
        console.print(f"[green]ok[/]: {data} satisfies the data contract")
        return
    for p in problems:
        err.print(f"[red]✗[/] {p}", highlight=False, soft_wrap=True)
    err.print(f"{len(problems)} problem(s) in {data}", highlight=False)
    raise typer.Exit(EXIT_INVALID)


@app.command()
def train(
    config: Annotated[
        Path | None,
        typer.Option(
            help="Task config YAML (sections data, label, features, split, model, tracking, "
            "gate). Default: the built-in defaults, which configs/default.yaml spells out."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data directory; overrides data.dir in the config.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Build point-in-time features, fit LightGBM, track the run and register the model.

    The tracking store is MLFLOW_TRACKING_URI, else tracking.uri, else sqlite:///mlflow.db in
    the working directory. The new version gets alias `challenger` (and `champion` when there
    is none yet).
    """
    import logging

    from loyalty_model import tracking
    from loyalty_model import train as training
    from loyalty_model.config import ConfigError, load_config
    from loyalty_model.contract import ContractError
    from loyalty_model.spine import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(set_ or [])
    if data is not None:
        overrides.append(f"data.dir={data}")
    try:
        cfg = load_config(config, overrides)
        if not Path(cfg.data.dir).is_dir():
            _fail(f"data directory not found: {cfg.data.dir}")
        champion = tracking.load_champion(cfg.tracking)
        with console.status("building features, training, evaluating"):
            result = training.train(cfg, champion[0] if champion else None)
    except (ConfigError, ContractError, DataError, tracking.ModelError) as exc:
        _fail(str(exc))
    import json

    import yaml

    from loyalty_model import plots
    from loyalty_model.card import model_card, table_md

    ev = result.evaluation
    params = {
        **cfg.flat(),
        **{f"size.{k}": v for k, v in result.sizes.items()},
        "calibration": result.model.calibrator.method,
    }
    metrics = {**result.metrics, **result.sizes, **result.timings}
    baselines = ev.baselines
    artifacts = {
        "config.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "feature_spec.json": json.dumps(result.model.spec.to_dict(), indent=2),
        "feature_importance.csv": result.model.importance().to_csv(index=False),
        "calibration.json": json.dumps(result.model.calibrator.to_dict(), indent=2),
        "baselines.csv": baselines.to_csv(index=False),
        "baselines.md": table_md(baselines) + "\n",
        "audiences_test.csv": ev.audiences.to_csv(index=False),
        "model_card.md": model_card(cfg, result),
    }
    if result.truth is not None:
        artifacts["audiences_vs_truth.csv"] = result.truth.scenarios.to_csv(index=False)
        artifacts["audience_tiers_vs_truth.csv"] = result.truth.tiers.to_csv(index=False)
    figures = plots.all_figures(result.model, result.frames["test"], ev.test_scores)
    tags = {"champion_compared": champion[1] if champion else "none"}
    reg = tracking.log_training_run(
        cfg, result.model, params, metrics, artifacts, result.frames["train"], figures, tags
    )
    _print_training(result, reg, champion[1] if champion else None)


def _print_training(result, reg, champion_version: str | None) -> None:
    m = result.metrics
    t = Table(title="trained", show_header=True)
    t.add_column("metric")
    t.add_column("valid (out of fold)", justify="right")
    t.add_column("test", justify="right")
    for k in ("roc_auc", "pr_auc", "log_loss", "ece", "base_rate", "mean_p", "rows"):
        fmt = "{:,.0f}" if k == "rows" else "{:.4f}"
        t.add_row(k, fmt.format(m[f"valid_{k}"]), fmt.format(m[f"test_{k}"]))
    console.print(t)
    b = Table(title="test: model vs baselines", show_header=True)
    for col in ("scorer", "ROC-AUC", "PR-AUC", "lift top 1 %", "audience Spearman"):
        b.add_column(col, justify="left" if col == "scorer" else "right")
    for r in result.evaluation.baselines.itertuples():
        b.add_row(
            r.scorer,
            f"{r.roc_auc:.4f}",
            f"{r.pr_auc:.4f}",
            f"{r.lift_top1pct:.2f}",
            f"{r.audience_spearman_rate:.3f}",
        )
    console.print(b)
    lines = [
        f"calibration: {result.model.calibrator.method}, audience dispersion "
        f"{result.model.calibrator.audience_dispersion:.3f}; 90 % interval coverage "
        f"{m.get('test_audience_interval_coverage', float('nan')):.2f} over "
        f"{m.get('test_audience_campaigns', 0):.0f} test campaigns"
    ]
    if "test_roc_auc_vs_oracle" in m:
        lines.append(
            f"vs ground truth: ROC-AUC {m['test_roc_auc']:.4f} / oracle "
            f"{m['test_oracle_roc_auc']:.4f} = {m['test_roc_auc_vs_oracle']:.3f}"
        )
    if "truth_spearman_cost" in m:
        lines.append(
            f"audiences vs ground truth ({m['truth_scenarios']:.0f} scoring scenarios): Spearman "
            f"of cost per loyal customer {m['truth_spearman_cost']:.3f}, true top 20 in the "
            f"predicted top 20: {m['truth_top20_overlap_cost']:.1f}"
        )
    if champion_version:
        lines.append(
            f"champion v{champion_version} on the same test rows: PR-AUC "
            f"{m['champion_test_pr_auc']:.4f}, ROC-AUC {m['champion_test_roc_auc']:.4f} "
            "(loyalty-model promote decides)"
        )
    lines.append(
        f"run [bold]{reg.run_id}[/]  model [bold]{reg.name}[/] version [bold]{reg.version}[/]"
        f"  aliases: {', '.join(reg.aliases)}"
    )
    lines.append(
        f"features {result.timings['feature_seconds']:.1f}s "
        f"({result.timings['events_per_second_features']:,.0f} events/s), "
        f"fit {result.timings['fit_seconds']:.1f}s, best iteration {m['best_iteration']:.0f}"
    )
    for line in lines:
        console.print(line)


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Registered version to consider. Default: the challenger.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config YAML whose gate and tracking sections apply.")
    ] = None,
    set_: SetOption = None,
    force: Annotated[
        bool, typer.Option(help="Promote even if the gate says no (recorded on the run).")
    ] = False,
) -> None:
    """Decide whether a version replaces `champion`, by the gate section of the config.

    It must pass the absolute floors (calibration error, ROC-AUC) and beat the current champion
    on the gate metric, measured on the same test rows at training time. The decision and its
    reasons are printed and logged on the version's run. Exit code 0 when promoted, 3 when not.
    """
    from loyalty_model import gate, tracking
    from loyalty_model.config import ConfigError, load_config

    try:
        cfg = load_config(config, list(set_ or []))
        cand = tracking.candidate(cfg.tracking, version)
    except (ConfigError, tracking.ModelError) as exc:
        _fail(str(exc))
    if cand.champion_version == cand.version:
        console.print(f"version {cand.version} is already the champion")
        return
    champion_metrics = None
    if cand.champion_version is not None:
        compared = cand.tags.get("champion_compared")
        if compared != cand.champion_version and not force:
            _fail(
                f"version {cand.version} was compared with champion v{compared} at training "
                f"time, but the champion is now v{cand.champion_version}: retrain it, or use "
                "--force"
            )
        prefix = "champion_test_"
        champion_metrics = {
            "test_" + k[len(prefix) :]: v for k, v in cand.metrics.items() if k.startswith(prefix)
        }
    decision = gate.decide(cand.metrics, champion_metrics, cfg.gate)
    promoted = decision.promote or force
    summary = decision.summary() + ("; FORCED" if force and not decision.promote else "")
    tracking.record_promotion(cfg.tracking, cand, promoted, summary, force)
    console.print(summary, highlight=False)
    if promoted:
        console.print(
            f"[green]champion[/] is now {cfg.tracking.model_name} v{cand.version} "
            f"(was {cand.champion_version or 'none'})"
        )
        return
    console.print(f"champion stays v{cand.champion_version}")
    raise typer.Exit(3)


@app.command()
def predict(
    data: Annotated[Path, typer.Option(help="Data directory holding the five tables.")],
    brand: Annotated[str, typer.Option(help="Brand to score audiences for (a brands.brand_id).")],
    out: Annotated[Path, typer.Option(help="Output folder; replaced atomically when done.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Score as of this UTC date (YYYY-MM-DD; features use days before it). "
            "Default: the day after the last event."
        ),
    ] = None,
    influencers: Annotated[
        str | None,
        typer.Option(
            help="Influencers to score: ID,ID,... or @FILE (ids separated by commas or lines). "
            "Default: all."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION).")
    ] = "models:/audience-loyalty@champion",
    config: Annotated[
        Path | None,
        typer.Option(
            help="Config YAML whose tracking section (where the model registry is) and "
            "data.currency (the currency of prices) apply."
        ),
    ] = None,
    set_: SetOption = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Output file format: parquet or csv.")
    ] = "parquet",
    batch_rows: Annotated[
        int, typer.Option(help="Followers scored per batch; bounds Python memory.", min=1000)
    ] = 200_000,
    memory_limit: Annotated[
        str,
        typer.Option(
            help="DuckDB memory cap (e.g. 2GB); the engine spills to disk beyond it.",
        ),
    ] = "3GB",
) -> None:
    """Score every follower of each influencer for a brand and write the prediction files.

    Writes follower_scores (a probability per follower), audience_scores (per influencer, on
    the full audience its price buys: expected loyal customers with a 90 % interval, per 1,000
    followers, cost per expected loyal customer, a rank by cost and a rank by rate) and
    manifest.json. See docs/output_contract.md.
    """
    from loyalty_model import engines, io, tracking
    from loyalty_model import predict as scoring
    from loyalty_model.config import ConfigError, load_config
    from loyalty_model.contract import ContractError
    from loyalty_model.intervals import INTERVAL
    from loyalty_model.spine import scoring_spine

    if fmt not in ("parquet", "csv"):
        _fail(f"--format must be parquet or csv, got {fmt!r}")
    if not data.is_dir():
        _fail(f"data directory not found: {data}")
    try:
        cfg = load_config(config, list(set_ or []))
    except ConfigError as exc:
        _fail(str(exc))
    t0 = time.perf_counter()
    spill = tempfile.TemporaryDirectory(prefix="loyalty-spill-")
    try:
        con = engines.duckdb_connection(memory_limit=memory_limit, temp_dir=spill.name)
    except Exception as exc:  # duckdb rejects a malformed limit
        _fail(f"--memory-limit {memory_limit!r}: {str(exc).splitlines()[0]}")
    try:
        views = io.register_tables(con, data)
        req = _scoring_request(con, brand, as_of, influencers)
        loaded, ref = tracking.load_for_scoring(model, cfg.tracking)
        scoring.check_spec(loaded)
    except (ContractError, scoring.ModelError, tracking.ModelError, ValueError) as exc:
        _fail(str(exc))
    tables = engines.ibis_tables(con, list(views))
    ids, as_of_dt = req
    requested = None if influencers is None else ids
    n_rows = int(scoring_spine(tables, brand, as_of_dt, requested).count().execute())
    model_ref = scoring.ModelRef(**ref)
    batches = scoring.feature_batches(con, tables, brand, as_of_dt, requested, loaded, batch_rows)
    inf_frame = con.execute("SELECT * FROM influencers").df()
    with io.atomic_dir(out) as tmp, _progress(n_rows) as advance:
        writer = io.TableWriter(tmp / f"follower_scores.{fmt}", scoring.FOLLOWER_SCHEMA, fmt)
        written, audiences, t_pred = scoring.score(
            batches, loaded, model_ref, brand, as_of_dt, writer.write, advance
        )
        writer.close()
        cal = loaded.calibrator
        disp = cal.audience_dispersion
        aud = scoring.audience_scores(
            audiences, inf_frame, brand, as_of_dt, ids, disp, cal.audience_spread
        )
        io.write_frame(aud, tmp / f"audience_scores.{fmt}", fmt)
        manifest = {
            "output_schema_version": scoring.OUTPUT_SCHEMA_VERSION,
            "package_version": __version__,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": ref,
            "brand_id": brand,
            "as_of": as_of_dt.isoformat(),
            "influencers_requested": "all" if influencers is None else len(ids),
            "inputs": io.input_fingerprints(con, data),
            "rows_written": {"follower_scores": written, "audience_scores": len(aud)},
            "format": fmt,
            "currency": cfg.data.currency,
            "scale": "full_audience",
            "interval": INTERVAL,
            "audience_dispersion": disp,
            "audiences": scoring.audience_summary(aud),
        }
        io.write_json(manifest, tmp / "manifest.json")
    seconds = time.perf_counter() - t0
    _print_top(aud, cfg.data.currency, out, written, seconds, t_pred)
    from loyalty_model.evaluate import truth_of_request

    truth = truth_of_request(io.read_truth_audiences(data), brand, as_of_dt)
    if truth is not None:
        _print_against_truth(aud, truth)


def _scoring_request(con, brand: str, as_of: str | None, influencers: str | None):
    """Check the request against the data: (influencer ids, as-of datetime)."""
    from datetime import date as date_cls

    known = {r[0] for r in con.execute("SELECT brand_id FROM brands").fetchall()}
    if brand not in known:
        ex = ", ".join(repr(b) for b in sorted(known)[:5])
        raise ValueError(f"brands.brand_id: unknown brand {brand!r} (known e.g. {ex})")
    all_ids = [
        r[0] for r in con.execute("SELECT influencer_id FROM influencers ORDER BY 1").fetchall()
    ]
    if influencers is None:
        ids = all_ids
    else:
        text = influencers
        if influencers.startswith("@"):
            path = Path(influencers[1:])
            if not path.is_file():
                raise ValueError(f"influencer list file not found: {path}")
            text = path.read_text()
        ids = sorted({t.strip() for t in text.replace("\n", ",").split(",") if t.strip()})
        if not ids:
            raise ValueError("--influencers names no influencer")
        unknown = sorted(set(ids) - set(all_ids))
        if unknown:
            raise ValueError(
                f"influencers.influencer_id: {len(unknown)} unknown influencer(s), e.g. "
                + ", ".join(repr(u) for u in unknown[:5])
            )
    first, last = con.execute("SELECT min(event_ts), max(event_ts) FROM events").fetchall()[0]
    if last is None:
        raise ValueError("events: the table is empty; nothing to score from")
    if as_of is None:
        day = last.date() + timedelta(days=1)
    else:
        try:
            day = date_cls.fromisoformat(as_of)
        except ValueError:
            raise ValueError(f"--as-of must be a date YYYY-MM-DD, got {as_of!r}") from None
        if day <= first.date():
            raise ValueError(
                f"--as-of {day} is not after the first event ({first.date()}): no history to "
                "score from"
            )
    return ids, datetime(day.year, day.month, day.day, tzinfo=UTC)


@contextlib.contextmanager
def _progress(total: int):
    """A progress bar on a terminal; plain log lines otherwise."""
    from rich.progress import Progress

    if console.is_terminal:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("scoring followers", total=total)
            yield lambda n: bar.advance(task, n)
        return
    done = [0]

    def log_line(n: int) -> None:
        done[0] += n
        err.print(f"scored {done[0]:,} / {total:,} followers", highlight=False)

    yield log_line


def _print_top(aud, currency: str, out: Path, written: int, seconds: float, t_pred: float):
    from loyalty_model.scoring import THIN_SAMPLE

    brand = aud["brand_id"].iloc[0] if len(aud) else ""
    t = Table(
        title=f"top audiences for {brand} by cost per expected loyal customer "
        f"(whole audiences, {currency})"
    )
    columns = (
        "rank",
        "influencer",
        "tier",
        "followers",
        "scored",
        "per 1k",
        "expected loyal",
        "90 % interval",
        "price",
        "cost / loyal",
    )
    for col in columns:
        t.add_column(col, justify="left" if col in ("influencer", "tier") else "right")
    for r in aud.head(10).itertuples():
        t.add_row(
            _num(r.rank_cost, "{:.0f}"),
            r.influencer_id,
            str(r.tier),
            f"{r.follower_count:,}",
            f"{r.followers_scored:,}" + ("*" if r.followers_scored < THIN_SAMPLE else " "),
            _num(r.loyal_per_1k_followers, "{:.1f}"),
            _num(r.expected_loyal, "{:,.0f}"),
            _num(r.expected_loyal_low, "{:,.0f}") + _num(r.expected_loyal_high, "–{:,.0f}"),
            _num(r.price_per_post, "{:,.0f}"),
            _num(r.cost_per_expected_loyal, "{:,.2f}"),
        )
    Console(width=max(console.width, 120)).print(t)  # a log file is no reason to wrap it
    if (aud.head(10)["followers_scored"] < THIN_SAMPLE).any():
        console.print(
            f"* fewer than {THIN_SAMPLE} of the audience's followers in the data: the rate rests "
            "on a handful of people (the interval says how much)"
        )
    console.print(
        f"{written:,} followers scored in {seconds:.1f}s "
        f"(model {t_pred:.1f}s); files in [bold]{out}[/]: follower_scores, audience_scores, "
        "manifest.json"
    )


def _num(v, fmt: str) -> str:
    """A number for a table cell; '-' for a missing one."""
    from pandas import isna

    return "-" if isna(v) else fmt.format(v)


def _print_against_truth(aud, truth) -> None:
    """The simulator knows the truth of this (brand, as-of): say how the ranking compares."""
    from loyalty_model.evaluate import audiences_against_truth

    m = audiences_against_truth(aud, truth).metrics
    console.print(
        f"against the simulator's ground truth (of the followers in the data): Spearman "
        f"{m['spearman_cost']:.2f} between predicted and true cost per loyal customer "
        f"({m['priced_influencers']:.0f} priced influencers; price per follower alone: "
        f"{m['spearman_cost_per_follower']:.2f}); {m['top10_overlap_cost']:.0f} of the true top "
        f"10 and {m['top20_overlap_cost']:.0f} of the true top 20 are in the predicted ones",
        highlight=False,
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
