"""``client-config --rm <a node's web address>`` (``rm_lookup.py``): the RM directory a node serves is read
back into the RMs to configure, in the configured order, with the active named; a malformed directory, a node
that has not found the RMs yet, or a port that is neither a node's web port nor an RM's client port is a clear
error; Hadoop IPC's answer to HTTP means the address is an RM's client address."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from twisted.internet.task import Clock

from cortex_rm.client_config import RMAddresses
from cortex_rm.dht.ring_math import format_id
from cortex_rm.roles.ring_records import RESOURCE_MANAGER_KEY, ResourceManagerRecord
from cortex_rm.rm_lookup import (
    DIRECTORY_MAX_BYTES, MAX_RMS, Directory, RmLookupError, classify, describe, look_up, node_address, parse_directory,
)  # fmt: skip
from cortex_rm.roles.rm_directory import RmDirectory, eligible_key
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn_api.ipc_wire import HTTP_NOT_FOUND_REPLY
from tests.support.rm_core import result_of
from tests.unit.test_rm_directory import KeySpace

IDS = [0x7 << 156, 0x2 << 156, 0xC << 156]  # the configured order (not the ring's)


def rm_record(host: str, fingerprint: str, started_ms: int = 0) -> ResourceManagerRecord:
    return ResourceManagerRecord(
        HostPort(host, 8032), HostPort(host, 8030), HostPort(host, 8088), HostPort(host, 8031), fingerprint, started_ms
    )


def served_document(active: int | None) -> dict[str, Any]:
    """What a real ``RmDirectory`` serves for three eligible nodes, the ``active``-th (or none) active."""
    ring = KeySpace()
    for i, ring_id in enumerate(IDS):
        ring.put(eligible_key(ring_id), rm_record(f"10.0.0.{i + 1}", f"fp{i}").encode())
    if active is not None:
        ring.put(RESOURCE_MANAGER_KEY, rm_record(f"10.0.0.{active + 1}", f"fp{active}", started_ms=5).encode())
    directory = RmDirectory(ring, IDS, Clock())
    result_of(directory.refresh())
    document = directory.document()
    assert document is not None
    return document


def encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_a_served_directory_reads_back_in_the_configured_order_with_the_active_named() -> None:
    """The document ``RmDirectory`` serves parses into its RMs in the configured order (the order of the
    rm-ids), each with its client, scheduler and web address; the active is the one it names."""
    directory = parse_directory(encoded(served_document(active=1)))
    assert [found.ring_id for found in directory.rms] == [format_id(i) for i in IDS]
    assert directory.addresses[2] == RMAddresses(
        HostPort("10.0.0.3", 8032), HostPort("10.0.0.3", 8030), HostPort("10.0.0.3", 8088)
    )
    assert directory.active == format_id(IDS[1])
    assert [found.active for found in directory.rms] == [False, True, False]


def test_what_client_config_says_names_each_rm_id_and_the_active() -> None:
    """The lines printed: one per RM as rm1, rm2, ..., with its addresses and whether it is active."""
    lines = describe(parse_directory(encoded(served_document(active=0))), HostPort("10.0.0.9", 8042))
    assert lines[0] == "10.0.0.9:8042 is a Cortex node; it knows 3 ResourceManagers:"
    assert lines[1].startswith("  rm1  client 10.0.0.1:8032  web 10.0.0.1:8088  (active, ring id ")
    assert "(standby" in lines[2] and "(standby" in lines[3]
    unknown = describe(parse_directory(encoded(served_document(active=None))), HostPort("10.0.0.9", 8042))
    assert "does not know which is active" in unknown[-1]


def mutate(change: Any) -> bytes:
    document = served_document(active=1)
    change(document["resourceManagers"])
    return encoded(document)


def _set(container: str, key: Any, value: Any) -> Any:
    def change(section: dict[str, Any]) -> None:
        target = section if container == "section" else section["rm"][0]
        target[key] = value

    return change


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<html>not json</html>", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
        (encoded([1, 2]), "no resourceManagers object"),
        (encoded({"resourceManagers": []}), "no resourceManagers object"),
        (mutate(_set("section", "rm", {"a": 1})), "rm is not a list"),
        (mutate(_set("section", "active", "zz")), "active is neither null nor a ring id"),
        (mutate(_set("section", "active", None)), "does not name the one entry marked active"),
        (mutate(_set("entry", "active", "yes")), "rm[0].active is not true or false"),
        (mutate(_set("entry", "ringId", "12")), "rm[0].ringId is not a ring id"),
        (mutate(_set("entry", "address", 8032)), "rm[0].address is not a string"),
        (mutate(_set("entry", "address", "10.0.0.1")), "rm[0].address is '10.0.0.1', not host:port"),
        (mutate(_set("entry", "webappAddress", "evil.example/x:80")), "rm[0].webappAddress is"),
        (mutate(_set("entry", "schedulerAddress", "host name:8030")), "rm[0].schedulerAddress is"),
        (mutate(_set("entry", "address", "10.0.0.1:0")), "not host:port"),
        (mutate(_set("entry", "address", "10.0.0.1:70000")), "not host:port"),
        (mutate(_set("entry", "address", "10.0.0.2:8032")), "lists a client address twice"),
        (mutate(_set("entry", "ringId", format_id(IDS[1]))), "lists a ring id twice"),
        (mutate(lambda s: s["rm"].__setitem__(0, "x")), "rm[0] is not an object"),
        (mutate(lambda s: s.__setitem__("rm", s["rm"][:1] * (MAX_RMS + 1))), f"more than {MAX_RMS}"),
    ],
)
def test_a_malformed_directory_is_refused_saying_what_is_wrong(body: bytes, complaint: str) -> None:
    """Every field is checked before anything is written: a wrong type, an address that is not a plain
    host:port (nothing to follow or write into a site file), duplicates, an inconsistent active."""
    with pytest.raises(RmLookupError) as raised:
        parse_directory(body)
    assert complaint in str(raised.value)


def test_ipv6_literals_and_host_names_are_addresses() -> None:
    assert node_address("[::1]:8042", "x") == HostPort("[::1]", 8042)
    assert node_address("node-7.example.org:8042", "x") == HostPort("node-7.example.org", 8042)
    for text in ("::1:8042", "[::1]8042", "-rm:1", "a@b:1", "a:b:1"):
        with pytest.raises(RmLookupError):
            node_address(text, "x")


def test_a_served_directory_fits_the_size_bound_with_room_to_spare() -> None:
    """MAX_RMS RMs with long host names stay well under what the client reads (``DIRECTORY_MAX_BYTES``)."""
    host = "h" * 60 + ".example.org"
    entry = {"ringId": "a" * 40, "address": f"{host}:65535", "schedulerAddress": f"{host}:65535",
             "webappAddress": f"{host}:65535", "trackerAddress": f"{host}:65535", "active": False}  # fmt: skip
    assert len(encoded({"resourceManagers": {"active": None, "rm": [entry] * MAX_RMS}})) < DIRECTORY_MAX_BYTES


def test_hadoop_ipcs_answer_to_http_means_an_rm_client_address() -> None:
    """An RM's client (IPC) port answers the GET with Hadoop's 404 for HTTP on an IPC port: not a
    directory, so the address is taken as the RM's client address (None)."""
    body = HTTP_NOT_FOUND_REPLY.split(b"\r\n\r\n", 1)[1]
    assert classify(404, body, "10.0.0.1:8032") is None


def test_a_node_that_has_not_found_the_rms_yet_says_to_try_again() -> None:
    with pytest.raises(RmLookupError, match="not found the ResourceManagers in the ring yet: try again"):
        classify(503, encoded({"RemoteException": {"exception": "RetriableException"}}), "10.0.0.9:8042")


@pytest.mark.parametrize("status", [404, 401, 500, 302])
def test_any_other_answer_says_which_address_to_give(status: int) -> None:
    """A web port that serves no directory (e.g. the RM's own web port, or some other server): the
    error names both kinds of address the user may give instead."""
    with pytest.raises(RmLookupError) as raised:
        classify(status, b'{"RemoteException": {}}', "10.0.0.1:8088")
    message = str(raised.value)
    assert "answered neither as a Cortex node's web port nor as a ResourceManager's client port" in message
    assert f"HTTP {status}" in message and "status_address" in message and "client address" in message


def test_a_malformed_directory_answer_names_the_address() -> None:
    expected = r"10\.0\.0\.9:8042 answered a malformed RM directory: the answer is not JSON"
    with pytest.raises(RmLookupError, match=expected):
        classify(200, b"{", "10.0.0.9:8042")


def test_an_empty_directory_parses_with_no_rms() -> None:
    """A node that found the active's record but no eligible node's yet lists none (``resolve`` refuses it)."""
    assert parse_directory(encoded({"resourceManagers": {"active": None, "rm": []}})) == Directory((), None)


def test_an_answer_longer_than_a_directory_is_refused_not_taken_for_silence() -> None:
    """A real HTTP server on loopback answering more than ``DIRECTORY_MAX_BYTES``: an error naming it, not an
    address taken as an RM's client port (``client_http.AnswerTooLong``)."""
    class Flood(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"x" * (DIRECTORY_MAX_BYTES + 1)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RmLookupError, match="more than"):
            look_up(HostPort("127.0.0.1", server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
