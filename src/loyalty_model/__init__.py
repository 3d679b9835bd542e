"""loyalty_model: predict brand-loyal customers per influencer audience.

The public API (docs/api.md) is importable from here, lazily: `import loyalty_model` loads
nothing heavy; `loyalty_model.train` loads what training needs when first used.

    import loyalty_model as lm

    lm.simulate("tiny", seed=1, out="data")
    run = lm.train(data_dir="data")
    lm.promote()
    result = lm.predict("data", brand="b0001", out="predictions")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # entry points and what they return
    "simulate": "loyalty_model.api",
    "validate": "loyalty_model.api",
    "train": "loyalty_model.api",
    "promote": "loyalty_model.api",
    "predict": "loyalty_model.api",
    "plan": "loyalty_model.api",
    "write_report": "loyalty_model.api",
    "runs": "loyalty_model.api",
    "tune": "loyalty_model.api",
    "TrainResult": "loyalty_model.api",
    "GateDecision": "loyalty_model.api",
    "PredictionResult": "loyalty_model.api",
    "PlanResult": "loyalty_model.api",
    "ReportResult": "loyalty_model.api",
    "RunsResult": "loyalty_model.api",
    "TuneResult": "loyalty_model.api",
    "SimulationSummary": "loyalty_model.simulation.summary",
    "Problem": "loyalty_model.contract",
    # configuration
    "Config": "loyalty_model.config",
    "load_config": "loyalty_model.config",
    # errors
    "LoyaltyModelError": "loyalty_model.errors",
    "ConfigError": "loyalty_model.errors",
    "ContractError": "loyalty_model.errors",
    "DataError": "loyalty_model.errors",
    "RequestError": "loyalty_model.errors",
    "ModelError": "loyalty_model.errors",
    "OutputError": "loyalty_model.errors",
    "PromotionError": "loyalty_model.errors",
}

__all__ = [  # what _EXPORTS names (a test checks they agree), spelt out for linters
    "Config",
    "ConfigError",
    "ContractError",
    "DataError",
    "GateDecision",
    "LoyaltyModelError",
    "ModelError",
    "OutputError",
    "PlanResult",
    "PredictionResult",
    "Problem",
    "PromotionError",
    "ReportResult",
    "RequestError",
    "RunsResult",
    "SimulationSummary",
    "TrainResult",
    "TuneResult",
    "__version__",
    "load_config",
    "plan",
    "predict",
    "promote",
    "runs",
    "simulate",
    "train",
    "tune",
    "validate",
    "write_report",
]

if TYPE_CHECKING:
    from loyalty_model.api import (
        GateDecision,
        PlanResult,
        PredictionResult,
        ReportResult,
        RunsResult,
        TrainResult,
        TuneResult,
        plan,
        predict,
        promote,
        runs,
        simulate,
        train,
        tune,
        validate,
        write_report,
    )
    from loyalty_model.config import Config, load_config
    from loyalty_model.contract import Problem
    from loyalty_model.errors import (
        ConfigError,
        ContractError,
        DataError,
        LoyaltyModelError,
        ModelError,
        OutputError,
        PromotionError,
        RequestError,
    )
    from loyalty_model.simulation.summary import SimulationSummary


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loyalty_model' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
