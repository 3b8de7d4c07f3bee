"""The NodeManager's retention loop on a fake clock, over real directories: logs found at start
count from the start, an application's from when it ended here; a running application's
logs stay; a sweep that fails does not stop the loop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.roles.local_log_retention import LocalLogRetention

START = 2_000_000_000.0
RETAIN = 600  # swept every 300 s


def run_now(work: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(work)


def app_logs(log_dir: Path, app: str, written: float) -> Path:
    container = log_dir / app / f"container_{app.removeprefix('application_')}_01_000001"
    container.mkdir(parents=True)
    (container / "stdout").write_text("output\n")
    for path in (container / "stdout", container, container.parent):
        os.utime(path, (written, written))
    return log_dir / app


def retention(log_dir: Path, live: set[str] | None = None) -> tuple[LocalLogRetention, Clock]:
    clock = Clock()
    clock.advance(START)
    keeper = LocalLogRetention([log_dir], RETAIN, run_now, clock, lambda: set(live or ()))
    keeper.start()
    return keeper, clock


def test_logs_found_at_start_go_a_retention_after_the_start_not_before(tmp_path: Path) -> None:
    left = app_logs(tmp_path, "application_1700000000000_0001", START - 10 * RETAIN)  # old already
    keeper, clock = retention(tmp_path)
    clock.advance(RETAIN / 2)
    clock.advance(RETAIN / 2)  # exactly a retention after the start: not past it
    assert left.exists()
    clock.advance(RETAIN / 2)
    assert not left.exists() and keeper.unaggregated == {}
    keeper.stop()


def test_a_running_applications_finished_containers_keep_their_logs_until_it_ends(tmp_path: Path) -> None:
    keeper, clock = retention(tmp_path)
    running = app_logs(tmp_path, "application_1700000000000_0002", START)  # an executor given back
    clock.advance(10 * RETAIN)
    assert running.exists()  # the application has not ended
    keeper.ended(running.name)
    clock.advance(RETAIN)
    assert running.exists()
    clock.advance(RETAIN / 2)
    assert not running.exists()
    keeper.stop()


@pytest.mark.expect_logged_errors("removing expired local logs")
def test_a_live_application_is_never_swept_and_a_failing_sweep_does_not_stop_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_logs(tmp_path, "application_1700000000000_0003", START - 10 * RETAIN)
    live = {app.name}
    keeper, clock = retention(tmp_path)
    keeper.live = lambda: set(live)
    clock.advance(10 * RETAIN)
    assert app.exists()  # a container of it runs here again
    live.clear()
    import cortex_rm.roles.local_log_retention as module

    def broken(*args: Any) -> Any:
        raise OSError("the disk went away")

    monkeypatch.setattr(module, "sweep", broken)
    clock.advance(RETAIN / 2)  # the failing sweep is logged, the loop goes on
    monkeypatch.undo()
    clock.advance(RETAIN / 2)
    assert not app.exists()
    keeper.stop()
