"""Log aggregation: when an application is cleaned up on a node, its containers' logs go
into the cluster's file system, where Hadoop's ``yarn logs -applicationId`` finds them.

The NodeManager, once every container of the application has ended, if it has logs of it:

1. asks the RM, over its tracker connection, where to put them: the RM (which lets only
   a node it told to clean the application up do so) names the application's owner and
   the file ``/tmp/logs/<owner>/bucket-logs-tfile/<NNNN>/<application>/<host>_<port>``
   (``yarn/log_aggregation.py``), makes the directories (``/tmp/logs`` 1777, the rest
   as the owner) and signs a CREATE ticket with this node first in the pipeline;
2. packs the files under ``<log_dir>/<application>/<container>/`` of every log dir into
   one file in YARN's aggregated-log format (a TFile: ``container/aggregated_logs.py``),
   spooled in the node's state dir;
3. stores the file's blocks here and on the pipeline's other nodes, commits the write,
   and only then deletes the local logs.  A failure keeps them and is tried again
   (``RETRY_DELAYS_S``), then given up, saying so.

The blocking steps run on the NodeManager's file threads; one aggregation at a time
per application.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from cortex_rm.container.aggregated_logs import AggregatedLogWriter, ContainerLogFile
from cortex_rm.fs import tickets
from cortex_rm.internal.block_codec import WrittenBlockMessage
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn_api.webhdfs.block_work import receive_blocks

log = Logger()

#: After a failed aggregation, wait this long before each new try (then give up and say so).
RETRY_DELAYS_S = (10.0, 60.0, 300.0)


@dataclass(frozen=True)
class ContainerLogs:
    """One container's log files on this node."""

    container_id: str
    files: tuple[Path, ...]


def collect_logs(log_dirs: Sequence[Path], app_id: ApplicationId) -> list[ContainerLogs]:
    """Every container of ``app_id`` with its log files (sorted; a container in several log dirs once)."""
    found: dict[str, list[Path]] = {}
    for log_dir in log_dirs:
        app_dir = log_dir / str(app_id)
        if not app_dir.is_dir():
            continue
        for container_dir in sorted(app_dir.iterdir()):
            if container_dir.is_dir() and not container_dir.is_symlink():
                files = sorted(p for p in container_dir.iterdir() if p.is_file() and not p.is_symlink())
                found.setdefault(container_dir.name, []).extend(files)
    return [ContainerLogs(container_id, tuple(files)) for container_id, files in sorted(found.items())]


def remove_local_logs(log_dirs: Sequence[Path], app_id: ApplicationId) -> None:
    for log_dir in log_dirs:
        shutil.rmtree(log_dir / str(app_id), ignore_errors=True)


class LogAggregator:
    """Aggregates finished applications' logs from ``log_dirs`` through ``data_node``; a failed
    aggregation is tried again after each of ``RETRY_DELAYS_S``, then left (and said so)."""

    def __init__(
        self, data_node: DataNodeRole, log_dirs: Sequence[Path], spool_dir: Path, run: Runner, clock: IReactorTime
    ) -> None:
        self.data_node = data_node
        self.log_dirs = tuple(log_dirs)
        self.spool_dir = spool_dir
        self.run = run
        self.clock = clock
        self._busy: dict[ApplicationId, list[defer.Deferred[None]]] = {}
        # what a crash left half-written (nothing else is ever in the spool dir)
        shutil.rmtree(spool_dir, ignore_errors=True)

    def aggregate(self, app_id: ApplicationId) -> defer.Deferred[None]:
        """Aggregate ``app_id``'s logs, one aggregation at a time per application; fires when
        done, or when given up after the retries (never with a failure: the log says why)."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if app_id in self._busy:
            self._busy[app_id].append(waiter)
            return waiter
        self._busy[app_id] = [waiter]

        def done(_: object) -> None:
            for w in self._busy.pop(app_id, []):
                w.callback(None)

        defer.ensureDeferred(self._with_retries(app_id)).addBoth(done)
        return waiter

    async def _with_retries(self, app_id: ApplicationId) -> None:
        for tries, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                await self._aggregate(app_id)
                return
            except Exception as e:  # noqa: BLE001 - the RM, a pipeline node or the disk failed: said, then tried again
                if delay is None:
                    log.warn(
                        "could not aggregate the logs of {app_id} after {tries} tries; they stay in the log dirs: {error}",
                        app_id=str(app_id),
                        tries=tries,
                        error=str(e),
                    )
                    return
                log.info(
                    "aggregating the logs of {app_id} failed ({error}); trying again in {delay:.0f} s",
                    app_id=str(app_id),
                    error=str(e),
                    delay=delay,
                )
                await deferLater(self.clock, delay, lambda: None)

    async def _aggregate(self, app_id: ApplicationId) -> None:
        containers = await self.run(lambda: collect_logs(self.log_dirs, app_id))
        if not containers:
            await self.run(lambda: remove_local_logs(self.log_dirs, app_id))  # empty dirs only
            return
        target = await self.data_node.open_for_aggregation(str(app_id))  # the RM names the owner
        spooled = self.spool_dir / f"{app_id}.tfile"
        try:
            await self.run(lambda: self._pack(spooled, target.owner, containers))
            ticket = tickets.verify(self.data_node.keys(), target.ticket, "CREATE", self.data_node.now_ms())

            def store() -> list[WrittenBlockMessage]:
                with spooled.open("rb") as body:
                    return receive_blocks(self.data_node, ticket, target.ticket, body)

            written = await self.run(store)
            length = await self.data_node.commit(target.ticket, written)
        finally:
            await self.run(lambda: spooled.unlink(missing_ok=True))
        await self.run(lambda: remove_local_logs(self.log_dirs, app_id))
        log.info(
            "aggregated the logs of {count} container(s) of {app_id} into {path} ({length} bytes)",
            count=len(containers),
            app_id=str(app_id),
            path=target.path,
            length=length,
        )

    def _pack(self, spooled: Path, owner: str, containers: Sequence[ContainerLogs]) -> None:
        """Write the aggregated log file: each log file's length is taken first and exactly that
        much of it is copied (as Hadoop does), one container's files open at a time."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with spooled.open("wb") as out:
            writer = AggregatedLogWriter(out, owner)
            for container in containers:
                with ExitStack() as files:
                    logs = []
                    for path in container.files:
                        # the container wrote its log dir: a log made a symlink or FIFO since
                        # ``collect_logs`` looked is skipped, not followed or waited on
                        try:
                            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                        except OSError:
                            continue
                        source = files.enter_context(os.fdopen(fd, "rb"))
                        if not stat.S_ISREG(os.fstat(fd).st_mode):
                            continue
                        logs.append(ContainerLogFile(path.name, os.fstat(source.fileno()).st_size, source))
                    writer.add_container(container.container_id, logs)
            writer.close()

