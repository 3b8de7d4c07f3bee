"""Local logs nobody will aggregate: removed once the retention has passed.

A finished application's container logs leave a node's log dirs when they are
aggregated into the file system (``roles/log_aggregation.py``).  Those that are not -
aggregation turned off, or given up after its retries - would otherwise stay for ever
and fill the contributor's disk.  As YARN's NodeManager does with
``yarn.nodemanager.log.retain-seconds``, they are removed ``[nodemanager] log_retain_s``
seconds after the application ended here (the RM's cleanup order, then the aggregation's
end) and after their last write, whichever is later.  Only applications that ended are
ever touched: a running application whose containers here have finished keeps their
logs until it ends.  Logs found at the NodeManager's start, which no process remembers,
count as ended then.

The NodeManager calls :func:`sweep` on its file threads now and then.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def application_log_dirs(log_dirs: Iterable[Path]) -> dict[str, list[Path]]:
    """Application id -> its log dirs (real directories, not links) under ``log_dirs``; a log
    dir that cannot be listed is passed over."""
    found: dict[str, list[Path]] = {}
    for log_dir in log_dirs:
        try:
            entries = sorted(log_dir.iterdir())
        except OSError:
            continue
        for app_dir in entries:
            if app_dir.name.startswith(APPLICATION_PREFIX) and app_dir.is_dir() and not app_dir.is_symlink():
                found.setdefault(app_dir.name, []).append(app_dir)
    return found


@dataclass(frozen=True)
class Sweep:
    """What one sweep did: the dirs it removed, and the ended applications with no logs left
    here (forgotten by the caller)."""

    removed: list[Path]
    gone: set[str]


def sweep(
    log_dirs: Sequence[Path], ended: Mapping[str, float], live: Container[str], now_s: float, retain_s: float
) -> Sweep:
    """Remove the log dirs of the ``ended`` applications (id -> when they ended here) not
    written for ``retain_s`` since that moment and their last write; ``live`` ones (a container
    here again) are kept.  A dir that cannot be read or removed is left for the next sweep."""
    present = application_log_dirs(log_dirs)
    removed = []
    left: set[str] = set()  # applications with logs still here after this sweep
    for app, dirs in present.items():
        if app not in ended or app in live:
            left.add(app)
            continue
        for app_dir in dirs:
            try:
                expired = now_s - max(ended[app], newest_write(app_dir)) > retain_s
            except OSError:
                expired = False
            if expired:
                shutil.rmtree(app_dir, ignore_errors=True)
            if app_dir.exists():
                left.add(app)
            elif expired:
                removed.append(app_dir)
    return Sweep(removed, {app for app in ended if app not in left})
