"""The node's copy of the cluster's runtime image: which one the RM names, fetched from the
file system, checked and unpacked once.

Every container runs in the image the RM's configuration names (``[resourcemanager]
runtime_image``, the SHA-256 of its archive; ``container/runtime_image.py`` builds and
unpacks it).  Once registered, the node asks the RM which image that is (``openRuntimeImage``
over its tracker connection, with a read ticket for ``/cortex/images/<sha256>.tar.zst``),
reads the archive block by block as it reads any file of the file system, checks its SHA-256
and unpacks it into ``<state_dir>/images/roots/<sha256>``; images it no longer needs are
removed.  It asks again every ``CHECK_INTERVAL_S`` (the RM may name another image).

Until an image is unpacked the node reports itself UNHEALTHY, with what it waits for, so
the RM gives it no containers (it still stores blocks); a NodeManager that took running
containers back at a restart starts with their image (``start_in``).  When the RM names another image,
containers go on starting in the old one until the new one is ready; roots that running
containers use are never removed.  A failed fetch is tried again after a growing delay, and
an archive larger than any image is refused without being read.  When the RM names no image
the node is healthy and an LXC container refuses to start, saying so.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.image_cache import ImageCache, machine_of, same_machine
from cortex_rm.container.runtime_image import ImageError, is_sha256
from cortex_rm.fs.errors import FsError
from cortex_rm.internal.block_codec import BlockLocation, RuntimeImageSource
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api.webhdfs.block_work import read_range

log = Logger()

CHECK_INTERVAL_S = 5.0
SPOOL_NAME = "fetching.tar.zst"
#: No image archive is bigger (ours is ~105 MB): a larger file is refused without reading it.
MAX_ARCHIVE_BYTES = 4 * 2**30
#: After a failed fetch, wait this long before fetching again, doubling up to the maximum.
RETRY_MIN_S, RETRY_MAX_S = 10.0, 600.0


@dataclass(frozen=True)
class ImageState:
    """What the node has: the image the RM names ("" none, None not known yet), the unpacked
    root containers start in (the named image's once ready, until then the one the node had),
    and what it is doing about it (the health report while it has no root)."""

    wanted: str | None
    root: Path | None
    doing: str

    @property
    def ready(self) -> bool:
        return self.wanted == "" or self.root is not None


class RuntimeImageFetcher:
    """Keeps the RM's runtime image unpacked on this node (see the module docstring)."""

    def __init__(
        self,
        data_node: DataNodeRole,
        cache_dir: Path,
        run: Runner,
        reactor: INodeReactor,
        in_use: Callable[[], set[Path]] = set,
        host_machine: str | None = None,
    ) -> None:
        """``in_use``: the image roots running containers were started in (never pruned);
        ``host_machine``: this machine's ``uname -m`` (an image for another one is refused)."""
        self.data_node = data_node
        self.in_use = in_use
        self.host_machine = host_machine or platform.machine()
        self._retry_at = 0.0
        self._retry_s = RETRY_MIN_S
        self.cache = ImageCache(cache_dir)
        self.spool = cache_dir / SPOOL_NAME
        self.run = run
        self.reactor = reactor
        self.state = ImageState(None, None, "waiting to register with the ResourceManager to learn its runtime image")
        self._loop: LoopingCall | None = None
        self._checking: defer.Deferred[None] | None = None
        self._waiters: list[defer.Deferred[None]] = []

    def start(self) -> None:
        self.start_in(self.in_use())  # (at start: those of containers a restarted NodeManager took back)
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(CHECK_INTERVAL_S, now=False).addErrback(lambda f: log.failure("runtime image checks stopped", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def start_in(self, roots: set[Path]) -> None:
        """Before the first check: the image roots that containers a restarted NodeManager took back run
        in (NodeManager recovery).  One that is unpacked here is the image containers start in until the
        RM's is known and ready, so the node registers healthy and the RM keeps its containers."""
        found = sorted(r for r in roots if is_sha256(r.name) and self.cache.path_of(r.name) == r)
        if self.state.root is None and found:
            self._set(None, found[0], f"runtime image {found[0].name[:12]} of the running containers; asking the RM")

    def root(self) -> Path | None:
        """The unpacked image containers run in now (None: none named or not ready)."""
        return self.state.root

    def check(self) -> defer.Deferred[None]:
        """Ask the RM which image it names and make sure it is here (errors become the state);
        one check at a time (a second caller waits for the running one)."""
        if self._checking is not None:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._waiters.append(waiter)
            return waiter
        d = self._checking = defer.ensureDeferred(self._check())

        def done(result: object) -> None:
            self._checking = None
            if isinstance(result, Failure):
                log.failure("runtime image check failed", result)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

        d.addBoth(done)
        return d

    async def _check(self) -> None:
        try:
            image: RuntimeImageSource = await self.data_node.open_runtime_image()
        except (TrackerUnavailable, NodeRefused, FsError) as e:
            self._set(self.state.wanted, self.state.root, f"cannot ask the ResourceManager for its runtime image: {e}")
            return
        if not image.sha256:
            self._set("", None, "the ResourceManager names no runtime image")
            return
        if self.state.wanted == image.sha256 and self.ready_root(image.sha256):
            return
        # until the new image is here, containers go on starting in the one the node has
        previous = self.state.root
        have = self.cache.path_of(image.sha256)
        if have is None:
            if image.source is None:
                self._set(image.sha256, previous, self._not_uploaded(image.sha256))
                return
            if image.source.length > MAX_ARCHIVE_BYTES:
                self._set(image.sha256, previous, f"runtime image {image.sha256[:12]} is {image.source.length} bytes, "
                          f"more than any image ({MAX_ARCHIVE_BYTES}): not fetched; upload the right archive")
                return
            if self.reactor.seconds() < self._retry_at:
                return  # the last fetch failed: the state says why, and when it is tried again
            have = await self._fetch(image.sha256, image.source.ticket, image.source.length, previous)
            if have is None:
                self._retry_at = self.reactor.seconds() + self._retry_s
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
                return
        self._retry_s = RETRY_MIN_S
        root = have
        machine = await self.run(lambda: machine_of(root))
        if machine is not None and not same_machine(machine, self.host_machine):
            self._set(
                image.sha256,
                previous,
                f"runtime image {image.sha256[:12]} is for {machine} machines and this node is {self.host_machine}: "
                f"its containers could not run here; build and push an image for {self.host_machine} "
                "(cortex-rm image build on such a machine), or leave this node out of the cluster",
            )
            return
        self._set(image.sha256, have, f"runtime image {image.sha256[:12]} ready")
        keep = {image.sha256, *(root.name for root in self.in_use())}
        removed = await self.run(lambda: self.cache.prune(keep=keep))
        if removed:
            log.info("removed runtime images no longer named: {removed}", removed=removed)

    def ready_root(self, sha256: str) -> bool:
        return self.state.root is not None and self.state.root.name == sha256

    async def _fetch(self, sha256: str, ticket: str, length: int, previous: Path | None) -> Path | None:
        """Read the archive into the spool file, then check and unpack it; None (and the
        state says why) when that failed."""
        self._set(sha256, previous, f"fetching runtime image {sha256[:12]} ({length / 1e6:.0f} MB) from the file system")
        started = self.reactor.seconds()
        try:
            located: tuple[int, tuple[BlockLocation, ...]] = await self.data_node.locate(ticket, 0, -1)
            total, blocks = located

            def download() -> int:
                self.spool.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with self.spool.open("wb") as out:
                    for piece in read_range(self.data_node, blocks, 0, total):
                        out.write(piece)
                        written += len(piece)
                return written

            written = await self.run(download)
            if written != total:
                raise ImageError(f"read {written} of {total} bytes of the image's archive")
            fetched = self.reactor.seconds()
            self._set(sha256, previous, f"unpacking runtime image {sha256[:12]}")
            root = await self.run(lambda: self.cache.unpack(self.spool, sha256))
        except (ImageError, FsError, NodeRefused, TrackerUnavailable, OSError) as e:
            self._set(
                sha256, previous, f"could not fetch runtime image {sha256[:12]} (trying again in {self._retry_s:.0f} s): {e}"
            )
            log.warn("runtime image {sha}: {error}", sha=sha256, error=str(e))
            return None
        finally:
            await self.run(lambda: self.spool.unlink(missing_ok=True))
        log.info(
            "runtime image {sha} fetched ({mb:.0f} MB in {fetch_s:.1f} s) and unpacked in {unpack_s:.1f} s into {root}",
            sha=sha256,
            mb=total / 1e6,
            fetch_s=fetched - started,
            unpack_s=self.reactor.seconds() - fetched,
            root=str(root),
        )
        return root

    @staticmethod
    def _not_uploaded(sha256: str) -> str:
        return f"waiting for runtime image {sha256} to be uploaded to the file system (cortex-rm image push)"

    def _set(self, wanted: str | None, root: Path | None, doing: str) -> None:
        if doing != self.state.doing:
            log.info("runtime image: {doing}", doing=doing)
        self.state = ImageState(wanted, root, doing)
