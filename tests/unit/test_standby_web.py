"""A standby RM's web port (``yarn_api/standby_web.py``), driven through twisted.web's ``DummyRequest``: its
cluster info says STANDBY, the REST API is redirected to the active, WebHDFS is told to fail over, and during an
election every caller is asked to retry; the port's factory switches between the standby and the active's site."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.web.test.requesthelper import DummyRequest

from cortex_rm.yarn_api.standby_web import StandbyWeb, SwitchingFactory, standby_cluster_info


def render(active: str | None, path: bytes, query: bytes = b"", method: bytes = b"GET") -> tuple[DummyRequest, Any]:
    request = DummyRequest([])
    request.method = method
    request.path = path  # type: ignore[attr-defined]  # a real Request has one
    request.uri = path + query
    request.render(StandbyWeb(lambda: active, lambda: standby_cluster_info("9.9", 1234)))
    body = b"".join(request.written)
    return request, (json.loads(body) if body else None)


def test_cluster_info_says_standby() -> None:
    request, body = render("10.0.0.2:8088", b"/ws/v1/cluster/info")
    assert request.responseCode == 200 and body["clusterInfo"]["haState"] == "STANDBY"


def test_the_rest_api_is_redirected_to_the_active_with_its_query() -> None:
    request, _ = render("10.0.0.2:8088", b"/ws/v1/cluster/apps", b"?states=RUNNING", method=b"POST")
    assert request.responseCode == 307
    assert request.responseHeaders.getRawHeaders(b"Location") == [b"http://10.0.0.2:8088/ws/v1/cluster/apps?states=RUNNING"]


def test_a_target_that_is_not_an_absolute_path_is_refused_so_no_redirect_names_another_host() -> None:
    for target in (b"@evil.example/x", b"//evil.example/x"):
        request, body = render("10.0.0.2:8088", target)
        assert request.responseCode == 400 and not request.responseHeaders.hasHeader(b"Location")


def test_every_answer_closes_its_connection() -> None:
    request, _ = render(None, b"/ws/v1/cluster/apps")
    assert request.responseHeaders.getRawHeaders(b"Connection") == [b"close"]


def test_webhdfs_is_told_to_fail_over_without_a_content_type() -> None:
    request, body = render("10.0.0.2:8088", b"/webhdfs/v1/user", b"?op=LISTSTATUS")
    assert request.responseCode == 403
    assert body["RemoteException"]["javaClassName"] == "org.apache.hadoop.ipc.StandbyException"
    assert request.defaultContentType is None and not request.responseHeaders.hasHeader(b"Content-Type")


def test_during_an_election_every_caller_is_asked_to_retry() -> None:
    for path in (b"/webhdfs/v1/", b"/ws/v1/cluster/apps"):
        request, body = render(None, path)
        assert request.responseCode == 503
        assert body["RemoteException"]["exception"] == "RetriableException"
        assert request.responseHeaders.getRawHeaders(b"Retry-After") == [b"1"]


class Counting(Factory):
    def __init__(self) -> None:
        self.starts = self.stops = 0

    def startFactory(self) -> None:
        self.starts += 1

    def stopFactory(self) -> None:
        self.stops += 1

    def buildProtocol(self, addr: object) -> Protocol:
        protocol = Protocol()
        protocol.factory = self
        return protocol


def test_the_port_factory_hands_new_connections_to_the_current_site_and_keeps_only_it_started() -> None:
    standby, active = Counting(), Counting()
    switching = SwitchingFactory(standby)
    switching.doStart()
    assert switching.buildProtocol(None).factory is standby
    switching.switch(active)
    assert switching.buildProtocol(None).factory is active
    assert (standby.starts, standby.stops, active.starts) == (1, 1, 1)
    switching.switch(standby)
    switching.doStop()
    assert (standby.starts, standby.stops, active.stops) == (2, 2, 1)
