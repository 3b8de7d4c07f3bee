"""The node's copy of the cluster's runtime image: which one the RM names, fetched from the
file system, checked and unpacked once.

Every container runs in the image the RM's configuration names (``[resourcemanager]
runtime_image``, the SHA-256 of its archive; ``container/runtime_image.py`` builds and
unpacks it).  Once registered, the node asks the RM which image that is (``openRuntimeImage``
over its tracker connection, with a read ticket for ``/cortex/images/<sha256>.tar.zst``),
reads the archive block by block as it reads any file of the file system, checks its SHA-256
and unpacks it into ``<state_dir>/images/roots/<sha256>``; images it no longer needs are
removed.  It asks again every ``CHECK_INTERVAL_S`` (the RM may name another image).

Until the image is unpacked the node reports itself UNHEALTHY, with what it waits for, so
the RM gives it no containers (it still stores blocks).  When the RM names no image the node
is healthy and an LXC container refuses to start, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.runtime_image import ImageCache, ImageError
from cortex_rm.fs.errors import FsError
from cortex_rm.internal.block_codec import BlockLocation, RuntimeImageSource
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api.webhdfs.datanode_resource import read_range

log = Logger()

CHECK_INTERVAL_S = 5.0
SPOOL_NAME = "fetching.tar.zst"


@dataclass(frozen=True)
class ImageState:
    """What the node has: the image the RM names ("" none, None not known yet), its unpacked
    root when ready, and what it is doing about it (the health report while not ready)."""

    wanted: str | None
    root: Path | None
    doing: str

    @property
    def ready(self) -> bool:
        return self.wanted == "" or self.root is not None


class RuntimeImageFetcher:
    """Keeps the RM's runtime image unpacked on this node (see the module docstring)."""

    def __init__(self, data_node: DataNodeRole, cache_dir: Path, run: Runner, reactor: INodeReactor) -> None:
        self.data_node = data_node
        self.cache = ImageCache(cache_dir)
        self.spool = cache_dir / SPOOL_NAME
        self.run = run
        self.reactor = reactor
        self.state = ImageState(None, None, "waiting to register with the ResourceManager to learn its runtime image")
        self._loop: LoopingCall | None = None
        self._checking: defer.Deferred[None] | None = None
        self._waiters: list[defer.Deferred[None]] = []

    def start(self) -> None:
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(CHECK_INTERVAL_S, now=False).addErrback(lambda f: log.failure("runtime image checks stopped", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

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
        if self.state.wanted == image.sha256 and self.state.root is not None:
            return
        have = self.cache.path_of(image.sha256)
        if have is None:
            if image.source is None:
                self._set(image.sha256, None, self._not_uploaded(image.sha256))
                return
            have = await self._fetch(image.sha256, image.source.ticket, image.source.length)
            if have is None:
                return
        self._set(image.sha256, have, f"runtime image {image.sha256[:12]} ready")
        removed = await self.run(lambda: self.cache.prune(keep={image.sha256}))
        if removed:
            log.info("removed runtime images no longer named: {removed}", removed=removed)

    async def _fetch(self, sha256: str, ticket: str, length: int) -> Path | None:
        """Read the archive into the spool file, then check and unpack it; None (and the
        state says why) when that failed."""
        self._set(sha256, None, f"fetching runtime image {sha256[:12]} ({length / 1e6:.0f} MB) from the file system")
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
            self._set(sha256, None, f"unpacking runtime image {sha256[:12]}")
            root = await self.run(lambda: self.cache.unpack(self.spool, sha256))
        except (ImageError, FsError, NodeRefused, TrackerUnavailable, OSError) as e:
            self._set(sha256, None, f"could not fetch runtime image {sha256[:12]} (trying again): {e}")
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
