from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from loyalty_model.config import Config, ConfigError, load_config

DEFAULT = Path(__file__).parents[2] / "configs" / "default.yaml"


def test_default_config_loads_and_matches_code_defaults():
    cfg = load_config(DEFAULT)
    assert cfg == load_config(None)  # the YAML spells out the built-in defaults
    assert cfg.label.horizon_days == 90 and cfg.label.min_purchases == 2
    assert cfg.features.windows == (7, 30, 90, 365)
    assert cfg.tracking.model_name == "audience-loyalty"


def test_overrides_are_typed():
    cfg = load_config(DEFAULT, ["label.horizon_days=30", "features.windows=[7, 14]"])
    assert cfg.label.horizon_days == 30 and cfg.features.windows == (7, 14)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["label.horizon=30"], "label.horizon: unknown key"),
        (["nonsense.key=1"], "nonsense: unknown key"),
        (["label.min_purchases=0"], "label.min_purchases"),
        (["split.valid_fraction=0.6", "split.test_fraction=0.5"], "must be < 1"),
        (["split.method=date"], "needs split.valid_start"),
        (["features.windows=[7, 7]"], "distinct positive"),
        (["labelhorizon"], "--set expects section.key=value"),
    ],
)
def test_bad_config_gives_one_line_error(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  learning_rte: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: invalid config: model.learning_rte: unknown key"
    ):
        load_config(path)


def test_unknown_key_suggests_the_closest_known_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  learning_rte: 0.1\ngaet:\n  metric: test_roc_auc\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model.learning_rte: unknown key (did you mean 'learning_rate'?)" in str(info.value)
    assert "gaet: unknown key (did you mean 'gate'?)" in str(info.value)
    with pytest.raises(ConfigError, match=r"model.zzz: unknown key$"):
        load_config(None, ["model.zzz=1"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  learning_rate: [0.1\n", "c.yaml: not valid YAML at line 3, column 1: "),
        ("model: {a: 1\n", "c.yaml: not valid YAML at line 2"),
        (
            "model:\n  num_leaves: 7\n  num_leaves: 31\n",
            "c.yaml: key 'num_leaves' given twice (lines 2 and 3)",
        ),
        ("model:\n  seed: 1\nmodel:\n  seed: 2\n", "key 'model' given twice (lines 1 and 3)"),
        ("? [a, b]\n: 1\n", "c.yaml: line 1: a key must be a name, got list"),
    ],
)
def test_a_broken_or_ambiguous_yaml_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("# caf\u00e9\nmodel:\n  seed: 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(invalid continuation"):
        load_config(path)


def test_a_set_value_that_is_not_yaml_is_one_line():
    with pytest.raises(ConfigError, match=r"--set features.windows: not valid YAML"):
        load_config(None, ["features.windows=[7, 30"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Path("nope.yaml"))


def test_flat_params():
    flat = load_config(DEFAULT).flat()
    assert flat["label.horizon_days"] == 90 and flat["model.seed"] == 42


def _fields_without_description(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the fields of `model` and of its nested section models that lack a
    description."""
    missing = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if not (info.description or "").strip():
            missing.append(dotted)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            missing += _fields_without_description(info.annotation, f"{dotted}.")
    return missing


def test_every_config_field_is_documented():
    not_sections = [
        n
        for n, f in Config.model_fields.items()
        if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))
    ]
    assert not not_sections, f"top-level config keys that are not sections: {not_sections}"
    missing = _fields_without_description(Config)
    assert not missing, f"config fields without a description=: {', '.join(missing)}"


def test_configuration_reference_is_generated_from_the_models():
    from loyalty_model.config import reference_markdown

    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = doc.read_text()
    assert text == reference_markdown(), "docs/configuration.md is stale: run make docs"
    cfg = load_config(None)
    for section in type(cfg).model_fields:
        assert f"## `{section}`" in text
        for key in type(getattr(cfg, section)).model_fields:
            assert f"| `{key}` |" in text, f"{section}.{key} missing"


def test_the_default_yaml_spells_out_every_key():
    import yaml

    tree = yaml.safe_load(DEFAULT.read_text())
    cfg = load_config(None)
    for section in type(cfg).model_fields:
        keys = set(type(getattr(cfg, section)).model_fields)
        given = set(tree.get(section) or {})
        missing = keys - given - {"uri"}  # tracking.uri: a comment, as unset is the default
        assert not missing, f"configs/default.yaml lacks {section}: {sorted(missing)}"
