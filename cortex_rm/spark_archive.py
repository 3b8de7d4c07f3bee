"""Spark's jars as one archive in the cluster's file system, for ``spark.yarn.archive``.

``client-config`` packs the client's own ``$SPARK_HOME/jars/*.jar`` into one zip
(stored, not compressed: jars are zips already; members sorted, with fixed times,
so the same jars always give the same bytes), names it by the SHA-256 of those
bytes, and uploads it once to ``<home>/.cortex/spark-archives/spark-libs-<sha256>.zip``
over WebHDFS.  The file and its directories are world-readable, so Spark marks
the archive PUBLIC and every node downloads it once into its public cache, for
all the user's applications, until the jars change.  The zip is kept in the
user's cache directory (``~/.cache/cortex-rm``), keyed by the jars' names, sizes
and times, so a second ``client-config`` neither packs nor uploads again.

The archive lives in the uploading user's home: nobody else can write there, so
nobody can swap a different archive in under the same name.
"""

from __future__ import annotations

import getpass
import hashlib
import http.client
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from cortex_rm.yarn.addresses import HostPort

ARCHIVE_DIR = ".cortex/spark-archives"
PIECE = 1024 * 1024
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold

Say = Callable[[str], None]


class ArchiveError(Exception):
    """The archive could not be made or uploaded; the message says what to do (``status``: the
    HTTP status of a refusal, 0 for other failures)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def client_user() -> str:
    """The name Hadoop's clients use: ``HADOOP_USER_NAME``, else the login name."""
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


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
    return archive, digest.hexdigest()


# ---------------------------------------------------------------- WebHDFS


class WebHdfs:
    """The few WebHDFS calls the upload needs, with the standard library's HTTP client."""

    def __init__(self, namenode: HostPort, user: str, timeout_s: float = 120) -> None:
        self.namenode = namenode
        self.user = user
        self.timeout_s = timeout_s

    def _url(self, path: str, op: str, **params: str) -> str:
        query = urlencode({"op": op, "user.name": self.user, **params})
        return f"/webhdfs/v1{quote(path, safe='/')}?{query}"

    def _call(
        self, where: HostPort, method: str, target: str, body: _Progress | None = None, length: int = 0
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(where.host, where.port, timeout=self.timeout_s)
        try:
            headers = {"Content-Length": str(length)} if method in ("PUT", "POST") else {}
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        except (OSError, http.client.HTTPException) as e:
            raise ArchiveError(f"cannot reach the file system at {where}: {e}; is the cluster up?") from None
        finally:
            connection.close()

    def _json(self, status: int, data: bytes, what: str) -> Any:
        try:
            document = json.loads(data) if data else {}
        except ValueError:
            document = {}
        if status >= 300:
            error = document.get("RemoteException", {}) if isinstance(document, dict) else {}
            message = error.get("message") or data[:200].decode("utf-8", "replace")
            raise ArchiveError(f"{what}: HTTP {status}: {error.get('exception', '')} {message}".strip(), status)
        return document

    def home(self) -> str:
        status, _, data = self._call(self.namenode, "GET", self._url("/", "GETHOMEDIRECTORY"))
        return str(self._json(status, data, "GETHOMEDIRECTORY")["Path"])

    def length(self, path: str) -> int | None:
        """The file's length, or None if there is no such file."""
        status, _, data = self._call(self.namenode, "GET", self._url(path, "GETFILESTATUS"))
        if status == 404:
            return None
        return int(self._json(status, data, f"GETFILESTATUS {path}")["FileStatus"]["length"])

    def mkdirs(self, path: str, permission: str) -> None:
        status, _, data = self._call(self.namenode, "PUT", self._url(path, "MKDIRS", permission=permission))
        self._json(status, data, f"MKDIRS {path}")

    def create(self, path: str, local: Path, permission: str, say: Say) -> None:
        """CREATE ``path`` from ``local``: the NameNode's redirect, then the data to the node it names."""
        status, headers, data = self._call(
            self.namenode, "PUT", self._url(path, "CREATE", overwrite="true", permission=permission)
        )
        if status != 307 or "location" not in headers:
            self._json(status, data, f"CREATE {path}")
            raise ArchiveError(f"CREATE {path}: the NameNode answered {status} without a redirect")
        location = urlsplit(headers["location"])
        node = HostPort(location.hostname or "", location.port or 80)
        size = local.stat().st_size
        with local.open("rb") as f:
            status, _, data = self._call(
                node, "PUT", f"{location.path}?{location.query}", _Progress(f, size, say), size
            )
        self._json(status, data, f"writing {path} to {node}")


class _Progress:
    """A file whose reads are reported every tenth of its size."""

    def __init__(self, f: IO[bytes], size: int, say: Say) -> None:
        self.f, self.size, self.say = f, size, say
        self.sent = 0
        self.next_report = size // 10

    def read(self, n: int = -1) -> bytes:
        piece = self.f.read(n if n > 0 else PIECE)
        self.sent += len(piece)
        if self.size and self.sent >= self.next_report and piece:
            self.say(f"  uploaded {self.sent / 2**20:.0f} of {self.size / 2**20:.0f} MiB")
            self.next_report += max(1, self.size // 10)
        return piece


def upload_archive(
    namenode: HostPort,
    spark_home: Path,
    say: Say,
    *,
    user: str | None = None,
    cache_dir: Path | None = None,
    wait_s: float = 120,
) -> str:
    """Make and upload the archive of ``spark_home``'s jars (once); its ``webhdfs://`` URL."""
    archive, digest = build_archive(spark_home, cache_dir or default_cache_dir(), say)
    fs = WebHdfs(namenode, user or client_user())
    home = fs.home()
    directory = f"{home}/{ARCHIVE_DIR}"
    path = f"{directory}/spark-libs-{digest}.zip"
    url = f"webhdfs://{namenode}{path}"
    size = archive.stat().st_size
    if fs.length(path) == size:
        say(f"Spark's jars are already in the file system: {url}")
        return url
    fs.mkdirs(directory, "755")
    say(f"uploading Spark's jars ({size / 2**20:.0f} MiB) to {url} ...")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fs.create(path, archive, "644", say)
            return url
        except ArchiveError as e:
            # a cluster that has just started has no DataNode yet: wait for the first reports
            if e.status != 503 or time.monotonic() > deadline:
                raise
            say(f"waiting for the cluster's nodes to join the file system ({e}) ...")
            time.sleep(1)
