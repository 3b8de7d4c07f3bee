"""Log aggregation: when an application is cleaned up on a node, its containers' logs go
into the cluster's file system, where Hadoop's ``yarn logs -applicationId`` finds them.

The NodeManager, once every container of the application has ended:

1. packs the files under ``<log_dir>/<application>/<container>/`` of every log dir
   into one file in YARN's aggregated-log format (a TFile:
   ``container/aggregated_logs.py``), written to the node's state dir;
2. asks the RM, over its tracker connection, where to put it: the RM names the
   application's owner and the file
   ``/tmp/logs/<owner>/bucket-logs-tfile/<NNNN>/<application>/<host>_<port>``
   (``yarn/log_aggregation.py``), makes the directories (``/tmp/logs`` 1777, the
   rest as the owner) and signs a CREATE ticket with this node first in the pipeline;
3. stores the file's blocks here and on the pipeline's other nodes, commits the
   write, and only then deletes the local logs (a failure keeps them, and says why).

The blocking steps run on the NodeManager's file threads; one aggregation at a time
per application.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

from cortex_rm.container.aggregated_logs import AggregatedLogWriter, ContainerLogFile
from cortex_rm.fs import tickets
from cortex_rm.internal.block_codec import WrittenBlockMessage
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn_api.webhdfs.datanode_resource import receive_blocks

log = Logger()


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
    """Aggregates finished applications' logs from ``log_dirs`` through ``data_node``."""

    def __init__(self, data_node: DataNodeRole, log_dirs: Sequence[Path], spool_dir: Path, run: Runner) -> None:
        self.data_node = data_node
        self.log_dirs = tuple(log_dirs)
        self.spool_dir = spool_dir
        self.run = run
        self._busy: dict[ApplicationId, defer.Deferred[None]] = {}

    def aggregate(self, app_id: ApplicationId, owner: str) -> defer.Deferred[None]:
        """Aggregate ``app_id``'s logs (once at a time); fires when done, fails with the reason."""
        running = self._busy.get(app_id)
        if running is not None:
            return running
        d = defer.ensureDeferred(self._aggregate(app_id, owner))
        self._busy[app_id] = d

        def done(result: object) -> object:
            self._busy.pop(app_id, None)
            return result

        return d.addBoth(done)

    async def _aggregate(self, app_id: ApplicationId, owner: str) -> None:
        containers = await self.run(lambda: collect_logs(self.log_dirs, app_id))
        if not containers:
            return
        spooled = self.spool_dir / f"{app_id}.tfile"
        await self.run(lambda: self._pack(spooled, owner, containers))
        try:
            target = await self.data_node.open_for_aggregation(str(app_id))
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
                        source = files.enter_context(path.open("rb"))
                        logs.append(ContainerLogFile(path.name, os.fstat(source.fileno()).st_size, source))
                    writer.add_container(container.container_id, logs)
            writer.close()

