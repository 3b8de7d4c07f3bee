"""The standard runtime image: one Debian root file system that every container runs in (issue 9).

Containers must not see the contributor's ``/usr`` and ``/etc``: what a job runs
on would differ per machine, and the host's files would be readable inside.  So
the cluster runs one image instead, named by the SHA-256 of its archive:

* **Builder** (``build_image``, behind ``cortex-rm image build``): ``mmdebstrap``
  makes a Debian root from an ``ImageRecipe`` (Debian 12, a headless JRE 17,
  Python 3; nothing of the host) as a zstd-compressed tar; the archive is named
  by its SHA-256, and ``by-recipe/<recipe hash>`` remembers which archive a recipe
  made, so CI and the demo build once and reuse it until the recipe changes.
* **Node** (``image_cache.ImageCache``): verifies a fetched archive against the
  SHA-256 the cluster names, unpacks it once with the system ``tar`` and hands the
  same root to every container (which the container runtime mounts read-only).

Both sides are plain blocking functions: a caller on the reactor runs them in a
thread (``cortex_rm.yarn.blocking.Runner``).  The build cache::

    <build cache>/images/<sha256>.tar.zst      archives, named by their bytes
    <build cache>/by-recipe/<recipe hash>      JSON: the archive a recipe made, its sizes
    <build cache>/images/.building-*.tar.zst   a build in progress (the next build removes it)
    <build cache>/tmp/                         mmdebstrap's chroot while it builds
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Protocol

Say = Callable[[str], None]

#: Bumped whenever the build steps here change in a way the recipe's JSON does not show.
IMAGE_FORMAT: Final = 1
#: Debian 12's release day (2023-06-10): every file's time in the archive (mmdebstrap honours it),
#: so times do not vary with the day of the build; after 1980, which zip files need.  Two builds
#: still differ in a few bytes (the JKS ``/etc/ssl/certs/java/cacerts`` that keytool writes with
#: the time of day; the owner of apt's ``partial`` dirs), so an image is named by its archive's
#: SHA-256 and the build cache remembers which archive a recipe made.
SOURCE_DATE_EPOCH: Final = 1686355200
PYTHON: Final = "/usr/bin/python3"
ARCHIVE_SUFFIX: Final = ".tar.zst"
#: Documentation, manual pages and translations: nobody reads them in a container (~25 MB).
#: Copyright files stay, as Debian asks of anything that redistributes its packages.
DPKG_OPTIONS: Final = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
#: Before the JRE is installed: update-alternatives links java's manual page into man1 and
#: fails when the directory does not exist, which excluding /usr/share/man/* brings about.
ESSENTIAL_HOOKS: Final = ('mkdir -p "$1/usr/share/man/man1"',)
#: mmdebstrap copies the host's resolv.conf and hostname into the root: replace them with
#: fixed placeholders (the container runtime may bind the node's own over them).
CUSTOMIZE_HOOKS: Final = (
    'printf "" > "$1/etc/resolv.conf" && chmod 0644 "$1/etc/resolv.conf"',
    'printf "localhost\\n" > "$1/etc/hostname" && chmod 0644 "$1/etc/hostname"',
)
#: The JVM for Spark's AM, driver and executors (Spark 4 needs Java 17); Python 3.11 for the
#: PySpark workers (pyspark itself reaches the container in Spark's archive); procps for the
#: ``ps``/``kill``/``pkill`` that Spark's and YARN's scripts call; netbase for ``/etc/hosts``,
#: ``/etc/services`` and ``/etc/protocols``, which Java's and Python's name lookups read.
#: ca-certificates comes with the JRE (through ca-certificates-java).  Anything bigger
#: (numpy, pandas) is the application's to ship, so the image stays small for every node.
DEFAULT_PACKAGES: Final = ("openjdk-17-jre-headless", "python3", "procps", "netbase")
#: zstd's level 9: 104 MB for Debian 12 with the JRE, in ~7 s on two cores; level 3 gives
#: 117 MB, level 19 gives 92 MB but takes two minutes.  Every node downloads the archive once.
DEFAULT_ZSTD_LEVEL: Final = 9
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Where the cluster's images live in its file system: ``<dir>/<sha256>.tar.zst``.
RUNTIME_IMAGE_DIR: Final = "/cortex/images"


def is_sha256(text: str) -> bool:
    """Whether ``text`` names an image: a SHA-256 as 64 lowercase hex digits."""
    return _SHA256.fullmatch(text) is not None


def runtime_image_path(sha256: str) -> str:
    """The image's archive in the cluster's file system."""
    return f"{RUNTIME_IMAGE_DIR}/{sha256}{ARCHIVE_SUFFIX}"


_PIECE = 1024 * 1024


class ImageError(Exception):
    """The image could not be built, verified or unpacked; the message says what to do next."""


# ---------------------------------------------------------------- the recipe


@functools.cache
def host_architecture() -> str:
    """This machine's Debian architecture (``amd64``, ``arm64``...): ``dpkg``'s, else from the CPU's name."""
    try:
        found = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True)
        return found.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        machine = platform.machine()
        return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}.get(machine, machine)


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into the image.  Two recipes with the same ``recipe_hash`` build the same image
    (up to the mirror's contents on the day), so a build cache is keyed by it."""

    suite: str = "bookworm"
    #: mmdebstrap's variant: ``apt`` is Debian's Essential packages plus apt, the smallest base apt can extend.
    variant: str = "apt"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    mirror: str = "http://deb.debian.org/debian"
    #: Debian's security updates: a JVM that runs anyone's jobs should have them.
    security_mirror: str = "http://deb.debian.org/debian-security"
    architecture: str = field(default_factory=host_architecture)
    zstd_level: int = DEFAULT_ZSTD_LEVEL

    @property
    def java_home(self) -> str:
        """JAVA_HOME inside the image (Debian's OpenJDK 17 for this architecture)."""
        return f"/usr/lib/jvm/java-17-openjdk-{self.architecture}"

    @property
    def python(self) -> str:
        """The Python that PySpark's workers run inside the image (``PYSPARK_PYTHON``)."""
        return PYTHON

    def sources(self) -> list[str]:
        """The apt sources, one-line format: the release, its updates and its security updates."""
        return [
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {self.security_mirror} {self.suite}-security main",
        ]

    def canonical(self) -> dict[str, object]:
        """Everything that decides the build, the fixed steps included, so that changing any changes the hash."""
        return {
            "format": IMAGE_FORMAT,
            **asdict(self),
            "packages": sorted(set(self.packages)),
            "sources": self.sources(),
            "dpkg_options": list(DPKG_OPTIONS),
            "essential_hooks": list(ESSENTIAL_HOOKS),
            "customize_hooks": list(CUSTOMIZE_HOOKS),
            "source_date_epoch": SOURCE_DATE_EPOCH,
        }

    def recipe_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON: sorted keys, no spaces, ASCII."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def mmdebstrap_argv(self, target: Path) -> list[str]:
        """The mmdebstrap command that writes the image to ``target`` (compressed by its ``.zst`` suffix)."""
        return [
            "mmdebstrap",
            "--mode=root",
            f"--variant={self.variant}",
            f"--architectures={self.architecture}",
            f"--include={','.join(sorted(set(self.packages)))}",
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            *(f"--essential-hook={hook}" for hook in ESSENTIAL_HOOKS),
            *(f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS),
            self.suite,
            str(target),
            *self.sources(),
        ]

    def build_environment(self, tmp_dir: Path, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (proxies and PATH pass through) with the fixed time, zstd's level on every core,
        and mmdebstrap's chroot under ``tmp_dir`` (the cache's disk, not a small /tmp)."""
        return {
            **base,
            "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
            "ZSTD_CLEVEL": str(self.zstd_level),
            "ZSTD_NBTHREADS": "0",  # multi-threaded output is the same bytes for any number of threads
            "TMPDIR": str(tmp_dir),
            "LC_ALL": "C.UTF-8",
        }


# ---------------------------------------------------------------- hashing and commands


def sha256_of_file(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read a piece at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(_PIECE), b""):
            digest.update(piece)
    return digest.hexdigest()


def uncompressed_size(archive: Path) -> int | None:
    """The length of the tar inside a ``.tar.zst`` (zstd decompresses ~1 GB/s), or None if zstd cannot say."""
    total = 0
    try:
        with subprocess.Popen(["zstd", "-dcq", str(archive)], stdout=subprocess.PIPE) as zstd:
            assert zstd.stdout is not None
            while piece := zstd.stdout.read(_PIECE):
                total += len(piece)
    except OSError:
        return None
    return total if zstd.returncode == 0 else None


@dataclass(frozen=True)
class CommandResult:
    """How a command ended."""

    exit_code: int
    #: The command's last lines of output, for the error message.
    tail: tuple[str, ...]


class CommandRunner(Protocol):
    """Runs a command to its end, passing its progress lines to ``say`` (tests record the argv instead)."""

    def __call__(self, argv: Sequence[str], env: Mapping[str, str], say: Say, /) -> CommandResult: ...


def run_command(argv: Sequence[str], env: Mapping[str, str], say: Say, /) -> CommandResult:
    """Run ``argv``; mmdebstrap's own lines (``I:``, ``W:``, ``E:``) go to ``say``, apt's chatter does not."""
    tail: deque[str] = deque(maxlen=25)
    try:
        with subprocess.Popen(
            list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                if line[:3] in ("I: ", "W: ", "E: "):
                    say(f"  {argv[0]}: {line}")
        return CommandResult(process.returncode, tuple(tail))
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} is not installed: run scripts/install (as root)") from None


def check_build_host(which: Callable[[str], str | None] = shutil.which, euid: int | None = None) -> None:
    """Refuse, saying what to do, when this machine cannot build: mmdebstrap or zstd missing, or not root."""
    missing = [tool for tool in ("mmdebstrap", "zstd", "tar") if which(tool) is None]
    if missing:
        raise ImageError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            f"run scripts/install as root (or apt-get install {' '.join(missing)})"
        )
    if (os.geteuid() if euid is None else euid) != 0:
        raise ImageError(
            "building the image needs root (mmdebstrap --mode=root makes files of every owner): run it as root"
        )


@contextmanager
def exclusive_lock(lock_file: Path, say: Say, what: str) -> Iterator[None]:
    """Hold an flock on ``lock_file``; when someone else holds it, say so and wait."""
    with lock_file.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            say(f"waiting for {holder} to finish {what} (it holds {lock_file}) ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` so that a reader sees the old file or the whole new one, even after a crash."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def mount_points_under(directory: Path, mountinfo: str) -> list[str]:
    """The mount points (from ``/proc/self/mountinfo``'s text) at or below ``directory``."""
    prefix = str(directory).rstrip("/")
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class BuiltImage:
    """An archive in the build cache: ``path`` is ``images/<sha256>.tar.zst``."""

    sha256: str
    path: Path
    size: int
    uncompressed_size: int | None
    recipe_hash: str
    build_seconds: float

    def describe(self) -> dict[str, object]:
        """Its fields as JSON values (``cortex-rm image build --json``)."""
        return {**asdict(self), "path": str(self.path)}


def default_build_cache() -> Path:
    """``$CORTEX_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/cortex-rm/images`` (``~/.cache/cortex-rm/images``)."""
    if os.environ.get("CORTEX_IMAGE_CACHE"):
        return Path(os.environ["CORTEX_IMAGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortex-rm" / "images"


def recorded_image(cache_dir: Path, recipe_hash: str) -> BuiltImage | None:
    """The archive ``by-recipe/<recipe_hash>`` names, if it is still there with the bytes it had."""
    try:
        record = json.loads((cache_dir / "by-recipe" / recipe_hash).read_text())
        image = BuiltImage(
            sha256=str(record["sha256"]),
            path=cache_dir / "images" / f"{record['sha256']}{ARCHIVE_SUFFIX}",
            size=int(record["size"]),
            uncompressed_size=record.get("uncompressed_size"),
            recipe_hash=recipe_hash,
            build_seconds=float(record.get("build_seconds", 0.0)),
        )
        if _SHA256.fullmatch(image.sha256) and image.path.stat().st_size == image.size:
            return image if sha256_of_file(image.path) == image.sha256 else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def build_image(
    recipe: ImageRecipe,
    cache_dir: Path,
    say: Say,
    *,
    run: CommandRunner = run_command,
    preflight: Callable[[], None] = check_build_host,
    clock: Callable[[], float] = time.monotonic,
) -> BuiltImage:
    """The image of ``recipe``: the one recorded in ``cache_dir``, else built now (one build at a time)."""
    key = recipe.recipe_hash()
    found = recorded_image(cache_dir, key)
    if found is not None:
        say(f"the image of recipe {key[:12]} is built already: {found.path}")
        return found
    preflight()
    for sub in ("images", "by-recipe", "tmp"):
        (cache_dir / sub).mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / ".lock", say, "building an image in this cache"):
        found = recorded_image(cache_dir, key)  # built by whoever held the lock
        if found is not None:
            say(f"the image of recipe {key[:12]} was built meanwhile: {found.path}")
            return found
        _remove_leftovers(cache_dir)
        return _build(recipe, cache_dir, key, say, run, clock)


def _remove_leftovers(cache_dir: Path) -> None:
    """Remove what a crashed build left (partial archives, mmdebstrap's chroot), unless something
    is still mounted in that chroot: deleting through a bind of the host's /dev would be harm."""
    for partial in (cache_dir / "images").glob(".building-*"):
        partial.unlink()
    tmp = cache_dir / "tmp"
    mounted = mount_points_under(tmp.resolve(), Path("/proc/self/mountinfo").read_text())
    if mounted:
        tops = [m for m in reversed(mounted) if not any(m.startswith(other + "/") for other in mounted)]
        raise ImageError(
            f"a crashed build left file systems mounted under {tmp}: "
            f"unmount them (umount -R {' '.join(tops)}) and run the build again"
        )
    for leftover in tmp.iterdir():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def _build(
    recipe: ImageRecipe, cache_dir: Path, key: str, say: Say, run: CommandRunner, clock: Callable[[], float]
) -> BuiltImage:
    partial = cache_dir / "images" / f".building-{key[:16]}{ARCHIVE_SUFFIX}"
    say(
        f"building the runtime image with mmdebstrap: Debian {recipe.suite} ({recipe.architecture}) with "
        f"{', '.join(recipe.packages)}, from {recipe.mirror}; the first build takes about a minute ..."
    )
    started = clock()
    result = run(recipe.mmdebstrap_argv(partial), recipe.build_environment(cache_dir / "tmp", os.environ), say)
    if result.exit_code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        last = "\n".join(f"  | {line}" for line in result.tail)
        raise ImageError(
            f"mmdebstrap failed (exit status {result.exit_code}); its last lines:\n{last}\n"
            f"check that {recipe.mirror} is reachable and the packages exist in {recipe.suite}, then build again"
        )
    seconds = clock() - started
    say(f"mmdebstrap finished in {seconds:.0f} s; hashing the archive ...")
    sha256, size, unpacked = sha256_of_file(partial), partial.stat().st_size, uncompressed_size(partial)
    final = cache_dir / "images" / f"{sha256}{ARCHIVE_SUFFIX}"
    os.replace(partial, final)
    record = {
        "sha256": sha256,
        "size": size,
        "uncompressed_size": unpacked,
        "build_seconds": round(seconds, 1),
        "recipe": recipe.canonical(),
    }
    write_atomically(cache_dir / "by-recipe" / key, json.dumps(record, indent=2, sort_keys=True) + "\n")
    say(f"built {final} ({size / 1e6:.0f} MB, {(unpacked or 0) / 1e6:.0f} MB unpacked) in {seconds:.0f} s")
    return BuiltImage(sha256, final, size, unpacked, key, round(seconds, 1))
