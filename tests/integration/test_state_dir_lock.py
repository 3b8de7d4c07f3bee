"""Two daemons cannot share one state directory: real ``cortex-rm node`` processes (every role off).

The first holds ``<state_dir>/lock``; a second started on the same directory exits 1 at once,
saying which directory and which pid hold it, and leaves the first's files alone; once the first
is SIGKILLed the kernel drops its lock and a new daemon starts on the directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.container import ofd_locks
from tests.support.ring_daemons import REPO, wait_for

pytestmark = pytest.mark.integration

WAIT_S = 30.0


def write_config(directory: Path, state_dir: Path) -> Path:
    config = directory / "cortex.toml"
    config.write_text(
        "\n".join(
            [
                "[node]", 'name = "locked"', f'state_dir = "{state_dir}"',
                "[resourcemanager]", "enabled = false",
                "[nodemanager]", "enabled = false",
                "[ring]", "enabled = false", "",
            ]
        )
    )  # fmt: skip
    return config


def daemon(config: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The daemons a test starts; each is killed at the end if it still runs."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_a_second_daemon_on_a_state_dir_is_refused_naming_the_dir_and_the_holder_and_a_killed_holder_frees_it(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """The second daemon exits 1 naming the directory and the first's pid; the first's pid file stays;
    after a SIGKILL of the first, a third daemon starts on the same directory."""
    state = tmp_path / "state"
    config = write_config(tmp_path, state)
    first = daemon(config, tmp_path / "first.out")
    started.append(first)
    wait_for(lambda: (state / "ready.json").exists(), "the first daemon is ready", WAIT_S)
    assert ofd_locks.holder(state / ofd_locks.STATE_LOCK_FILE) == first.pid

    second = subprocess.run(
        [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)],
        capture_output=True, text=True, timeout=WAIT_S, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert second.returncode == 1
    assert f"the state directory {state} is in use by another Cortex daemon (pid {first.pid}" in second.stderr
    assert (state / "cortex-rm.pid").read_text().strip() == str(first.pid)  # not the second's, nor removed
    assert (state / "ready.json").exists()
    assert first.poll() is None

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    (state / "ready.json").unlink()  # what the killed daemon left
    third = daemon(config, tmp_path / "third.out")
    started.append(third)
    wait_for(lambda: (state / "ready.json").exists(), "the third daemon is ready", WAIT_S)
    assert ofd_locks.holder(state / ofd_locks.STATE_LOCK_FILE) == third.pid
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=WAIT_S) == 0
    assert ofd_locks.holder(state / ofd_locks.STATE_LOCK_FILE) is None  # released at a clean stop
    assert not (state / "cortex-rm.pid").exists()


def test_a_lock_held_by_another_process_names_its_pid_and_a_probe_does_not_take_it(tmp_path: Path) -> None:
    """``take`` in a second process fails with the holder's pid; ``holder`` reports it without taking it."""
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from cortex_rm.container import ofd_locks;"
         f"ofd_locks.take(Path({str(path)!r})); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert ofd_locks.holder(path) == holder.pid
        with pytest.raises(ofd_locks.LockHeldError) as refused:
            ofd_locks.take(path)
        assert refused.value.holder == holder.pid
        assert ofd_locks.holder(path) == holder.pid  # the probe and the refused take left it held
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    fd = ofd_locks.take(path)  # the holder ended: free
    try:
        assert ofd_locks.holder(path) == os.getpid()  # OFD locks meet even within one process
    finally:
        os.close(fd)
    assert ofd_locks.holder(path) is None
