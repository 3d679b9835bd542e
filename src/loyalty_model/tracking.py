"""MLflow: the only module that imports mlflow.

Runs, metrics, artifacts, and the registry with aliases (MLflow 3: no stages). The logged
model is a pyfunc that returns probabilities of brand-loyal conversion, never class labels.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from loyalty_model.config import Config, TrackingConfig
from loyalty_model.errors import ModelError
from loyalty_model.model import BOOSTER_FILE, SPEC_FILE, LoyaltyModel

if TYPE_CHECKING:
    from loyalty_model.training import RunRecord

DEFAULT_URI = "sqlite:///mlflow.db"
CHALLENGER, CHAMPION = "challenger", "champion"


class _NoCloudPickleNotice(logging.Filter):
    """The pyfunc class is ours and ships in this package; the pickle notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


def _quiet() -> None:
    """MLflow's info chatter hides our own output; keep its warnings."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _NoCloudPickleNotice) for f in pyfunc_log.filters):
        pyfunc_log.addFilter(_NoCloudPickleNotice())
    warnings.filterwarnings("ignore", message=".*Integer columns.*", module="mlflow")


def tracking_uri(cfg: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI wins, then the config, else an embedded sqlite file in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or DEFAULT_URI


def _use(cfg: TrackingConfig) -> str:
    """Point MLflow at the store of `cfg` and return its URI.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into the environment (for
    subprocesses); left there, the first store a process used would win over every later
    config (a notebook training into one store could never score from another). The user's
    own environment is put back."""
    uri = tracking_uri(cfg)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return uri


class LoyaltyPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: a feature frame in, a `p_loyal` column of probabilities out."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model_dir"])
        self.model = LoyaltyModel.load(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"p_loyal": self.model.predict_proba(model_input)})


@dataclass(frozen=True)
class Registered:
    run_id: str
    name: str
    version: str
    aliases: tuple[str, ...]
    uri: str
    artifact_uri: str  # the run's artifact root


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("mlflow", "lightgbm", "pandas", "numpy", "scikit-learn", "loyalty-model")
    ]


def _experiment_id(name: str) -> str:
    """The experiment's id, created when new. Not `mlflow.set_experiment`, which would leave
    it active (and in MLFLOW_EXPERIMENT_ID) for whatever the process runs next."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def log_training_run(
    cfg: Config, model: LoyaltyModel, record: RunRecord, example: pd.DataFrame
) -> Registered:
    """One run: params, metrics, text artifacts, figures, the pyfunc model; register it and
    give it alias `challenger` (and `champion` when there is none yet)."""
    _quiet()
    _use(cfg.tracking)
    name = cfg.tracking.model_name
    run_in = _experiment_id(cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=run_in) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({k: str(v)[:500] for k, v in record.params.items()})
        mlflow.log_metrics(record.metrics)
        for filename, text in record.artifacts.items():
            mlflow.log_text(text, filename)
        for filename, fig in record.figures.items():
            mlflow.log_figure(fig, filename)
        mlflow.set_tags(record.tags)
        model_dir = Path(tmp) / "model"
        model.save(model_dir)
        x = example[list(model.spec.names)].copy()
        ints = [c for c in x.columns if pd.api.types.is_integer_dtype(x[c])]
        x[ints] = x[ints].astype("float64")  # counts may be missing at scoring time
        signature = infer_signature(x, pd.DataFrame({"p_loyal": model.predict_proba(x)}))
        info = mlflow.pyfunc.log_model(  # a python object: the class ships in this package
            name="model",
            python_model=LoyaltyPyfunc(),
            artifacts={"model_dir": str(model_dir)},
            signature=signature,
            input_example=x.head(5),
            pip_requirements=_pip_requirements(),
            registered_model_name=name,
            metadata={"feature_spec": model.spec.to_dict(), "files": [BOOSTER_FILE, SPEC_FILE]},
        )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(name, CHALLENGER, version)
        aliases = [CHALLENGER]
        try:
            client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            client.set_registered_model_alias(name, CHAMPION, version)
            aliases.append(CHAMPION)
        mlflow.set_tag("aliases_at_registration", ",".join(aliases))
        return Registered(
            run.info.run_id,
            name,
            version,
            tuple(aliases),
            f"models:/{name}/{version}",
            run.info.artifact_uri,
        )


def load_pyfunc(uri: str, cfg: TrackingConfig) -> mlflow.pyfunc.PyFuncModel:
    _use(cfg)
    return mlflow.pyfunc.load_model(uri)


@dataclass(frozen=True)
class ModelRef:
    """What identifies a loaded model (recorded in prediction files and manifests)."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None


def load_for_scoring(uri: str, cfg: TrackingConfig) -> tuple[LoyaltyModel, ModelRef]:
    """The packaged model behind a models:/ or runs:/ URI and what identifies it."""
    _quiet()
    _use(cfg)
    name = version = run_id = None
    try:
        if uri.startswith("models:/"):
            rest = uri[len("models:/") :]
            client = MlflowClient()
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, ver = rest.partition("/")
                mv = client.get_model_version(name, ver)
            version, run_id = str(mv.version), mv.run_id
        loaded = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {uri!r} from {tracking_uri(cfg)}: {first}") from exc
    inner = loaded.unwrap_python_model()
    if not isinstance(inner, LoyaltyPyfunc):
        raise ModelError(f"model {uri!r} is not a loyalty_model pyfunc")
    run_id = run_id or loaded.metadata.run_id
    return inner.model, ModelRef(uri, name, version, run_id)


@dataclass(frozen=True)
class Champion:
    model: LoyaltyModel
    version: str


def load_champion(cfg: TrackingConfig) -> Champion | None:
    """The current champion and its version, or None when there is none yet."""
    _quiet()
    _use(cfg)
    try:
        mv = MlflowClient().get_model_version_by_alias(cfg.model_name, CHAMPION)
    except MlflowException:
        return None
    model, _ = load_for_scoring(f"models:/{cfg.model_name}/{mv.version}", cfg)
    return Champion(model, str(mv.version))


@dataclass(frozen=True)
class Candidate:
    version: str
    run_id: str
    metrics: dict
    tags: dict
    champion_version: str | None


def candidate(cfg: TrackingConfig, version: str | None) -> Candidate:
    """A registered version (default: the challenger) with its run's metrics, and the
    current champion's version."""
    _quiet()
    _use(cfg)
    client = MlflowClient()
    name = cfg.model_name
    try:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, CHALLENGER)
        )
    except MlflowException as exc:
        what = f"version {version}" if version else f"alias {CHALLENGER}"
        raise ModelError(f"model {name!r} has no {what} in {tracking_uri(cfg)}") from exc
    run = client.get_run(mv.run_id)
    try:
        champ = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champ = None
    return Candidate(str(mv.version), mv.run_id, run.data.metrics, run.data.tags, champ)


def record_promotion(
    cfg: TrackingConfig, cand: Candidate, promoted: bool, summary: str, forced: bool
) -> None:
    """Log the gate's decision on the candidate's run; move `champion` when promoted."""
    _use(cfg)
    client = MlflowClient()
    client.set_tag(cand.run_id, "gate.decision", "promoted" if promoted else "rejected")
    client.set_tag(cand.run_id, "gate.reasons", summary[:5000])
    client.set_tag(cand.run_id, "gate.forced", str(forced).lower())
    client.set_tag(cand.run_id, "gate.champion_before", str(cand.champion_version))
    if promoted:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, cand.version)
