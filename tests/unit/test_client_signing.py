"""The client never sends its token: ``Cortex`` signs each call for the node it goes to, learning the
node's ring id from its first 401, and ``cortex-rm event sign`` prints the header curl needs.  The
node here is a loopback HTTP server that checks signatures as a node does (``request_proofs.check``
with the entry key of its ring id) and records every header it was sent."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cortex_rm.client import BadRequest, Cortex, CortexConnectionError
from cortex_rm.event_cli import add_event_parsers, client_for, run
from cortex_rm.local_cluster import free_ports
from cortex_rm.events.request_proofs import ProofError, SignedRequest, check, entry_key, parse, window
from cortex_rm.user_credential import UserCredential
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto

RING_ID = 0xC0FFEE << 80
PASSWORD = b"s" * 20
CREDENTIAL = UserCredential(
    TokenProto(identifier=b"alice-rm", password=PASSWORD, kind="RM_DELEGATION_TOKEN", service="a:1"),
    TokenProto(identifier=b"\x05alice\x00\x00\x00\x00\x00\x00\x00", password=b"f", kind="WEBHDFS delegation", service="a:2"),
)


class Node(ThreadingHTTPServer):
    seen: list[dict[str, str]]
    paths: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Node

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_one(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(dict(self.headers))
        self.server.paths.append(self.path)
        if self.path.endswith("/introducers"):  # (a hostile node would name itself as the file system)
            here = f"127.0.0.1:{self.server.server_address[1]}"
            self.answer(200, {"introducers": [], "ringId": f"{RING_ID:040x}", "fileSystem": here})
            return
        challenge = {"WWW-Authenticate": f'Cortex-HMAC-SHA256 node="{RING_ID:040x}"', "Cortex-Ring-Id": f"{RING_ID:040x}"}
        refused = {"RemoteException": {"exception": "AuthorizationException", "message": "sign it", "javaClassName": "x"}}
        try:
            signed = SignedRequest.of(self.command, self.headers.get("Host") or "", self.path, body,
                                      parse(self.headers.get("Authorization") or ""))  # fmt: skip
            check(signed, entry_key(PASSWORD, signed.proof.node, window(signed.proof.time_ms)), int(time.time() * 1000))
        except ProofError:
            self.answer(401, refused, challenge)
            return
        if signed.proof.node != RING_ID or signed.host != f"127.0.0.1:{self.server.server_address[1]}":
            self.answer(401, refused, challenge)
            return
        self.answer(200, {"activation": {"status": "success", "result": json.loads(body or b"null")}})

    do_GET = do_POST = handle_one


@pytest.fixture
def node() -> Iterator[Node]:
    server = Node(("127.0.0.1", 0), Handler)
    server.seen, server.paths = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def address(node: Node) -> str:
    return f"127.0.0.1:{node.server_address[1]}"


def test_the_client_signs_for_the_node_its_401_names_and_never_sends_the_token(node: Node, tmp_path: Path) -> None:
    cortex = Cortex([address(node)], credential=CREDENTIAL, cache_dir=tmp_path)
    assert cortex.trigger("hello", {"name": "Ada"}) == {"name": "Ada"}
    assert cortex.trigger("hello", [1]) == [1]
    authorizations = [h.get("Authorization") for h in node.seen if "introducers" not in str(h)]
    assert authorizations[0] is None  # the first call, to learn the node's ring id: nothing of the credential
    assert all(a and a.startswith("Cortex-HMAC-SHA256 ") for a in authorizations[1:])
    signed_for = {parse(a).node for a in authorizations if a}
    assert signed_for == {RING_ID}
    assert not any(REST_TOKEN_HEADER in h or PASSWORD.decode() in json.dumps(h) for h in node.seen)


def test_upload_goes_to_the_file_system_the_credential_names_never_one_a_node_names(node: Node, tmp_path: Path) -> None:
    """A node's ``introducers`` may name any ``fileSystem`` (this one names itself); the user's file system token
    goes only to where the RM issued it (the credential's service), here a port where nothing listens."""
    code = tmp_path / "f.py"
    code.write_text("def handler(e, c):\n    return e\n")
    [closed] = free_ports(1)
    fs = TokenProto(identifier=CREDENTIAL.fs.identifier, password=b"f", kind="WEBHDFS delegation",
                    service=f"127.0.0.1:{closed}")  # fmt: skip
    cortex = Cortex([address(node)], credential=UserCredential(CREDENTIAL.rm, fs), cache_dir=tmp_path)
    cortex.introducers()
    with pytest.raises(CortexConnectionError):
        cortex.upload_code("f", code)
    assert not any("webhdfs" in path for path in node.paths)
    cortex.credential = UserCredential(CREDENTIAL.rm, TokenProto(identifier=fs.identifier, password=b"f",
                                                                 kind=fs.kind, service="nowhere"))  # fmt: skip
    with pytest.raises(BadRequest, match="credential names no file system address"):
        cortex.upload_code("f", code)


def test_event_sign_prints_the_header_for_one_request(node: Node, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_event_parsers(parser.add_subparsers(dest="command"))
    url = f"http://{address(node)}/ws/v1/cortex/events/functions/hello/trigger?blocking=false"
    args = parser.parse_args(["event", "sign", "post", url, "--data", '{"a": 1}', "--endpoint", address(node)])
    out, err = io.StringIO(), io.StringIO()
    cortex = client_for(args, err)
    cortex.credential = CREDENTIAL
    assert run(args, cortex, out, err) == 0
    header = out.getvalue().removeprefix("Authorization: ").strip()
    target = "/ws/v1/cortex/events/functions/hello/trigger?blocking=false"
    signed = SignedRequest.of("POST", address(node), target, b'{"a": 1}', parse(header))
    check(signed, entry_key(PASSWORD, RING_ID, window(signed.proof.time_ms)), int(time.time() * 1000))
