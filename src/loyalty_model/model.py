"""LightGBM: the estimator factory, the feature matrix, fitting, and the packaged model.

The packaged model (`LoyaltyModel`) carries the booster and the feature spec, so scoring
rebuilds exactly the training matrix: same columns, same order, same category codes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from loyalty_model.config import ModelConfig
from loyalty_model.drift import FeatureReference
from loyalty_model.features import FeatureSpec

BOOSTER_FILE = "booster.txt"
SPEC_FILE = "feature_spec.json"
CALIBRATION_FILE = "calibration.json"
REFERENCE_FILE = "feature_reference.json"
CALIBRATION_METHODS = ("none", "sigmoid", "isotonic")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    """Maps raw booster probabilities to calibrated ones; plain numbers, stored as JSON.

    sigmoid: p' = 1 / (1 + exp(-(a * logit(p) + b)))  (Platt scaling on the logit);
    isotonic: p' = piecewise-linear interpolation through (x, y), clipped at the ends.

    `audience_dispersion` (tau^2) calibrates the audience intervals: the relative variance of an
    audience's true rate around its predicted rate (campaign-level effects no follower history
    shows), estimated on out-of-fold campaigns. 0 means followers are treated as independent.

    `audience_spread`: per influencer tier, the variance of predicted probabilities within an
    audience (out-of-fold, pooled over campaigns of that tier): what a handful of scored
    followers is shrunk toward when their mean stands for a whole audience.
    """

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    audience_dispersion: float = 0.0
    audience_spread: dict[str, float] = field(default_factory=dict)

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "a": self.a,
            "b": self.b,
            "x": list(self.x),
            "y": list(self.y),
            "audience_dispersion": self.audience_dispersion,
            "audience_spread": dict(self.audience_spread),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        disp = float(d.get("audience_dispersion", 0.0))  # absent in models saved before it
        spread = {k: float(v) for k, v in d.get("audience_spread", {}).items()}
        return cls(d["method"], d["a"], d["b"], tuple(d["x"]), tuple(d["y"]), disp, spread)


def _fit_one(method: str, y: np.ndarray, p: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if method == "sigmoid":
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if method == "isotonic":
        iso = IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(p, y)
        return Calibrator(
            "isotonic",
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )
    return Calibrator()


def fit_calibrator(
    y: np.ndarray, p: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[Calibrator, dict[str, float]]:
    """Choose none, sigmoid or isotonic by out-of-fold log loss on (validation) rows, then fit
    the winner on all of them. Returns it and the out-of-fold log loss of each method."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if y.sum() < folds or (1 - y).sum() < folds:  # too few positives to judge: leave it
        return Calibrator(), {}
    scores = {}
    kf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for method in CALIBRATION_METHODS:
        oof = np.empty(len(y))
        for tr, te in kf.split(p, y):
            oof[te] = _fit_one(method, y[tr], p[tr]).apply(p[te])
        scores[method] = float(log_loss(y, np.clip(oof, _EPS, 1 - _EPS), labels=[0, 1]))
    best = min(CALIBRATION_METHODS, key=lambda m: (scores[m], CALIBRATION_METHODS.index(m)))
    return _fit_one(best, y, p), scores


def audience_dispersion(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """tau^2 such that Var(actual - expected) = sum p(1-p) + tau^2 * expected^2 per audience
    (method of moments, pooled over audiences); 0 when audiences vary no more than
    independent followers would."""
    df = pd.DataFrame({"g": groups, "y": np.asarray(y, float), "p": np.asarray(p, float)})
    df["v"] = df["p"] * (1 - df["p"])
    a = df.groupby("g").agg(y=("y", "sum"), e=("p", "sum"), v=("v", "sum"))
    denom = float((a["e"] ** 2).sum())
    if len(a) < 2 or denom <= 0:
        return 0.0
    return max(0.0, float((((a["y"] - a["e"]) ** 2) - a["v"]).sum()) / denom)


def audience_spread(p: np.ndarray, groups: np.ndarray, tiers: np.ndarray) -> dict[str, float]:
    """Per tier, the variance of p within an audience (group), pooled over its audiences:
    sum of squared deviations from each audience's mean over sum of (followers - 1)."""
    df = pd.DataFrame({"g": groups, "t": tiers, "p": np.asarray(p, float)})
    dev = df["p"] - df.groupby("g")["p"].transform("mean")
    df["ss"] = dev**2
    per = df.groupby(["t", "g"]).agg(ss=("ss", "sum"), n=("p", "size")).reset_index()
    per["df"] = per["n"] - 1
    tot = per.groupby("t")[["ss", "df"]].sum()
    tot = tot[tot["df"] > 0]
    return {str(t): float(r.ss / r.df) for t, r in tot.iterrows()}


def make_estimator(cfg: ModelConfig) -> lgb.LGBMClassifier:
    """An unfitted classifier; training, tuning and tests share this one definition.

    Class imbalance (loyal rates of 0.5-3 %) is handled deliberately by *not* reweighting:
    predictions are used as expected counts, so they must stay calibrated probabilities.
    Early stopping on validation log loss and min_child_samples keep rare positives from
    being overfit; extra_trees keeps campaign-level features (one value over thousands of
    rows) from fitting single campaigns.
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
        extra_trees=cfg.extra_trees,
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
    numeric = [c for c in spec.names if c not in spec.categorical]
    block = frame[numeric]
    other = [c for c in numeric if not pd.api.types.is_numeric_dtype(block[c])]
    if other:  # e.g. object columns from csv or pandas: coerce, unparsable -> missing
        block = block.assign(**{c: pd.to_numeric(block[c], errors="coerce") for c in other})
    out = pd.DataFrame(
        block.to_numpy(dtype="float64", na_value=np.nan), columns=numeric, index=frame.index
    )
    for c in spec.categorical:
        codes = _category_codes(frame[c], spec.categories[c])
        out[c] = np.where(codes < 0, np.nan, codes.astype("float64"))
    return out[list(spec.names)]


def _category_codes(values: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """The position of each value in `categories`; -1 for a missing or unseen value.

    The codes `pd.Categorical(values, categories=categories)` gives, without building a
    Categorical from values outside its categories (deprecated in pandas 3, an error in 4)."""
    vocab = pd.CategoricalDtype(categories).categories  # validated as Categorical does
    return vocab.get_indexer_for(values.astype("object"))


@dataclass
class LoyaltyModel:
    """Booster + spec + calibrator. `predict_proba` returns calibrated P(loyal) per row."""

    booster: lgb.Booster
    spec: FeatureSpec
    calibrator: Calibrator = field(default_factory=Calibrator)
    # the training rows' histogram of every feature, for drift at scoring (None: older models)
    reference: FeatureReference | None = None

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(to_matrix(frame, self.spec).to_numpy())

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.calibrator.apply(self.predict_raw(frame))

    def predict_matrix(self, matrix: pd.DataFrame) -> np.ndarray:
        """predict_proba of a frame already turned into the model's matrix (to_matrix)."""
        return self.calibrator.apply(self.booster.predict(matrix.to_numpy()))

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / BOOSTER_FILE))  # native text format, no pickle
        (folder / SPEC_FILE).write_text(json.dumps(self.spec.to_dict(), indent=2) + "\n")
        (folder / CALIBRATION_FILE).write_text(json.dumps(self.calibrator.to_dict()) + "\n")
        if self.reference is not None:
            (folder / REFERENCE_FILE).write_text(json.dumps(self.reference.to_dict()) + "\n")

    @classmethod
    def load(cls, folder: Path) -> LoyaltyModel:
        folder = Path(folder)
        spec = FeatureSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        cal_path = folder / CALIBRATION_FILE
        cal = Calibrator.from_dict(json.loads(cal_path.read_text())) if cal_path.exists() else None
        ref_path = folder / REFERENCE_FILE
        ref = (
            FeatureReference.from_dict(json.loads(ref_path.read_text()))
            if ref_path.exists()
            else None
        )
        booster = lgb.Booster(model_file=str(folder / BOOSTER_FILE))
        return cls(booster, spec, cal or Calibrator(), ref)

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
    return _fit(
        make_estimator(cfg),
        train,
        spec,
        eval_X=(to_matrix(valid, spec),),
        eval_y=(valid["label"].to_numpy(),),
        eval_metric="binary_logloss",
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def fit_trees(frame: pd.DataFrame, spec: FeatureSpec, cfg: ModelConfig, trees: int) -> LoyaltyModel:
    """Fit a fixed number of trees (chosen earlier by early stopping) on all of `frame`."""
    return _fit(make_estimator(cfg).set_params(n_estimators=max(1, int(trees))), frame, spec)


def _fit(est: lgb.LGBMClassifier, frame: pd.DataFrame, spec: FeatureSpec, **kw) -> LoyaltyModel:
    cat_idx = [spec.names.index(c) for c in spec.categorical]
    est.fit(
        to_matrix(frame, spec),
        frame["label"].to_numpy(),
        categorical_feature=cat_idx or "auto",
        **kw,
    )
    return LoyaltyModel(est.booster_, spec)


def cross_fit(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    cfg: ModelConfig,
    trees: int,
    groups: np.ndarray,
    folds: int,
    fold_done: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Out-of-fold raw predictions: each group (a campaign wave) is scored by a model fitted
    without it, so the predictions behave like those on unseen campaigns.

    The folds are fitted one after the other, each with `cfg.threads` LightGBM threads. They
    were once fitted side by side in Python threads (one LightGBM thread each): faster on a
    busy machine, but LightGBM's thread settings are process-wide and two fits at once in
    one process are not safe; the test suite crashed once with a segmentation fault in it."""
    from sklearn.model_selection import GroupKFold

    folds = min(folds, len(np.unique(groups)))
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 groups")
    done = []
    for fit_idx, score_idx in GroupKFold(n_splits=folds).split(frame, groups=groups):
        m = fit_trees(frame.iloc[fit_idx], spec, cfg, trees)
        done.append((score_idx, m.predict_raw(frame.iloc[score_idx])))
        fold_done()
    out = np.empty(len(frame))
    for score_idx, raw in done:
        out[score_idx] = raw
    return out


def make_logistic_baseline(seed: int = 0):
    """An unfitted linear baseline on the same features: median imputation with missing
    indicators, standard scaling, L2 logistic regression (a sklearn Pipeline)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=2000, random_state=seed),
    )


def baseline_matrix(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """The model matrix with categoricals one-hot encoded (a linear model cannot use codes)."""
    x = to_matrix(frame, spec)
    parts = [x.drop(columns=list(spec.categorical)).to_numpy()]
    for c in spec.categorical:
        codes = x[c].to_numpy()
        parts.append(np.stack([codes == i for i in range(len(spec.categories[c]))], axis=1))
    return np.hstack(parts).astype("float64")
