"""LightGBM: the estimator factory, the feature matrix, fitting, and the packaged model.

The packaged model (`LoyaltyModel`) carries the booster and the feature spec, so scoring
rebuilds exactly the training matrix: same columns, same order, same category codes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from loyalty_model.config import ModelConfig
from loyalty_model.features import FeatureSpec

BOOSTER_FILE = "booster.txt"
SPEC_FILE = "feature_spec.json"


def make_estimator(cfg: ModelConfig) -> lgb.LGBMClassifier:
    """An unfitted classifier; training, tuning and tests share this one definition.

    Class imbalance (loyal rates of 0.5-3 %) is handled deliberately by *not* reweighting:
    predictions are used as expected counts, so they must stay calibrated probabilities.
    Early stopping on validation log loss and min_child_samples keep rare positives from
    being overfit.
    """
    return lgb.LGBMClassifier(
        objective="binary",
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        n_estimators=cfg.n_estimators,
        colsample_bytree=cfg.feature_fraction,
        subsample=cfg.bagging_fraction,
        subsample_freq=1,
        reg_lambda=cfg.reg_lambda,
        random_state=cfg.seed,
        n_jobs=cfg.threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def feature_spec(
    frame: pd.DataFrame, names: tuple[str, ...], categorical: tuple[str, ...], **meta
) -> FeatureSpec:
    """The spec of a training frame: feature order and the vocabulary of each categorical."""
    cats = {c: tuple(sorted(frame[c].dropna().astype(str).unique())) for c in categorical}
    return FeatureSpec(names=names, categorical=categorical, categories=cats, **meta)


def to_matrix(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The model's input matrix: spec column order, float64, categoricals as spec codes
    (an unseen category becomes missing). Raises KeyError naming absent feature columns."""
    missing = [c for c in spec.names if c not in frame.columns]
    if missing:
        raise KeyError(f"feature frame lacks columns required by the model spec: {missing[:5]}")
    out = {}
    for c in spec.names:
        if c in spec.categorical:
            lookup = {v: i for i, v in enumerate(spec.categories[c])}
            out[c] = frame[c].astype("string").map(lookup).astype("float64")
        else:
            out[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


@dataclass
class LoyaltyModel:
    """Booster + spec. `predict_proba` returns P(loyal) per row."""

    booster: lgb.Booster
    spec: FeatureSpec

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(to_matrix(frame, self.spec).to_numpy())

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / BOOSTER_FILE))  # native text format, no pickle
        (folder / SPEC_FILE).write_text(json.dumps(self.spec.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> LoyaltyModel:
        folder = Path(folder)
        spec = FeatureSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        return cls(lgb.Booster(model_file=str(folder / BOOSTER_FILE)), spec)

    def importance(self) -> pd.DataFrame:
        return (
            pd.DataFrame(
                {
                    "feature": list(self.spec.names),
                    "gain": self.booster.feature_importance("gain"),
                    "splits": self.booster.feature_importance("split"),
                }
            )
            .sort_values("gain", ascending=False)
            .reset_index(drop=True)
        )


def fit(
    train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, cfg: ModelConfig
) -> LoyaltyModel:
    """Fit with early stopping on validation log loss; deterministic for a fixed seed."""
    est = make_estimator(cfg)
    cat_idx = [spec.names.index(c) for c in spec.categorical]
    est.fit(
        to_matrix(train, spec),
        train["label"].to_numpy(),
        eval_X=(to_matrix(valid, spec),),
        eval_y=(valid["label"].to_numpy(),),
        eval_metric="binary_logloss",
        categorical_feature=cat_idx or "auto",
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    return LoyaltyModel(est.booster_, spec)
