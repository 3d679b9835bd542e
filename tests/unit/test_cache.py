"""train's feature cache (cache.py): what the key holds, and entries on disk (atomic, checked,
bounded)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import loyalty_model
from loyalty_model import cache, features
from loyalty_model.config import Config, ConfigError, DataConfig, load_config
from loyalty_model.contract import TABLES

# -- The key ---------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path) -> Path:
    """Five table files (the key reads their bytes only, so any bytes do)."""
    root = tmp_path / "data"
    root.mkdir()
    for i, name in enumerate(TABLES):
        (root / f"{name}.parquet").write_bytes(f"{name} {i}".encode() * 100)
    return root


def key(data: Path, *overrides: str, dropped: dict | None = None) -> str:
    cfg = load_config(None, [f"data.dir={data}", *overrides])
    return cache.key_of(cache.key_material(cfg, dropped or {}))


def test_the_same_inputs_and_settings_give_the_same_key_wherever_the_tables_are(data, tmp_path):
    k = key(data)
    assert len(k) == 32 and k == key(data)
    copy = shutil.copytree(data, tmp_path / "elsewhere")  # a copied world
    assert key(copy) == k
    later = time.time() + 3600
    for f in data.iterdir():  # touched, unchanged: the key is the content, not the mtime
        os.utime(f, (later, later))
    assert key(data) == k


def test_a_changed_input_file_changes_the_key(data):
    k = key(data)
    events = data / "events.parquet"
    body = events.read_bytes()
    events.write_bytes(body[:-1] + b"X")  # one byte, same size
    changed = key(data)
    assert changed != k
    events.write_bytes(body)
    assert key(data) == k
    # the same bytes as a dataset folder (read differently): another key
    events.unlink()
    (data / "events").mkdir()
    (data / "events" / "part-0.parquet").write_bytes(body)
    assert key(data) not in (k, changed)


@pytest.mark.parametrize(
    "override",
    [
        "features.windows=[7, 30]",
        "features.prior_strength=100",
        "label.horizon_days=60",
        "label.min_purchases=3",
        "label.require_attribution=true",
        "data.sample_fraction=0.5",
        "data.max_training_rows=1000",
        "data.max_training_rows=null",
        "data.on_bad_rows=drop",
    ],
)
def test_a_feature_label_or_spine_setting_changes_the_key(data, override):
    assert key(data, override) != key(data)


@pytest.mark.parametrize(
    "override",
    [
        "model.num_leaves=15",
        "model.learning_rate=0.1",
        "model.seed=1",
        "split.valid_fraction=0.1",
        "split.method=date",
        "gate.min_delta=0.01",
        "tracking.experiment=other",
        "evaluation.truth_max_followers=0",
        "data.engine=spark",
        "data.currency=EUR",
        "duckdb.threads=1",
        "spark.shuffle_partitions=2",
        "cache.max_entries=2",
    ],
)
def test_a_model_split_gate_tracking_or_engine_setting_keeps_the_key(data, override):
    extra = ["split.valid_start=2024-01-01", "split.test_start=2024-06-01"]
    assert key(data, override, *(extra if "method=date" in override else [])) == key(data)


# the settings the key leaves out, each because it cannot change the training frame
NOT_IN_KEY = {"model", "split", "tracking", "evaluation", "duckdb", "spark", "gate", "cache"}
DATA_NOT_IN_KEY = {"dir", "engine", "max_staleness_days", "currency"}


def test_every_setting_is_either_in_the_key_or_deliberately_not():
    """A new config section or data.* key fails here until it is placed on one side."""
    assert set(Config.model_fields) == {"data", "label", "features"} | NOT_IN_KEY
    assert set(DataConfig.model_fields) == set(cache.DATA_KEYS) | DATA_NOT_IN_KEY
    assert not set(cache.DATA_KEYS) & DATA_NOT_IN_KEY


def test_dropped_rows_feature_version_package_and_code_change_the_key(data, monkeypatch):
    k = key(data)
    assert key(data, dropped={"events": {"events: exact duplicate row": 5}}) != k
    assert key(data, dropped={"events": {"events: exact duplicate row": 4}}) != key(
        data, dropped={"events": {"events: exact duplicate row": 5}}
    )
    with monkeypatch.context() as m:
        m.setattr(features, "FEATURE_VERSION", "999")
        assert key(data) != k
    with monkeypatch.context() as m:
        m.setattr(loyalty_model, "__version__", "9.9.9")
        assert key(data) != k
    with monkeypatch.context() as m:
        m.setattr(cache, "code_digest", lambda: "0" * 64)
        assert key(data) != k
    with monkeypatch.context() as m:
        m.setattr(cache, "_library_versions", lambda: {"duckdb": "0.0.1"})
        assert key(data) != k
    assert key(data) == k


def test_the_code_digest_covers_the_modules_that_build_the_frame():
    here = Path(cache.__file__).parent
    assert all((here / name).is_file() for name in cache.FRAME_CODE)
    assert {"btyd.py", "features.py", "spine.py", "training.py", "io.py"} <= set(cache.FRAME_CODE)
    assert len(cache.code_digest()) == 64


# -- Entries on disk -------------------------------------------------------------------------


def frame(n: int = 50, seed: int = 0) -> pd.DataFrame:
    """A frame with the kinds of columns the feature frame has."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "campaign_id": [f"c{i % 3}" for i in range(n)],
            "follower_id": [f"u{i:04d}" for i in range(n)],
            "cutoff_ts": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC").astype(
                "datetime64[us, UTC]"
            ),
            "label": rng.integers(0, 2, n).astype("int8"),
            "fi_view_7d": rng.integers(0, 9, n).astype("int64"),
            "f_rebuy_rate": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
            "inf_category": pd.Series(["food", None] * (n // 2)),
        }
    )


def meta() -> dict:
    return {"spine": {"campaigns_used": 3}, "built": {"engine": "duckdb", "seconds": 1.5}}


KEY_A, KEY_B, KEY_C = ("a" * 32, "b" * 32, "c" * 32)


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_an_entry_reads_back_equal_and_leaves_nothing_else(tmp_path):
    store = cache.FeatureCache(tmp_path / "cache")
    assert store.get(KEY_A) is None  # nothing yet, not even the folder
    f = frame()
    where = store.put(KEY_A, f, meta())
    assert where == tmp_path / "cache" / KEY_A
    assert names(tmp_path / "cache") == [KEY_A]  # no temporary folder left
    assert names(where) == ["entry.json", "frame.parquet"]
    got = store.get(KEY_A)
    pd.testing.assert_frame_equal(got.frame, f)  # values, dtypes, the index
    assert got.meta["built"] == {"engine": "duckdb", "seconds": 1.5}
    assert got.meta["rows"] == 50 and got.meta["key"] == KEY_A


def corrupt_frame(entry: Path) -> None:
    (entry / "frame.parquet").write_bytes(b"not parquet")


def truncate_frame(entry: Path) -> None:
    path = entry / "frame.parquet"
    path.write_bytes(path.read_bytes()[:-100])


def flip_a_byte(entry: Path) -> None:
    path = entry / "frame.parquet"
    body = bytearray(path.read_bytes())
    body[len(body) // 2] ^= 0xFF
    path.write_bytes(bytes(body))


def corrupt_json(entry: Path) -> None:
    (entry / "entry.json").write_text("{not json")


def another_key(entry: Path) -> None:
    text = (entry / "entry.json").read_text()
    (entry / "entry.json").write_text(text.replace(KEY_A, KEY_B))


def no_frame(entry: Path) -> None:
    (entry / "frame.parquet").unlink()


@pytest.mark.parametrize(
    "damage", [corrupt_frame, truncate_frame, flip_a_byte, corrupt_json, another_key, no_frame]
)
def test_a_damaged_entry_is_a_miss_with_a_warning_and_is_replaced(tmp_path, caplog, damage):
    store = cache.FeatureCache(tmp_path / "cache")
    entry = store.put(KEY_A, frame(), meta())
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="loyalty_model.cache"):
        assert store.get(KEY_A) is None
    assert f"entry {entry} is unusable" in caplog.text
    assert names(tmp_path / "cache") == []  # removed, to be written again
    store.put(KEY_A, frame(), meta())
    pd.testing.assert_frame_equal(store.get(KEY_A).frame, frame())


def test_a_half_written_entry_is_never_read(tmp_path, monkeypatch, caplog):
    store = cache.FeatureCache(tmp_path / "cache")
    write_json = cache.io.write_json
    seen = []

    def read_meanwhile(obj, path):  # the frame is written, entry.json not yet
        assert (Path(path).parent / "frame.parquet").is_file()
        seen.append((store.get(KEY_A), names(tmp_path / "cache")))
        write_json(obj, path)

    monkeypatch.setattr(cache.io, "write_json", read_meanwhile)
    with caplog.at_level(logging.WARNING, logger="loyalty_model.cache"):
        store.put(KEY_A, frame(), meta())
    [(got, during)] = seen
    assert got is None and KEY_A not in during  # invisible while written, not "corrupt"
    assert len(during) == 1 and during[0].startswith(cache.TMP_PREFIX)
    assert "unusable" not in caplog.text
    assert store.get(KEY_A) is not None

    # stopped (a signal) while writing: the exception goes on, nothing is left of the entry
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.io, "write_json", stopped)
    with pytest.raises(KeyboardInterrupt):
        store.put(KEY_B, frame(), meta())
    assert names(tmp_path / "cache") == [KEY_A]

    # killed while writing (nothing could clean up): not an entry, removed by the next write
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    left = tmp_path / "cache" / cache.io.owned_name(cache.TMP_PREFIX, pid=dead.pid)
    shutil.copytree(tmp_path / "cache" / KEY_A, left)
    assert store.get(KEY_B) is None and [p.name for p, _, _ in store.entries()] == [KEY_A]
    monkeypatch.setattr(cache.io, "write_json", write_json)
    store.put(KEY_C, frame(), meta())
    assert names(tmp_path / "cache") == [KEY_A, KEY_C]


def test_an_entry_another_run_stored_first_is_kept(tmp_path):
    store = cache.FeatureCache(tmp_path / "cache")
    first = store.put(KEY_A, frame(seed=1), meta())
    written = (first / "entry.json").read_text()
    assert store.put(KEY_A, frame(seed=1), meta()) == first  # a concurrent run's rename fails
    assert (first / "entry.json").read_text() == written
    assert names(tmp_path / "cache") == [KEY_A]


def _writer(folder: str, rounds: int) -> None:
    store = cache.FeatureCache(Path(folder), max_entries=2)
    for i in range(rounds):
        store.put(KEY_A, frame(2000), meta())
        store.put([KEY_B, KEY_C][i % 2], frame(2000, seed=i), meta())  # evicts meanwhile


def test_concurrent_runs_never_read_a_partial_entry(tmp_path):
    folder = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(folder), 15)) for _ in range(2)]
    for p in procs:
        p.start()
    store = cache.FeatureCache(folder, max_entries=2)
    expected, seen = frame(2000), 0
    while any(p.is_alive() for p in procs):
        got = store.get(KEY_A)
        if got is not None:
            pd.testing.assert_frame_equal(got.frame, expected)
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    pd.testing.assert_frame_equal(store.get(KEY_A).frame, expected)
    assert seen > 0
    assert not [n for n in names(folder) if n.startswith((cache.TMP_PREFIX, cache.TRASH_PREFIX))]


def test_the_least_recently_used_entries_are_evicted(tmp_path):
    store = cache.FeatureCache(tmp_path / "cache", max_entries=2)
    a = store.put(KEY_A, frame(), meta())
    b = store.put(KEY_B, frame(), meta())
    now = time.time()
    os.utime(a, (now - 100, now - 100))
    os.utime(b, (now - 50, now - 50))
    assert store.get(KEY_A) is not None  # used now: B is the least recently used
    store.put(KEY_C, frame(), meta())
    assert names(tmp_path / "cache") == [KEY_A, KEY_C]
    # a size cap: only what fits, most recent first; the entry just written always stays
    small = cache.FeatureCache(tmp_path / "cache", max_entries=8, max_bytes=1)
    small.put(KEY_B, frame(), meta())
    assert names(tmp_path / "cache") == [KEY_B]


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    store = cache.FeatureCache(blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="loyalty_model.cache"):
        assert store.put(KEY_A, frame(), meta()) is None
        assert store.get(KEY_A) is None
    assert "could not store" in caplog.text


def test_the_folder_and_the_bounds_come_from_the_config_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV_CACHE_DIR, raising=False)
    cfg = load_config(None, ["cache.max_entries=3", "cache.max_size=2GiB"])
    store = cache.FeatureCache.of(cfg.cache)
    assert store.folder == Path(".loyalty-cache/features")
    assert (store.max_entries, store.max_bytes) == (3, 2 * 2**30)
    monkeypatch.setenv(cache.ENV_CACHE_DIR, str(tmp_path / "c"))
    assert cache.FeatureCache.of(cfg.cache).folder == tmp_path / "c"
    assert cache.parse_size("500 MB") == 500 * 10**6 and cache.parse_size("1.5GB") == 1.5e9
    with pytest.raises(ConfigError, match=r"cache\.max_size: must be a size such as 10GB"):
        load_config(None, ["cache.max_size=lots"])
    with pytest.raises(ConfigError, match=r"cache\.max_entries"):
        load_config(None, ["cache.max_entries=0"])


def test_what_a_run_did_reads_as_tags_and_one_line():
    hit = cache.CacheUse("hit", KEY_A, Path("c") / KEY_A, 0.2, "spark", 9.5)
    assert hit.tags() == {
        "feature_cache": "hit",
        "feature_cache_key": KEY_A,
        "feature_cache_built_on": "spark",
    }
    assert hit.summary().startswith(f"feature cache: hit, key {KEY_A}")
    assert "built on spark in 9.5s" in hit.summary()
    miss = cache.CacheUse("miss", KEY_A, None, 0.1, "duckdb", 9.5)
    assert miss.tags() == {"feature_cache": "miss", "feature_cache_key": KEY_A}
    assert "(not stored)" in miss.summary()
    assert cache.CacheUse("off").tags() == {"feature_cache": "off"}
