"""Local logs nobody aggregates leave the node after ``[nodemanager] log_retain_s``: which
application log dirs are expired, on real directories with their times set by the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortex_rm.config import ConfigError, NodeManagerSection
from cortex_rm.container.log_retention import (
    expired_application_logs,
    log_sweep_interval_s,
    newest_write,
    remove_expired_logs,
)

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


def test_old_logs_of_a_finished_application_are_removed_and_recent_ones_stay(tmp_path: Path) -> None:
    logs = tmp_path / "nm-logs"
    old = app_logs(logs, "application_1700000000000_0001", OLD)
    recent = app_logs(logs, "application_1700000000000_0002", RECENT)
    assert remove_expired_logs([logs], set(), NOW, RETAIN) == [old]
    assert not old.exists() and recent.exists()


def test_a_file_written_lately_keeps_its_application(tmp_path: Path) -> None:
    logs = tmp_path / "nm-logs"
    app = app_logs(logs, "application_1700000000000_0001", OLD, file_written=RECENT)
    assert newest_write(app) == RECENT
    assert expired_application_logs([logs], set(), NOW, RETAIN) == []


def test_live_applications_and_what_is_not_an_application_are_never_touched(tmp_path: Path) -> None:
    logs = tmp_path / "nm-logs"
    live = app_logs(logs, "application_1700000000000_0001", OLD)
    stranger = logs / "notes"
    stranger.mkdir()
    os.utime(stranger, (OLD, OLD))
    elsewhere = app_logs(tmp_path / "elsewhere", "application_1700000000000_0009", OLD)
    (logs / "application_1700000000000_0002").symlink_to(elsewhere)
    assert remove_expired_logs([logs], {live.name}, NOW, RETAIN) == []
    assert live.exists() and stranger.exists() and (elsewhere / next(elsewhere.iterdir()).name).exists()


def test_every_log_dir_is_swept_and_a_missing_one_is_no_error(tmp_path: Path) -> None:
    first = app_logs(tmp_path / "disk1", "application_1700000000000_0001", OLD)
    second = app_logs(tmp_path / "disk2", "application_1700000000000_0001", OLD)
    found = expired_application_logs([tmp_path / "disk1", tmp_path / "disk2", tmp_path / "gone"], set(), NOW, RETAIN)
    assert found == [first, second]


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
