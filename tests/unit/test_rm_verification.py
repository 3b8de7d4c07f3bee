"""``client-config``'s check of the RMs a directory names (``rm_verification.py``): an answer is a verdict only when
its proof matches the client's own computation for the nonce and the listed addresses; refusals, garbage and wrong
proofs are reasons to drop the RM, printed safely; ``verify`` keeps the directory's order, and against real RM proof
cores (``rm_proof_web.RmProofs``) keeps the real RMs and drops a hostile one, whether it answers with its own key or
relays the question to a real RM; ``resolve``'s lines say which RMs were dropped; a server that trickles its answer
is cut off at the overall deadline, and the question it got names the address asked and carries no password."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cortex_rm.client_config import RMAddresses
from cortex_rm.local_cluster import free_ports
from cortex_rm.rm_lookup import verdict_lines
from cortex_rm.rm_verification import Verdict, _printable, ask, judge, verify
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.rm_proof import ProofQuery, rm_proof
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rm_proof_web import LiveSecrets, OwnAddresses, RmProofs
from tests.unit.test_rm_proof import NONCE, RM, Cluster, args_of

PASSWORD = b"p" * 20


def addresses(host: str) -> RMAddresses:
    return RMAddresses(HostPort(host, 8032), HostPort(host, 8030), HostPort(host, 8088))


def good_answer(rm: RMAddresses = RM) -> bytes:
    return json.dumps({"proof": rm_proof(PASSWORD, NONCE, str(rm.webapp), str(rm.client), str(rm.scheduler)).hex()}).encode()


def test_the_right_proof_verifies() -> None:
    assert judge(200, good_answer(), RM, NONCE, PASSWORD) is None


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, good_answer(addresses("other.test")), "does not match"),
        (200, json.dumps({"proof": "00" * 32}).encode(), "does not match"),
        (200, json.dumps({"proof": "zz" * 32}).encode(), "does not match"),
        (200, json.dumps({"proof": good_answer().decode()[11:-3]}).encode(), "does not match"),  # 62 hex
        (200, json.dumps({"proof": 5}).encode(), "holds no proof"),
        (200, b"[1]", "holds no proof"),
        (200, b"<html>", "holds no proof"),
        (200, b"[" * 5000, "holds no proof"),
        (403, json.dumps(RestError(403, ("InvalidToken", "x"), "token is expired").body()).encode(),
         "it refused (HTTP 403): token is expired"),
        (404, b"not found", "it refused (HTTP 404): no RemoteException"),
        (503, b'{"RemoteException": {"message": "\\u001b[31mred\\u0000"}}', "it refused (HTTP 503): ?[31mred?"),
    ],
)  # fmt: skip
def test_anything_else_is_a_reason_to_drop_the_rm(status: int, body: bytes, reason: str) -> None:
    """Wrong proofs (other addresses, wrong bytes, not hex, too short), no proof, refusals (their message quoted,
    printable only): each is a reason, never an exception."""
    said = judge(status, body, RM, NONCE, PASSWORD)
    assert said is not None and reason in said


def test_what_a_server_says_is_printed_as_plain_short_ascii() -> None:
    assert _printable("a\nb\x1b[2J\u202e") == "a?b?[2J?"
    assert _printable("x" * 500) == "x" * 160 + "..."


class FakeNetwork:
    """RMs' proof cores by web address, reached as ``rm_verification.ask`` would reach them (the question built the
    same way, the answer judged the same way), without sockets."""

    def __init__(self) -> None:
        self.sites: dict[str, Any] = {}
        self.questions: list[tuple[str, bytes]] = []

    def asker(self, rm: RMAddresses, token: TokenProto, timeout_s: float, deadline: float) -> Verdict:
        nonce = f"{len(self.questions):032x}"
        query = ProofQuery(token.identifier, nonce)
        self.questions.append((str(rm.webapp), query.target().encode()))
        site = self.sites.get(str(rm.webapp))
        if site is None:
            return Verdict(rm, "no connection to its web address: refused")
        status, body = site(args_of(query), str(rm.webapp))
        return Verdict(rm, judge(status, body, rm, nonce, token.password))


def core(proofs: RmProofs) -> Any:
    def answer(args: dict[bytes, list[bytes]], host: str) -> tuple[int, bytes]:
        box: list[Any] = []
        proofs.answer(args, host, "10.0.0.99").addBoth(box.append)
        value = getattr(box[0], "value", box[0])
        if isinstance(value, RestError):
            return value.status, json.dumps(value.body()).encode()
        return 200, json.dumps(value).encode()

    return answer


def test_real_rms_are_kept_and_hostile_ones_dropped_in_the_directorys_order() -> None:
    """rm1 and rm3 hold the cluster's key; rm2 is a hostile node with a key of its own; rm4 relays each question to
    rm1 (with rm1's Host: it gets rm1's proof); rm5 does not answer.  Only rm1 and rm3 are verified, and no question
    carried the token's password."""
    cluster = Cluster()
    _, fs = cluster.tokens("alice")
    rms = [addresses(h) for h in ("rm1.test", "evil.test", "rm3.test", "relay.test", "gone.test")]
    network = FakeNetwork()
    for rm in (rms[0], rms[2]):
        own = OwnAddresses(rm.webapp, rm.client, rm.scheduler)
        network.sites[str(rm.webapp)] = core(RmProofs(LiveSecrets(cluster.credentials), cluster.clock, own))
    hostile = Cluster()
    hostile.credentials.key = MasterKey(3, b"h" * 20)
    hostile.tokens("alice")
    network.sites["evil.test:8088"] = core(
        RmProofs(LiveSecrets(hostile.credentials), hostile.clock, OwnAddresses(rms[1].webapp, rms[1].client, rms[1].scheduler))
    )
    real = network.sites["rm1.test:8088"]
    network.sites["relay.test:8088"] = lambda args, host: real(args, "rm1.test:8088")
    verdicts = verify(rms, fs, 3.0, 0.0, asker=network.asker)
    assert [v.rm for v in verdicts] == rms
    assert [v.verified for v in verdicts] == [True, False, True, False, False]
    assert "does not match" in str(verdicts[1].failure) and "does not match" in str(verdicts[3].failure)
    assert all(fs.password.hex() not in q.decode() and fs.password not in q for _, q in network.questions)
    lines = verdict_lines(verdicts)
    assert lines[0] == "  rm1  web rm1.test:8088: verified (it holds the key your credential was issued with)"
    assert lines[1].startswith("  rm2  web evil.test:8088: NOT verified, dropped (nothing is sent to it): its proof")


def test_nothing_to_verify_asks_nobody() -> None:
    assert verify([], TokenProto(), 3.0, 0.0, asker=lambda *a: pytest.fail("asked")) == []


@contextmanager
def trickling(received: list[bytes]) -> Iterator[HostPort]:
    """A loopback server that reads one request (into ``received``), then answers a byte every 50 ms of an answer
    that would take ten minutes: only an overall deadline ends the exchange (each read gets a byte in time)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            received.append(connection.recv(65536))
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n" + b"x" * 12000
            for byte in answer:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield HostPort("127.0.0.1", server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    """The per-read timeout (3 s) never fires; the deadline (0.5 s from now) ends the exchange: the RM is dropped.
    The question named the address asked in ``Host`` and carried the identifier, not the password."""
    cluster = Cluster()
    _, fs = cluster.tokens("alice")
    received: list[bytes] = []
    with trickling(received) as address:
        rm = RMAddresses(address.with_port(8032), address.with_port(8030), address)
        verdict = ask(rm, fs, 3.0, time.monotonic() + 0.5)
    assert verdict.failure is not None and verdict.failure.startswith("no answer from its web address")
    head = received[0].decode("latin-1")
    assert head.startswith("GET /ws/v1/cortex/rm-proof?identifier=") and f"\r\nHost: {address}\r\n" in head
    assert fs.password not in received[0] and fs.password.hex() not in head and to_url_string(fs) not in head


@contextmanager
def node_on_loopback(proofs_of: dict[str, RmProofs], listed: list[str]) -> Iterator[tuple[str, list[bytes]]]:
    """One loopback HTTP server playing a node and RMs: its directory lists the RMs at ``listed`` (its own address
    stands for ``SELF``), and it answers proof questions with the core of the RM whose web address the ``Host``
    names (none: 404).  Yields its address and the requests it got."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from cortex_rm.roles.rm_directory import DIRECTORY_PATH

    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.requestline.encode() + b"\r\n" + bytes(self.headers))
            host = self.headers.get("Host", "")
            if self.path == DIRECTORY_PATH:
                rms = [{"ringId": f"{k:040x}", "address": a.replace("SELF", me), "schedulerAddress": a.replace("SELF", me),
                        "webappAddress": a.replace("SELF", me), "trackerAddress": "x:1", "active": k == 0}
                       for k, a in enumerate(listed)]  # fmt: skip
                status, body = 200, json.dumps({"resourceManagers": {"active": f"{0:040x}", "rm": rms}}).encode()
            elif host in proofs_of:
                args = {k.encode(): [v.encode() for v in vs] for k, vs in parse_qs(urlsplit(self.path).query).items()}
                box: list[Any] = []
                proofs_of[host].answer(args, host, "127.0.0.1").addBoth(box.append)
                value = getattr(box[0], "value", box[0])
                status, body = (value.status, json.dumps(value.body()).encode()) if isinstance(value, RestError) else (
                    200, json.dumps(value).encode())  # fmt: skip
            else:
                status, body = 404, b"{}"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    me = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield me, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_resolve_writes_the_rms_that_prove_and_drops_the_others_saying_so() -> None:
    """A node (on loopback) lists itself, proving with the cluster's key, and two others that do not answer: only
    itself is kept, and the lines say which were dropped.  Listed alone with a key of its own, nothing is kept and
    the lookup fails saying what to do."""
    from cortex_rm.rm_lookup import RmLookupError, resolve

    cluster = Cluster()
    _, fs = cluster.tokens("alice")
    (gone1, gone2) = (f"127.0.0.1:{p}" for p in free_ports(2))
    proofs: dict[str, RmProofs] = {}
    with node_on_loopback(proofs, ["SELF", gone1, gone2]) as (me, received):
        here = HostPort.parse(me)
        proofs[me] = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OwnAddresses(here, here, here))
        lines: list[str] = []
        assert resolve([here], fs, say=lines.append) == [RMAddresses(here, here, here)]
    assert f"  rm1  web {me}: verified (it holds the key your credential was issued with)" in lines
    assert any(line.startswith(f"  rm2  web {gone1}: NOT verified, dropped") for line in lines)
    assert any(f"\nHost: {me}\n" in r.decode().replace("\r", "") and b"rm-proof" in r for r in received)

    hostile = Cluster()
    hostile.credentials.key = MasterKey(3, b"h" * 20)
    hostile.tokens("alice")
    with node_on_loopback(proofs, ["SELF"]) as (me, _):
        here = HostPort.parse(me)
        proofs[me] = RmProofs(LiveSecrets(hostile.credentials), hostile.clock, OwnAddresses(here, here, here))
        with pytest.raises(RmLookupError, match="none of the ResourceManagers the node at .* names proved"):
            resolve([here], fs, say=lambda line: None)


def test_an_answer_that_ends_with_its_connection_is_read_whole_within_the_deadline() -> None:
    """HTTP/1.0 (as Python's ``http.server``): ``http.client`` closes the connection once the head is read, the body
    arrives later; the deadline-bound socket stays open for the body's reader (``client_http._ByDeadline``)."""
    from cortex_rm.client_http import exchange

    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n")
            time.sleep(0.2)  # (the head alone in the client's first read)
            connection.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = exchange(f"127.0.0.1:{server.getsockname()[1]}", "GET", "/", None, {}, 3.0, deadline=time.monotonic() + 10)
    finally:
        thread.join()
        server.close()
    assert (answer.status, answer.body) == (200, b"hello")
