"""The caps the contributor set in ``[nodemanager]``, applied to a running NodeManager.

* memory and CPU: the node cgroup above every container (``container/node_cgroup.py``), written by
  the LXC runtime; its memory limit leaves room for the function sandboxes' budget
  (``[events] max_sandbox_memory_mb``) when the node executes functions: they run in it too;
* disk: one ``DiskCap`` (``fs/disk_cap.py``) whose users are the DataNode's block store (it owns
  the cap), the runtime image cache (evictable: its roots but the cluster's image and those of
  running containers) and the localizer's shared caches.

* schedule (``[nodemanager] schedule``, ``container/offer_schedule.py``): each heartbeat says
  whether the node is within it (``NodeHealth.offering``); outside it the RM places nothing new
  there and the running containers go on to their end.  Between the RM's (re)registration and the
  node's next heartbeat (a second) the node counts as offering.

``NodeCaps.attach`` wires them once the role has started (``node.py``).  Before that (from the
``cortex-rm node`` command's start: ``hold_hangups``) a SIGHUP is logged and ignored instead of
ending the daemon (its default action).

Live changes: on SIGHUP (``systemctl reload cortex-rm``) the daemon re-reads its config file.  A
file that does not load or validate is logged and ignored: the caps in force stay.  Otherwise its
``memory_mb``, ``vcores`` and ``disk_gb`` take effect at once: the node cgroup's limits are
rewritten, the disk cap changes (only new writes are held to a lower one: what is stored stays),
and the next heartbeat carries the new capability, which the RM gives the node in its scheduler,
REST and NodeCLI.  Running containers are not killed when the new caps are lower: nothing new is
placed on the node until enough of them have ended (YARN's overcommit timeout is not reproduced);
a memory cap lower than what they use now cannot be written to the cgroup (the kernel refuses),
is logged, and is tried again at the next reload or container start.  Other changed keys need a
restart, which the log says.

The file is read and the cgroup's files are written on the node's file threads (``run``), never on
the reactor; reloads and limit writes go through one queue, so they take effect in the order the
signals came, each after the one before has finished (a second SIGHUP while the first's writes run
waits for them, and is applied after).  The caps in force are the role's ``section`` (one copy).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.config.errors import ConfigError
from cortex_rm.config.events import EventsSection
from cortex_rm.config.loader import Config, load_config
from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.container.node_cgroup import limits_of
from cortex_rm.container.offer_schedule import OfferSchedule
from cortex_rm.fs.disk_cap import GB, DiskCap
from cortex_rm.roles.node_manager import NodeManagerRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.resource_tracker import NodeHealth
from cortex_rm.yarn.resources import Resource

#: The keys a reload applies; any other change waits for a restart.
LIVE_KEYS = ("memory_mb", "vcores", "disk_gb", "schedule")

log = Logger()
T = TypeVar("T")


def hold_hangups() -> None:
    """Until ``NodeCaps.attach`` installs the reload, SIGHUP (``systemctl reload`` while the daemon
    starts, or on a daemon that has no NodeManager) is logged and ignored (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, _not_ready)


def _not_ready(signum: int, frame: Any) -> None:
    log.warn("SIGHUP: not ready to reload the caps (the node is starting, or runs no NodeManager); ignored")


class NodeCaps:
    """The caps of one running NodeManager (see the module docstring)."""

    def __init__(
        self, role: NodeManagerRole, section: NodeManagerSection, disk: DiskCap | None, source: str = "",
        sandbox_memory_mb: int = 0, run: Runner | None = None,
    ) -> None:  # fmt: skip
        """``section``: the caps at the start (the role's section holds those in force from then on);
        ``run``: the node's file threads, for the config file and the cgroup (needed with containers)."""
        self.role = role
        #: The function sandboxes' memory budget, in the node cgroup beside the containers' (0: none run here).
        self.sandbox_memory_mb = sandbox_memory_mb
        self.source = source  # the config file a reload reads
        #: The node's disk cap (None without a DataNode: then nothing on disk is Cortex's to cap).
        self.disk = disk
        self.schedule = OfferSchedule.parse(section.schedule)
        self.offering = True  # as the last heartbeat said
        self.run = run
        #: Reloads and limit writes, one after the other in the order they came: each step's
        #: Deferred holds back the next (``_then``).
        self._steps: defer.Deferred[None] = defer.succeed(None)

    @classmethod
    def attach(
        cls, role: NodeManagerRole, section: NodeManagerSection, source: str = "", events: EventsSection | None = None
    ) -> NodeCaps:
        """Make the disk cap's users known to it and set it to ``section.disk_gb``; with ``source`` (the
        config file), SIGHUP reloads the caps from it (on the main thread only: signals go there).  With
        ``events`` saying this node executes functions, the node cgroup makes room for their sandboxes."""
        disk = role.data_node.store.disk if role.data_node is not None else None
        sandbox_mb = events.max_sandbox_memory_mb if events is not None and events.execute else 0
        run = role.containers.run if role.containers is not None else None
        caps = cls(role, section, disk, source, sandbox_mb, run)
        if sandbox_mb:
            caps._set_limits()
        if source and Path(source).is_file() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, caps._hangup)
        if role.status_updater is not None:
            inner = role.status_updater.health

            def health() -> NodeHealth:
                caps.protect_images()  # (each heartbeat: a second at most behind the containers)
                return caps.with_offer(inner())

            role.status_updater.health = health
        if disk is None:
            return caps
        disk.set_cap(round(section.disk_gb * GB))
        if role.image is not None and run is not None:
            cache = role.image.cache
            cache.disk = disk
            caps.protect_images()
            disk.add_user(cache)
            run(cache.scan).addErrback(lambda f: log.failure("reading the runtime image cache failed", f))
        if role.containers is not None:
            role.containers.localizer.disk = disk
            disk.add_user(role.containers.localizer)
        if section.disk_gb:
            log.info("disk cap: {gb} GB for block replicas, runtime images and localized resources", gb=section.disk_gb)
        return caps

    def with_offer(self, health: NodeHealth) -> NodeHealth:
        """``health`` saying whether the node is within its schedule now (logged when that changes)."""
        offering = self.schedule.offers(self.role.reactor.seconds())
        if offering != self.offering:
            self.offering = offering
            log.info("schedule {schedule}: {what}", schedule=str(self.schedule),
                     what="offering again" if offering else "outside it: no new containers, the running ones go on")
        return health if offering else dataclasses.replace(health, offering=False)

    def _show(self, new: NodeManagerSection) -> None:
        """Make the role show the new caps: ``/ws/v1/node/info``, the ``/node`` page and the ring's
        capacity report (made from the role's section, gossiped again now)."""
        info = getattr(self.role, "info", None)  # (set once its web site is up)
        if info is not None:
            info.memory_mb, info.vcores = new.memory_mb, new.vcores
        republisher = getattr(self.role, "republisher", None)  # (on a ring member)
        if republisher is not None:
            republisher.run_now()

    def _then(self, step: Callable[[], defer.Deferred[T]]) -> defer.Deferred[T]:
        """Run ``step`` once every step queued before it has finished; fires with its outcome."""
        done: defer.Deferred[T] = defer.Deferred()

        def start(_: object) -> defer.Deferred[None]:
            return defer.maybeDeferred(step).addCallbacks(done.callback, done.errback)

        self._steps.addCallback(start)  # (``start`` never fails: the queue goes on after a failed step)
        return done

    def _set_limits(self) -> defer.Deferred[None]:
        """Write the node cgroup's limits for the caps in force now, on a file thread after the steps
        queued before (the LXC runtime's cgroup; other runtimes have none); fires once written."""
        runtime = self.role.containers.runtime if self.role.containers is not None else None
        set_limits = getattr(runtime, "set_limits", None)
        if set_limits is None or self.run is None:
            return defer.succeed(None)
        run, limits = self.run, limits_of(self.role.section, self.sandbox_memory_mb)  # (taken now, on the reactor)

        def write() -> defer.Deferred[None]:
            return run(lambda: set_limits(limits)).addCallback(lambda _: None)

        written = self._then(write)
        written.addErrback(lambda f: log.failure("writing the node cgroup's limits failed", f))
        return written

    def protect_images(self) -> None:
        """Hand the image cache the runtime images not to evict, as a snapshot taken here (on the
        reactor, which owns the containers' table): the one the cluster names (from before it is
        unpacked: an unpack's new root is never evictable before the node takes it up) and those
        running containers use."""
        image = self.role.image
        if image is None:
            return
        names = {root.name for root in self.role.containers.image_roots_in_use()} if self.role.containers else set()
        if image.state.root is not None:
            names.add(image.state.root.name)
        if image.state.wanted:
            names.add(image.state.wanted)
        image.cache.protected = frozenset(names)

    def _hangup(self, signum: int, frame: Any) -> None:
        self.role.reactor.callFromThread(self.reload)

    def reload(self) -> defer.Deferred[bool]:
        """Re-read the config file (on a file thread, once the steps before it have finished) and
        apply its caps (see the module docstring); fires with False when the file was refused
        (logged; the caps in force stay)."""
        run = self.run

        def read() -> defer.Deferred[Config]:
            if run is None:  # (no containers: a test's role)
                return defer.maybeDeferred(load_config, self.source)
            return run(lambda: load_config(self.source))

        def refused(failure: Failure) -> bool:
            failure.trap(ConfigError, OSError, ValueError)
            log.error("reload: {source} refused, the caps stay as they were: {error}", source=self.source,
                      error=failure.getErrorMessage())  # fmt: skip
            return False

        def failed(failure: Failure) -> bool:
            log.failure("reloading the caps failed; they stay as they were", failure)
            return False

        return self._then(lambda: read().addCallbacks(self._loaded, refused)).addErrback(failed)

    def _loaded(self, config: Config) -> bool:
        new, old = config.nodemanager, self.role.section
        if dataclasses.replace(new, **{k: getattr(old, k) for k in LIVE_KEYS}) != old:
            log.warn("reload: [nodemanager] keys other than {keys} changed too: they take effect at the next restart",
                     keys=", ".join(LIVE_KEYS))  # fmt: skip
        self.apply(new)
        return True

    def apply(self, new: NodeManagerSection) -> defer.Deferred[None]:
        """Put the caps of ``new`` in force: the role's section, the disk cap, the capability the RM is
        told at once; the node cgroup once the writes before have finished (the Deferred fires then)."""
        role = self.role
        old = role.section
        role.section = dataclasses.replace(old, **{k: getattr(new, k) for k in LIVE_KEYS})
        written = self._set_limits()
        if self.disk is not None:
            self.disk.set_cap(round(new.disk_gb * GB))
        self.schedule = OfferSchedule.parse(new.schedule)  # (validated with the file)
        self._show(new)
        service = role.status_updater
        if service is not None:
            updater = service.updater
            capability = Resource(new.memory_mb, new.vcores)
            updater.registration = dataclasses.replace(updater.registration, capability=capability)
        log.info(
            "caps now: {memory_mb} MB, {vcores} vcores, disk {disk_gb} GB, schedule {schedule} (were {old_memory} MB, "
            "{old_vcores} vcores, {old_disk} GB)", memory_mb=new.memory_mb, vcores=new.vcores, disk_gb=new.disk_gb,
            schedule=str(self.schedule), old_memory=old.memory_mb, old_vcores=old.vcores, old_disk=old.disk_gb,
        )  # fmt: skip
        return written
