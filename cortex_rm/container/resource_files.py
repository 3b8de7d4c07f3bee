"""Blocking functions of localization, run off the reactor thread by the ``Localizer``.

Fetching one resource into a new cache directory (``fetch_into_cache``): through
the fetcher registered for the URL's scheme (``default_fetchers``: ``file`` now;
``webhdfs``/``http`` plug in beside it), then, for an archive, unpacking it
(``unpack``); and linking the cached paths into a container's work dir
(``link_into``).  ``localizer.py`` says what each step does for YARN.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from twisted.logger import Logger

from cortex_rm.container import pinned_dirs
from cortex_rm.container.local_resources import (
    LocalizationError,
    LocalResource,
    ResourceType,
    ResourceUrl,
    check_link_name,
)
from cortex_rm.yarn.tokens import Token

log = Logger()

MAX_ARCHIVE_MEMBERS = 200_000
CLAIM_TRIES = 20  # entry names taken in a row (by other threads' claims) before a fetch gives up


# ---------------------------------------------------------------- fetchers


@dataclass(frozen=True)
class Requester:
    """Whom a localization is for: the container, its application and user, and the container's
    token (the cluster's file system reads for the user the token names)."""

    container_id: str
    app_id: str
    user: str
    container_token: Token | None = None


class Fetcher(Protocol):
    """Brings one resource's bytes onto this node (blocking: runs in a thread)."""

    def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
        """Write the resource to the new file ``dest`` (its directory exists), after checking
        the source's modification time; LocalizationError on any failure.  A PUBLIC resource
        must be readable by everyone; others are read as ``requester.user``."""


def changed_on_source(url: ResourceUrl, expected_ms: int, actual_ms: int) -> LocalizationError:
    """YARN's (FSDownload's) error for a source whose timestamp is not the resource's."""
    return LocalizationError(f"Resource {url} changed on src filesystem (expected {expected_ms}, was {actual_ms})")


@dataclass(frozen=True)
class LocalFileFetcher:
    """``file:`` URLs: a hard link into the cache when on the same filesystem, else a copy."""

    forbidden_roots: tuple[Path, ...] = ()

    def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
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


def _untar(url: ResourceUrl, archive: Path, target: Path, max_bytes: int, mode: Literal["r:", "r:gz"]) -> None:
    with tarfile.open(archive, mode) as t:
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
    resource: LocalResource,
    cache_dir: Path,
    fetchers: Mapping[str, Fetcher],
    max_unpacked_bytes: int,
    requester: Requester,
) -> Path:
    """Fetch (and unpack) one resource into a new directory of ``cache_dir``'s parent, named
    ``cache_dir``'s number or, when that name is taken, the next free one (``claim_entry_dir``);
    the path to link to, in that directory."""
    fetcher = fetchers.get(resource.url.scheme)
    if fetcher is None:
        raise LocalizationError(
            f"Resource {resource.url}: scheme {resource.url.scheme!r} is not supported "
            f"(supported: {', '.join(sorted(fetchers))})"
        )
    # an APPLICATION cache is in the application's app dir, where its containers write: the
    # cache's dir and the entry's are pinned (``pinned_dirs``) and the work done through them
    root = cache_dir.parent
    root.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as fds:
        parent_fd = _held(fds, os.open(root.parent, pinned_dirs.DIR_FLAGS))
        root_fd = _held(fds, pinned_dirs.open_own_dir(parent_fd, root.name, root.parent, make=True))
        name, entry = claim_entry_dir(root_fd, root, int(cache_dir.name))
        _held(fds, entry)
        try:
            return root / name / _fetch_into(resource, pinned_dirs.fd_path(entry), fetcher, max_unpacked_bytes, requester)
        except BaseException:
            shutil.rmtree(name, ignore_errors=True, dir_fd=root_fd)
            raise


def claim_entry_dir(root_fd: int, root: Path, first: int) -> tuple[str, int]:
    """Make a new numbered entry directory in the cache ``root_fd`` (which is ``root``): ``first``, or
    past the highest number there when ``first`` is taken; its name and an open descriptor.

    The numbers a NodeManager gives restart at 1 when it does, while a killed one's entries (or an
    application's containers, in its own cache) may hold any of them: ``mkdir`` is the claim (whoever
    makes the directory owns it, so threads fetching into one cache never share one), and a taken
    name is never used nor removed here.  Bounded: PlantedPathError after ``CLAIM_TRIES`` taken names."""
    number = first
    for _ in range(CLAIM_TRIES):
        try:
            os.mkdir(str(number), 0o755, dir_fd=root_fd)
        except FileExistsError:
            taken = [int(n) for n in os.listdir(root_fd) if n.isdigit() and len(n) < 19]
            number = max(number, *taken) + 1
            continue
        return str(number), pinned_dirs.open_own_dir(root_fd, str(number), root)
    raise pinned_dirs.PlantedPathError(errno.EEXIST, f"{root}: no free entry name after {CLAIM_TRIES} tries")


def _fetch_into(
    resource: LocalResource, entry_dir: Path, fetcher: Fetcher, max_unpacked_bytes: int, requester: Requester
) -> str:
    """Fetch (and unpack) ``resource`` into ``entry_dir``; the name in it to link to."""
    name = resource.url.file_name
    if resource.type is ResourceType.FILE:
        fetcher.fetch(resource, entry_dir / name, requester)
        return name
    download = entry_dir / f".{name}.download"
    fetcher.fetch(resource, download, requester)
    target = entry_dir / name
    if unpack(resource.url, download, target, max_unpacked_bytes):
        download.unlink()
    else:
        log.warn("cannot unpack {url}: not a .zip/.jar/.tar/.tar.gz/.tgz; kept as a file", url=str(resource.url))
        download.rename(target)
    return name


def _held(fds: ExitStack, fd: int) -> int:
    fds.callback(os.close, fd)
    return fd


def tree_size(root: Path) -> int:
    """The bytes of the regular files under ``root`` (links not followed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def link_into(work_dir: Path, links: Sequence[tuple[str, Path]]) -> None:
    """``ln -sf`` each cached path to ``<work_dir>/<link name>`` (parents made as needed), in
    the work dir ``prepare_container`` made (PlantedPathError if it was swapped since)."""
    with ExitStack() as fds:
        app_fd = _held(fds, os.open(work_dir.parent, pinned_dirs.DIR_FLAGS))
        work_fd = _held(fds, pinned_dirs.open_own_dir(app_fd, work_dir.name, work_dir.parent))
        for name, target in links:
            link = check_link_name(name)
            # inside the NodeManager's own work dir (root's, 0755, until the container starts)
            dir_fd, where = work_fd, work_dir
            for part in link.parts[:-1]:
                dir_fd = _held(fds, pinned_dirs.open_own_dir(dir_fd, part, where, make=True))
                where = where / part
            try:
                os.unlink(link.name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            os.symlink(target, link.name, dir_fd=dir_fd)
