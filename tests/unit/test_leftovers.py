"""What runs whose process is gone leave behind, and who removes it: a later run removes the
leftovers of its own kind (temporary and replaced output folders, spill folders) made on this
machine by processes that no longer run, never a live process's; SIGTERM and SIGINT stop a
command cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import pytest

from loyalty_model import engines, io
from loyalty_model.config import DuckDBConfig
from loyalty_model.errors import ConfigError


@pytest.fixture
def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def make(parent, name, *, link_to=None):
    path = parent / name
    if link_to is not None:
        path.symlink_to(link_to)
    else:
        path.mkdir()
        (path / "part.parquet").write_bytes(b"PAR1 cut off")
    return path


def test_a_process_is_alive_until_it_has_exited(dead_pid, live_pid, monkeypatch):
    assert io.process_alive(os.getpid()) and io.process_alive(live_pid) and io.process_alive(1)
    assert not io.process_alive(dead_pid)
    assert not io.process_alive(2**40)

    def not_ours(pid, sig):
        raise PermissionError(1, "Operation not permitted")  # another user's process

    monkeypatch.setattr(io.os, "kill", not_ours)
    assert io.process_alive(dead_pid)


def test_a_zombie_is_not_alive():
    """Exited, not yet reaped by its parent: os.kill(pid, 0) succeeds, yet it is gone."""
    proc = subprocess.Popen(["true"])
    stat = f"/proc/{proc.pid}/stat"
    if not os.path.exists(stat):
        proc.wait()
        pytest.skip("no /proc here")
    deadline = time.monotonic() + 10
    while open(stat).read().rpartition(")")[2].split()[0] != "Z":  # noqa: SIM115
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not io.process_alive(proc.pid)
    finally:
        proc.wait()


def test_owned_names_say_which_process_on_which_machine(monkeypatch):
    monkeypatch.setattr(io.socket, "gethostname", lambda: "ip-10-0-0-1.ec2 internal")
    name = io.owned_name(".out.tmp-")
    assert name.startswith(f".out.tmp-{os.getpid()}-ip-10-0-0-1.ec2_internal-")
    assert io.owner(name, ".out.tmp-") == (os.getpid(), "ip-10-0-0-1.ec2_internal")
    assert io.owner(name, ".out.old-") is None
    for other in (".out.tmp-abcd1234", ".out.tmp-12-host", "out", ".out.tmp-1-a/../b-0123abcd"):
        assert io.owner(other, ".out.tmp-") is None, other


def test_leftovers_beside_an_output_of_gone_processes_are_removed(
    tmp_path, dead_pid, live_pid, caplog
):
    target = tmp_path / "out"
    here = io._host()
    published = make(tmp_path, io.owned_name(".out.v-", dead_pid))
    make(tmp_path, "out", link_to=published.name)
    gone = [
        make(tmp_path, io.owned_name(".out.tmp-", dead_pid)),  # killed while writing
        make(tmp_path, io.owned_name(".out.old-", dead_pid)),  # killed while removing
        make(tmp_path, f".out.old-{dead_pid}"),  # the same, by an earlier version
        make(tmp_path, io.owned_name(".out.v-", dead_pid)),  # finished, never published
        make(tmp_path, io.owned_name(".out.link-", dead_pid), link_to="nowhere"),
    ]
    kept = [
        published,  # what `out` points to
        make(tmp_path, io.owned_name(".out.tmp-", live_pid)),  # a live run's
        make(tmp_path, io.owned_name(".out.v-", live_pid)),  # a live run about to publish
        make(tmp_path, io.owned_name(".out.tmp-")),  # this process's
        make(tmp_path, f".out.tmp-{dead_pid}-other-host-0123abcd"),  # another machine's
        make(tmp_path, ".out.tmp-k2j3h4g5"),  # an earlier version's: whose, nobody knows
        make(tmp_path, io.owned_name(".other.tmp-", dead_pid)),  # another output's
        make(tmp_path, io.owned_name("loyalty-spill-", dead_pid)),  # not an output's kind
    ]
    assert here != "other-host"
    with caplog.at_level(logging.WARNING, logger="loyalty_model.io"):
        removed = io.remove_output_leftovers(target)
    assert sorted(removed) == sorted(gone)
    assert not any(os.path.lexists(p) for p in gone)
    assert all(p.is_dir() for p in kept)
    assert os.readlink(target) == published.name
    [record] = caplog.records  # a version no longer published goes without a word
    assert f"removed 4 leftover(s) of runs whose process is gone beside {target}" in (
        record.getMessage()
    )
    assert [p for p in gone if p.name not in record.getMessage()] == [gone[3]]


def test_the_version_replaced_stays_until_the_next_run_starts(tmp_path, dead_pid, caplog):
    target = tmp_path / "out"
    published = make(tmp_path, io.owned_name(".out.v-", dead_pid))  # a finished run's
    make(tmp_path, "out", link_to=published.name)
    with io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
    assert published.is_dir() and os.readlink(target) != published.name
    with caplog.at_level(logging.WARNING), io.atomic_dir(target) as tmp:  # the next run
        assert not published.exists()
        (tmp / "f").write_text("newer")
    assert caplog.records == []


def test_a_run_removes_leftovers_before_it_writes(tmp_path, dead_pid):
    target = tmp_path / "out"
    stray = make(tmp_path, io.owned_name(".out.tmp-", dead_pid))
    with io.atomic_dir(target) as tmp:
        assert not stray.exists()
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.readlink(target), "out"]


def test_nothing_to_remove_says_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert io.remove_output_leftovers(tmp_path / "out") == []
        assert io.remove_leftovers(tmp_path / "missing", "loyalty-spill-") == []
    assert caplog.records == []


# -- spill folders ----------------------------------------------------------------------------


def test_spill_folders_live_under_the_temp_root_and_go_afterwards(tmp_path, monkeypatch):
    for var in (engines.ENV_TEMP_DIRECTORY, engines.ENV_TEMP_ROOT):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "scratch" / "duckdb"  # made when missing
    with engines.duckdb_session(DuckDBConfig(temp_root=root)) as con:
        spill = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
        folder = root / os.path.basename(spill)
        assert os.path.dirname(spill) == str(root) and folder.is_dir()
        assert io.owner(folder.name, engines.SPILL_PREFIX)[0] == os.getpid()
        assert folder.stat().st_mode & 0o077 == 0  # private: spilled rows are data
    assert list(root.iterdir()) == []
    with pytest.raises(RuntimeError), engines.duckdb_session(DuckDBConfig(temp_root=root)):
        raise RuntimeError("crash")
    assert list(root.iterdir()) == []


def test_the_environment_names_the_temp_root(tmp_path, monkeypatch):
    monkeypatch.delenv(engines.ENV_TEMP_DIRECTORY, raising=False)
    monkeypatch.setenv(engines.ENV_TEMP_ROOT, str(tmp_path))
    s = engines.duckdb_settings(DuckDBConfig(temp_root=tmp_path / "config"))
    assert s.temp_root == tmp_path
    with engines.duckdb_session(DuckDBConfig()) as con:
        spill = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    assert os.path.dirname(spill) == str(tmp_path)


def test_a_session_removes_the_spill_folders_of_gone_processes(
    tmp_path, dead_pid, live_pid, caplog
):
    gone = make(tmp_path, io.owned_name(engines.SPILL_PREFIX, dead_pid))
    live = make(tmp_path, io.owned_name(engines.SPILL_PREFIX, live_pid))
    earlier = make(tmp_path, "loyalty-spill-k2j3h4g5")  # an earlier version's: whose?
    other = make(tmp_path, f"{engines.SPILL_PREFIX}{dead_pid}-other-host-0123abcd")
    with caplog.at_level(logging.WARNING, logger="loyalty_model.io"):
        engines.spill_folder(tmp_path).rmdir()
    assert not gone.exists() and live.is_dir() and earlier.is_dir() and other.is_dir()
    [record] = caplog.records
    assert f"in {tmp_path}: {gone.name}" in record.getMessage()


def test_a_temp_root_that_cannot_hold_folders_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^duckdb.temp_root .*file: cannot make") as info:
        engines.spill_folder(blocker)
    assert "\n" not in str(info.value) and engines.ENV_TEMP_ROOT in str(info.value)


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_removes_the_temporary_folder_keeps_the_output_and_exits(
    tmp_path, capsys, signum, code
):
    target = tmp_path / "out"
    with io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("previous")
    before = sorted(p.name for p in tmp_path.iterdir())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as info, io.exit_on_signals(), io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("half")
        os.kill(os.getpid(), signum)
        time.sleep(5)  # interrupted: the handler raises here
        pytest.fail("not stopped")
    assert info.value.code == code
    assert (target / "f").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert f"stopped by {signal.Signals(signum).name}" in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back


def test_a_signal_while_publishing_lets_the_output_finish(tmp_path, monkeypatch):
    """The few renames that publish an output are not cut in the middle: the signal stops
    the run right after them."""
    target = tmp_path / "out"
    publish = io._publish

    def signalled(tmp, out):
        os.kill(os.getpid(), signal.SIGTERM)
        publish(tmp, out)

    monkeypatch.setattr(io, "_publish", signalled)
    with pytest.raises(SystemExit) as info, io.exit_on_signals():
        with io.atomic_dir(target) as tmp:
            (tmp / "f").write_text("new")
        pytest.fail("not stopped")
    assert info.value.code == 143
    assert (target / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.readlink(target), "out"]


def test_a_stopped_run_publishes_nothing_even_if_the_stop_was_swallowed(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(SystemExit) as info, io.exit_on_signals(), io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except BaseException:  # a library that swallows everything
            pass
    assert info.value.code == 143
    assert list(tmp_path.iterdir()) == []


def test_errors_pass_through_and_nothing_is_installed_after(tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError, match="plain"), io.exit_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not handler
        raise ValueError("plain")
    assert signal.getsignal(signal.SIGTERM) is handler


def test_handlers_replaced_by_a_library_are_put_back():
    """Starting Spark installs a SIGINT handler of its own (KeyboardInterrupt: exit 1)."""
    with io.exit_on_signals():
        ours = signal.getsignal(signal.SIGINT)
        with io.signal_handlers_kept():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        assert signal.getsignal(signal.SIGINT) is ours


def test_a_signal_as_the_temporary_folder_is_made_still_removes_it(tmp_path, monkeypatch):
    """The moment between making a folder and arming its removal is not cut."""
    make_dir = io.make_owned_dir

    def signalled(*args, **kwargs):
        folder = make_dir(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return folder

    monkeypatch.setattr(io, "make_owned_dir", signalled)
    with pytest.raises(SystemExit) as info, io.exit_on_signals(), io.atomic_dir(tmp_path / "o"):
        pytest.fail("not stopped")
    assert info.value.code == 143 and list(tmp_path.iterdir()) == []
    session = engines.duckdb_session(DuckDBConfig(temp_root=tmp_path))
    with pytest.raises(SystemExit) as info, io.exit_on_signals(), session:
        pytest.fail("not stopped")
    assert info.value.code == 143 and list(tmp_path.iterdir()) == []


def test_an_unpublished_version_of_any_machine_goes_once_it_is_an_hour_old(tmp_path, live_pid):
    """Runs from a new host (or pod) each time: the versions they replaced would pile up."""
    target = tmp_path / "out"
    published = make(tmp_path, f".out.v-{live_pid}-pod-a-0123abcd")
    make(tmp_path, "out", link_to=published.name)
    old = make(tmp_path, f".out.v-{live_pid}-pod-b-89abcdef")  # replaced by `published`
    recent = make(tmp_path, f".out.v-{live_pid}-pod-c-456789ab")  # about to be published
    hour_ago = time.time() - io.VERSION_GRACE - 60
    for p in (published, old):
        os.utime(p, (hour_ago, hour_ago))
    assert io.remove_output_leftovers(target) == [old]
    assert published.is_dir() and recent.is_dir() and not old.exists()


def test_a_leftover_with_this_process_s_pid_but_not_its_own_is_gone(tmp_path):
    """In a container every run may be PID 1: what an earlier PID 1 left is not ours."""
    target = tmp_path / "out"
    earlier = make(tmp_path, f".out.tmp-{os.getpid()}-{io._host()}-0badc0de")
    mine = make(tmp_path, io.owned_name(".out.tmp-"))
    assert io.remove_output_leftovers(target) == [earlier]
    assert mine.is_dir()
