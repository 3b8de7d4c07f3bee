"""Localization: bring a container's LocalResources onto this node and link them into its work dir.

A ContainerLaunchContext's ``local_resources`` maps a *link name* (the name the
container sees in its work dir, e.g. ``pyspark.zip`` or ``__spark_conf__``) to a
``LocalResourceProto``: a URL, the source's size and modification time, and a type.
As YARN's NodeManager (``ResourceLocalizationService`` + ``FSDownload``) this module

1. fetches each resource into the application's file cache,
   ``<app_dir>/filecache/<n>/<file name>``, through the fetcher registered for
   the URL's scheme (``FETCHERS``: ``file`` now; ``webhdfs``/``http`` plug in
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

Refused before any I/O: link names that are absolute, contain ``..`` or empty
components, or clash with the NodeManager's own files (``launch_container.sh``,
``container_tokens``, ``tmp``).  Refused while unpacking: archive members whose
names leave the target directory (absolute, ``..``), links out of it, device
files, and archives whose content exceeds ``max_unpacked_bytes``.

The NodeManager runs as root, so a ``file:`` source must be a regular file that is
readable by everybody (Spark stages its files 0644) and outside the directories
the NodeManager keeps to itself (``forbidden_roots``: its state, local and log
dirs): nobody can have a node hand them a file they could not read themselves.

All file work is blocking and runs through the injected ``run`` (a thread pool in
the daemon, a plain call in unit tests); the ``Localizer`` itself lives on the
reactor thread and only keeps the per-application cache table.
"""

from __future__ import annotations

import enum
import errno
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TypeVar, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.container.launch import LAUNCH_SCRIPT, TMP_DIR, TOKENS_FILE
from cortex_rm.yarn.blocking import Runner

log = Logger()
T = TypeVar("T")


FILE_CACHE = "filecache"
RESERVED_LINK_NAMES = frozenset({LAUNCH_SCRIPT, TOKENS_FILE, TMP_DIR})
DEFAULT_MAX_UNPACKED_BYTES = 16 * 1024**3  # 16 GiB: far above Spark's 462 MB of jars
MAX_ARCHIVE_MEMBERS = 200_000


class LocalizationError(Exception):
    """A resource cannot be localized; the message is the container's diagnostics."""


class ResourceType(enum.Enum):
    """YARN's LocalResourceType."""

    FILE = "FILE"
    ARCHIVE = "ARCHIVE"
    PATTERN = "PATTERN"


@dataclass(frozen=True)
class ResourceUrl:
    """YARN's URL record (``URLProto``)."""

    scheme: str
    file: str
    host: str = ""
    port: int = -1
    user_info: str = ""

    def __str__(self) -> str:
        """Hadoop's Path form: ``file:/abs/path``, or ``scheme://[user@]host[:port]/path``."""
        if not self.host:
            return f"{self.scheme}:{self.file}"
        user = f"{self.user_info}@" if self.user_info else ""
        port = f":{self.port}" if self.port >= 0 else ""
        return f"{self.scheme}://{user}{self.host}{port}{self.file}"

    @property
    def file_name(self) -> str:
        name = PurePosixPath(self.file).name
        return name or "resource"


@dataclass(frozen=True)
class LocalResource:
    """One entry of a CLC's ``local_resources``."""

    link_name: str
    url: ResourceUrl
    type: ResourceType
    timestamp_ms: int
    size: int = -1

    @property
    def cache_key(self) -> tuple[str, int, ResourceType]:
        return (str(self.url), self.timestamp_ms, self.type)


def check_link_name(name: str) -> PurePosixPath:
    """The link name as a relative path inside the work dir, or LocalizationError."""
    if not name or "\x00" in name:
        raise LocalizationError(f"invalid link name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise LocalizationError(f"link name {name!r} must be a relative path inside the container's work dir")
    if path.parts[0] in RESERVED_LINK_NAMES:
        raise LocalizationError(f"link name {name!r} is reserved by the NodeManager")
    return path


@dataclass(frozen=True)
class RequestedResource:
    """One entry of a launch context's ``local_resources`` as it arrived, before any check."""

    link_name: str
    url: ResourceUrl | None  # None: the entry names no URL
    type: ResourceType
    timestamp_ms: int | None  # None: the entry gives no timestamp
    size: int = -1


def check_local_resources(entries: Iterable[RequestedResource]) -> list[LocalResource]:
    """A launch context's ``local_resources``, checked (link names, URL, timestamp); LocalizationError if invalid."""
    resources: dict[str, LocalResource] = {}
    for entry in entries:
        check_link_name(entry.link_name)
        if entry.link_name in resources:
            raise LocalizationError(f"link name {entry.link_name!r} is given twice")
        if entry.url is None or not entry.url.scheme or not entry.url.file:
            raise LocalizationError(f"resource {entry.link_name!r} has no URL (scheme and file)")
        if entry.timestamp_ms is None:
            raise LocalizationError(f"resource {entry.link_name!r} has no timestamp")
        resources[entry.link_name] = LocalResource(
            link_name=entry.link_name,
            url=entry.url,
            type=entry.type,
            timestamp_ms=entry.timestamp_ms,
            size=entry.size,
        )
    return list(resources.values())


# ---------------------------------------------------------------- fetchers


class Fetcher(Protocol):
    """Brings one resource's bytes onto this node (blocking: runs in a thread)."""

    def fetch(self, resource: LocalResource, dest: Path) -> None:
        """Write the resource to the new file ``dest`` (its directory exists), after checking
        the source's modification time; LocalizationError on any failure."""


def changed_on_source(url: ResourceUrl, expected_ms: int, actual_ms: int) -> LocalizationError:
    """YARN's (FSDownload's) error for a source whose timestamp is not the resource's."""
    return LocalizationError(f"Resource {url} changed on src filesystem (expected {expected_ms}, was {actual_ms})")


@dataclass(frozen=True)
class LocalFileFetcher:
    """``file:`` URLs: a hard link into the cache when on the same filesystem, else a copy."""

    forbidden_roots: tuple[Path, ...] = ()

    def fetch(self, resource: LocalResource, dest: Path) -> None:
        url = resource.url
        if url.host:
            raise LocalizationError(f"Resource {url}: a file: URL names no host")
        source = Path(os.path.normpath(url.file))
        if not source.is_absolute():
            raise LocalizationError(f"Resource {url}: the path is not absolute")
        try:
            real = source.resolve(strict=True)
            st = real.stat()
        except OSError as e:
            raise LocalizationError(f"Resource {url} cannot be read: {e.strerror or e}") from None
        for root in self.forbidden_roots:
            if real == root or root in real.parents:
                raise LocalizationError(f"Resource {url} is inside the NodeManager's own directories")
        if not stat.S_ISREG(st.st_mode):
            raise LocalizationError(f"Resource {url} is not a regular file")
        if not st.st_mode & stat.S_IROTH:
            raise LocalizationError(
                f"Resource {url} is not readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                "the NodeManager only localizes files their owner shares"
            )
        modified_ms = st.st_mtime_ns // 1_000_000
        if modified_ms != resource.timestamp_ms:
            raise changed_on_source(url, resource.timestamp_ms, modified_ms)
        try:
            os.link(real, dest)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
                raise LocalizationError(f"Resource {url} cannot be linked into the cache: {e.strerror}") from None
            try:
                shutil.copy2(real, dest)
            except OSError as e2:
                raise LocalizationError(f"Resource {url} cannot be copied: {e2.strerror or e2}") from None


def default_fetchers(forbidden_roots: Sequence[Path] = ()) -> dict[str, Fetcher]:
    """The scheme -> fetcher table of a NodeManager."""
    return {"file": LocalFileFetcher(tuple(Path(r).resolve() for r in forbidden_roots))}


# ---------------------------------------------------------------- unpacking


def _archive_kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith((".zip", ".jar")):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith(".tar"):
        return "tar"
    return None


def _check_member_name(url: ResourceUrl, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise LocalizationError(f"Resource {url}: archive member {name!r} leaves the target directory")


def unpack(url: ResourceUrl, archive: Path, target: Path, max_bytes: int) -> bool:
    """Unpack ``archive`` into the new directory ``target``; False if its suffix is not an archive's."""
    kind = _archive_kind(url.file_name)
    if kind is None:
        return False
    try:
        if kind == "zip":
            _unzip(url, archive, target, max_bytes)
        else:
            _untar(url, archive, target, max_bytes, "r:gz" if kind == "tar.gz" else "r:")
    except LocalizationError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise LocalizationError(f"Resource {url} cannot be unpacked: {e}") from None
    return True


def _unzip(url: ResourceUrl, archive: Path, target: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise LocalizationError(f"Resource {url}: more than {MAX_ARCHIVE_MEMBERS} archive members")
        total = 0
        for info in members:
            _check_member_name(url, info.filename)
            total += info.file_size
        if total > max_bytes:
            raise LocalizationError(f"Resource {url} unpacks to {total} bytes, more than {max_bytes}")
        target.mkdir()
        for info in members:
            # members whose mode says symlink are written as plain files by zipfile: nothing escapes
            z.extract(info, target)


def _untar(url: ResourceUrl, archive: Path, target: Path, max_bytes: int, mode: str) -> None:
    with tarfile.open(archive, cast(Literal["r:", "r:gz"], mode)) as t:  # the modes _unpack chooses
        members = t.getmembers()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise LocalizationError(f"Resource {url}: more than {MAX_ARCHIVE_MEMBERS} archive members")
        total = 0
        for member in members:
            _check_member_name(url, member.name)  # links: the "data" filter below checks their targets
            total += member.size
        if total > max_bytes:
            raise LocalizationError(f"Resource {url} unpacks to {total} bytes, more than {max_bytes}")
        target.mkdir()
        try:
            # the "data" filter refuses links out of the target, devices, and drops setuid bits
            t.extractall(target, filter="data")
        except tarfile.FilterError as e:
            raise LocalizationError(f"Resource {url}: archive member refused: {e}") from None


# ---------------------------------------------------------------- blocking steps


def fetch_into_cache(
    resource: LocalResource, cache_dir: Path, fetchers: Mapping[str, Fetcher], max_unpacked_bytes: int
) -> Path:
    """Fetch (and unpack) one resource into the new directory ``cache_dir``; the path to link to."""
    fetcher = fetchers.get(resource.url.scheme)
    if fetcher is None:
        raise LocalizationError(
            f"Resource {resource.url}: scheme {resource.url.scheme!r} is not supported "
            f"(supported: {', '.join(sorted(fetchers))})"
        )
    cache_dir.mkdir(parents=True, exist_ok=False)
    try:
        name = resource.url.file_name
        if resource.type is ResourceType.FILE:
            dest = cache_dir / name
            fetcher.fetch(resource, dest)
            return dest
        download = cache_dir / f".{name}.download"
        fetcher.fetch(resource, download)
        target = cache_dir / name
        if unpack(resource.url, download, target, max_unpacked_bytes):
            download.unlink()
        else:
            log.warn("cannot unpack {url}: not a .zip/.jar/.tar/.tar.gz/.tgz; kept as a file", url=str(resource.url))
            download.rename(target)
        return target
    except BaseException:
        shutil.rmtree(cache_dir, ignore_errors=True)
        raise


def link_into(work_dir: Path, links: Sequence[tuple[str, Path]]) -> None:
    """``ln -sf`` each cached path to ``<work_dir>/<link name>`` (parents made as needed)."""
    for name, target in links:
        link = work_dir / check_link_name(name)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)


# ---------------------------------------------------------------- the reactor side


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

    @defer.inlineCallbacks
    def localize(
        self, app_id: str, app_dir: Path, work_dir: Path, resources: Sequence[LocalResource]
    ) -> Generator[defer.Deferred[Any], Any, None]:
        """Fetch ``resources`` into ``app_id``'s cache under ``app_dir`` and link them into
        ``work_dir`` (which must exist); fires with None, or fails with LocalizationError."""
        cache = self._apps.get(app_id)
        if cache is None:
            cache = self._apps[app_id] = _AppCache(app_dir / FILE_CACHE)
        fetches = [self._cached_path(cache, r) for r in resources]
        results = yield defer.DeferredList(fetches, consumeErrors=True)
        for ok, result in results:
            if not ok:
                result.raiseException()
        links = [(r.link_name, path) for r, (_, path) in zip(resources, results)]
        yield self.run(lambda: link_into(work_dir, links))

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

        def finished(result: Any) -> None:
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
