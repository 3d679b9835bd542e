"""`loyalty-model`: thin typer commands. Parse, call the library, print."""

from __future__ import annotations

import sys
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
    (true probability per campaign x follower row), ground_truth_campaigns.parquet and
    simulation.json. The folder is replaced atomically.
    """
    from loyalty_model import io
    from loyalty_model import simulate as sim

    if preset not in sim.PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {', '.join(sim.PRESETS)}")
    t0 = sim.now()
    with console.status(f"simulating {preset} (seed {seed})"):
        world, outcomes, tables = sim.simulate(preset, seed)
        with io.atomic_dir(out) as tmp:
            chunks = [*sim.engagement_chunks(world), outcomes.purchases]
            n_events = io.write_parquet_chunks(
                (c for c in chunks), tmp / "events.parquet", sim.EVENT_SCHEMA
            )
            for name, table in tables.items():
                io.write_parquet(table, tmp / f"{name}.parquet")
            io.write_parquet(outcomes.ground_truth, tmp / "ground_truth.parquet")
            io.write_parquet(outcomes.campaigns, tmp / "ground_truth_campaigns.parquet")
            summary = sim.summarise(preset, world, outcomes.ground_truth, n_events, 0.0)
            meta = summary.to_dict()
            meta.pop("seconds")
            meta["label"] = {
                "horizon_days": sim.LABEL_HORIZON_DAYS,
                "min_purchases": sim.LABEL_MIN_PURCHASES,
                "require_attribution": False,
            }
            meta["world_start"] = str(sim.WORLD_START)
            meta["preset_config"] = sim.asdict(sim.PRESETS[preset])
            io.write_json(meta, tmp / "simulation.json")
    _print_summary(summary, sim.now() - t0, out)


def _print_summary(s, seconds: float, out: Path) -> None:
    t = Table(title=f"simulated world: {s.preset}, seed {s.seed}", show_header=False)
    rows = [
        ("events", f"{s.events:,}"),
        ("followers (bots)", f"{s.followers:,} ({s.bots:,})"),
        ("follows", f"{s.follows:,}"),
        ("influencers / brands", f"{s.influencers} / {s.brands}"),
        ("campaigns (label window closed)", f"{s.campaigns} ({s.campaigns_closed})"),
        ("training rows", f"{s.training_rows:,}"),
        ("loyal rate per exposed follower", f"{s.loyal_rate:.2%}"),
        *((f"  true rate, {tier}", f"{rate:.2%}") for tier, rate in s.true_rate_by_tier.items()),
        (
            "oracle ROC-AUC, held-out campaigns",
            f"{s.oracle_auc_holdout:.3f} ({s.holdout_campaigns} campaigns)",
        ),
        ("seconds", f"{seconds:.1f}"),
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
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config value: section.key=value (repeatable)."),
    ] = None,
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
    from loyalty_model.spine import SplitError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(set_ or [])
    if data is not None:
        overrides.append(f"data.dir={data}")
    try:
        cfg = load_config(config, overrides)
        if not Path(cfg.data.dir).is_dir():
            _fail(f"data directory not found: {cfg.data.dir}")
        with console.status("building features and training"):
            result = training.train(cfg)
    except (ConfigError, ContractError, SplitError) as exc:
        _fail(str(exc))
    import yaml

    params = {**cfg.flat(), **{f"size.{k}": v for k, v in result.sizes.items()}}
    metrics = {**result.metrics, **result.sizes, **result.timings}
    artifacts = {
        "config.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "feature_spec.json": __import__("json").dumps(result.model.spec.to_dict(), indent=2),
        "feature_importance.csv": result.model.importance().to_csv(index=False),
    }
    reg = tracking.log_training_run(
        cfg, result.model, params, metrics, artifacts, result.frames["train"]
    )
    t = Table(title="trained", show_header=True)
    t.add_column("metric")
    t.add_column("valid", justify="right")
    t.add_column("test", justify="right")
    for m in ("roc_auc", "pr_auc", "log_loss", "base_rate", "mean_p", "rows"):
        fmt = "{:,.0f}" if m == "rows" else "{:.4f}"
        t.add_row(
            m, fmt.format(result.metrics[f"valid_{m}"]), fmt.format(result.metrics[f"test_{m}"])
        )
    console.print(t)
    console.print(
        f"run [bold]{reg.run_id}[/]  model [bold]{reg.name}[/] version [bold]{reg.version}[/]"
        f"  aliases: {', '.join(reg.aliases)}\n"
        f"features {result.timings['feature_seconds']:.1f}s "
        f"({result.timings['events_per_second_features']:,.0f} events/s), "
        f"fit {result.timings['fit_seconds']:.1f}s, "
        f"best iteration {result.metrics['best_iteration']:.0f}"
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
