"""train's feature cache: the training feature frame on disk, keyed by what it depends on.

A second `train` on the same tables with the same feature and label settings (only model,
split, gate or tracking settings changed) reads the frame instead of building it. The key
(`key_material`) holds everything that changes the frame and nothing that does not:

- the content (sha256) of each input table: a copied world hits, a touched file hits, a
  changed byte misses; the data folder's path is not part of it;
- the rows `data.on_bad_rows=drop` set aside (per table and reason);
- `features.*`, FEATURE_VERSION, `label.*`, `data.sample_fraction`, `data.max_training_rows`,
  `data.on_bad_rows`;
- the package version, the source of the modules that build the frame (an edit in a
  development checkout misses even when FEATURE_VERSION was not bumped) and the versions of
  the libraries that compute it (ibis, DuckDB, pyarrow, pandas).

Not in it: `data.engine` (both engines give the same features: parity tests), `model.*`,
`split.*`, `gate.*`, `tracking.*`, `evaluation.*`, `duckdb.*`, `spark.*`.

An entry is a folder named after the key holding `frame.parquet` and `entry.json` (the key's
material, the frame's sha256, rows and columns, and what the caller stores beside it). It is
written beside the others under a temporary name and renamed into place, so a reader sees a
whole entry or none; an entry that does not check out is a miss, with a warning, and is
replaced. Reading one marks it used (its folder's mtime); after each write the least recently
used entries beyond `cache.max_entries` or `cache.max_size` are removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loyalty_model import io
from loyalty_model.config import CacheConfig, Config
from loyalty_model.contract import TABLES

log = logging.getLogger(__name__)

FORMAT = 1  # the layout of an entry; bumped when it changes
ENV_CACHE_DIR = "LOYALTY_CACHE_DIR"
FRAME_FILE = "frame.parquet"
ENTRY_FILE = "entry.json"
TMP_PREFIX = ".tmp-"  # an entry being written (io.owned_name: PID-HOST-RANDOM)
TRASH_PREFIX = ".trash-"  # an entry being removed
KEY = re.compile(r"[0-9a-f]{32}")

# the modules whose code builds the training frame: reading the tables, the contract's types
# and drop rules, the spine, the features on either engine (the BG/NBD fits included), and
# this file's format
FRAME_CODE = (
    "btyd.py",
    "cache.py",
    "contract.py",
    "engines.py",
    "features.py",
    "io.py",
    "spark.py",
    "spine.py",
    "training.py",
)
LIBRARIES = ("ibis-framework", "duckdb", "pyarrow", "pandas")
# the settings of the data section that change the frame; the others (dir, engine, currency,
# max_staleness_days) do not. A test keeps this list and DataConfig in step.
DATA_KEYS = ("sample_fraction", "max_training_rows", "on_bad_rows")


# -- The key ---------------------------------------------------------------------------------


def input_digests(
    data_dir: Path, digests: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, dict[str, str]]:
    """Per table: its form (NAME.parquet, NAME/ or NAME.csv) and the sha256 of its bytes,
    from `digests` (io.table_digests of `data_dir`, computed when not given). Hashing costs
    about 0.2-0.3 s on `medium` (221 MB), against a feature build of ~90 s; a key on (path,
    size, mtime) would miss on a copy or a touch and hit on a rewrite that keeps both."""
    digests = io.table_digests(Path(data_dir)) if digests is None else digests
    out = {}
    for name in TABLES:
        src = Path(digests[name]["path"])
        out[name] = {
            "source": src.name + ("/" if src.is_dir() else ""),
            "sha256": digests[name]["sha256"],
        }
    return out


@functools.cache
def code_digest() -> str:
    """sha256 of the source of the modules that build the frame (FRAME_CODE), once per
    process."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in FRAME_CODE:
        h.update(name.encode() + b"\0")
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def _library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out


def key_material(
    cfg: Config,
    dropped: Mapping[str, Mapping[str, int]],
    inputs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict:
    """What the training frame of `cfg` depends on (see the module's docstring). `dropped`:
    the rows data.on_bad_rows=drop set aside, per table and reason (io.Tables.dropped);
    `inputs`: input_digests of cfg.data.dir, computed when not given."""
    from loyalty_model import __version__
    from loyalty_model.features import FEATURE_VERSION

    data = cfg.data.model_dump(mode="json")
    return {
        "format": FORMAT,
        "package_version": __version__,
        "code": code_digest(),
        "libraries": _library_versions(),
        "feature_version": FEATURE_VERSION,
        "features": cfg.features.model_dump(mode="json"),
        "label": cfg.label.model_dump(mode="json"),
        "data": {k: data[k] for k in DATA_KEYS},
        "dropped": {t: dict(sorted(r.items())) for t, r in sorted(dropped.items())},
        "inputs": dict(inputs if inputs is not None else input_digests(cfg.data.dir)),
    }


def key_of(material: Mapping) -> str:
    """The key of some key material: 32 hex digits of the sha256 of its canonical JSON."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- The folder ------------------------------------------------------------------------------

_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str) -> int:
    """Bytes of a size such as 10GB, 500 MB or 2GiB (config.MEMORY_SIZE)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", text)
    if not m or m[2].upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def cache_dir(cfg: CacheConfig) -> Path:
    """Where the entries are: LOYALTY_CACHE_DIR, else cache.dir."""
    return Path(os.environ.get(ENV_CACHE_DIR) or cfg.dir)


@dataclass(frozen=True)
class Entry:
    key: str
    folder: Path
    frame: pd.DataFrame
    meta: dict  # entry.json


class CorruptEntry(Exception):
    """An entry that does not check out (unreadable, truncated, another key's)."""


@dataclass(frozen=True)
class FeatureCache:
    folder: Path
    max_entries: int = 8
    max_bytes: int = 10 * 10**9

    @classmethod
    def of(cls, cfg: CacheConfig) -> FeatureCache:
        return cls(cache_dir(cfg), cfg.max_entries, parse_size(cfg.max_size))

    def get(self, key: str) -> Entry | None:
        """The entry of `key`, marked used; None when there is none, or when it does not check
        out (a warning; it is removed, to be written again)."""
        folder = self.folder / key
        if not folder.is_dir():
            return None
        try:
            meta, frame = _read_entry(folder, key)
        except Exception as exc:  # whatever it is, a miss: never a crash
            if not folder.exists():  # removed by another process meanwhile: a plain miss
                return None
            log.warning("feature cache: entry %s is unusable (%s); rebuilding it", folder, exc)
            self._remove(folder)
            return None
        with contextlib.suppress(OSError):  # a cache we may read but not write
            os.utime(folder)  # used now: the last to be evicted
        return Entry(key, folder, frame, meta)

    def put(self, key: str, frame: pd.DataFrame, meta: Mapping) -> Path | None:
        """Store `frame` (and `meta`, in entry.json) as the entry of `key`, atomically; then
        evict. The entry's folder, or None (with a warning) when it could not be written: the
        run goes on without it. An entry another process wrote meanwhile is kept."""
        target = self.folder / key
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            io.remove_leftovers(self.folder, TMP_PREFIX)
            io.remove_leftovers(self.folder, TRASH_PREFIX)
            tmp = io.make_owned_dir(self.folder, TMP_PREFIX)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            io.write_parquet(table, tmp / FRAME_FILE)
            record = {
                **meta,
                "format": FORMAT,
                "key": key,
                "rows": len(frame),
                "columns": list(frame.columns),
                "frame_sha256": io.fingerprint(tmp / FRAME_FILE),
                "written_at": datetime.now(UTC).isoformat(),
            }
            io.write_json(record, tmp / ENTRY_FILE)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # another run stored this key first: the same frame; keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(exc, Exception):  # stopped (a signal): no warning
                raise
            log.warning("feature cache: could not store %s (%s); going on without it", target, exc)
            return None
        self.evict(keep=key)
        return target

    def discard(self, key: str) -> None:
        """Remove the entry of `key`, if there is one."""
        if (self.folder / key).is_dir():
            self._remove(self.folder / key)

    def entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last used, bytes) of each entry, most recently used first."""
        found = []
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        for name in names:
            path = self.folder / name
            if not KEY.fullmatch(name) or not path.is_dir():
                continue
            try:
                used = path.stat().st_mtime
                size = sum(f.stat().st_size for f in path.iterdir())
            except OSError:  # removed meanwhile
                continue
            found.append((path, used, size))
        return sorted(found, key=lambda e: e[1], reverse=True)

    def evict(self, keep: str | None = None) -> list[Path]:
        """Remove the least recently used entries beyond max_entries or max_bytes (never the
        entry of `keep`); return them."""
        kept, total, removed = 0, 0, []
        for path, _, size in self.entries():
            if path.name == keep or (kept < self.max_entries and total + size <= self.max_bytes):
                kept, total = kept + 1, total + size
            else:
                removed.append(path)
        for path in removed:
            self._remove(path)
        if removed:
            log.info(
                "feature cache: evicted %d entr%s",
                len(removed),
                "y" if len(removed) == 1 else "ies",
            )
        return removed

    def _remove(self, folder: Path) -> None:
        """Rename the entry out of the way (readers no longer find it), then delete it."""
        try:
            trash = self.folder / io.owned_name(TRASH_PREFIX)
            os.rename(folder, trash)
        except OSError:
            return  # gone already, or a cache we may not write
        shutil.rmtree(trash, ignore_errors=True)


def _read_entry(folder: Path, key: str) -> tuple[dict, pd.DataFrame]:
    meta = json.loads((folder / ENTRY_FILE).read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
        raise CorruptEntry("entry.json is not this key's, or of another format")
    path = folder / FRAME_FILE
    if io.fingerprint(path) != meta.get("frame_sha256"):
        raise CorruptEntry(f"{FRAME_FILE} is not the file that was written")
    frame = pq.read_table(path).to_pandas()
    if len(frame) != meta.get("rows") or list(frame.columns) != meta.get("columns"):
        raise CorruptEntry(f"{FRAME_FILE} has other rows or columns than entry.json says")
    return meta, frame


# -- What a run did --------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheUse:
    """What train's feature cache did in a run (logged as tags, printed by the CLI)."""

    state: Literal["hit", "miss", "off"]
    key: str | None = None
    entry: Path | None = None  # the entry read or written (None: not stored)
    seconds: float = 0.0  # spent on the cache itself: hashing the inputs, reading, writing
    built_on: str | None = None  # the engine that built the frame
    built_seconds: float | None = None  # what building it took (on a hit: back then)

    def tags(self) -> dict[str, str]:
        tags = {"feature_cache": self.state}
        if self.key is not None:
            tags["feature_cache_key"] = self.key
        if self.state == "hit" and self.built_on:
            tags["feature_cache_built_on"] = self.built_on
        return tags

    def summary(self) -> str:
        """One line: hit, miss or off, the key and the entry."""
        if self.state == "off":
            return "feature cache: off (features built, nothing read or stored)"
        where = f" ({self.entry})" if self.entry is not None else " (not stored)"
        if self.state == "hit":
            built = (
                f"; built on {self.built_on} in {self.built_seconds:.1f}s, read in "
                f"{self.seconds:.1f}s"
                if self.built_seconds is not None
                else ""
            )
            return f"feature cache: hit, key {self.key}{where}{built}"
        return f"feature cache: miss, key {self.key}{where}"
