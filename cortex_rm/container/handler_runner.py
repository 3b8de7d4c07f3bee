"""The runner inside a function's sandbox: loads the function once, then runs one activation at a time.

Run by the sandbox's ``python3`` (the runtime image's; standard library only -- this
file is bound read-only into the sandbox and imports nothing of Cortex)::

    python3 -I -S -B handler_runner.py SOCKET CODE KIND HANDLER

It connects to the node's Unix socket ``SOCKET``, loads ``CODE`` (a module file, or a zip
put first on ``sys.path``; ``HANDLER`` is ``function`` or ``module.function``), and says
so: ``{"ready": true}``, or ``{"ready": false, "status": "developer_error", "error": ...}``
and exits.  Then, for each request ``{"activation", "function", "version", "payload",
"deadline_ms"}``, it calls ``handler(event, context)`` with its stdout and stderr (file
descriptors 1 and 2, so a subprocess's output counts too) sent to a file, and answers
``{"status", "result", "error", "logs"}``: ``success`` with the result as JSON, or
``application_error`` with the exception (its traceback in the logs), or when the
result is not JSON or too large.  Frames are a 4-byte big-endian length and JSON.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import socket
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

MAX_FRAME = 1024 * 1024
MAX_RESULT = 256 * 1024
MAX_LOGS = 64 * 1024

Handler = Callable[[Any, "Context"], Any]


class Context:
    """What a handler learns of its activation (its ``context`` argument)."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.activation_id: str = request["activation"]
        self.function_name: str = request["function"]
        self.function_version: int = request["version"]
        self.deadline = time.time() + request["deadline_ms"] / 1000.0

    def remaining_time_ms(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode("utf-8")
    conn.sendall(struct.pack(">I", len(data)) + data)


def receive(conn: socket.socket) -> dict[str, Any] | None:
    header = _exactly(conn, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes")
    body = _exactly(conn, length)
    if body is None:
        return None
    request: dict[str, Any] = json.loads(body)
    return request


def _exactly(conn: socket.socket, count: int) -> bytes | None:
    parts, got = [], 0
    while got < count:
        chunk = conn.recv(count - got)
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def load(code: str, kind: str, handler: str) -> Handler:
    if kind == "zip":
        sys.path.insert(0, code)
        module_name, _, function_name = handler.rpartition(".")
        module = importlib.import_module(module_name)
    else:
        spec = importlib.util.spec_from_file_location("function", code)
        if spec is None or spec.loader is None:
            raise ImportError(f"{code} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules["function"] = module
        spec.loader.exec_module(module)
        function_name = handler
    function = getattr(module, function_name, None)
    if not callable(function):
        raise LookupError(f"the code has no function {function_name!r}: name the handler with --handler")
    return function  # type: ignore[no-any-return]


def run(function: Handler, request: dict[str, Any], capture: IO[bytes]) -> dict[str, Any]:
    """One activation: the handler's answer, with what it wrote to fds 1 and 2."""
    capture.seek(0)
    capture.truncate()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    answer: dict[str, Any]
    try:
        value = function(json.loads(request["payload"]), Context(request))
    except BaseException as e:  # noqa: B036 - the handler's SystemExit, KeyboardInterrupt... are its errors too
        answer = _failed(e)
    else:
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as e:
            answer = {"status": "application_error", "error": f"the handler returned something that is not JSON: {e}"}
        else:
            if len(text.encode("utf-8")) > MAX_RESULT:
                answer = {"status": "application_error", "error": f"the handler's result is larger than {MAX_RESULT} bytes"}
            else:
                answer = {"status": "success", "result": text, "error": ""}
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    capture.seek(0)
    answer["logs"] = capture.read(MAX_LOGS).decode("utf-8", errors="replace")
    return answer


def _failed(e: BaseException) -> dict[str, Any]:
    traceback.print_exception(type(e), e, e.__traceback__)
    sys.stderr.flush()
    return {"status": "application_error", "error": f"{type(e).__name__}: {e}"}


def main(argv: list[str]) -> int:
    path, code, kind, handler = argv[1:5]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    try:
        function = load(code, kind, handler)
    except BaseException as e:  # noqa: B036 - anything the module does on import is the developer's to fix
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        send(conn, {"ready": False, "status": "developer_error", "error": f"the function's code cannot be loaded: {detail}"})
        return 0
    send(conn, {"ready": True})
    with tempfile.TemporaryFile(dir="/tmp") as capture:
        while True:
            request = receive(conn)
            if request is None:
                return 0
            send(conn, run(function, request, capture))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
