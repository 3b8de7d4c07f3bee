"""A node's cache of unpacked runtime images (``runtime_image.py`` builds them): one root per
SHA-256, checked against the archive's hash before anything is unpacked, unpacked once with the
system ``tar`` and shared by every container, which the container runtime mounts read-only::

    <node cache>/roots/<sha256>/               an unpacked root
    <node cache>/roots/<sha256>.complete       written last: that root is whole
    <node cache>/roots/.unpacking-<sha256>-*/  an extraction in progress (the next call removes it)

Plain blocking functions: a caller on the reactor runs them in a thread.

Disk cap: the cache is one of the node's ``DiskUser``s (``fs/disk_cap.py``) once ``disk`` is set.
Each root's size is measured when it is unpacked (and kept in its marker); the cache keeps the
sizes and last uses of its complete roots in memory (``scan`` reads those a previous run left, once,
on a worker thread), so ``used_bytes`` is a running total and the cap asks it without file work.  A
root is evictable unless ``protected`` names it (a snapshot the reactor hands the cache: the image
the cluster names and those running containers use), least recently used first (``path_of``
touches its marker).  An evicted root is claimed at once (``path_of`` no longer gives it) and
removed later under the cache's lock.  An unpack first reserves ``EXPANSION`` times the archive's
size; when that cannot be had the unpack is refused (``ImageError`` naming the cap).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from cortex_rm.container.resource_files import tree_size
from cortex_rm.fs.disk_cap import Deletion, DiskCap, DiskOutOfSpace, Evictable

from cortex_rm.container.runtime_image import (
    ImageError,
    Say,
    exclusive_lock,
    is_sha256,
    sha256_of_file,
    write_atomically,
)


#: What an unpacked root is reserved as, in times its archive (a zstd tar of a Debian root
#: with a JDK unpacks to about three times its size).
EXPANSION = 4


def _quiet(_: str) -> None:
    pass


class ImageCache:
    """Unpacked images on a node, one read-only root per SHA-256, shared by every container.

    Completeness: extraction happens in ``roots/.unpacking-*``, is flushed to disk and renamed to
    ``roots/<sha256>``; then ``roots/<sha256>.complete`` is written.  The marker lives beside the
    root, not in it, so the root holds exactly the archive's files (containers see it as ``/``).

    Read-only: file modes stay as the image has them (the container sees Debian's modes), and
    the container runtime mounts the root read-only.  ``roots/`` itself is 0711: containers'
    unprivileged roots must pass through it to their image, but no other user of the host can
    list it (setuid bits and file capabilities are stripped at unpack).
    The archive's device nodes (``/dev/*``) are not made: LXC gives each container its own /dev.
    """

    disk_name = "runtime images"

    def __init__(
        self, directory: Path, clock: Callable[[], float] = time.monotonic, now: Callable[[], float] = time.time
    ) -> None:
        self.roots = directory / "roots"
        self.clock = clock  # (how long unpacks take)
        #: Wall-clock seconds, the timebase of the markers' mtimes: when a root was last used.
        self.now = now
        #: The node's disk cap, once this cache is one of its users (``fs/disk_cap.py``).
        self.disk: DiskCap | None = None
        #: The SHA-256s never to evict (the cluster's image, those of running containers): a
        #: snapshot the reactor replaces, read as a whole from any thread.
        self.protected: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # the tables below: the disk cap reads them from any thread
        self._known: dict[str, tuple[int, float]] = {}  # complete roots: size, last used
        self._claimed: set[str] = set()  # evicted: out of use and of the count, files not yet removed
        self._total = 0  # the sizes of ``_known``

    def path_of(self, sha256: str) -> Path | None:
        """The complete root of image ``sha256``, or None if this node has not unpacked it (or it is
        being evicted)."""
        root = self.roots / _checked(sha256)
        marker = self.roots / f"{sha256}.complete"
        with self._lock:
            claimed = sha256 in self._claimed
        if claimed or not (marker.is_file() and root.is_dir()):
            return None
        now = self.now()
        try:
            os.utime(marker, (now, now))  # used now: the last to be evicted
        except OSError:
            pass
        with self._lock:
            if sha256 in self._claimed:
                return None
            if sha256 in self._known:
                self._known[sha256] = (self._known[sha256][0], now)
        return root

    def scan(self) -> None:
        """Learn the complete roots a previous run left, their sizes (from their markers, measured
        when a marker lacks it) and last uses (blocking: a worker thread, once, at the start; under
        the cache's lock, so that no unpack, prune or eviction changes the roots meanwhile)."""
        if not self.roots.is_dir():
            return
        found: dict[str, tuple[int, float]] = {}
        with exclusive_lock(self.roots / ".lock", _quiet, "reading the images"):
            names = [e.name.removesuffix(".complete") for e in self.roots.iterdir() if e.name.endswith(".complete")]
            for sha256 in filter(is_sha256, names):
                marker = self.roots / f"{sha256}.complete"
                try:
                    last_used = marker.stat().st_mtime
                    size = int(json.loads(marker.read_text())["bytes"])
                except OSError:
                    continue
                except (ValueError, KeyError, TypeError):
                    size = tree_size(self.roots / sha256)
                found[sha256] = (size, last_used)
            with self._lock:
                for sha256, known in found.items():
                    if sha256 not in self._known and sha256 not in self._claimed:
                        self._known[sha256] = known
                        self._total += known[0]

    def used_bytes(self) -> int:
        return self._total

    def evictable(self) -> list[Evictable]:
        protected = self.protected
        with self._lock:
            return [Evictable(sha256, size, t) for sha256, (size, t) in self._known.items() if sha256 not in protected]

    def claim(self, sha256: str) -> Deletion | None:
        """Take the unprotected root ``sha256`` out of use and of the count (in memory: under the disk
        cap's lock); its removal, which waits for an unpack or prune holding the cache."""
        with self._lock:
            if sha256 in self.protected or sha256 not in self._known:
                return None
            size, _ = self._known.pop(sha256)
            self._total -= size
            self._claimed.add(sha256)
        return lambda: self._remove_claimed(sha256)

    def _remove_claimed(self, sha256: str) -> None:
        with exclusive_lock(self.roots / ".lock", _quiet, "evicting an image"):
            with self._lock:
                if sha256 not in self._claimed:
                    return  # (unpacked again meanwhile: wanted after all)
            (self.roots / f"{sha256}.complete").unlink(missing_ok=True)  # (first: never a half root taken for whole)
            shutil.rmtree(self.roots / sha256, ignore_errors=True)
            with self._lock:
                self._claimed.discard(sha256)

    def _forget(self, sha256: str) -> None:
        with self._lock:
            size, _ = self._known.pop(sha256, (0, 0.0))
            self._total -= size

    def _learn(self, sha256: str, size: int) -> None:
        """A root just unpacked counts, and is protected until the reactor's next snapshot of the
        images in use (which names it once the node has taken it up): nothing evicts it meanwhile."""
        with self._lock:
            self._total += size - self._known.get(sha256, (0, 0.0))[0]
            self._known[sha256] = (size, self.now())
            self.protected = self.protected | {sha256}
            self._claimed.discard(sha256)

    def unpack(self, archive: Path, expected_sha256: str, say: Say = _quiet) -> Path:
        """The root of image ``expected_sha256``: the one unpacked already, else ``archive`` verified
        and unpacked now.  A mismatching archive is refused (ImageError) and nothing is deleted."""
        sha256 = _checked(expected_sha256)
        self.roots.mkdir(parents=True, exist_ok=True)
        # searchable, not listable: the containers' unprivileged root opens the image through it
        # (and every privilege an image file could grant is stripped, see ``strip_privileges``)
        self.roots.chmod(0o711)
        if self.disk is None or self.path_of(sha256) is not None:
            return self._unpack_locked(archive, sha256, say)
        try:  # (before the cache's lock: making room may evict another root, which takes it)
            reservation = self.disk.reserve(f"unpacking runtime image {sha256[:12]}", EXPANSION * archive.stat().st_size)
        except DiskOutOfSpace as e:
            raise ImageError(str(e)) from None
        try:
            return self._unpack_locked(archive, sha256, say)
        finally:
            reservation.settle()

    def _unpack_locked(self, archive: Path, sha256: str, say: Say) -> Path:
        with exclusive_lock(self.roots / ".lock", say, "unpacking an image"):
            found = self.path_of(sha256)
            if found is not None:
                return found
            self._remove_incomplete(sha256)
            actual = sha256_of_file(archive)
            if actual != sha256:
                raise ImageError(
                    f"{archive} has SHA-256 {actual}, not {sha256}, the image the cluster names: "
                    "it is damaged or another image; fetch it again"
                )
            return self._extract(archive, sha256, say)

    def prune(self, keep: Collection[str]) -> list[str]:
        """Remove every root but those of ``keep`` (the caller keeps the images running containers use);
        the SHA-256s removed.  The marker goes first, so a half-removed root is never taken for whole."""
        if not self.roots.is_dir():
            return []
        removed = []
        with exclusive_lock(self.roots / ".lock", _quiet, "pruning images"):
            names = {entry.name.removesuffix(".complete") for entry in self.roots.iterdir()}
            for sha256 in sorted(n for n in names if is_sha256(n) and n not in keep):
                (self.roots / f"{sha256}.complete").unlink(missing_ok=True)
                if (self.roots / sha256).is_dir():
                    shutil.rmtree(self.roots / sha256)
                    removed.append(sha256)
                self._forget(sha256)
            self._remove_incomplete(None)
        return removed

    def _remove_incomplete(self, sha256: str | None) -> None:
        """Remove extractions that a crash interrupted, and ``sha256``'s root if it has no marker."""
        for leftover in self.roots.glob(".unpacking-*"):
            shutil.rmtree(leftover)
        if sha256 is not None and (self.roots / sha256).exists():
            shutil.rmtree(self.roots / sha256)

    def _extract(self, archive: Path, sha256: str, say: Say) -> Path:
        started = self.clock()
        say(f"unpacking image {sha256[:12]} ({archive.stat().st_size / 1e6:.0f} MB) into {self.roots} ...")
        work = self.roots / f".unpacking-{sha256}-{os.getpid()}"
        work.mkdir()
        # --numeric-owner: the image's uids, never remapped through the host's /etc/passwd;
        # --xattrs: file capabilities survive; GNU tar refuses members outside the directory and
        # makes links that point out of it only after every file is written.
        argv = ["tar", "--zstd", "-x", "-f", str(archive), "-C", str(work), "--numeric-owner", "-p"]
        argv += ["--xattrs", "--xattrs-include=*", "--exclude=./dev/*"]
        try:
            done = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
        except OSError as e:
            shutil.rmtree(work)
            raise ImageError(f"cannot run tar ({e}): install tar and zstd (scripts/install)") from None
        if done.returncode != 0:
            shutil.rmtree(work)
            raise ImageError(f"tar could not unpack {archive} ({done.stderr.strip()[-500:]}): fetch it again")
        strip_privileges(work)
        os.sync()  # the data on disk before the rename and the marker make the root count as whole
        root = self.roots / sha256
        work.rename(root)
        size = tree_size(root)
        marker = {"sha256": sha256, "archive": str(archive), "unpack_seconds": round(self.clock() - started, 1), "bytes": size}
        write_atomically(self.roots / f"{sha256}.complete", json.dumps(marker) + "\n")
        self._learn(sha256, size)
        say(f"unpacked image {sha256[:12]} into {root} in {marker['unpack_seconds']} s")
        return root


def strip_privileges(root: Path) -> None:
    """Clear the set-user-id and set-group-id bits and the file capabilities of every file under
    ``root``.  Inside a container they grant nothing (``no_new_privs``); on the host, where any
    user may reach the root (unprivileged containers need it reachable), they would grant the
    image's privileges to whoever runs such a file."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
            try:
                os.removexattr(path, "security.capability", follow_symlinks=False)
            except OSError:
                pass  # none (ENODATA), the usual case


def _checked(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits (it becomes a path); ImageError otherwise."""
    if not is_sha256(sha256):
        raise ImageError(f"{sha256!r} is not a SHA-256 (64 lowercase hex digits)")
    return sha256


#: ELF ``e_machine`` values -> the names ``uname -m`` (``platform.machine()``) gives them.
_ELF_MACHINES = {0x03: "i686", 0x28: "armv7l", 0x3E: "x86_64", 0xB7: "aarch64", 0xF3: "riscv64", 0x15: "ppc64le", 0x16: "s390x"}
#: Programs every Debian root has, whose ELF header says which machines the image is for.
_PROBES = ("usr/bin/dpkg", "usr/bin/env", "usr/bin/dash")


def machine_of(root: Path) -> str | None:
    """The machine (``uname -m``'s name) the image unpacked at ``root`` runs on, read from an ELF
    header of one of its programs; None if none of them is there or readable as ELF."""
    for probe in _PROBES:
        path = root / probe
        try:
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as f:
                header = f.read(20)
        except OSError:
            continue
        if len(header) < 20 or header[:4] != b"\x7fELF":
            continue
        machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
        return _ELF_MACHINES.get(machine, f"ELF machine {machine:#x}")
    return None


def same_machine(image: str, host: str) -> bool:
    """Whether an image for ``image`` runs on a host whose ``uname -m`` is ``host`` (the 32-bit
    ARM names vary: armv6l, armv7l, armv8l)."""
    if image.startswith("armv") and host.startswith("armv"):
        return True
    return image == host
