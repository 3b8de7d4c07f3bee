"""The NodeManager's file work for a container: its directories, script, tokens, log tails.

Blocking functions, run off the reactor thread by ``ContainerManager`` (through its
injected runner).  The layout is YARN's (see ``launch.container_paths``):

* ``<local_dir>/usercache/<user>/appcache/<appId>/`` in every local dir (the
  application's ``LOCAL_DIRS``), holding ``filecache/`` (see ``localizer.py``) and
  the work dir ``<containerId>/`` with ``tmp/``, ``container_tokens`` and
  ``launch_container.sh``;
* ``<log_dir>/<appId>/<containerId>/`` in every log dir: ``stdout``, ``stderr``
  (Spark's command redirects there), ``prelaunch.out``/``prelaunch.err``.

An application's local dirs are deleted when it is cleaned up; its logs stay.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cortex_rm.container.launch import LAUNCH_SCRIPT, PRELAUNCH_ERR, TMP_DIR, ContainerPaths

DIAGNOSTICS_TAIL_BYTES = 4096  # YARN's yarn.nodemanager.container.stderr.tail.bytes
STDOUT_TAIL_BYTES = 1024  # ours: where a PySpark driver's traceback ends up
DIR_MODE = 0o755
SCRIPT_MODE = 0o755
TOKENS_MODE = 0o600


def prepare_container(paths: ContainerPaths, tokens: bytes, owner: tuple[int, int] | None = None) -> None:
    """Create the container's dirs (application dirs, work dir with ``tmp/``, log dirs) and
    write ``container_tokens``; ``owner`` (uid, gid) is given what the container writes to."""
    made: list[Path] = []
    for app_dir in paths.app_dirs:
        app_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        made.append(app_dir)
    paths.work_dir.mkdir(mode=DIR_MODE, exist_ok=True)
    (paths.work_dir / TMP_DIR).mkdir(mode=DIR_MODE, exist_ok=True)
    made += [paths.work_dir, paths.work_dir / TMP_DIR]
    for log_dir in paths.log_dirs:
        log_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        made.append(log_dir)
    for cache in (paths.public_cache, paths.private_cache):  # the runtime mounts them read-only
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(paths.tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKENS_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(tokens)
    made.append(paths.tokens_file)
    if owner is not None:
        for path in made:
            os.chown(path, *owner)


def write_launch_script(paths: ContainerPaths, script: str) -> None:
    """Write ``launch_container.sh`` into the work dir."""
    path = paths.work_dir / LAUNCH_SCRIPT
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SCRIPT_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(script)


def _tail(path: Path, limit: int) -> str | None:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def failure_diagnostics(
    log_dir: Path, exit_code: int, limit: int = DIAGNOSTICS_TAIL_BYTES, stdout_limit: int = STDOUT_TAIL_BYTES
) -> str:
    """What a failed container's diagnostics end with: as YARN, the tails of
    ``prelaunch.err`` and ``stderr`` from its log dir (those that are not empty); and,
    unlike YARN, a shorter tail of ``stdout``, where a PySpark driver prints the
    Python traceback of the error that ended it."""
    parts = [f"Container exited with a non-zero exit code {exit_code}."]
    for name, size in ((PRELAUNCH_ERR, limit), ("stdout", stdout_limit), ("stderr", limit)):
        text = _tail(log_dir / name, size)
        if text and text.strip():
            parts.append(f"Last {size} bytes of {name} :\n{text}")
    return "\n".join(parts)


def application_staging_dirs(sources: Sequence[str], app_id: str) -> tuple[Path, ...]:
    """The directories of ``file:`` resource sources that are named after the application
    (Spark's ``.sparkStaging/<appId>``), resolved; the application's containers share them.

    The ApplicationMaster reads its staging dir (it checks the files it hands to
    executors) and deletes it at the end, as it would on a shared file system.  A
    directory named after the application was made for it, so it holds nothing of
    anybody else's.
    """
    found: dict[Path, None] = {}
    for source in sources:
        parent = Path(os.path.realpath(Path(source).parent))
        if parent.name == app_id and parent.is_dir():
            found[parent] = None
    return tuple(found)


def delete_application_dirs(local_dirs: Sequence[Path], app_id: str) -> list[Path]:
    """Delete ``usercache/*/appcache/<app_id>`` in every local dir; the dirs deleted."""
    deleted = []
    for local_dir in local_dirs:
        for app_dir in (local_dir / "usercache").glob(f"*/appcache/{app_id}"):
            shutil.rmtree(app_dir, ignore_errors=True)
            deleted.append(app_dir)
    return deleted
