"""The RM's retention of aggregated logs: delete those older than ``log_retention_s`` from the
file system, every ``log_retention_check_s`` (YARN's ``AggregatedLogDeletionService``).

A sweep never fails, since a failure would stop the loop: it says what went wrong and the
next sweep tries again.  The logs of an application this RM still runs are kept whatever
their age.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cortex_rm.allocator.errors import UnknownApplication
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.config import ResourceManagerSection
from cortex_rm.fs.name_node import NameNode
from cortex_rm.fs.paths import FsPath, parse_path
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.log_aggregation import DEFAULT_REMOTE_APP_LOG_DIR, LOG_SUFFIX

log = Logger()


def start_log_retention(
    conf: ResourceManagerSection, name_node: NameNode, rm: RMContext, clock: IReactorTime
) -> LoopingCall | None:
    """The running sweep (None when ``log_retention_s`` is negative: logs are kept for ever)."""
    if conf.log_retention_s < 0:
        return None
    interval_s = conf.log_retention_check_s or max(1, conf.log_retention_s // 10)
    root = parse_path(DEFAULT_REMOTE_APP_LOG_DIR)

    def running(app_id: ApplicationId) -> bool:
        try:
            return not rm.apps.get(app_id).state.is_terminal
        except UnknownApplication:
            return False  # not in this RM's memory: its logs age like any

    def sweep() -> defer.Deferred[None]:
        try:
            cutoff_ms = int(clock.seconds() * 1000) - conf.log_retention_s * 1000
            d = name_node.delete_expired_logs(root, LOG_SUFFIX, cutoff_ms, running)
        except Exception:  # a bug must not stop the sweeps: the next one runs
            log.failure("aggregated-log retention failed")
            return defer.succeed(None)

        def deleted(paths: list[FsPath]) -> None:
            if paths:
                log.info("deleted the aggregated logs of {count} application(s) older than {s} s: {paths}",
                         count=len(paths), s=conf.log_retention_s, paths=[str(p) for p in paths])

        return d.addCallback(deleted).addErrback(lambda f: log.failure("aggregated-log retention failed", f))

    loop = LoopingCall(sweep)
    loop.clock = clock
    loop.start(interval_s, now=False)
    return loop
