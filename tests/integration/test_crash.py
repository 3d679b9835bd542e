"""`loyalty-model predict` killed with SIGKILL at several points of its life, found by polling
the files it makes (never by sleeping), and stopped with SIGTERM: the output folder is always
one complete output, the previous run's or the new one's, the next run removes what the killed
ones left, and nothing of a live process is touched. Spill folders live under a temp root in
the test's own folder (LOYALTY_DUCKDB_TEMP_ROOT), so the machine's temp folder is not looked at.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import loyalty_model as lm
from loyalty_model import engines, io

BRAND = "b0001"
REQUESTS = ("i0001,i0002", "i0001,i0003")  # two small requests with different outputs


def command() -> list[str]:
    """The installed entry point (where the signal handlers are put in place)."""
    script = Path(sys.executable).with_name("loyalty-model")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from loyalty_model.cli import main; main()"]


def content(out: Path) -> dict[str, bytes]:
    """Every file of an output, the manifest without its time stamp; KeyError when the
    manifest is missing."""
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(Path(out).rglob("*"))
        if p.is_file()
    }
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("created_at")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def strays(out: Path, temp_root: Path, keep: str | None = None) -> list[str]:
    """Everything beside `out` but `out`, the folder it links to and `keep`, and everything
    under the temp root."""
    target = os.readlink(out) if out.is_symlink() else None
    beside = [n for n in names(out.parent) if n not in ("out", target, keep)]
    return beside + [f"temp root: {n}" for n in names(temp_root)]


@dataclass
class World:
    root: Path
    data: Path
    model_uri: str
    tracking_uri: str
    refs: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def env(self, temp_root: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.pop(engines.ENV_TEMP_DIRECTORY, None)
        return env | {engines.ENV_TEMP_ROOT: str(temp_root)}

    def predict_here(self, out: Path, request: str, tiny_config, temp_root: Path) -> None:
        """The same request through the Python API, in this process: a previous output, or
        the reference of what a run writes."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(engines.ENV_TEMP_ROOT, str(temp_root))
            mp.delenv(engines.ENV_TEMP_DIRECTORY, raising=False)
            lm.predict(
                self.data,
                BRAND,
                out,
                influencers=request.split(","),
                model=self.model_uri,
                config=tiny_config,
            )


@pytest.fixture(scope="module")
def world(tiny_world, tiny_config, tiny_trained, tmp_path_factory) -> World:
    """The trained tiny model and what each request writes when nothing stops it."""
    root = tmp_path_factory.mktemp("crash")
    w = World(root, tiny_world, tiny_trained.model_uri, tiny_config.tracking.uri)
    for i, request in enumerate(REQUESTS):
        out = root / f"ref{i}" / "out"
        w.predict_here(out, request, tiny_config, root / "ref-temp")
        w.refs[request] = content(out)
    assert w.refs[REQUESTS[0]] != w.refs[REQUESTS[1]]
    return w


class Run:
    """One `loyalty-model predict` subprocess writing `out`."""

    def __init__(self, world: World, out: Path, request: str, temp_root: Path, log: Path):
        self.out, self.temp_root, self.request, self.log = out, temp_root, request, log
        args = ["predict", "--data", str(world.data), "--brand", BRAND, "--out", str(out)]
        args += ["--influencers", request, "--model", world.model_uri]
        args += ["--set", f"tracking.uri={world.tracking_uri}"]
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [*command(), *args],
                env=world.env(temp_root),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pid, self.t0 = self.proc.pid, time.monotonic()

    def tmp(self) -> Path | None:
        mine = [n for n in names(self.out.parent) if n.startswith(f".out.tmp-{self.pid}-")]
        return self.out.parent / mine[0] if mine else None

    # the points of its life, each a state of the files, polled for
    def spill_made(self) -> bool:
        return any(n.startswith(f"loyalty-spill-{self.pid}-") for n in names(self.temp_root))

    def temp_output_made(self) -> bool:
        return self.tmp() is not None

    def parquet_written(self) -> bool:
        tmp = self.tmp()
        return tmp is not None and any(n.endswith(".parquet") for n in names(tmp))

    def finishing(self) -> bool:
        """The manifest is in the temporary folder, or publishing has begun or is done."""
        tmp = self.tmp()
        if tmp is not None and "manifest.json" in names(tmp):
            return True
        published = f".out.v-{self.pid}-"
        target = os.readlink(self.out) if self.out.is_symlink() else ""
        return target.startswith(published) or any(
            n.startswith(published) for n in names(self.out.parent)
        )

    def signal_when(self, point, signum: int, timeout: float = 180) -> float | None:
        """Send `signum` as soon as `point` holds; the seconds into the run it was sent, or
        None when the run ended first."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if point():
                os.kill(self.pid, signum)
                return time.monotonic() - self.t0
            assert time.monotonic() < deadline, f"{point.__name__} not reached"
            time.sleep(0.001)
        return None

    def wait(self) -> int:
        code = self.proc.wait(timeout=120)  # reaped: its PID is now gone
        return code

    def stderr(self) -> str:
        return self.log.read_text()


POINTS = ("spill_made", "temp_output_made", "parquet_written", "finishing")


def other_request(world: World, current: dict[str, bytes]) -> str:
    """The request whose output differs from `current`: a run that publishes shows."""
    return REQUESTS[1] if current == world.refs[REQUESTS[0]] else REQUESTS[0]


def test_sigkill_at_any_point_leaves_one_complete_output_and_the_next_run_no_strays(
    world, tiny_config, tmp_path
):
    out, temp_root = tmp_path / "pred" / "out", tmp_path / "temp-root"
    shutil.copytree(world.root / "ref0" / "out", out)  # as an earlier version left it: a folder
    assert content(out) == world.refs[REQUESTS[0]]
    observed = []
    for i, point in enumerate(POINTS):
        before = content(out)
        request = other_request(world, before)
        run = Run(world, out, request, temp_root, tmp_path / f"kill-{i}.log")
        at = run.signal_when(getattr(run, point), signal.SIGKILL)
        code = run.wait()
        if at is None:  # it finished first: that is a run like any other
            assert code == 0, run.stderr()
        else:
            assert code == -signal.SIGKILL
        after = content(out)  # complete: every file, the manifest present
        assert after in (before, world.refs[request]), f"killed at {point}: a mixed output"
        state = "unchanged" if after == before else "new"
        observed.append((point, at and round(at, 2), state, strays(out, temp_root)))
    left = [s for _, _, _, found in observed for s in found]
    assert any("loyalty-spill-" in s for s in left), observed  # the kills left some work
    assert any(s.startswith(".out.tmp-") for s in left), observed

    # the next run removes the killed runs' leftovers and leaves none of its own
    before = content(out)
    request = other_request(world, before)
    run = Run(world, out, request, temp_root, tmp_path / "next.log")
    assert run.wait() == 0, run.stderr()
    assert out.is_symlink() and content(out) == world.refs[request]
    # nothing left but the output it replaced, complete, kept for readers until the next run
    target = os.readlink(out)
    [kept] = [n for n in names(out.parent) if n.startswith(".out.v-") and n != target]
    assert content(out.parent / kept) == before
    assert strays(out, temp_root, keep=kept) == [], observed
    assert "leftover(s) of runs whose process is gone" in run.stderr()
    print("\nkill points (point, seconds in, output, strays):", *observed, sep="\n")


def test_sigterm_removes_what_the_run_made_keeps_the_previous_output_and_exits_143(
    world, tiny_config, tmp_path
):
    out, temp_root = tmp_path / "pred" / "out", tmp_path / "temp-root"
    world.predict_here(out, REQUESTS[0], tiny_config, temp_root)
    before, target = content(out), os.readlink(out)
    # a live process's folders, which the run must leave alone
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        live = [
            out.parent / io.owned_name(".out.tmp-", sleeper.pid),
            temp_root / io.owned_name(engines.SPILL_PREFIX, sleeper.pid),
        ]
        for folder in live:
            folder.mkdir()
        run = Run(world, out, REQUESTS[1], temp_root, tmp_path / "term.log")
        assert run.signal_when(run.temp_output_made, signal.SIGTERM) is not None
        assert run.wait() == 143, run.stderr()
        assert all(folder.is_dir() for folder in live)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "stopped by SIGTERM" in run.stderr() and "Traceback" not in run.stderr()
    assert os.readlink(out) == target and content(out) == before
    assert strays(out, temp_root) == [live[0].name, f"temp root: {live[1].name}"]
