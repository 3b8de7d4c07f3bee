"""Local logs nobody aggregates leave the node ``[nodemanager] log_retain_s`` after their application
ended here: which application log dirs go, on real directories with their times set by the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortex_rm.config import ConfigError, NodeManagerSection
from cortex_rm.container.log_retention import application_log_dirs, log_sweep_interval_s, newest_write, sweep

NOW = 2_000_000_000.0
RETAIN = 10_800
OLD = NOW - RETAIN - 1
RECENT = NOW - RETAIN + 60


def app_logs(log_dir: Path, app: str, written: float, *, file_written: float | None = None) -> Path:
    """``<log_dir>/<app>/<container>/stdout``, everything last written at ``written`` (the file at
    ``file_written`` if given)."""
    container = log_dir / app / f"container_{app.removeprefix('application_')}_01_000001"
    container.mkdir(parents=True)
    out = container / "stdout"
    out.write_text("driver output\n")
    os.utime(out, (written, file_written if file_written is not None else written))
    for d in (container, container.parent):
        os.utime(d, (written, written))
    return log_dir / app


def test_logs_of_an_ended_application_go_once_the_retention_has_passed_since_its_end_and_last_write(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "nm-logs"
    old = app_logs(logs, "application_1700000000000_0001", OLD)
    ended_lately = app_logs(logs, "application_1700000000000_0002", OLD)
    written_lately = app_logs(logs, "application_1700000000000_0003", OLD, file_written=RECENT)
    assert newest_write(written_lately) == RECENT
    ended = {old.name: OLD, ended_lately.name: RECENT, written_lately.name: OLD}
    result = sweep([logs], ended, set(), NOW, RETAIN)
    assert result.removed == [old] and result.gone == {old.name}
    assert not old.exists() and ended_lately.exists() and written_lately.exists()


def test_a_running_applications_old_logs_stay_however_old(tmp_path: Path) -> None:
    """Its containers here finished long ago (Spark gave idle executors back), but it has not
    ended: nothing of it is touched, nor of a live or unknown application."""
    logs = tmp_path / "nm-logs"
    running = app_logs(logs, "application_1700000000000_0001", OLD)
    live_again = app_logs(logs, "application_1700000000000_0002", OLD)
    result = sweep([logs], {live_again.name: OLD}, {live_again.name}, NOW, RETAIN)
    assert result.removed == [] and result.gone == set()
    assert running.exists() and live_again.exists()


def test_what_is_not_an_application_is_never_touched_and_links_are_not_followed(tmp_path: Path) -> None:
    logs = tmp_path / "nm-logs"
    stranger = logs / "notes"
    stranger.mkdir(parents=True)
    os.utime(stranger, (OLD, OLD))
    elsewhere = app_logs(tmp_path / "elsewhere", "application_1700000000000_0009", OLD)
    (logs / "application_1700000000000_0009").symlink_to(elsewhere)
    result = sweep([logs], {"application_1700000000000_0009": OLD, "notes": OLD}, set(), NOW, RETAIN)
    assert result.removed == [] and stranger.exists() and any(elsewhere.iterdir())


def test_every_log_dir_is_swept_an_unreadable_one_is_passed_over_and_gone_apps_are_reported(tmp_path: Path) -> None:
    first = app_logs(tmp_path / "disk1", "application_1700000000000_0001", OLD)
    second = app_logs(tmp_path / "disk2", "application_1700000000000_0001", OLD)
    (tmp_path / "not-a-dir").write_text("")
    ended = {first.name: OLD, "application_1700000000000_0005": OLD}  # the second had no logs here
    assert application_log_dirs([tmp_path / "disk1", tmp_path / "disk2"]) == {first.name: [first, second]}
    result = sweep([tmp_path / "disk1", tmp_path / "disk2", tmp_path / "gone", tmp_path / "not-a-dir"], ended, set(), NOW, RETAIN)
    assert result.removed == [first, second]
    assert result.gone == {first.name, "application_1700000000000_0005"}


def test_the_sweep_runs_every_half_retention_between_a_minute_and_an_hour() -> None:
    assert log_sweep_interval_s(60) == 60
    assert log_sweep_interval_s(1800) == 900
    assert log_sweep_interval_s(10_800) == 3600


@pytest.mark.parametrize(("retain_s", "ok"), [(-1, True), (60, True), (10_800, True), (0, False), (59, False), (-2, False)])
def test_the_retention_is_minus_one_or_at_least_a_minute(tmp_path: Path, retain_s: int, ok: bool) -> None:
    section = NodeManagerSection(log_retain_s=retain_s)
    if ok:
        section.check("cortex.toml", tmp_path)
    else:
        with pytest.raises(ConfigError, match="log_retain_s"):
            section.check("cortex.toml", tmp_path)
