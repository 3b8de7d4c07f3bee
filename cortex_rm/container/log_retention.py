"""Local logs nobody will aggregate: removed once they are older than the retention.

A finished application's container logs leave a node's log dirs when they are
aggregated into the file system (``roles/log_aggregation.py``).  Those that are not -
aggregation turned off, given up after its retries, or an application whose end this
node never heard of (it was down) - would otherwise stay for ever and fill the
contributor's disk.  As YARN's NodeManager does with
``yarn.nodemanager.log.retain-seconds``, they are removed once nothing has been
written to them for ``[nodemanager] log_retain_s`` seconds; an application with a
live container here, or whose aggregation is under way, is never touched.

The NodeManager runs :func:`remove_expired_logs` on its file threads now and then.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Container, Iterable, Sequence
from pathlib import Path

#: How an application's log dir is named (``<log_dir>/<application id>/<container id>/<file>``).
APPLICATION_PREFIX = "application_"


def log_sweep_interval_s(retain_s: float) -> float:
    """How often to look for expired logs: half the retention, between a minute and an hour."""
    return max(60.0, min(3600.0, retain_s / 2))


def newest_write(app_dir: Path) -> float:
    """When anything under ``app_dir`` (the dir, its container dirs and their files) was last
    written: the newest mtime, not following symbolic links."""
    newest = app_dir.lstat().st_mtime
    with os.scandir(app_dir) as containers:
        for container in containers:
            newest = max(newest, container.stat(follow_symlinks=False).st_mtime)
            if not container.is_dir(follow_symlinks=False):
                continue
            with os.scandir(container.path) as files:
                for f in files:
                    newest = max(newest, f.stat(follow_symlinks=False).st_mtime)
    return newest


def expired_application_logs(
    log_dirs: Iterable[Path], live: Container[str], now_s: float, retain_s: float
) -> list[Path]:
    """The application log dirs under ``log_dirs`` that are not ``live`` and were last written
    more than ``retain_s`` seconds before ``now_s`` (sorted)."""
    expired = []
    for log_dir in log_dirs:
        try:
            entries = sorted(log_dir.iterdir())
        except FileNotFoundError:
            continue
        for app_dir in entries:
            if not app_dir.name.startswith(APPLICATION_PREFIX) or app_dir.name in live:
                continue
            if app_dir.is_symlink() or not app_dir.is_dir():
                continue
            try:
                if now_s - newest_write(app_dir) > retain_s:
                    expired.append(app_dir)
            except FileNotFoundError:  # removed meanwhile (aggregated)
                continue
    return expired


def remove_expired_logs(log_dirs: Sequence[Path], live: Container[str], now_s: float, retain_s: float) -> list[Path]:
    """Remove what :func:`expired_application_logs` finds; the dirs removed."""
    expired = expired_application_logs(log_dirs, live, now_s, retain_s)
    for app_dir in expired:
        shutil.rmtree(app_dir, ignore_errors=True)
    return expired
