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
from contextlib import ExitStack
from pathlib import Path

from cortex_rm.container import pinned_dirs
from cortex_rm.container.launch import LAUNCH_SCRIPT, PRELAUNCH_ERR, TMP_DIR, ContainerPaths

DIAGNOSTICS_TAIL_BYTES = 4096  # YARN's yarn.nodemanager.container.stderr.tail.bytes
STDOUT_TAIL_BYTES = 1024  # ours: where a PySpark driver's traceback ends up
DIR_MODE = 0o755
SCRIPT_MODE = 0o755
TOKENS_MODE = 0o600


def prepare_container(paths: ContainerPaths, tokens: bytes, owner: tuple[int, int] | None = None) -> None:
    """Create the container's dirs (application dirs, work dir with ``tmp/``, log dirs) and
    write ``container_tokens``; ``owner`` (uid, gid) is given what the container writes to.

    The work dir and the log dirs are new: PlantedPathError if anything is at their names
    already (the application's containers can write in its app dirs: see ``pinned_dirs``)."""
    for app_dir in paths.app_dirs:
        app_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for cache in (paths.public_cache, paths.private_cache):  # the runtime mounts them read-only
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with ExitStack() as fds:
        made: list[int] = []
        for app_dir in paths.app_dirs:
            made.append(_held(fds, os.open(app_dir, pinned_dirs.DIR_FLAGS)))
        app_fd = _held(fds, os.open(paths.work_dir.parent, pinned_dirs.DIR_FLAGS))
        work_fd = _held(fds, pinned_dirs.make_dir(app_fd, paths.work_dir.name, DIR_MODE, paths.work_dir.parent))
        made += [work_fd, _held(fds, pinned_dirs.make_dir(work_fd, TMP_DIR, DIR_MODE, paths.work_dir))]
        for log_dir in paths.log_dirs:
            log_dir.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            parent_fd = _held(fds, os.open(log_dir.parent, pinned_dirs.DIR_FLAGS))
            made.append(_held(fds, pinned_dirs.make_dir(parent_fd, log_dir.name, DIR_MODE, log_dir.parent)))
        pinned_dirs.write_new_file(work_fd, paths.tokens_file.name, tokens, TOKENS_MODE, paths.work_dir)
        if owner is not None:
            for fd in made:
                os.fchown(fd, *owner)
            os.chown(paths.tokens_file.name, *owner, dir_fd=work_fd, follow_symlinks=False)


def write_launch_script(paths: ContainerPaths, script: str) -> None:
    """Write ``launch_container.sh`` into the work dir (still the one ``prepare_container`` made,
    holding no such file: else PlantedPathError)."""
    with ExitStack() as fds:
        work_fd = _held(fds, open_work_dir(paths))
        pinned_dirs.write_new_file(work_fd, LAUNCH_SCRIPT, script.encode(), SCRIPT_MODE, paths.work_dir)


def open_work_dir(paths: ContainerPaths) -> int:
    """A descriptor of the container's work dir if it is still the NodeManager's own (see
    ``pinned_dirs.open_own_dir``): a container may have swapped it since it was made."""
    app_fd = os.open(paths.work_dir.parent, pinned_dirs.DIR_FLAGS)
    try:
        return pinned_dirs.open_own_dir(app_fd, paths.work_dir.name, paths.work_dir.parent)
    finally:
        os.close(app_fd)


def _held(fds: ExitStack, fd: int) -> int:
    fds.callback(os.close, fd)
    return fd


def _tail(path: Path, limit: int) -> str | None:
    # the container may have made its log file a symlink to a host file, or a FIFO
    data = pinned_dirs.read_tail(path, limit)
    return None if data is None else data.decode("utf-8", errors="replace")


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
    """Delete ``usercache/*/appcache/<app_id>`` in every local dir; the dirs deleted.

    The application's containers wrote in them: ``shutil.rmtree`` removes a symlink found
    inside without following it, and refuses (here: skips) a top-level path that is one."""
    deleted = []
    for local_dir in local_dirs:
        for app_dir in (local_dir / "usercache").glob(f"*/appcache/{app_id}"):
            shutil.rmtree(app_dir, ignore_errors=True)
            deleted.append(app_dir)
    return deleted
