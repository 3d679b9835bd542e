"""`loyalty-model`: thin typer commands. Parse options, call `loyalty_model.api`, print, and
map its errors to exit codes (0 ok, 2 bad input / request / config, 3 the gate said no)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from loyalty_model import __version__

if TYPE_CHECKING:
    import pandas as pd

    from loyalty_model.api import PredictionResult, Progress, TrainResult
    from loyalty_model.simulation import SimulationSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Predict the brand-loyal customers an influencer's audience will produce.",
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_INVALID = 2
EXIT_NOT_PROMOTED = 3
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config value: section.key=value (repeatable)."),
]
EngineOption = Annotated[
    Literal["duckdb", "spark"] | None,
    typer.Option(
        help="Engine that builds the features: duckdb (in-process) or spark (the config's spark "
        "section: spark.master, e.g. a cluster URL; LOYALTY_SPARK_MASTER wins). Default: the "
        "config's data.engine (duckdb).",
    ),
]

BadRowsOption = Annotated[
    Literal["fail", "drop"] | None,
    typer.Option(
        "--on-bad-rows",
        help="Rows that break the data contract: fail (one-line error, exit 2) or drop (set "
        "aside with their reason: predict writes OUT/quarantine/TABLE.parquet, train logs "
        "quarantine/ with the run; counted per reason). Problems of a whole table fail either "
        "way. Default: data.on_bad_rows of the config (train, predict), fail.",
    ),
]


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    from rich.markup import escape

    # escaped: a message's own brackets are text (pip install 'loyalty-model[spark]')
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """The library's errors as one line on stderr and their exit code; anything else is a bug
    and keeps its traceback."""
    from loyalty_model.errors import LoyaltyModelError

    try:
        yield
    except LoyaltyModelError as exc:
        _fail(str(exc), exc.exit_code)


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


@app.command("simulate")
def simulate_command(
    out: Annotated[Path, typer.Option(help="Folder to write the simulated data directory to.")],
    preset: Annotated[
        str, typer.Option(help="World size: tiny (tests), small (demo), medium, large.")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; same preset and seed, same bytes.")] = 7,
    purchase_only: Annotated[
        bool,
        typer.Option(
            "--purchase-only",
            help="Write the same world as a retailer's transaction log: purchase events only "
            "(no attribution), one channel 'retail' that every buyer follows from their first "
            "purchase, one campaign per wave of the world's campaigns (docs/simulator.md).",
        ),
    ] = False,
) -> None:
    """Simulate an influencer world: the five contract tables plus ground truth.

    Writes events, follows, influencers, brands, campaigns (parquet), ground_truth.parquet
    (true probability per campaign x follower row), ground_truth_campaigns.parquet,
    ground_truth_scoring.parquet and ground_truth_audiences.parquet (the truth of a few
    brand x as-of scoring scenarios; not with --purchase-only) and simulation.json. The folder
    is replaced atomically.
    """
    from loyalty_model import api

    shape = ", purchase-only" if purchase_only else ""
    with _errors(), console.status(f"simulating {preset} (seed {seed}{shape})"):
        summary = api.simulate(preset, seed, out, purchase_only=purchase_only)
    _print_summary(summary, out)


def _print_summary(s: SimulationSummary, out: Path) -> None:
    retail = getattr(s, "purchase_only", False)
    shape = ", purchase-only" if retail else ""
    t = Table(title=f"simulated world: {s.preset}, seed {s.seed}{shape}", show_header=False)
    rows = [
        ("events" + (" (purchases)" if retail else ""), f"{s.events:,}"),
        ("followers (bots)", f"{s.followers:,} ({s.bots:,})"),
        ("follows", f"{s.follows:,}"),
        *(() if retail else (("people sampled (of every audience)", f"{s.sample_fraction:.2%}"),)),
        ("influencers / brands", f"{s.influencers} / {s.brands}"),
        ("campaigns (label window closed)", f"{s.campaigns} ({s.campaigns_closed})"),
        ("training rows", f"{s.training_rows:,}"),
        ("loyal rate per " + ("customer" if retail else "exposed follower"), f"{s.loyal_rate:.2%}"),
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


@app.command("validate")
def validate_command(
    data: Annotated[Path, typer.Option(help="Data directory holding the five tables.")],
    on_bad_rows: BadRowsOption = None,
) -> None:
    """Check a data directory against the data contract (docs/data_contract.md).

    Prints every problem found (table, column, rows affected, up to 5 example values).
    Exit code 0 when clean, 2 when not. With --on-bad-rows drop it answers what train and
    predict would do: the problems of whole tables that would still stop them, or else the
    rows they would drop, per reason (exit 0).
    """
    from rich.markup import escape

    from loyalty_model import api

    with _errors():
        problems = api.validate(data, on_bad_rows=on_bad_rows)
    if not problems:
        console.print(f"[green]ok[/]: {data} satisfies the data contract")
        return
    fatal = problems if on_bad_rows != "drop" else [p for p in problems if not p.droppable]
    for p in problems:
        mark = "[red]✗[/]" if p in fatal else "[yellow]would drop:[/]"
        err.print(f"{mark} {escape(str(p))}", highlight=False, soft_wrap=True)
    if not fatal:
        console.print(
            f"[green]ok[/]: {data} satisfies the data contract once those rows are dropped"
        )
        return
    err.print(f"{len(fatal)} problem(s) in {data}", highlight=False)
    raise typer.Exit(EXIT_INVALID)


@app.command("train")
def train_command(
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
    engine: EngineOption = None,
    on_bad_rows: BadRowsOption = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Build the features without reading or writing the feature cache "
            "(cache.enabled=false); by default a frame built before from the same tables, "
            "feature and label settings is reused.",
        ),
    ] = False,
) -> None:
    """Build point-in-time features, fit LightGBM, track the run and register the model.

    The tracking store is MLFLOW_TRACKING_URI, else tracking.uri, else sqlite:///mlflow.db in
    the working directory. The new version gets alias `challenger` (and `champion` when there
    is none yet). With --engine spark the features are built on Spark and collected for
    LightGBM, which trains on this machine; the engine is recorded on the run.
    """
    import logging

    from loyalty_model import api

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with _errors(), _stages() as stage:
        result = api.train(
            config, data, set_ or (), stage, engine, on_bad_rows, cache=False if no_cache else None
        )
    read = result.outcome.read
    for warning in read.warnings if read else ():
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    _print_dropped(read.dropped if read else {}, "logged with the run under quarantine/")
    _print_training(result)
    if result.outcome.feature_cache is not None:
        console.print(result.outcome.feature_cache.summary(), highlight=False)


def _print_dropped(dropped: dict[str, dict[str, int]], where: str) -> None:
    """Rows set aside by --on-bad-rows drop, per table and reason (stderr)."""
    for reasons in dropped.values():
        for reason, n in reasons.items():
            err.print(f"[yellow]dropped:[/] {n:,} row(s): {reason} ({where})", highlight=False)


@contextlib.contextmanager
def _stages() -> Iterator[Callable[[str], None]]:
    """Each stage of a long run with its elapsed time: a live status line on a terminal, one
    line per stage on stderr otherwise (a batch log shows where the time went)."""
    import time

    t0 = time.perf_counter()

    def line(what: str) -> str:
        return f"[{time.perf_counter() - t0:6.1f}s] {what}"

    if not console.is_terminal:
        yield lambda what: err.print(line(what), highlight=False)
        return
    with console.status("starting") as status:
        yield lambda what: status.update(line(what))


def _print_training(result: TrainResult) -> None:
    outcome = result.outcome
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
    for r in outcome.evaluation.baselines.itertuples():
        b.add_row(
            r.scorer,
            f"{r.roc_auc:.4f}",
            f"{r.pr_auc:.4f}",
            f"{r.lift_top1pct:.2f}",
            f"{r.audience_spearman_rate:.3f}",
        )
    console.print(b)
    lines = [
        f"calibration: {outcome.model.calibrator.method}, audience dispersion "
        f"{outcome.model.calibrator.audience_dispersion:.3f}; 90 % interval coverage "
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
    if result.champion_compared:
        lines.append(
            f"champion v{result.champion_compared} on the same test rows: PR-AUC "
            f"{m['champion_test_pr_auc']:.4f}, ROC-AUC {m['champion_test_roc_auc']:.4f} "
            "(loyalty-model promote decides)"
        )
    lines.append(
        f"run [bold]{result.run_id}[/]  model [bold]{result.model_name}[/] version "
        f"[bold]{result.model_version}[/]  aliases: {', '.join(result.aliases)}"
    )
    lines.append(
        f"features {m['feature_seconds']:.1f}s "
        f"({m['events_per_second_features']:,.0f} events/s), "
        f"fit {m['fit_seconds']:.1f}s, best iteration {m['best_iteration']:.0f}; "
        f"LightGBM {m['lightgbm_share_after_features']:.0%} of the time after the features"
    )
    for line in lines:
        console.print(line)


@app.command("promote")
def promote_command(
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
    from loyalty_model import api

    with _errors():
        decision = api.promote(config, version, force, set_ or ())
    if decision.already_champion:
        console.print(f"version {decision.version} is already the champion")
        return
    console.print(decision.summary, highlight=False)
    before = f"was v{decision.champion_before}" if decision.champion_before else "there was none"
    if decision.promoted:
        console.print(
            f"[green]champion[/] is now {decision.model_name} v{decision.version} ({before})"
        )
        return
    stays = f"v{decision.champion_before}" if decision.champion_before else "no champion"
    console.print(f"the gate says no: {stays} stays champion, v{decision.version} challenger")
    raise typer.Exit(EXIT_NOT_PROMOTED)


@app.command("tune")
def tune_command(
    config: Annotated[
        Path | None,
        typer.Option(
            help="Task config YAML to tune; every section but the model's searched settings is "
            "carried into the best config unchanged. Default: the built-in defaults."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data directory; overrides data.dir in the config.")
    ] = None,
    trials: Annotated[
        int,
        typer.Option(
            help="Trials to run at most (the first is the config's own settings), one at a time."
        ),
    ] = 30,
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Start no new trial after this many seconds of searching (from the first "
            "trial; the running one finishes). Default: no limit.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the TPE sampler; same data, config, seed and trials give the same "
            "trials. Default: the config's model.seed."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Where to write the best config (YAML, replaced atomically), for "
            "`loyalty-model train --config`."
        ),
    ] = Path("tuned.yaml"),
    set_: SetOption = None,
) -> None:
    """Search the LightGBM settings for the lowest out-of-fold log loss, with Optuna.

    Searches learning_rate, num_leaves, min_child_samples, feature_fraction, bagging_fraction,
    reg_lambda and extra_trees (TPE sampler). Each trial fits as train does (early stopping on
    the valid campaigns, then cross-fit folds by campaign wave over train and valid) and is
    scored by the out-of-fold log loss (PR-AUC beside it); the test campaigns are never used.
    Hopeless trials are pruned after a fold. The study is a run (tag run_kind=tune) in the
    config's experiment, each trial a nested run; it is not a training run and `runs` does not
    list it. Writes the input config with the best model settings to --out (docs/tuning.md).
    """
    import logging

    from loyalty_model import api

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with _errors(), _stages() as stage:

        def say(what: str) -> None:
            if console.is_terminal and what.startswith("trial "):
                console.print(what, highlight=False)  # kept above the live status line
            stage(what)

        result = api.tune(config, data, trials, timeout, seed, out, set_ or (), say)
    _print_tuning(result)


def _print_tuning(result) -> None:
    cfg = result.config
    t = Table(title=f"tuned: best of {result.trials_complete} complete trial(s)")
    t.add_column("setting")
    t.add_column("the config's", justify="right")
    t.add_column("best", justify="right")
    for name, value in result.best_params.items():
        t.add_row(name, _setting(result.config_params.get(name, "-")), _setting(value))
    first = "-" if result.config_value is None else f"{result.config_value:.5f}"
    t.add_row(result.metric, first, f"{result.best_value:.5f}", style="bold")
    console.print(t)
    best = (
        "trial 0, the config's own settings: no trial beat them"
        if result.best_trial == 0
        else f"trial {result.best_trial} (trial 0 is the config's own settings)"
    )
    console.print(
        f"best: {best}; {result.trials_complete} complete, {result.trials_pruned} pruned, "
        f"{result.trials_failed} failed in {result.seconds:.0f}s; run [bold]{result.run_id}[/] "
        f"(experiment {cfg.tracking.experiment})",
        highlight=False,
    )
    console.print(
        f"best config written to [bold]{result.out}[/]; train it with: loyalty-model train "
        f"--config {result.out}",
        highlight=False,
    )


def _setting(value) -> str:
    if isinstance(value, bool | str):
        return str(value).lower()
    if isinstance(value, float) and not float(value).is_integer():
        return f"{value:.4g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


@app.command("predict")
def predict_command(
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
        str | None,
        typer.Option(
            help="MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model). "
            "Default: models:/NAME@champion, NAME from the config's tracking.model_name."
        ),
    ] = None,
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
        int,
        typer.Option(
            help="Followers scored per batch; bounds Python memory (on Spark: the Arrow batch "
            "each executor's Python worker scores).",
            min=1000,
        ),
    ] = 200_000,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="DuckDB memory cap (e.g. 2GB); the engine spills to disk beyond it. Default: "
            "the config's duckdb.memory_limit (4GB), or LOYALTY_DUCKDB_MEMORY_LIMIT.",
        ),
    ] = None,
    engine: EngineOption = None,
    on_bad_rows: BadRowsOption = None,
    allow_stale: Annotated[
        bool,
        typer.Option(
            help="Score an as-of that follows more than data.max_staleness_days (default: "
            "one label horizon) whole days without any event; refused otherwise, as the "
            "features would read the silent days as inactivity.",
        ),
    ] = False,
    pseudonymize_followers: Annotated[
        str | None,
        typer.Option(
            metavar="ENV_VAR",
            help="Write follower ids as their HMAC-SHA256 under the secret key held by this "
            "environment variable (give its name, not the key): the same id and key, the same "
            "pseudonym in every run; the key is never written, logged or tracked.",
        ),
    ] = None,
) -> None:
    """Score every follower of each influencer for a brand and write the prediction files.

    Writes follower_scores (a probability per follower), audience_scores (per influencer, on
    the full audience its price buys: expected loyal customers with a 90 % interval, per 1,000
    followers, cost per expected loyal customer, a rank by cost and a rank by rate) and
    manifest.json. See docs/output_contract.md. With --engine spark the executors score
    the followers and write follower_scores as a folder of part files; the engine is
    recorded in the manifest.
    """
    from loyalty_model import api

    with _errors():
        ids = None if influencers is None else _influencer_ids(influencers)
        with _progress() as progress:
            result = api.predict(
                data,
                brand,
                out,
                as_of=as_of,
                influencers=ids,
                model=model,
                fmt=fmt,
                config=config,
                overrides=set_ or (),
                batch_rows=batch_rows,
                memory_limit=memory_limit,
                progress=progress,
                engine=engine,
                on_bad_rows=on_bad_rows,
                allow_stale=allow_stale,
                pseudonymize_followers=pseudonymize_followers,
            )
    for warning in result.manifest["data_warnings"]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    drift = result.manifest["drift"]
    if drift and drift["flagged"]:
        worst = ", ".join(f"{k} {drift['psi'][k]:.2f}" for k in drift["flagged"][:5])
        err.print(
            f"[yellow]drift:[/] {len(drift['flagged'])} feature(s) with PSI above "
            f"{drift['threshold']} against the latest training campaigns, e.g. {worst} "
            "(manifest: drift)",
            highlight=False,
        )
    _print_dropped(result.manifest["quarantined"], f"in {result.out / 'quarantine'}")
    currency = str(result.manifest["currency"])
    _print_top(result.audiences, currency)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    console.print(
        f"{result.rows['follower_scores']:,} followers scored in {result.seconds:.1f}s "
        f"({stages}); files in [bold]{result.out}[/]: {', '.join(result.files)}"
    )
    if result.truth is not None:
        _print_against_truth(result)


@app.command("plan")
def plan_command(
    data: Annotated[Path, typer.Option(help="Data directory holding the five tables.")],
    brand: Annotated[str, typer.Option(help="Brand to plan a campaign for (a brands.brand_id).")],
    budget: Annotated[
        float,
        typer.Option(help="Amount to spend, in the data's currency (data.currency), e.g. 50000."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: plan, plan_summary.json and the predictions planned from "
            "(predictions/); replaced atomically when done."
        ),
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Campaign start, a UTC date (YYYY-MM-DD); features use days before it. "
            "Default: the day after the last event."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model). "
            "Default: models:/NAME@champion."
        ),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Influencers to choose from: ID,ID,... or @FILE, a csv whose header names "
            "influencer_id and optionally cost (which wins over price_per_post), or ids on lines "
            "or between commas. Default: every influencer with a price."
        ),
    ] = None,
    max_influencers: Annotated[
        int | None,
        typer.Option(help="Book at most this many influencers (every plan compared).", min=1),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Config YAML (tracking section, data.currency, ...)."),
    ] = None,
    set_: SetOption = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Output file format: parquet or csv.")
    ] = "parquet",
    engine: EngineOption = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Plan from this prediction folder of the brand (what predict or an earlier plan "
            "wrote) instead of scoring again: another budget on the same scores. Takes its "
            "as-of and model."
        ),
    ] = None,
) -> None:
    """Choose the influencers to book within a budget for the most unique loyal customers.

    Followers of several chosen influencers count once. The best of greedy by marginal gain
    per cost, greedy by marginal gain (both with lazy evaluation, CELF) and the best single
    influencer: within (1 - 1/e)/2 of the best plan. Prints the plan against the best single
    influencer, the reach buyer's plan (largest audiences first) and the best
    macro/mega-only plan at the same budget, on the full-audience scale. See
    docs/output_contract.md#plans.
    """
    from loyalty_model import api

    with _errors():
        named = None if candidates is None else _candidates(candidates)
        result = api.plan(
            data,
            brand,
            budget,
            out,
            as_of=as_of,
            candidates=named,
            model=model,
            max_influencers=max_influencers,
            fmt=fmt,
            config=config,
            overrides=set_ or (),
            engine=engine,
            predictions=predictions,
        )
    _print_plans(result)


def _print_plans(result) -> None:
    s = result.summary
    currency = s["currency"]
    t = Table(
        title=f"plans for {s['brand_id']} with a budget of {s['budget']:,.0f} {currency} "
        f"(whole audiences; as of {str(s['as_of'])[:10]})"
    )
    truth = result.truth
    columns = ["plan", "influencers", "cost", "expected unique loyal", "90 % interval"]
    columns += ["cost / loyal"] + (["true unique loyal (simulator)"] if truth else [])
    for col in columns:
        t.add_column(col, justify="left" if col == "plan" else "right")
    for name, p in s["plans"].items():
        if p is None:
            t.add_row(name.replace("_", " "), "-", "-", "no plan fits the budget", "", "")
            continue
        lo, hi = p["interval"]
        t.add_row(
            p["label"],
            f"{len(p['influencers'])}",
            f"{p['cost']:,.0f}",
            f"{p['expected_unique_loyal']:,.0f}",
            f"{lo:,.0f}–{hi:,.0f}",
            _num(p["cost_per_expected_loyal"], "{:,.2f}"),
            *([_num(truth.get(name), "{:,.0f}")] if truth else []),
        )
    Console(width=max(console.width, 120)).print(t)
    c = s["candidates"]
    sample = s["sample"]
    console.print(
        f"shared followers counted once, each standing for {1 / sample['fraction']:,.0f} people "
        f"(sample fraction {sample['fraction']:.4g}, {sample['source']})",
        highlight=False,
    )
    console.print(
        f"{c['with_cost']:,} candidates with a cost ({c['skipped_without_cost']:,} skipped "
        f"without one, {c['over_budget']:,} over the budget alone); chosen by "
        f"{s['method']['chosen_by']} in {result.planning_seconds:.1f}s "
        f"({result.seconds:.1f}s in all); files in [bold]{result.out}[/]: plan, "
        f"plan_summary.json; predictions planned from: {result.files['predictions']}",
        highlight=False,
    )


@app.command("report")
def report_command(
    predictions: Annotated[
        Path, typer.Option(help="A prediction folder (what predict writes, or PLAN/predictions).")
    ],
    out: Annotated[Path, typer.Option(help="The HTML file to write (replaced atomically).")],
    plan: Annotated[
        Path | None, typer.Option(help="A plan folder (what plan writes): adds the comparison.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Config YAML whose tracking section says where the model card is."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Write one self-contained HTML report for product teams (opens offline).

    The audience leaderboard, loyal customers per 1,000 followers and cost per loyal customer
    by tier, the plan comparison (with --plan), why the top audiences score high, the model
    card (read from the tracking store, when it answers) and what the numbers mean. See
    docs/report.md.
    """
    from loyalty_model import api

    with _errors():
        result = api.write_report(predictions, out, plan=plan, config=config, overrides=set_ or ())
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"report written to [bold]{result.out}[/]", highlight=False)


@app.command("runs")
def runs_command(
    experiment: Annotated[
        str | None,
        typer.Option(help="MLflow experiment. Default: the config's tracking.experiment."),
    ] = None,
    top: Annotated[int, typer.Option(help="How many runs to list.", min=1)] = 10,
    sort: Annotated[
        str | None,
        typer.Option(
            metavar="METRIC",
            help="Rank by this logged metric (e.g. test_pr_auc, test_audience_spearman_rate, "
            "baseline_logistic_regression_test_roc_auc): highest first, but lowest first for "
            "loss-like metrics (names with loss, ece, brier, mae, rmse or seconds: "
            "test_log_loss, test_ece, fit_seconds). Runs without it are left out. Default: "
            "the most recent runs first.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Config YAML whose tracking section (store, experiment) applies."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """List recent training runs with their key test metrics: a leaderboard.

    For each run: when it started, its registered version and that version's current aliases
    (champion, challenger), the source commit (* with uncommitted changes), and test ROC-AUC,
    PR-AUC, ECE and audience Spearman, each with the best baseline's value on the same test
    rows in brackets where the run logged them. The tracking store is MLFLOW_TRACKING_URI,
    else tracking.uri, else sqlite:///mlflow.db. An unknown experiment or metric: exit 2.
    """
    from loyalty_model import api

    with _errors():
        result = api.runs(config, experiment, top, sort, set_ or ())
    _print_runs(result)


RUN_METRICS = {
    "test_roc_auc": "ROC-AUC",
    "test_pr_auc": "PR-AUC",
    "test_ece": "ECE",
    "test_audience_spearman_rate": "audience Spearman",
}


def _print_runs(result) -> None:
    from rich.markup import escape

    frame = result.runs
    if frame.empty:
        console.print(f"no training runs in experiment {escape(result.experiment)}")
        return
    n = "" if len(frame) == 1 else f"{len(frame)} "
    runs = "training run" if len(frame) == 1 else "training runs"
    if result.sort is None:
        title = f"the {n}most recent {runs} of {result.experiment}"
    else:
        way = "lowest" if result.ascending else "highest"
        title = f"the {n}best {runs} of {result.experiment} by {result.sort} ({way} first)"
    t = Table(
        title=escape(title),
        caption="in brackets: the best baseline on the same test rows; * after a commit: "
        "uncommitted changes",
    )
    for col in ("run", "started (UTC)", "version", "aliases", "commit"):
        t.add_column(col)
    shown = {**RUN_METRICS}
    if result.sort is not None and result.sort not in shown:
        shown[result.sort] = result.sort
    for key, label in shown.items():
        mark = (" ▲" if result.ascending else " ▼") if key == result.sort else ""
        t.add_column(escape(label) + mark, justify="right")
    for r in frame.to_dict("records"):
        run = r["run_id"][:8] + ("" if r["status"] == "FINISHED" else f" ({r['status'].lower()})")
        commit = r["git_commit"] or "-"
        if commit != "unknown" and commit != "-":
            commit = commit[:8] + ("*" if r["git_dirty"] else "")
        cells = []
        for key in shown:
            cell = _num(r[key], "{:.4f}")
            base = r.get(f"best_baseline_{key}")
            if base is not None and base == base:
                cell += f" ({base:.4f})"
            cells.append(cell)
        t.add_row(
            run,
            r["start_time"].strftime("%Y-%m-%d %H:%M"),
            r["model_version"] or "-",
            escape(r["aliases"]) or "-",
            commit,
            *cells,
        )
    Console(width=max(console.width, 160)).print(t)  # a log file is no reason to wrap it


def _candidates(option: str) -> pd.DataFrame:
    """--candidates ID,ID,... or @FILE: a csv whose header names influencer_id and optionally
    cost (names in any case, spaces ignored, a byte-order mark too), or ids separated by
    commas or lines, as for --influencers."""
    import io

    import pandas as pd

    from loyalty_model.errors import RequestError

    text, where = option, "candidates"
    if option.startswith("@"):
        path = Path(option[1:])
        where = f"candidates file {path}"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise RequestError(f"{where}: cannot read it ({exc})") from exc
    first = text.strip().splitlines()[0] if text.strip() else ""
    header = [h.strip().lower() for h in first.split(",")]
    if "influencer_id" not in header:
        return pd.DataFrame({"influencer_id": _split_ids(text)})
    unknown = sorted(set(header) - {"influencer_id", "cost"})
    if unknown:
        raise RequestError(
            f"{where}: unknown column(s) {', '.join(unknown)} (expected influencer_id and, "
            "optionally, cost)"
        )
    frame = pd.read_csv(io.StringIO(text.strip()), dtype=str, skipinitialspace=True)
    frame.columns = header
    frame["influencer_id"] = frame["influencer_id"].str.strip()
    return frame


def _split_ids(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def _influencer_ids(option: str) -> list[str]:
    """--influencers ID,ID,... or @FILE (ids separated by commas or lines)."""
    from loyalty_model.errors import RequestError

    text = option
    if option.startswith("@"):
        path = Path(option[1:])
        if not path.is_file():
            raise RequestError(f"influencer list file not found: {path}")
        text = path.read_text()
    return _split_ids(text)


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    """A progress bar on a terminal; plain log lines otherwise."""
    from rich.progress import Progress as Bar

    if not console.is_terminal:
        yield lambda done, total: err.print(
            f"scored {done:,} / {total:,} followers", highlight=False
        )
        return
    with Bar(console=console, transient=True) as bar:
        task = bar.add_task("scoring followers", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_top(aud: pd.DataFrame, currency: str) -> None:
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


def _num(v, fmt: str) -> str:
    """A number for a table cell; '-' for a missing one."""
    from pandas import isna

    return "-" if isna(v) else fmt.format(v)


def _print_against_truth(result: PredictionResult) -> None:
    """The simulator knows the truth of this (brand, as-of): say how the ranking compares."""
    m = result.truth
    console.print(
        f"against the simulator's ground truth (of the followers in the data): Spearman "
        f"{m['spearman_cost']:.2f} between predicted and true cost per loyal customer "
        f"({m['priced_influencers']:.0f} priced influencers; price per follower alone: "
        f"{m['spearman_cost_per_follower']:.2f}); {m['top10_overlap_cost']:.0f} of the true top "
        f"10 and {m['top20_overlap_cost']:.0f} of the true top 20 are in the predicted ones",
        highlight=False,
    )


def main() -> None:
    from loyalty_model.io import exit_on_signals

    try:
        # SIGTERM/SIGINT: temporary folders removed, the previous output kept, exit 128 + signal
        with exit_on_signals():
            app()
    except KeyboardInterrupt:  # pragma: no cover - raised by a library, not by SIGINT
        sys.exit(130)
