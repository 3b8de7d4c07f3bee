"""Signed requests (``events/request_proofs.py``): a proof made with a token's password for one node
checks with that node's entry key for the proof's hour and with nothing else, binds the method, host,
target and body, lapses after the skew, and is taken once (within a quota per token); malformed headers
say what is wrong."""

from __future__ import annotations

import pytest

from cortex_rm.events.request_proofs import (
    SKEW_MS, NonceCapacityExceeded, ProofError, SeenNonces, SignedRequest, check, entry_key, parse, sign, window,
)  # fmt: skip

IDENTIFIER = b"\x08alice-identifier"
PASSWORD = b"p" * 20
NODE = 0x1234ABCD << 100
NOW = 1_800_000_000_000
TARGET = "/ws/v1/cortex/events/functions/hello/trigger?blocking=false"
BODY = b'{"name": "Ada"}'
HOST = "10.0.0.7:8042"
KEY = entry_key(PASSWORD, NODE, window(NOW))


def signed(method: str = "POST", target: str = TARGET, body: bytes = BODY, node: int = NODE, at: int = NOW) -> str:
    return sign(IDENTIFIER, PASSWORD, node, method, HOST, target, body, at)


def request(
    header: str, method: str = "POST", target: str = TARGET, body: bytes = BODY, host: str = HOST
) -> SignedRequest:
    return SignedRequest.of(method, host, target, body, parse(header))


def test_a_proof_checks_with_the_nodes_entry_key_and_says_who_and_for_whom() -> None:
    header = signed()
    proof = parse(header)
    assert (proof.identifier, proof.node, proof.time_ms) == (IDENTIFIER, NODE, NOW)
    check(request(header), KEY, NOW)
    assert header.startswith("Cortex-HMAC-SHA256 token=")
    assert PASSWORD.hex() not in header and "cHBwc" not in header  # (the password, hex or base64, is not in it)


@pytest.mark.parametrize(
    ("what", "made"),
    [
        ("another method", lambda h: request(h, method="PUT")),
        ("another path", lambda h: request(h, target="/ws/v1/cortex/events/functions/other/trigger?blocking=false")),
        ("another query", lambda h: request(h, target=TARGET.replace("false", "true"))),
        ("another body", lambda h: request(h, body=b'{"name": "Eve"}')),
        ("another host (a relay)", lambda h: request(h, host="10.0.0.9:8088")),
    ],
)
def test_a_proof_binds_the_method_target_and_body(what: str, made: object) -> None:
    with pytest.raises(ProofError, match="does not match"):
        check(made(signed()), KEY, NOW)  # type: ignore[operator]


def test_another_nodes_or_hours_key_or_another_password_does_not_check() -> None:
    hour = window(NOW)
    with pytest.raises(ProofError, match="does not match"):
        check(request(signed()), entry_key(PASSWORD, NODE + 1, hour), NOW)
    with pytest.raises(ProofError, match="does not match"):
        check(request(signed()), entry_key(PASSWORD, NODE, hour - 1), NOW)
    with pytest.raises(ProofError, match="does not match"):
        check(request(signed()), entry_key(b"q" * 20, NODE, hour), NOW)
    assert len({entry_key(PASSWORD, NODE, hour), entry_key(PASSWORD, NODE + 1, hour), entry_key(PASSWORD, NODE, hour + 1)}) == 3


def test_a_proof_lapses_beyond_the_skew_either_way() -> None:
    def key(at: int) -> bytes:
        return entry_key(PASSWORD, NODE, window(at))

    check(request(signed(at=NOW - SKEW_MS)), key(NOW - SKEW_MS), NOW)
    check(request(signed(at=NOW + SKEW_MS)), key(NOW + SKEW_MS), NOW)
    with pytest.raises(ProofError, match="sign each request when you send it"):
        check(request(signed(at=NOW - SKEW_MS - 1)), key(NOW - SKEW_MS - 1), NOW)
    with pytest.raises(ProofError, match="check your clock"):
        check(request(signed(at=NOW + SKEW_MS + 1)), key(NOW + SKEW_MS + 1), NOW)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Bearer abc", "expected the Cortex-HMAC-SHA256 scheme"),
        ("Cortex-HMAC-SHA256 token=AAAA, node=00", "needs exactly the fields"),
        ("Cortex-HMAC-SHA256 token=AAAA, token=AAAA", "repeated"),
        ("Cortex-HMAC-SHA256 token=A A", "malformed"),
        (signed().replace("nonce=", "nonce=X"), "nonce must be 32"),
        (signed().replace("time=", "time=x"), "time ms"),
        (signed().replace("signature=", "signature=ab"), "64 hex"),
        (signed().replace("node=", "node=0"), "40 hex"),
        (signed() + ", extra=1", "needs exactly the fields"),
        ("Cortex-HMAC-SHA256 " + "token=" + "A" * 5000 + ", node=" + "0" * 40, "needs exactly|base64url"),
    ],
)
def test_a_malformed_header_says_what_is_wrong(header: str, says: str) -> None:
    with pytest.raises(ProofError, match=says):
        parse(header)


def test_a_nonce_is_taken_once_while_its_proof_could_be_valid_then_forgotten() -> None:
    nonces = SeenNonces(capacity=3)
    assert nonces.add("a" * 32, NOW, NOW)
    assert not nonces.add("a" * 32, NOW, NOW + 1000)
    assert not nonces.add("a" * 32, NOW, NOW + SKEW_MS)  # the proof is still valid: still refused
    assert nonces.add("a" * 32, NOW, NOW + SKEW_MS + 1) and len(nonces) == 1  # (it can no longer check anyway)
    assert nonces.add("b" * 32, NOW + SKEW_MS, NOW)  # signed ahead of our clock: kept until its own end
    assert not nonces.add("b" * 32, NOW + SKEW_MS, NOW + 2 * SKEW_MS)


def test_one_token_cannot_fill_the_table_for_everyone() -> None:
    nonces = SeenNonces(capacity=10, per_token=2)
    nonces.add("a" * 32, NOW, NOW, b"mallory")
    nonces.add("b" * 32, NOW, NOW, b"mallory")
    with pytest.raises(NonceCapacityExceeded):
        nonces.add("c" * 32, NOW, NOW, b"mallory")
    assert nonces.add("c" * 32, NOW, NOW, b"alice")  # others still get in
    assert nonces.add("d" * 32, NOW + SKEW_MS + 1, NOW + SKEW_MS + 1, b"mallory")  # hers lapsed


def test_nonces_are_bounded_and_a_full_table_asks_to_retry_until_old_ones_lapse() -> None:
    nonces = SeenNonces(capacity=2)
    nonces.add("a" * 32, NOW, NOW)
    nonces.add("b" * 32, NOW, NOW)
    with pytest.raises(NonceCapacityExceeded, match="retry shortly"):
        nonces.add("c" * 32, NOW, NOW)
    assert nonces.add("c" * 32, NOW + SKEW_MS + 1, NOW + SKEW_MS + 1) and len(nonces) == 1
