"""``cortex-rm node leave`` signals only the daemon that holds the state dir's lock: a pid file
left behind by a killed daemon, whose pid another process may have reused, is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.container.ofd_locks import take
from cortex_rm.node import PID_FILE
from cortex_rm.node_leave_cli import LeaveError, daemon_pid


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not a daemon (it stands for one that reused a dead daemon's pid)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_a_stale_pid_file_naming_a_live_unrelated_process_is_refused(tmp_path: Path, unrelated: subprocess.Popen[bytes]) -> None:
    """The pid file names a live process but nobody holds the lock: no daemon runs there."""
    (tmp_path / PID_FILE).write_text(f"{unrelated.pid}\n")
    with pytest.raises(LeaveError, match="no daemon runs"):
        daemon_pid(tmp_path)
    assert unrelated.poll() is None


def test_a_pid_file_that_disagrees_with_the_locks_holder_is_refused(tmp_path: Path, unrelated: subprocess.Popen[bytes]) -> None:
    """The lock is held (here by this process) but the pid file names another live process."""
    fd = take(tmp_path / "lock")
    try:
        (tmp_path / PID_FILE).write_text(f"{unrelated.pid}\n")
        with pytest.raises(LeaveError, match="does not hold"):
            daemon_pid(tmp_path)
    finally:
        os.close(fd)


def test_the_locks_holder_named_by_the_pid_file_is_the_daemon(tmp_path: Path) -> None:
    """The daemon's own case: the process holding the lock is the one its pid file names."""
    fd = take(tmp_path / "lock")
    try:
        (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")
        assert daemon_pid(tmp_path) == os.getpid()
    finally:
        os.close(fd)
    with pytest.raises(LeaveError, match="no daemon runs"):
        daemon_pid(tmp_path)  # (the lock dropped: the daemon ended)
