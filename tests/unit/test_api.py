"""The public API's shape: lazy, typed, one name per thing."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import loyalty_model as lm
from loyalty_model import errors

SRC = Path(lm.__file__).parent


def test_import_loads_nothing_heavy():
    code = (
        "import sys, loyalty_model as lm; lm.__all__; "
        "heavy = ('pandas', 'numpy', 'mlflow', 'lightgbm', 'duckdb', 'ibis', 'pydantic', "
        "'pyspark'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_export_resolves_and_all_lists_them():
    assert set(lm.__all__) == {"__version__", *lm._EXPORTS}
    for name in lm._EXPORTS:
        assert getattr(lm, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lm.nope  # noqa: B018


def test_result_types_are_frozen_dataclasses():
    for cls in (lm.TrainResult, lm.GateDecision, lm.PredictionResult, lm.SimulationSummary):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls


def test_errors_share_one_base_and_an_exit_code():
    for cls in (
        lm.ConfigError,
        lm.ContractError,
        lm.DataError,
        lm.RequestError,
        lm.ModelError,
        lm.PromotionError,
        lm.OutputError,
    ):
        assert issubclass(cls, lm.LoyaltyModelError) and issubclass(cls, ValueError)
        assert cls.exit_code == 2
    assert errors.ContractError.__module__ == "loyalty_model.errors"


def test_bad_requests_raise_typed_errors(tmp_path):
    with pytest.raises(lm.RequestError, match="unknown preset 'huge'"):
        lm.simulate("huge", 1, tmp_path / "w")
    assert not (tmp_path / "w").exists()
    with pytest.raises(lm.DataError, match="data directory not found"):
        lm.validate(tmp_path / "missing")
    with pytest.raises(lm.ContractError, match="table not found") as info:
        lm.predict(tmp_path, "b1", tmp_path / "out")
    assert len(info.value.problems) == 5  # one per missing table
    with pytest.raises(lm.RequestError, match="format must be parquet or csv"):
        lm.predict(tmp_path, "b1", tmp_path / "out", fmt="xlsx")
    with pytest.raises(lm.ConfigError, match=r"model\.num_leaves"):
        lm.train(None, tmp_path, ["model.num_leaves=1"])


def test_arguments_are_checked_before_anything_is_read_or_written(tiny_world, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(lm.RequestError, match="list of ids, not the string 'i0001'"):
        lm.predict(tiny_world, "b0001", out, influencers="i0001")
    with pytest.raises(lm.RequestError, match="batch_rows must be at least 1"):
        lm.predict(tiny_world, "b0001", out, batch_rows=0)
    with pytest.raises(lm.ConfigError, match="must be a size such as 4GB or 512MB, got 'lots'"):
        lm.predict(tiny_world, "b0001", out, memory_limit="lots")
    for inside in (tiny_world, tiny_world.parent):
        with pytest.raises(lm.RequestError, match="would replace the data it reads"):
            lm.predict(tiny_world, "b0001", inside)
    assert not out.exists() and (tiny_world / "events.parquet").is_file()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    with pytest.raises(lm.OutputError, match="cannot write /proc/no/world"):
        lm.simulate("tiny", 1, "/proc/no/world")


def test_a_data_dir_is_a_path_not_yaml(tmp_path):
    odd = tmp_path / "my data #1: yes"
    with pytest.raises(lm.DataError, match="my data #1: yes"):
        lm.train(None, odd)


def test_validate_returns_problems(tiny_world, tmp_path):
    assert lm.validate(tiny_world) == []
    broken = tmp_path / "data"
    broken.mkdir()
    for f in tiny_world.iterdir():
        if f.name != "brands.parquet":
            (broken / f.name).symlink_to(f)
    problems = lm.validate(broken)
    assert [(p.table, p.check.split(":")[0]) for p in problems] == [("brands", "table not found")]


def test_config_overrides_apply_on_a_config_object():
    base = lm.load_config(None, ["model.num_leaves=15"])
    cfg = lm.load_config(base, ["label.horizon_days=30"])
    assert (cfg.model.num_leaves, cfg.label.horizon_days) == (15, 30)
    assert lm.load_config(base) == base


def _public_functions() -> dict[str, list[str]]:
    """Public module-level function names -> the modules defining them."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(module)
    return found


def test_no_two_public_functions_or_classes_share_a_name():
    twice = {name: mods for name, mods in _public_functions().items() if len(mods) > 1}
    assert twice == {}


def test_no_module_shadows_a_public_name():
    """`loyalty_model.predict` must be the function: no submodule may carry an export's name."""
    modules = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if p.is_dir()}
    assert modules & set(lm._EXPORTS) == set()
