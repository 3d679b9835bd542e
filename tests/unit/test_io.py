from __future__ import annotations

import os
import threading
import time

import pytest

from loyalty_model import io
from loyalty_model.io import atomic_dir


def beside(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def write(target, **files) -> None:
    with atomic_dir(target) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def contents(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_atomic_dir_publishes_a_link_to_a_finished_folder(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.tmp-{os.getpid()}-")
        (tmp / "new.txt").write_text("new")
        assert not os.path.lexists(target)  # nothing visible until the end
    version = os.readlink(target)
    assert version.startswith(f".out.v-{os.getpid()}-") and "/" not in version  # relative
    assert beside(tmp_path) == [version, "out"]  # no temporary folder left
    assert contents(target) == {"new.txt": "new"}


def test_atomic_dir_replaces_the_previous_version_and_keeps_only_that_one(tmp_path):
    """The version replaced stays for readers still on it; a process that publishes again
    removes its older ones (a run of another process removes it when it starts)."""
    target = tmp_path / "out"
    write(target, **{"f": "1"})
    first = os.readlink(target)
    write(target, **{"f": "2"})
    second = os.readlink(target)
    assert second != first and contents(target) == {"f": "2"}
    assert beside(tmp_path) == sorted([first, second, "out"])
    assert contents(tmp_path / first) == {"f": "1"}  # whoever resolved it reads it still
    write(target, **{"f": "3"})
    third = os.readlink(target)
    assert beside(tmp_path) == sorted([second, third, "out"])


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path):
    target = tmp_path / "out"
    write(target, **{"old.txt": "old"})
    before = beside(tmp_path)
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert contents(target) == {"old.txt": "old"}
    assert beside(tmp_path) == before


def test_atomic_dir_writes_nothing_on_failure_without_previous(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out"):
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_real_folder_of_an_earlier_version_becomes_the_link(tmp_path, monkeypatch, exchange):
    """Outputs written before the link layout are real folders: the first run replaces one
    with the link (atomically where the system can swap two names) and removes it."""
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    elif not _can_exchange(tmp_path):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    swaps = []
    exchange_ = io._exchange
    monkeypatch.setattr(io, "_exchange", lambda a, b: swaps.append(exchange_(a, b)) or swaps[-1])
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    write(target, **{"new.txt": "new"})
    assert swaps == ([True] if exchange else [False])
    assert target.is_symlink() and contents(target) == {"new.txt": "new"}
    [kept] = [n for n in beside(tmp_path) if n not in ("out", os.readlink(target))]
    assert kept.startswith(".out.v-") and contents(tmp_path / kept) == {"old.txt": "old"}


def _can_exchange(folder) -> bool:
    a, b = folder / "probe-a", folder / "probe-b"
    a.mkdir()
    b.symlink_to("probe-a")
    try:
        return io._exchange(a, b)
    finally:
        for p in (a, b):
            p.unlink() if p.is_symlink() else p.rmdir()


@pytest.mark.parametrize("previous", [False, True])
def test_without_symbolic_links_the_output_stays_a_real_folder(tmp_path, monkeypatch, previous):
    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(io.os, "symlink", no_symlinks)
    target = tmp_path / "out"
    if previous:
        write(target, **{"old.txt": "old"})
    write(target, **{"new.txt": "new"})
    assert target.is_dir() and not target.is_symlink()
    assert contents(target) == {"new.txt": "new"}
    assert beside(tmp_path) == ["out"]


def test_a_file_in_the_way_is_an_error_and_stays(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        write(target, **{"new.txt": "new"})
    assert target.read_text() == "not a folder" and beside(tmp_path) == ["out"]


def test_a_link_of_the_users_own_is_replaced_and_its_folder_kept(tmp_path):
    """OUT -> a folder elsewhere (not one of ours): the link is replaced, the folder is theirs."""
    theirs = tmp_path / "elsewhere"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("keep")
    target = tmp_path / "pred" / "out"
    target.parent.mkdir()
    target.symlink_to(theirs)
    write(target, **{"new.txt": "new"})
    assert contents(target) == {"new.txt": "new"}
    assert contents(theirs) == {"keep.txt": "keep"}
    assert beside(target.parent) == [os.readlink(target), "out"]


def test_readers_never_see_a_missing_or_mixed_output(tmp_path):
    """While outputs are published one after another, OUT always exists, and two files read
    under one resolution of OUT are of one run (a folder removed meanwhile: FileNotFoundError,
    resolve again)."""
    target = tmp_path / "out"
    write(target, a="0", b="0")
    stop, seen = threading.Event(), {"checks": 0, "missing": 0, "mixed": 0, "gone": 0}

    def read() -> None:
        while not stop.is_set():
            seen["checks"] += 1
            if not os.path.lexists(target) or not os.path.isdir(target):
                seen["missing"] += 1
                continue
            run = os.path.realpath(target)
            try:
                a = open(os.path.join(run, "a")).read()  # noqa: SIM115
                b = open(os.path.join(run, "b")).read()  # noqa: SIM115
            except FileNotFoundError:
                seen["gone"] += 1
                continue
            seen["mixed"] += a != b

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 150):
            write(target, a=str(i), b=str(i))
            # runs are minutes apart, not a millisecond: let the reader look at each output
            checks = seen["checks"]
            while seen["checks"] < checks + 2 and reader.is_alive():
                time.sleep(0.0001)
    finally:
        stop.set()
        reader.join()
    assert seen["checks"] > 2 * 149 and seen["missing"] == 0 and seen["mixed"] == 0, seen
    assert contents(target) == {"a": "149", "b": "149"}
    assert len(beside(tmp_path)) == 3  # out, its version and the one it replaced
