"""Spark's jars as one archive in the cluster's file system, for ``spark.yarn.archive``.

``client-config`` packs the client's own ``$SPARK_HOME/jars/*.jar`` into one zip
(stored, not compressed: jars are zips already; members sorted, with fixed times,
so the same jars always give the same bytes), names it by the SHA-256 of those
bytes, and uploads it once to ``<home>/.cortex/spark-archives/spark-libs-<sha256>.zip``
over WebHDFS.  The file and its directories are world-readable, so Spark marks
the archive PUBLIC and every node downloads it once into its public cache, for
all the user's applications, until the jars change.  The zip is kept in the
user's cache directory (``~/.cache/cortex-rm``), keyed by the jars' names, sizes
and times, so a second ``client-config`` neither packs nor uploads again.  Only the
``KEEP_ARCHIVES`` most recently used zips stay there (each is hundreds of MB, and
every Spark installation or upgrade makes a new one).

The archive lives in the uploading user's home: nobody else can write there, so
nobody can swap a different archive in under the same name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from cortex_rm.webhdfs_client import WebHdfs, WebHdfsError, upload_when_ready
from cortex_rm.yarn.addresses import HostPort

ARCHIVE_DIR = ".cortex/spark-archives"
PIECE = 1024 * 1024
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
KEEP_ARCHIVES = 3

Say = Callable[[str], None]


class ArchiveError(WebHdfsError):
    """The archive could not be made or uploaded; the message says what to do."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cortex-rm" / "spark-archives"


# ---------------------------------------------------------------- packing


def build_archive(spark_home: Path, cache_dir: Path, say: Say) -> tuple[Path, str]:
    """The zip of ``spark_home``'s jars (made, or found in ``cache_dir``) and its SHA-256 (hex)."""
    jars = sorted((spark_home / "jars").glob("*.jar"))
    if not jars:
        raise ArchiveError(f"{spark_home / 'jars'} holds no jars; is SPARK_HOME a Spark installation?")
    listing = "\n".join(f"{j.name}\t{j.stat().st_size}\t{j.stat().st_mtime_ns}" for j in jars)
    key = hashlib.sha256(f"{spark_home.resolve()}\n{listing}".encode()).hexdigest()[:32]
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive, digest_file = cache_dir / f"{key}.zip", cache_dir / f"{key}.sha256"
    if archive.exists() and digest_file.exists():
        archive.touch()  # recently used: the last to be pruned
        return archive, digest_file.read_text().strip()
    total = sum(j.stat().st_size for j in jars)
    say(f"packing the {len(jars)} jars of {spark_home} ({total / 2**20:.0f} MiB) into one archive ...")
    partial = cache_dir / f"{key}.zip.partial"
    digest = hashlib.sha256()
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as z:
        for jar in jars:
            info = zipfile.ZipInfo(jar.name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            with jar.open("rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, PIECE)
    with partial.open("rb") as f:
        for piece in iter(lambda: f.read(PIECE), b""):
            digest.update(piece)
    partial.rename(archive)
    digest_file.write_text(digest.hexdigest() + "\n")
    prune_cache(cache_dir, KEEP_ARCHIVES)
    return archive, digest.hexdigest()


def prune_cache(cache_dir: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used archives (and their digests)."""
    archives = sorted(cache_dir.glob("*.zip"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)


# ---------------------------------------------------------------- WebHDFS


def upload_archive(
    namenode: HostPort,
    spark_home: Path,
    say: Say,
    *,
    delegation: str,
    cache_dir: Path | None = None,
    wait_s: float = 120,
    authority: str | None = None,
) -> str:
    """Make and upload the archive of ``spark_home``'s jars (once); its ``webhdfs://`` URL, whose
    authority is ``namenode`` or ``authority`` (the logical name of a file system with several RMs)."""
    archive, digest = build_archive(spark_home, cache_dir or default_cache_dir(), say)
    fs = WebHdfs(namenode, delegation)
    home = fs.home()
    directory = f"{home}/{ARCHIVE_DIR}"
    path = f"{directory}/spark-libs-{digest}.zip"
    url = f"webhdfs://{authority or namenode}{path}"
    size = archive.stat().st_size
    if fs.length(path) == size:
        say(f"Spark's jars are already in the file system: {url}")
        return url
    fs.mkdirs(directory, "755")
    say(f"uploading Spark's jars ({size / 2**20:.0f} MiB) to {url} ...")
    upload_when_ready(fs, path, archive, "644", say, wait_s)
    return url
