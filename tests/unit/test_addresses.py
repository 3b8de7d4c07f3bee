"""Addresses parsed once where text enters: ``HostPort``."""

from __future__ import annotations

import pytest

from cortex_rm.yarn.addresses import HostPort, MalformedAddress


@pytest.mark.parametrize(
    ("text", "parts"), [("127.0.0.1:8032", ("127.0.0.1", 8032)), ("::1:0", ("::1", 0)), ("h:65535", ("h", 65535))]
)
def test_parse_splits_host_and_port(text: str, parts: tuple[str, int]) -> None:
    """``host:port`` splits at the last colon, so IPv6 hosts keep theirs."""
    assert HostPort.parse(text) == HostPort(*parts)


@pytest.mark.parametrize("text", ["localhost", ":8032", "localhost:", "localhost:http", "localhost:65536", "h:-1", "h:٣"])
def test_text_that_is_not_host_port_is_refused_quoting_it(text: str) -> None:
    """No host, no port, a port that is not ASCII decimal or beyond 65535: MalformedAddress quoting the text."""
    with pytest.raises(MalformedAddress) as info:
        HostPort.parse(text)
    assert repr(text) in str(info.value)


def test_the_text_form_round_trips_and_a_bound_port_replaces_the_configured_one() -> None:
    """``str`` gives YARN's ``host:port`` back; ``with_port`` keeps the host."""
    address = HostPort.parse("10.0.0.5:0")
    assert str(address) == "10.0.0.5:0"
    assert address.with_port(8032) == HostPort("10.0.0.5", 8032)
    with pytest.raises(MalformedAddress):
        HostPort("", 1)
