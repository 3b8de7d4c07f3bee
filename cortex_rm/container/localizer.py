"""Localization: bring a container's LocalResources onto this node and link them into its work dir.

A ContainerLaunchContext's ``local_resources`` maps a *link name* (the name the
container sees in its work dir, e.g. ``pyspark.zip`` or ``__spark_conf__``) to a
``LocalResourceProto``: a URL, the source's size and modification time, a type
and a visibility (``local_resources.py``: the NodeManager's types for them, and
the checks made before any I/O).  As YARN's NodeManager
(``ResourceLocalizationService`` + ``FSDownload``) this module

1. fetches each resource into the cache its visibility names, through the
   fetcher registered for the URL's scheme (``file`` always; ``webhdfs``, the
   cluster's file system, from the NodeManager role).  The fetcher first checks
   that the source's modification time (ms) equals the resource's ``timestamp``,
   else fails with YARN's message ``Resource <url> changed on src filesystem
   (expected T, was M)``:

   - ``PUBLIC``: ``<local_dir>/filecache/<n>/``, shared by every application
     on the node; the source must be readable by everyone (the fetcher asks
     for it as nobody in particular);
   - ``PRIVATE``: ``<local_dir>/usercache/<user>/filecache/<n>/``, shared by
     one user's applications, fetched as that user;
   - ``APPLICATION``: ``<app_dir>/filecache/<n>/``, one application's, fetched
     as its user, and deleted with the application's dirs;

2. for ``ARCHIVE`` (and ``PATTERN``, unpacked whole) unpacks the download by its
   suffix (``.zip``, ``.jar``, ``.tar``, ``.tar.gz``, ``.tgz``) into the directory
   ``<cache>/<n>/<file name>/``; an archive with another suffix is kept as a
   file, as YARN does ("Cannot unpack");
3. symlinks ``<work_dir>/<link name>`` to the cached file or directory (the
   runtime shows the public and the user's private cache to the container, read-only).

One fetch per cache, URL, timestamp and type, even when containers ask for it at
the same time; a failed fetch is forgotten so a later container retries it.  The
public and private caches are bounded: after each localization, while they hold
more than ``cache_target_bytes`` (YARN's ``localizer.cache.target-size-mb``,
10 GiB), the least recently used entries that no running container uses are
deleted.  The node's disk cap (``fs/disk_cap.py``: the localizer is one of its users once
``disk`` is set) is the cap's own rule, not repeated here: a fetch reserves the resource's size
first (evicting what must go, the localizer's unused entries among them), and a fetch that cannot
have it fails its container's localization naming the cap.  Other writers under the cap (block
replicas, images; on worker threads) claim unused shared entries too: the tables of the shared
caches change under ``_lock`` for that (a claimed entry leaves its table at once, its files are
deleted later on the claiming thread), and an entry found cached is marked used by its container
at once, so that it cannot go before the container's links are made.

The caches start empty: what a previous NodeManager process left is removed before the first
fetch into them, but for the entries its containers that are re-attached (NodeManager recovery)
link to (``keep``).  An entry's number is new in its cache directory: a number taken there already
(by a killed NodeManager's half-made or finished entries in an application's cache, which lives
on with the application) is skipped, never reused (``resource_files.claim_entry_dir``).

Refused before any I/O (``check_local_resources``): link names that are absolute,
contain ``..`` or empty components, or clash with the NodeManager's own files
(``launch_container.sh``, ``container_tokens``, ``tmp``).  Refused while unpacking: archive members whose
names leave the target directory (absolute, ``..``), links out of it, device
files, and archives whose content exceeds ``max_unpacked_bytes``.

The NodeManager runs as root, so a ``file:`` source must be a regular file that is
readable by everybody (Spark stages its files 0644) and outside the directories
the NodeManager keeps to itself (``forbidden_roots``: its state, local and log
dirs): nobody can have a node hand them a file they could not read themselves.

All file work is blocking (``resource_files.py``) and runs through the injected ``run`` (a thread pool in
the daemon, a plain call in unit tests); the ``Localizer`` itself lives on the
reactor thread and only keeps the cache tables.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.launch import ContainerPaths
from cortex_rm.container.local_resources import LocalizationError, LocalResource, ResourceType, Visibility
from cortex_rm.container.resource_files import Fetcher, Requester, default_fetchers, fetch_into_cache, link_into, tree_size
from cortex_rm.yarn.blocking import Runner
from cortex_rm.fs.disk_cap import Deletion, DiskCap, DiskOutOfSpace, Evictable, Reservation

log = Logger()
T = TypeVar("T")

DEFAULT_MAX_UNPACKED_BYTES = 16 * 1024**3  # 16 GiB: far above Spark's 462 MB of jars
DEFAULT_CACHE_TARGET_BYTES = 10 * 1024**3  # yarn.nodemanager.localizer.cache.target-size-mb

_Key = tuple[str, int, ResourceType]


@dataclass
class _Entry:
    path: Path
    size: int
    last_used: float  # wall-clock seconds, as the runtime images' (see Localizer._now)
    users: set[str] = field(default_factory=set)  # containers that link to it


@dataclass
class _Cache:
    """One cache directory's table: finished entries and fetches in flight."""

    root: Path
    bounded: bool  # PUBLIC and PRIVATE: LRU cleanup; APPLICATION: deleted with the app
    ready: defer.Deferred[None]  # fires when the directory is clean to fetch into
    done: dict[_Key, _Entry] = field(default_factory=dict)
    pending: dict[_Key, list[defer.Deferred[_Entry]]] = field(default_factory=dict)
    next_entry: int = 0


class Localizer:
    """Localizes containers' resources into the node's caches (see the module docstring)."""

    def __init__(
        self,
        run: Runner,
        fetchers: Mapping[str, Fetcher] | None = None,
        max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
        cache_target_bytes: int = DEFAULT_CACHE_TARGET_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run = run
        self.fetchers = dict(fetchers) if fetchers is not None else default_fetchers()
        self.max_unpacked_bytes = max_unpacked_bytes
        self.cache_target_bytes = cache_target_bytes
        self._caches: dict[tuple[str, str], _Cache] = {}
        #: When entries are used: wall-clock seconds, the timebase of the runtime images' markers (their
        #: mtimes), so that the disk cap's least-recently-used order holds across both.
        self.clock = clock
        self._last_used = 0.0
        #: The node's disk cap, once the localizer is one of its users (none: no cap).
        self.disk: DiskCap | None = None
        self._shared_total = 0  # shared_bytes() as one int, read by the disk cap from any thread
        self._lock = threading.Lock()  # the shared caches' tables: the disk cap evicts from other threads
        #: Entries of the shared caches a previous run left that containers it left running
        #: (NodeManager recovery) link to: kept when the caches are emptied at their first use.
        self.keep: set[Path] = set()

    def cached(self, app_id: str) -> dict[str, Path]:
        """The URLs cached for ``app_id`` alone and where (for tests and status pages)."""
        cache = self._caches.get((Visibility.APPLICATION.value, app_id))
        return {key[0]: entry.path for key, entry in cache.done.items()} if cache else {}

    def shared_bytes(self) -> int:
        """What the bounded (PUBLIC and PRIVATE) caches hold."""
        return sum(e.size for c in self._caches.values() if c.bounded for e in c.done.values())

    disk_name = "localized resources"

    def used_bytes(self) -> int:
        return self._shared_total

    def evictable(self) -> list[Evictable]:
        """The shared entries no container uses (key: the entry's directory)."""
        with self._lock:
            return [
                Evictable(str(e.path.parent), e.size, e.last_used)
                for c in self._caches.values() if c.bounded for e in c.done.values() if not e.users
            ]  # fmt: skip

    def claim(self, key: str) -> Deletion | None:
        """Take the shared entry whose directory is ``key`` out of its table if still unused (under
        the disk cap's lock: no file work); its directory's removal, to run on a worker thread."""
        with self._lock:
            found = [
                (c, k) for c in self._caches.values() if c.bounded
                for k, e in c.done.items() if str(e.path.parent) == key and not e.users
            ]  # fmt: skip
            if not found:
                return None
            cache, cache_key = found[0]
            entry = cache.done.pop(cache_key)
            self._shared_total -= entry.size

        def delete() -> None:
            log.info("disk cap: removing {url} from the cache ({size} bytes)", url=cache_key[0], size=entry.size)
            _remove_all([entry.path.parent])

        return delete

    def shared_entries(self) -> dict[str, list[Path]]:
        """The bounded caches' entries by URL (for tests and status pages)."""
        found: dict[str, list[Path]] = {}
        for cache in self._caches.values():
            if cache.bounded:
                for key, entry in cache.done.items():
                    found.setdefault(key[0], []).append(entry.path)
        return found

    def localize(
        self, requester: Requester, paths: ContainerPaths, resources: Sequence[LocalResource]
    ) -> defer.Deferred[None]:
        """Fetch ``resources`` into their caches and link them into ``paths.work_dir`` (which
        must exist); fires with None, or fails with LocalizationError.  The container keeps
        its entries from cleanup until ``release(requester.container_id)``."""
        return defer.ensureDeferred(self._localize(requester, paths, resources))

    async def _localize(self, requester: Requester, paths: ContainerPaths, resources: Sequence[LocalResource]) -> None:
        fetches = [self._cached(self._cache_for(r.visibility, requester, paths), r, requester) for r in resources]
        # every fetch ends before the first failure is raised
        results = await defer.DeferredList(fetches, consumeErrors=True)
        # Twisted types a DeferredList's results as values only; a failed fetch's is its Failure
        outcomes: Sequence[tuple[bool, _Entry | Failure]] = results
        links: list[tuple[str, Path]] = []
        for r, (_, outcome) in zip(resources, outcomes):
            if isinstance(outcome, Failure):
                outcome.raiseException()
            outcome.users.add(requester.container_id)
            outcome.last_used = self._now()
            links.append((r.link_name, outcome.path))
        try:
            await self.run(lambda: link_into(paths.work_dir, links))
        finally:
            self._clean_up()

    def _cache_for(self, visibility: Visibility, requester: Requester, paths: ContainerPaths) -> _Cache:
        if visibility is Visibility.PUBLIC:
            key, root = (visibility.value, ""), paths.public_cache
        elif visibility is Visibility.PRIVATE:
            key, root = (visibility.value, requester.user), paths.private_cache
        else:
            key, root = (visibility.value, requester.app_id), paths.application_cache
        cache = self._caches.get(key)
        if cache is None:
            bounded = visibility is not Visibility.APPLICATION
            # a previous NodeManager's leftovers in a shared cache are in no table: remove them
            keep = frozenset(self.keep)
            ready = self.run(lambda: _emptied(root, keep)) if bounded else defer.succeed(None)
            with self._lock:
                cache = self._caches[key] = _Cache(root, bounded, ready)
        return cache

    def _cached(self, cache: _Cache, resource: LocalResource, requester: Requester) -> defer.Deferred[_Entry]:
        key = resource.cache_key
        with self._lock:  # (one step: the disk cap may claim an unused entry from a worker thread)
            found = cache.done.get(key)
            if found is not None:
                found.users.add(requester.container_id)  # (kept from eviction from now on)
        if found is not None:
            return defer.succeed(found)
        waiting: defer.Deferred[_Entry] = defer.Deferred()
        if key in cache.pending:
            cache.pending[key].append(waiting)
            return waiting
        cache.pending[key] = [waiting]
        cache.next_entry += 1
        entry_dir = cache.root / str(cache.next_entry)

        def fetch() -> tuple[Path, int, Reservation | None]:
            reservation = None
            if self.disk is not None and cache.bounded:
                try:
                    reservation = self.disk.reserve(f"localizing {resource.url}", max(0, resource.size))
                except DiskOutOfSpace as e:
                    raise LocalizationError(f"Resource {resource.url} failed: {e}") from None
            try:
                path = fetch_into_cache(resource, entry_dir, self.fetchers, self.max_unpacked_bytes, requester)
                # (the entry dir: ``entry_dir``, or the next free number); the reservation is given back
                # once the entry counts in the table (``finished``), so its bytes always count somewhere
                return path, tree_size(path.parent), reservation
            except BaseException:
                if reservation is not None:
                    reservation.settle()
                raise

        def finished(result: tuple[Path, int, Reservation | None] | Failure) -> None:
            waiters = cache.pending.pop(key, [])
            if isinstance(result, Failure):
                if not result.check(LocalizationError):
                    log.failure("localizing {url} failed unexpectedly", result, url=str(resource.url))
                    result = Failure(LocalizationError(f"Resource {resource.url} failed: {result.getErrorMessage()}"))
                for w in waiters:
                    w.errback(result)
                return
            path, size, reservation = result
            try:  # (the entry counts before its reservation ends: for a moment its bytes count twice, never zero)
                cache.next_entry = max(cache.next_entry, int(path.parent.name))
                with self._lock:
                    entry = cache.done[key] = _Entry(path, size, self._now(), {requester.container_id})
                    self._shared_total += size if cache.bounded else 0
            finally:
                if reservation is not None:
                    reservation.settle()
            log.info("localized {url} as {path} ({size} bytes)", url=str(resource.url), path=str(path), size=size)
            for w in waiters:
                w.callback(entry)

        self._after_ready(cache, fetch).addBoth(finished)
        return waiting

    def _after_ready(self, cache: _Cache, work: Callable[[], T]) -> defer.Deferred[T]:
        """``run(work)`` once the cache's directory is clean (at once when it already is)."""
        result: defer.Deferred[T] = defer.Deferred()

        def start(passed: object) -> None:
            self.run(work).chainDeferred(result)

        cache.ready.addBoth(start)
        return result

    def release(self, container_id: str) -> None:
        """``container_id`` has ended: its entries may be cleaned up when no other container uses them."""
        with self._lock:
            for cache in self._caches.values():
                for entry in cache.done.values():
                    entry.users.discard(container_id)
        self._clean_up()

    def forget_application(self, app_id: str) -> None:
        """Drop ``app_id``'s cache table (its files go with the application's dirs)."""
        with self._lock:
            self._caches.pop((Visibility.APPLICATION.value, app_id), None)

    def _now(self) -> float:
        """The clock's time, made strictly increasing (a tie or a step back keeps the order of use)."""
        self._last_used = max(self.clock(), self._last_used + 1e-6)
        return self._last_used

    def _clean_up(self) -> None:
        """Delete least recently used, unused shared entries until the shared caches fit their target
        (YARN's rule; the disk cap's is applied by the cap, when a write needs room)."""
        excess = self._shared_total - self.cache_target_bytes
        if excess <= 0:
            return
        doomed: list[Path] = []
        with self._lock:
            unused = sorted(
                ((entry.last_used, cache, key) for cache in self._caches.values() if cache.bounded
                 for key, entry in cache.done.items() if not entry.users),
                key=lambda item: item[0],
            )
            for _, cache, key in unused:
                if excess <= 0:
                    break
                entry = cache.done.pop(key)
                self._shared_total -= entry.size
                excess -= entry.size
                doomed.append(entry.path.parent)  # the entry's numbered directory
                log.info("cache cleanup: removing {url} ({size} bytes)", url=key[0], size=entry.size)
        if doomed:
            self.run(lambda: _remove_all(doomed)).addErrback(lambda f: log.failure("cache cleanup failed", f))


def _emptied(root: Path, keep: frozenset[Path] = frozenset()) -> None:
    """``root`` exists and is empty but for ``keep`` (it may be mounted into containers already: it is kept)."""
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _remove_all(directories: Sequence[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
