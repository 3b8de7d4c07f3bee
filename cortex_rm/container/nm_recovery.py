"""NodeManager recovery: what a running container leaves on disk, and what a restart makes of it.

YARN's NodeManager with ``yarn.nodemanager.recovery.enabled`` keeps each container's start request
and progress in its state store, lets its containers outlive the daemon, and at the next start
re-acquires the ones still running and reports the others complete with the exit code their
launch wrapper wrote.  Cortex does the same with ``[nodemanager] recovery = true``:

* ``ContainerRecordStore``: one JSON file per container, ``<state_dir>/nm-recovery/<id>.json``,
  written (atomically: a temporary file, then a rename) before the runtime starts the container,
  and again once its init has a pid.  It holds what the container's ContainerToken granted (user,
  resource, priority, creation time) and what finding it again needs: its init's pid with the
  pid's start time (``/proc/<pid>/stat`` field 22, so a reused pid is not taken for it), its
  cgroup, LXC name, work and log dirs.  It is removed once the container is DONE here.
* ``EXIT_CODE_FILE``: the container's wrapper (``lxc_config.RECORDING_WRAPPER_SCRIPT``) writes
  the command's exit code there, in the container's work dir, before the container ends, so a
  container that ended while the daemon was down reports its real exit status.
* ``recover``: at start, each record becomes a ``Reattach`` (its init still runs: the
  NodeManager watches it again, can kill it, and reports it RUNNING) or a ``Completed`` with the
  recorded exit code; when none was written (the container was killed as a whole, or never
  started) it is YARN's ``ExitCode.LOST``, 154, "Container exited with a non-zero exit code 154",
  as YARN's ``RecoveredContainerLaunch`` reports a container it cannot re-acquire.

The decisions are a pure function of the records and two probes (is this process alive? what
exit code was written?), so they are tested with a fake process table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final

from twisted.logger import Logger

log = Logger()

#: The directory under the NodeManager's state dir that holds the container records.
RECOVERY_DIR: Final = "nm-recovery"
#: The file in a container's work dir that its wrapper writes the command's exit code to.
EXIT_CODE_FILE: Final = ".cortex-container-exit-code"
#: YARN's ``ContainerExecutor.ExitCode.LOST``: a recovered container whose exit code is unknown.
LOST_EXIT_CODE: Final = 154
_MAX_RECORD_BYTES: Final = 64 * 1024
_MAX_EXIT_FILE_BYTES: Final = 32


@dataclass(frozen=True)
class ContainerRecord:
    """What the state store keeps of one container (see the module docstring)."""

    container_id: str
    application: str
    user: str
    memory_mb: int
    vcores: int
    priority: int
    creation_time_ms: int
    work_dir: str
    log_dir: str
    #: Every log dir of the container (``ContainerPaths.log_dirs``) and its app dirs, for the reports.
    log_dirs: tuple[str, ...] = ()
    app_dirs: tuple[str, ...] = ()
    user_dirs: tuple[str, ...] = ()
    lxc_name: str = ""
    cgroup_dir: str = ""
    #: The runtime image root it runs in ("" none): kept while it runs, and where the next start begins.
    root_image: str = ""
    #: Its application's slot of source ports and peers outside the cluster: what the network policy
    #: needs back (``lxc_sandbox``; the application's block of host ids is in ``cgroup_dir``).
    port_slot: int | None = None
    peers: tuple[tuple[str, int], ...] = ()
    #: The host pid of the container's init and its start time in clock ticks (None: not started).
    pid: int | None = None
    pid_start_ticks: int | None = None

    @staticmethod
    def from_json(text: str) -> ContainerRecord:
        """A record from its JSON; ValueError when it is not one."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a container record is a JSON object")
        fields = ContainerRecord.__dataclass_fields__
        unknown = set(raw) - set(fields)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        for key in ("log_dirs", "app_dirs", "user_dirs"):
            if key in raw:
                if not isinstance(raw[key], list) or not all(isinstance(p, str) for p in raw[key]):
                    raise ValueError(f"{key} is not a list of paths")
                raw[key] = tuple(raw[key])
        if "peers" in raw:
            peers = raw["peers"]
            if not isinstance(peers, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int for p in peers
            ):
                raise ValueError("peers is not a list of [host, port]")
            raw["peers"] = tuple((host, port) for host, port in peers)
        try:
            record = ContainerRecord(**raw)
        except TypeError as e:
            raise ValueError(str(e)) from None
        strings = ("container_id", "application", "user", "work_dir", "log_dir", "lxc_name", "cgroup_dir", "root_image")
        for key in strings:
            if not isinstance(getattr(record, key), str):
                raise ValueError(f"{key} is not a string")
        for key in ("memory_mb", "vcores", "priority", "creation_time_ms"):
            if type(getattr(record, key)) is not int:
                raise ValueError(f"{key} is not an integer")
        for key in ("pid", "pid_start_ticks", "port_slot"):
            value = getattr(record, key)
            if value is not None and (type(value) is not int or value < (1 if key == "pid" else 0)):
                raise ValueError(f"{key} is not a non-negative integer")
        if not record.container_id or "/" in record.container_id or record.container_id.startswith("."):
            raise ValueError(f"bad container id {record.container_id!r}")
        return record

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class ContainerRecordStore:
    """The records of this NodeManager's containers, one file each under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, container_id: str) -> Path:
        return self.directory / f"{container_id}.json"

    def write(self, record: ContainerRecord) -> None:
        """Store ``record`` (replacing the container's previous one) atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(record.container_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.to_json())  # (no fsync: a machine that crashes takes its containers with it)
        os.replace(tmp, path)

    def launched(self, container_id: str, pid: int, pid_start_ticks: int | None, **runtime: object) -> None:
        """The container's init runs as ``pid``: add it (and what the runtime says of it, ``runtime``:
        record fields such as ``cgroup_dir``) to its record (none: nothing is done)."""
        try:
            record = ContainerRecord.from_json(self._path(container_id).read_text())
        except (OSError, ValueError):
            return
        self.write(replace(record, pid=pid, pid_start_ticks=pid_start_ticks, **runtime))  # type: ignore[arg-type]

    def remove(self, container_id: str) -> None:
        """The container is DONE here: it is not to be recovered."""
        self._path(container_id).unlink(missing_ok=True)

    def load(self) -> list[ContainerRecord]:
        """Every readable record, by container id; unreadable ones are logged and removed."""
        try:
            paths = sorted(p for p in self.directory.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            try:
                if path.is_symlink() or path.stat().st_size > _MAX_RECORD_BYTES:
                    raise ValueError("not a regular record file")
                record = ContainerRecord.from_json(path.read_text())
                if path.name != f"{record.container_id}.json":
                    raise ValueError(f"names container {record.container_id}")
            except (OSError, ValueError) as e:
                log.warn("container record {path} is unreadable ({error}); removed", path=str(path), error=str(e))
                path.unlink(missing_ok=True)
                continue
            found.append(record)
        return found


@dataclass(frozen=True)
class Reattach:
    """The container still runs: watch it again."""

    record: ContainerRecord


@dataclass(frozen=True)
class Completed:
    """The container ended while the daemon was down (or never started): report it complete."""

    record: ContainerRecord
    exit_code: int
    diagnostics: str


RecoveryDecision = Reattach | Completed


def recover(
    records: Iterable[ContainerRecord],
    alive: Callable[[ContainerRecord], bool],
    exit_code: Callable[[ContainerRecord], int | None],
) -> list[RecoveryDecision]:
    """What each record becomes at start (see the module docstring): ``alive`` says whether its init
    still runs (the same process: pid and start time), ``exit_code`` what its wrapper wrote."""
    decisions: list[RecoveryDecision] = []
    for record in records:
        if record.pid is not None and alive(record):
            decisions.append(Reattach(record))
            continue
        code = exit_code(record) if record.pid is not None else None
        if code is None:
            why = "it never started" if record.pid is None else "it ended without an exit code"
            decisions.append(
                Completed(
                    record,
                    LOST_EXIT_CODE,
                    f"Container {record.container_id} was not found running when its NodeManager restarted ({why}). "
                    f"Container exited with a non-zero exit code {LOST_EXIT_CODE}",
                )
            )
        else:
            decisions.append(
                Completed(record, code, f"Container {record.container_id} ended while its NodeManager was down.")
            )
    return decisions


# ---------------------------------------------------------------- the real probes


def pid_start_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22); None: gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command (field 2) is in parentheses and may hold spaces and parentheses itself
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        if fields[0] in ("Z", "X"):  # a zombie has ended
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process_alive(record: ContainerRecord, proc: Path = Path("/proc")) -> bool:
    """The record's init still runs: its pid names a live process that started when it did."""
    if record.pid is None:
        return False
    ticks = pid_start_ticks(record.pid, proc)
    return ticks is not None and (record.pid_start_ticks is None or ticks == record.pid_start_ticks)


def written_exit_code(record: ContainerRecord) -> int | None:
    """The exit code the container's wrapper wrote in its work dir (None: none, or not a number).

    The work dir is the container's to write: the file is opened without following a symlink and
    read bounded."""
    try:
        fd = os.open(Path(record.work_dir) / EXIT_CODE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, _MAX_EXIT_FILE_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and len(text) <= 3 else None
