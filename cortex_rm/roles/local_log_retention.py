"""The NodeManager's retention of local logs nobody will aggregate (the rules and the sweep
itself: ``container/log_retention.py``).

``LocalLogRetention`` remembers since when each application's logs have been nobody's:
those found at start count from the start, and the others from when the NodeManager says
the application ended here (``ended``: after the RM's cleanup and the aggregation, if any).
It then sweeps every half retention on the file threads. A sweep never fails, since a
failure would stop the loop: it says what went wrong and the next sweep tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cortex_rm.container.log_retention import Sweep, application_log_dirs, log_sweep_interval_s, sweep
from cortex_rm.yarn.blocking import Runner

log = Logger()


class LocalLogRetention:
    """Sweeps ``log_dirs`` every half ``retain_s`` (``live()``: the applications with a container
    here that is not done, never touched)."""

    def __init__(
        self, log_dirs: Sequence[Path], retain_s: int, run: Runner, clock: IReactorTime, live: Callable[[], set[str]]
    ) -> None:
        self.log_dirs = tuple(log_dirs)
        self.retain_s = retain_s
        self.run = run
        self.clock = clock
        self.live = live
        #: application -> since when its logs here are nobody's (seconds)
        self.unaggregated: dict[str, float] = {}
        self._loop: LoopingCall | None = None
        self._stopped = False

    def start(self) -> defer.Deferred[None]:
        """Take the logs found now as ended now, then sweep every half retention."""
        started_s = self.clock.seconds()

        def adopt(found: dict[str, list[Path]]) -> None:
            for app in found:
                self.unaggregated.setdefault(app, started_s)
            if self._stopped:
                return
            self._loop = LoopingCall(self.sweep)
            self._loop.clock = self.clock
            self._loop.start(log_sweep_interval_s(self.retain_s), now=False)

        log_dirs = self.log_dirs
        d = self.run(lambda: application_log_dirs(log_dirs)).addCallback(adopt)
        return d.addErrback(lambda f: log.failure("looking for local logs left from before this start", f))

    def stop(self) -> None:
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def ended(self, app: str) -> None:
        """``app`` ended here; what is left of its logs will not be aggregated."""
        self.unaggregated.setdefault(app, self.clock.seconds())

    def sweep(self) -> defer.Deferred[None]:
        """One sweep on the file threads; never fails."""
        ended, live = dict(self.unaggregated), self.live()
        log_dirs, now_s, retain_s = self.log_dirs, self.clock.seconds(), self.retain_s

        def done(result: Sweep) -> None:
            for app_dir in result.removed:
                log.info(
                    "removed the local logs of {app_id} from {log_dir}: not aggregated, and {retain_s} s "
                    "have passed since it ended here and since their last write",
                    app_id=app_dir.name,
                    log_dir=str(app_dir.parent),
                    retain_s=retain_s,
                )
            for app in result.gone:
                self.unaggregated.pop(app, None)

        d = self.run(lambda: sweep(log_dirs, ended, live, now_s, retain_s)).addCallback(done)
        return d.addErrback(lambda f: log.failure("removing expired local logs", f))
