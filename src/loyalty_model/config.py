"""One typed config object, loaded once at the entry point and passed down.

Task config lives in `configs/*.yaml`; `--set section.key=value` overrides single values.
Unknown keys are rejected with a message that names them. Environment settings (such as
`MLFLOW_TRACKING_URI`) stay in the environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from loyalty_model.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dir: Path = Field(Path("demo_out/data"), description="data directory (the five tables)")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="engine that builds the features (train, predict) and scores the followers "
        "(predict): duckdb, in-process; or spark, with the spark section's settings (needs the "
        "[spark] extra and Java 17). Validation runs on DuckDB either way. `--engine` on train "
        "and predict overrides it",
    )
    sample_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of training followers kept, chosen by the MD5 of follower_id: the "
        "same followers on every engine and run",
    )
    max_training_rows: int | None = Field(
        2_000_000,
        ge=1,
        description="cap on training rows: above it, every campaign keeps the same share of its "
        "followers (at least one), the first by the MD5 of follower_id; the rows before the cap "
        "are recorded in the run (size.spine_rows_before_cap). null: no cap",
    )
    on_bad_rows: Literal["fail", "drop"] = Field(
        "fail",
        description="rows that break the data contract (docs/data_contract.md): fail, the run "
        "stops with a one-line error; drop, they are set aside with their reason (predict: "
        "OUT/quarantine/TABLE.parquet; train: the run's quarantine/ artifacts), counted per "
        "reason in the manifest or run, and the rest is used. Problems of a whole table (missing, "
        "a column missing or of the wrong type, empty) fail either way. `--on-bad-rows` overrides",
    )
    max_staleness_days: int | None = Field(
        None,
        ge=0,
        description="predict refuses an as-of that follows more than this many days without "
        "any event (scores would silently decay) unless --allow-stale; null: one label horizon",
    )
    currency: str = Field(
        "USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of the data's prices (price_per_post, campaigns.cost); "
        "stated in the prediction manifest",
    )


class LabelConfig(_Section):
    horizon_days: int = Field(90, ge=1, description="label window in days, starting at the cutoff")
    min_purchases: int = Field(
        2, ge=1, description="minimum purchases of the brand within the window for label 1 (loyal)"
    )
    require_attribution: bool = Field(
        False, description="the first purchase must carry the campaign's influencer_id"
    )


class FeatureConfig(_Section):
    windows: tuple[int, ...] = Field((7, 30, 90, 365), description="lookback windows in days")
    prior_strength: float = Field(
        200.0, ge=0, description="pseudo-followers shrinking an influencer's past loyal rate"
    )

    @model_validator(mode="after")
    def _windows_positive(self) -> FeatureConfig:
        if not self.windows or min(self.windows) < 1 or len(set(self.windows)) != len(self.windows):
            raise ValueError("features.windows must be distinct positive day counts")
        return self


class CacheConfig(_Section):
    enabled: bool = Field(
        True,
        description="train reuses the feature frame of an earlier run with the same inputs, "
        "feature and label settings (docs/training.md#feature-cache) instead of building it; "
        "false (or `train --no-cache`) neither reads nor writes the cache",
    )
    dir: Path = Field(
        Path(".loyalty-cache/features"),
        description="folder of the cached feature frames, one sub-folder per key; relative to "
        "the working directory, like the default tracking store. Delete it to clear the cache. "
        "Environment: LOYALTY_CACHE_DIR wins",
    )
    max_entries: int = Field(
        8,
        ge=1,
        description="entries kept; after a write, the least recently used beyond it are removed",
    )
    max_size: str = Field(
        "10GB",
        description="total size of the entries kept (e.g. 10GB, 500MB); after a write, the least "
        "recently used are removed until the rest fits (the entry just written stays)",
    )

    @field_validator("max_size")
    @classmethod
    def _a_size(cls, value: str) -> str:
        if not re.fullmatch(MEMORY_SIZE, value.strip()):
            raise ValueError(f"must be a size such as 10GB or 500MB, got {value!r}")
        return value.strip()


class SplitConfig(_Section):
    method: Literal["fraction", "date"] = Field(
        "fraction", description="split campaign start times by fractions or by dates"
    )
    valid_fraction: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="share of distinct campaign start times, just before test, that form "
        "validation (method=fraction)",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of the latest distinct campaign start times that form test "
        "(method=fraction); valid_fraction + test_fraction must be < 1",
    )
    valid_start: date | None = Field(None, description="first day of validation (method=date)")
    test_start: date | None = Field(None, description="first day of test (method=date)")

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        if self.method == "fraction" and self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("split.valid_fraction + split.test_fraction must be < 1")
        if self.method == "date":
            if self.valid_start is None or self.test_start is None:
                raise ValueError("split.method=date needs split.valid_start and split.test_start")
            if self.valid_start >= self.test_start:
                raise ValueError("split.valid_start must be before split.test_start")
        return self


class ModelConfig(_Section):
    learning_rate: float = Field(
        0.03, gt=0, description="LightGBM shrinkage per tree; smaller needs more trees"
    )
    num_leaves: int = Field(7, ge=2, description="maximum leaves per tree (tree complexity)")
    min_child_samples: int = Field(
        300, ge=1, description="minimum training rows in a leaf; guards rare positives"
    )
    n_estimators: int = Field(2000, ge=1, description="upper bound; early stopping decides")
    early_stopping_rounds: int = Field(
        100,
        ge=1,
        description="stop after this many trees without a better validation log loss",
    )
    calibration_folds: int = Field(
        5,
        ge=2,
        description="folds (by campaign wave) of the out-of-fold predictions on train+valid "
        "that fit the calibrator and the audience interval dispersion",
    )
    feature_fraction: float = Field(
        0.5, gt=0, le=1, description="share of features sampled for each tree (colsample_bytree)"
    )
    bagging_fraction: float = Field(
        0.8,
        gt=0,
        le=1,
        description="share of training rows sampled for each tree (subsample, every iteration)",
    )
    reg_lambda: float = Field(1.0, ge=0, description="L2 penalty on leaf values")
    extra_trees: bool = Field(
        True,
        description="random split thresholds (LightGBM extra_trees): campaign-level features "
        "are constant over thousands of rows, and exact thresholds fit single campaigns' luck",
    )
    seed: int = Field(
        42,
        description="random seed of LightGBM, the calibrator's folds and the baselines; a fixed "
        "seed makes training reproducible",
    )
    threads: int = Field(2, ge=1, description="threads for LightGBM and DuckDB during training")


class TrackingConfig(_Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI; MLFLOW_TRACKING_URI wins, else sqlite:///mlflow.db"
    )
    experiment: str = Field("loyalty-model", description="MLflow experiment that holds the runs")
    model_name: str = Field(
        "audience-loyalty",
        description="MLflow registered model name; versions carry the challenger/champion aliases",
    )
    timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="how long to keep retrying a tracking server that does not answer before "
        "failing with a one-line error (http/https stores)",
    )


MEMORY_SIZE = r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)"


class DuckDBConfig(_Section):
    memory_limit: str = Field(
        "4GB",
        description="DuckDB's memory cap (e.g. 4GB); beyond it, DuckDB spills to temp_directory. "
        "The default leaves most of a 24 GiB machine to pandas and LightGBM. Environment: "
        "LOYALTY_DUCKDB_MEMORY_LIMIT wins",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="DuckDB threads; null: one per core. Environment: LOYALTY_DUCKDB_THREADS wins",
    )
    temp_directory: Path | None = Field(
        None,
        description="where DuckDB spills beyond memory_limit; null: a fresh folder under the "
        "system temp, removed afterwards. Environment: LOYALTY_DUCKDB_TEMP_DIRECTORY wins",
    )
    temp_root: Path | None = Field(
        None,
        description="the folder under which each run makes its fresh spill folder "
        "(loyalty-spill-PID-*), and where a later run removes those of dead processes; null: "
        "the system temp folder. Environment: LOYALTY_DUCKDB_TEMP_ROOT wins",
    )

    @field_validator("memory_limit")
    @classmethod
    def _a_size(cls, value: str) -> str:
        if not re.fullmatch(MEMORY_SIZE, value.strip()):
            raise ValueError(f"must be a size such as 4GB or 512MB, got {value!r}")
        return value.strip()


# the master URLs Spark accepts (local, standalone, YARN, Kubernetes); anything else is a typo
SPARK_MASTER = (
    r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|spark://\S+|yarn|k8s://\S+"
)
JVM_SIZE = r"\d+[kmgt]?"


class SparkConfig(_Section):
    master: str = Field(
        "local[*]",
        description="where Spark runs: local[*] (in this process, a thread per core), local[N], "
        "or a cluster: spark://HOST:7077, yarn, k8s://https://HOST:443. The one setting that "
        "moves a job to a cluster. Environment: LOYALTY_SPARK_MASTER wins",
    )
    app_name: str = Field(
        "loyalty-model", min_length=1, description="application name in the Spark UI and logs"
    )
    driver_memory: str = Field(
        "4g",
        description="JVM heap of the driver (JVM sizes: 512m, 4g); in local mode the driver does "
        "all the work. Applies when this process starts Spark. Environment: "
        "LOYALTY_SPARK_DRIVER_MEMORY wins",
    )
    executor_memory: str = Field(
        "4g",
        description="JVM heap of each executor on a cluster (unused in local mode). Environment: "
        "LOYALTY_SPARK_EXECUTOR_MEMORY wins",
    )
    shuffle_partitions: int = Field(
        8,
        ge=1,
        description="partitions of every shuffle (spark.sql.shuffle.partitions): small for one "
        "machine and the tests; on a cluster about 2-3 per executor core. Environment: "
        "LOYALTY_SPARK_SHUFFLE_PARTITIONS wins",
    )
    conf: dict[str, str] = Field(
        {},
        description="further Spark settings, e.g. {spark.ui.enabled: 'false'}; they override "
        "the ones above, except spark.sql.session.timeZone, always UTC (the features count "
        "UTC days). spark.sql.* keys apply to every run, the others when this process "
        "starts Spark",
    )

    @field_validator("master")
    @classmethod
    def _a_master_url(cls, value: str) -> str:
        if not re.fullmatch(SPARK_MASTER, value.strip()):
            raise ValueError(
                f"must be local[*], local[N], spark://HOST:PORT, yarn or k8s://URL, got {value!r}"
            )
        return value.strip()

    @field_validator("conf", mode="before")
    @classmethod
    def _values_as_spark_reads_them(cls, value: Any) -> Any:
        """YAML reads `false` and `4` as a bool and an int; Spark wants the strings."""
        if not isinstance(value, dict):
            return value
        as_text = {True: "true", False: "false"}
        return {k: as_text[v] if isinstance(v, bool) else str(v) for k, v in value.items()}

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _a_jvm_size(cls, value: str) -> str:
        if not re.fullmatch(JVM_SIZE, value.strip().lower()):
            raise ValueError(f"must be a JVM size such as 4g or 512m, got {value!r}")
        return value.strip().lower()


class EvaluationConfig(_Section):
    truth_max_followers: int = Field(
        300_000,
        ge=0,
        description=(
            "simulated data only: followers scored per scenario of train's check against the "
            "ground truth; above it a reproducible sample of influencers (MD5 order) is "
            "scored, the whole audience of each; 0 skips the check"
        ),
    )

    bootstrap_draws: int = Field(
        1000,
        ge=0,
        description="paired-bootstrap draws of the test campaign waves behind the model's "
        "difference from each baseline (ROC-AUC, PR-AUC, audience Spearman) and its 90 % "
        "interval, logged as test_<metric>_minus_best_baseline[_low|_high] and in the model "
        "card; 0 skips them",
    )

    drift_psi_threshold: float = Field(
        0.25,
        gt=0,
        description="predict flags a feature (stderr and the manifest's drift.flagged) whose "
        "population stability index against the model's training rows is above this",
    )


class GateConfig(_Section):
    metric: str = Field(
        "test_pr_auc", description="test metric the challenger must improve over the champion"
    )
    min_delta: float = Field(
        0.0, ge=0, description="improvement required (in the metric's better direction)"
    )
    max_ece: float = Field(
        0.02, ge=0, description="absolute floor: highest test expected calibration error allowed"
    )
    min_roc_auc: float = Field(
        0.6, ge=0, le=1, description="absolute floor: lowest test ROC-AUC allowed"
    )


class Config(_Section):
    data: DataConfig = Field(
        DataConfig(), description="input tables: directory, engine, sample, currency"
    )
    label: LabelConfig = Field(LabelConfig(), description="what counts as a loyal follower")
    features: FeatureConfig = Field(FeatureConfig(), description="feature construction")
    cache: CacheConfig = Field(
        CacheConfig(),
        description="train's cache of feature frames: on or off, where, how much is kept",
    )
    split: SplitConfig = Field(
        SplitConfig(), description="train/valid/test split by campaign start time"
    )
    model: ModelConfig = Field(ModelConfig(), description="LightGBM classifier and calibration")
    tracking: TrackingConfig = Field(
        TrackingConfig(), description="MLflow experiment and model registry"
    )
    evaluation: EvaluationConfig = Field(
        EvaluationConfig(), description="evaluation after training"
    )
    duckdb: DuckDBConfig = Field(
        DuckDBConfig(), description="the embedded engine's memory, threads and spill folder"
    )
    spark: SparkConfig = Field(
        SparkConfig(),
        description="the scale-out engine (data.engine=spark): where Spark runs, its memory and "
        "shuffle partitions",
    )
    gate: GateConfig = Field(
        GateConfig(), description="promotion gate: when a challenger becomes champion"
    )

    def flat(self) -> dict[str, Any]:
        """section.key -> value, for logging as parameters."""
        out: dict[str, Any] = {}
        for section, values in self.model_dump(mode="json").items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error rather
    than "the last one wins" (which silently discards a setting)."""


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool) and key is not None:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"line {line}: a key must be a name, got {type(key).__name__}")
        if key in seen:
            lines = f"lines {seen[key] + 1} and {key_node.start_mark.line + 1}"
            raise ConfigError(f"key {key!r} given twice ({lines})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats
)


def _read_yaml(text: str, where: str) -> Any:
    """Parsed YAML, or one ConfigError line naming `where`, the line and what is wrong."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None


def _set_dotted(tree: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"--set expects section.key=value, got {dotted!r}")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {dotted!r}")
    section, name = parts
    tree.setdefault(section, {})
    if not isinstance(tree[section], dict):
        raise ConfigError(f"config section {section!r} is not a mapping")
    tree[section][name] = _read_yaml(raw, f"--set {key.strip()}")


def load_config(
    source: Config | str | Path | None = None, overrides: Sequence[str] | None = None
) -> Config:
    """A validated Config: from a YAML file (or a Config object; None: the built-in defaults),
    with `section.key=value` overrides applied on top."""
    tree: dict = {}
    path = None
    if isinstance(source, Config):
        tree = source.model_dump(mode="json")
    elif source is not None:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        tree = _read_yaml(text, str(path)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in overrides or []:
        _set_dotted(tree, item)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            what = _unknown_key(e["loc"]) if e["type"] == "extra_forbidden" else msg
            msgs.append(f"{where}: {what}" if where else what)
        prefix = f"{path}: " if path else ""
        raise ConfigError(f"{prefix}invalid config: {'; '.join(msgs)}") from None


def _unknown_key(loc: tuple) -> str:
    """'unknown key', with the closest known key of the same section when one is close."""
    import difflib

    known: list[str] = list(Config.model_fields)
    if len(loc) == 2 and loc[0] in Config.model_fields:
        known = list(Config.model_fields[loc[0]].annotation.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _type_words(t: Any) -> str:
    """A field's type as a reader says it: `one of "a", "b"`, `list of int`, `date or null`."""
    import types
    import typing

    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_words(a) for a in args)
    if origin is tuple:
        return f"list of {_type_words(args[0])}"
    if origin is dict:
        return f"mapping of {_type_words(args[0])} to {_type_words(args[1])}"
    return {Path: "path", date: "date (YYYY-MM-DD)"}.get(t, getattr(t, "__name__", str(t)))


def reference_markdown() -> str:
    """docs/configuration.md: every section and key with its type, default and description,
    from the models above (`make docs` writes it; a test keeps the file in step)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/loyalty_model/config.py` by `make docs`; do not edit by hand.",
        "Set keys in a YAML file (`--config`, e.g. `configs/default.yaml`) or one at a time with",
        "`--set section.key=value` (the value is read as YAML). Unknown keys are rejected.",
    ]
    for section, field in Config.model_fields.items():
        model = field.annotation
        lines += ["", f"## `{section}`: {field.description}", ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        defaults = model().model_dump(mode="json")
        for key, f in model.model_fields.items():
            kind = _type_words(f.annotation)
            default = json.dumps(defaults[key])
            text = (f.description or "").replace("|", "/")
            lines.append(f"| `{key}` | {kind} | `{default}` | {text} |")
    return "\n".join(lines) + "\n"
