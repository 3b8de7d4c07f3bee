"""How ``cortex_rm.client.Cortex`` picks endpoints, against real loopback ports: closed ports are
passed over in order (given endpoints, then the cached ones of the same cluster), a call that
reached a server which then broke off is never sent to the next endpoint unless it is a read,
and what the client can check itself is refused before any connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cortex_rm.client import AccessDenied, BadRequest, Cortex, CortexConnectionError
from cortex_rm.client_http import Answer, redirect
from cortex_rm.events.outcomes import MAX_PAYLOAD_BYTES
from cortex_rm.introducer_cache import ClusterIntroducers, IntroducerCache
from cortex_rm.local_cluster import free_ports


def closed(count: int) -> list[str]:
    """Loopback addresses where nothing listens (free ports, released)."""
    return [f"127.0.0.1:{port}" for port in free_ports(count)]


@contextmanager
def hanging_up() -> Iterator[str]:
    """A loopback port whose server accepts each connection and closes it at once, answering nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def tried(error: CortexConnectionError) -> list[str]:
    """The endpoints an error lists as tried, in order."""
    listed = str(error).split("tried ", 1)[1].split(". Check", 1)[0]
    return [item.split(" (", 1)[0] for item in listed.split(", ")]


def test_every_closed_endpoint_is_tried_in_order_and_named(tmp_path: Path) -> None:
    """With nothing listening, the error names each endpoint with its failure, and what to do."""
    a, b = closed(2)
    with pytest.raises(CortexConnectionError) as caught:
        Cortex([a, b], cache_dir=tmp_path).list()
    assert tried(caught.value) == [a, b]
    assert "Connection refused" in str(caught.value) and "Check that the cluster is up" in str(caught.value)
    assert str(caught.value).startswith("list functions: no endpoint answered")


def test_cached_introducers_of_the_same_cluster_are_tried_after_the_given_ones(tmp_path: Path) -> None:
    """The given endpoints first, then the cached nodes and RM of their cluster; another cluster's never."""
    a, b, c, d, e = closed(5)
    cache = IntroducerCache(tmp_path)
    cache.remember(ClusterIntroducers(c, (a, d), 1))
    cache.remember(ClusterIntroducers("127.0.0.1:1", (e,), 2))
    with pytest.raises(CortexConnectionError) as caught:
        Cortex([a, b], cache_dir=tmp_path).get("hello")
    assert tried(caught.value) == [a, b, d, c]


def test_a_trigger_that_reached_a_server_is_not_sent_again(tmp_path: Path) -> None:
    """A server that took the connection and hung up may have started the function: the trigger
    fails saying so, and the next endpoint is not asked."""
    (after,) = closed(1)
    with hanging_up() as server:
        client = Cortex([server, after], cache_dir=tmp_path, timeout_s=5)
        with pytest.raises(CortexConnectionError, match=f"{server} took the call, then the connection failed .* it may have been done"):
            client.trigger("hello", {"n": 1})
        with pytest.raises(CortexConnectionError, match="it may have been done"):
            client.trigger_async("hello")


def test_a_read_from_a_server_that_hung_up_moves_on(tmp_path: Path) -> None:
    """A GET is safe to repeat: a broken connection counts as one more endpoint tried."""
    (after,) = closed(1)
    with hanging_up() as server:
        with pytest.raises(CortexConnectionError) as caught:
            Cortex([server, after], cache_dir=tmp_path, timeout_s=5).activation("0123456789ab-0011223344556677")
    assert tried(caught.value) == [server, after]


def test_endpoints_are_checked_when_the_client_is_made(tmp_path: Path) -> None:
    """host:port (an http:// prefix is tolerated); nothing else, and at least one."""
    assert Cortex(["http://node1:8042/", "node2:8042"], cache_dir=tmp_path).endpoints == ["node1:8042", "node2:8042"]
    assert Cortex("node1:8042", cache_dir=tmp_path).endpoints == ["node1:8042"]
    for bad in (["node1"], ["node1:8042/x"], ["node1:http"], []):
        with pytest.raises(BadRequest):
            Cortex(bad, cache_dir=tmp_path)


def test_what_the_client_can_check_is_refused_before_connecting(tmp_path: Path) -> None:
    """A bad name, a payload that is not JSON or too large, code that is neither .py nor .zip, or a
    registration without a credential: each is its own error, not a connection error."""
    client = Cortex(closed(1), cache_dir=tmp_path)
    code = tmp_path / "hello.py"
    code.write_text("def handler(event, context):\n    return event\n")
    with pytest.raises(BadRequest, match="a function's name must match"):
        client.trigger("../etc", None)
    with pytest.raises(BadRequest, match="not JSON"):
        client.trigger("hello", {1, 2})
    with pytest.raises(BadRequest, match=f"at most {MAX_PAYLOAD_BYTES}"):
        client.trigger("hello", "x" * MAX_PAYLOAD_BYTES)
    with pytest.raises(BadRequest, match=r"a Python module \(.py\) or a zip"):
        client.register("hello", tmp_path / "hello.txt")
    with pytest.raises(AccessDenied, match="give your credential"):
        client.register("hello", code)


def test_redirects_name_the_next_address_and_target() -> None:
    """An absolute Location moves the call to its host; a relative one keeps the address; others are no redirect."""
    moved = Answer(307, {"location": "http://rm.example:8088/ws/v1/cortex/events/functions/f?x=1"}, b"")
    assert redirect(moved, "node:8042") == ("rm.example:8088", "/ws/v1/cortex/events/functions/f?x=1")
    assert redirect(Answer(307, {"location": "/elsewhere"}, b""), "node:8042") == ("node:8042", "/elsewhere")
    assert redirect(Answer(307, {"location": "http://[::1]:9/a"}, b""), "node:8042") == ("[::1]:9", "/a")
    assert redirect(Answer(200, {"location": "/x"}, b""), "node:8042") is None
    assert redirect(Answer(307, {}, b""), "node:8042") is None
