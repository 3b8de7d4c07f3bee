"""An executor's copies of functions' code, fetched from the cluster's file system.

A registration names its code by path, length and modification time
(``FunctionSpec.code_*``).  The executor shows the RM the registration record, as an RM
signed it, over its tracker connection (``openFunctionCode``); the RM answers with the
file's length and time and a read ticket, and the bytes come block by block from
their holders, each chunk checked against its CRC (as ``fs_fetcher.py`` localizes a
container's resource).  A file whose length or time differ from the registration's
is refused -- the code run is the code registered, as YARN refuses a resource
that "changed on src filesystem".

Copies live in ``<dir>/<name>/<version>-<mtime>.<py|zip>`` (0644; the sandbox reads
them), are fetched once for concurrent requests of the same version, and the least
recently used go when there are more than ``max_files`` or ``max_bytes`` of them.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.functions import FunctionSpec
from cortex_rm.internal.block_codec import BlockLocation, LocalizationSource
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn_api.webhdfs.block_work import read_range

log = Logger()

DEFAULT_MAX_FILES = 512
DEFAULT_MAX_BYTES = 2 * 1024 * 1024 * 1024


class CodeUnavailable(Exception):
    """The function's code cannot be had; the message says why (the developer's or the cluster's)."""


class CodeChanged(CodeUnavailable):
    """The code file is not the one registered (its length or time differ): the developer's to fix."""


class FunctionCode:
    """The executor's code cache (see the module docstring)."""

    def __init__(
        self, directory: Path, data_node: DataNodeRole, run: Runner,
        *, max_files: int = DEFAULT_MAX_FILES, max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.data_node = data_node
        self._run = run
        self.max_files, self.max_bytes = max_files, max_bytes
        self._files: OrderedDict[Path, int] = OrderedDict()  # path -> size, least recently used first
        self._fetching: dict[Path, list[defer.Deferred[Path]]] = {}

    def start(self) -> defer.Deferred[None]:
        """Forget copies a previous run left (their versions may be gone)."""
        return self._run(lambda: self._clear())

    def _clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)

    def path_of(self, spec: FunctionSpec) -> Path:
        suffix = ".zip" if spec.code_kind == "zip" else ".py"
        return self.directory / spec.name / f"{spec.version}-{spec.code_mtime_ms}{suffix}"

    def get(self, spec: FunctionSpec, record: Record) -> defer.Deferred[Path]:
        """The local copy of ``spec``'s code (fetched now unless held); CodeUnavailable saying why not."""
        path = self.path_of(spec)
        if path in self._files:
            self._files.move_to_end(path)
            return defer.succeed(path)
        waiters = self._fetching.get(path)
        d: defer.Deferred[Path] = defer.Deferred()
        if waiters is not None:
            waiters.append(d)
            return d
        self._fetching[path] = [d]
        fetched = defer.ensureDeferred(self._fetch(spec, record, path))
        fetched.addBoth(self._fetched, path)
        return d

    def _fetched(self, outcome: Path | object, path: Path) -> None:
        waiters = self._fetching.pop(path, [])
        if isinstance(outcome, Path):
            self._files[path] = path.stat().st_size if path.exists() else 0
            self._evict()
        for d in waiters:
            if isinstance(outcome, Path):
                d.callback(outcome)
            else:
                d.errback(outcome)  # type: ignore[arg-type]  # a Failure

    async def _fetch(self, spec: FunctionSpec, record: Record, path: Path) -> Path:
        try:
            source: LocalizationSource = await self.data_node.open_function_code(record)
        except Exception as e:
            raise CodeUnavailable(f"the code of {spec.name} v{spec.version} cannot be opened: {_why(e)}") from None
        if source.length != spec.code_length or source.modification_time_ms != spec.code_mtime_ms:
            raise CodeChanged(
                f"the code file {spec.code_path} changed after {spec.name} v{spec.version} was registered "
                f"(registered {spec.code_length} bytes at {spec.code_mtime_ms}, now {source.length} bytes at "
                f"{source.modification_time_ms}): register the function again"
            )
        reactor = self.data_node.reactor
        data_node = self.data_node

        def download() -> Path:
            located: tuple[int, tuple[BlockLocation, ...]] = blockingCallFromThread(
                reactor, data_node.locate, source.ticket, 0, -1  # type: ignore[arg-type]
            )
            length, blocks = located
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            written = 0
            with partial.open("wb") as f:
                for piece in read_range(data_node, blocks, 0, length):
                    f.write(piece)
                    written += len(piece)
            if written != spec.code_length:
                partial.unlink(missing_ok=True)
                raise CodeUnavailable(f"read {written} of the {spec.code_length} bytes of {spec.code_path}")
            partial.chmod(0o644)
            path.parent.chmod(0o755)
            os.replace(partial, path)
            return path

        try:
            result: Path = await self._run(download)
        except CodeUnavailable:
            raise
        except Exception as e:
            raise CodeUnavailable(f"the code of {spec.name} cannot be read from the file system: {_why(e)}") from None
        log.info("function {name} v{version}: code fetched ({length} bytes)", name=spec.name, version=spec.version,
                 length=spec.code_length)  # fmt: skip
        return result

    def _evict(self) -> None:
        total = sum(self._files.values())
        while self._files and (len(self._files) > self.max_files or total > self.max_bytes):
            path, size = self._files.popitem(last=False)
            total -= size
            self._run(lambda p=path: p.unlink(missing_ok=True))  # type: ignore[misc]


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


CodeSource = Callable[[FunctionSpec, Record], defer.Deferred[Path]]
