"""The few WebHDFS calls Cortex's own commands make to the cluster's file system (uploading
Spark's jars, the runtime image), with the standard library's HTTP client: WebHDFS's two
steps (the NameNode's redirect, then the data to the node it names), progress every tenth.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from cortex_rm.yarn.addresses import HostPort

PIECE = 1024 * 1024

Say = Callable[[str], None]


class WebHdfsError(Exception):
    """A call failed; the message says what to do (``status``: the HTTP status of a refusal,
    0 for other failures)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WebHdfs:
    """The few WebHDFS calls the upload needs, with the standard library's HTTP client."""

    def __init__(self, namenode: HostPort, delegation: str, timeout_s: float = 120) -> None:
        """``delegation``: the user's WebHDFS delegation token as a URL string (her credential)."""
        self.namenode = namenode
        self.delegation = delegation
        self.timeout_s = timeout_s

    def _url(self, path: str, op: str, **params: str) -> str:
        query = urlencode({"op": op, "delegation": self.delegation, **params})
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
            raise WebHdfsError(f"cannot reach the file system at {where}: {e}; is the cluster up?") from None
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
            raise WebHdfsError(f"{what}: HTTP {status}: {error.get('exception', '')} {message}".strip(), status)
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
            raise WebHdfsError(f"CREATE {path}: the NameNode answered {status} without a redirect")
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


def upload_when_ready(fs: WebHdfs, path: str, local: Path, permission: str, say: Say, wait_s: float = 120) -> None:
    """CREATE ``path`` from ``local``, waiting up to ``wait_s`` for a cluster that has just
    started and has no DataNode yet (the NameNode answers 503 until the first reports)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fs.create(path, local, permission, say)
            return
        except WebHdfsError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            say(f"waiting for the cluster's nodes to join the file system ({e}) ...")
            time.sleep(1)


def first_answering(namenodes: list[HostPort], delegation: str, timeout_s: float = 10) -> HostPort:
    """The first of ``namenodes`` (several RMs' web addresses, the preferred first) whose file system
    answers (GETHOMEDIRECTORY): a standby RM binds no port, or refuses.  The last error if none does."""
    error = WebHdfsError("no file system address given")
    for namenode in namenodes:
        try:
            WebHdfs(namenode, delegation, timeout_s).home()
            return namenode
        except WebHdfsError as e:
            error = e
    raise error
