"""Localization: bring a container's LocalResources onto this node and link them into its work dir.

A ContainerLaunchContext's ``local_resources`` maps a *link name* (the name the
container sees in its work dir, e.g. ``pyspark.zip`` or ``__spark_conf__``) to a
``LocalResourceProto``: a URL, the source's size and modification time, and a type
(``local_resources.py``: the NodeManager's types for them, and the checks made
before any I/O).  As YARN's NodeManager (``ResourceLocalizationService`` + ``FSDownload``) this module

1. fetches each resource into the application's file cache,
   ``<app_dir>/filecache/<n>/<file name>``, through the fetcher registered for
   the URL's scheme (``default_fetchers``: ``file`` now; ``webhdfs``/``http`` plug in
   beside it).  The fetcher first checks that the source's modification time (ms)
   equals the resource's ``timestamp``, else fails with YARN's message
   ``Resource <url> changed on src filesystem (expected T, was M)``;
2. for ``ARCHIVE`` (and ``PATTERN``, unpacked whole) unpacks the download by its
   suffix (``.zip``, ``.jar``, ``.tar``, ``.tar.gz``, ``.tgz``) into the directory
   ``<app_dir>/filecache/<n>/<file name>/``; an archive with another suffix is kept
   as a file, as YARN does ("Cannot unpack");
3. symlinks ``<work_dir>/<link name>`` to the cached file or directory.

The cache is per application: the executors of one application share one copy of
``pyspark.zip`` and one unpacked ``__spark_conf__`` (one fetch per URL, timestamp
and type, even when containers ask for it at the same time); a failed fetch is
forgotten so a later container retries it.  Every resource is cached per
application whatever its ``visibility``.

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
reactor thread and only keeps the per-application cache table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.local_resources import LocalizationError, LocalResource, ResourceType
from cortex_rm.container.resource_files import Fetcher, default_fetchers, fetch_into_cache, link_into
from cortex_rm.yarn.blocking import Runner

log = Logger()

FILE_CACHE = "filecache"
DEFAULT_MAX_UNPACKED_BYTES = 16 * 1024**3  # 16 GiB: far above Spark's 462 MB of jars


@dataclass
class _AppCache:
    """One application's file cache: finished entries and fetches in flight."""

    root: Path
    done: dict[tuple[str, int, ResourceType], Path] = field(default_factory=dict)
    pending: dict[tuple[str, int, ResourceType], list[defer.Deferred[Path]]] = field(default_factory=dict)
    next_entry: int = 0


class Localizer:
    """Localizes containers' resources, sharing one cache per application (see the module docstring)."""

    def __init__(
        self,
        run: Runner,
        fetchers: Mapping[str, Fetcher] | None = None,
        max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    ) -> None:
        self.run = run
        self.fetchers = dict(fetchers) if fetchers is not None else default_fetchers()
        self.max_unpacked_bytes = max_unpacked_bytes
        self._apps: dict[str, _AppCache] = {}

    def cached(self, app_id: str) -> dict[str, Path]:
        """The URLs cached for ``app_id`` and where (for tests and status pages)."""
        cache = self._apps.get(app_id)
        return {key[0]: path for key, path in cache.done.items()} if cache else {}

    def localize(
        self, app_id: str, app_dir: Path, work_dir: Path, resources: Sequence[LocalResource]
    ) -> defer.Deferred[None]:
        """Fetch ``resources`` into ``app_id``'s cache under ``app_dir`` and link them into
        ``work_dir`` (which must exist); fires with None, or fails with LocalizationError."""
        return defer.ensureDeferred(self._localize(app_id, app_dir, work_dir, resources))

    async def _localize(self, app_id: str, app_dir: Path, work_dir: Path, resources: Sequence[LocalResource]) -> None:
        cache = self._apps.get(app_id)
        if cache is None:
            cache = self._apps[app_id] = _AppCache(app_dir / FILE_CACHE)
        fetches = [self._cached_path(cache, r) for r in resources]
        # every fetch ends before the first failure is raised
        results = await defer.DeferredList(fetches, consumeErrors=True)
        # Twisted types a DeferredList's results as values only; a failed fetch's is its Failure
        outcomes: Sequence[tuple[bool, Path | Failure]] = results
        links: list[tuple[str, Path]] = []
        for r, (_, outcome) in zip(resources, outcomes):
            if isinstance(outcome, Failure):
                outcome.raiseException()
            links.append((r.link_name, outcome))
        await self.run(lambda: link_into(work_dir, links))

    def _cached_path(self, cache: _AppCache, resource: LocalResource) -> defer.Deferred[Path]:
        key = resource.cache_key
        if key in cache.done:
            return defer.succeed(cache.done[key])
        waiting: defer.Deferred[Path] = defer.Deferred()
        if key in cache.pending:
            cache.pending[key].append(waiting)
            return waiting
        cache.pending[key] = [waiting]
        cache.next_entry += 1
        entry_dir = cache.root / str(cache.next_entry)
        d = self.run(lambda: fetch_into_cache(resource, entry_dir, self.fetchers, self.max_unpacked_bytes))

        def finished(result: Path | Failure) -> None:
            waiters = cache.pending.pop(key, [])
            if isinstance(result, Failure):
                if not result.check(LocalizationError):
                    log.failure("localizing {url} failed unexpectedly", result, url=str(resource.url))
                    result = Failure(LocalizationError(f"Resource {resource.url} failed: {result.getErrorMessage()}"))
                for w in waiters:
                    w.errback(result)
            else:
                cache.done[key] = result
                log.info("localized {url} as {path}", url=str(resource.url), path=str(result))
                for w in waiters:
                    w.callback(result)

        d.addBoth(finished)
        return waiting

    def forget_application(self, app_id: str) -> None:
        """Drop ``app_id``'s cache table (its files go with the application's dirs)."""
        self._apps.pop(app_id, None)
