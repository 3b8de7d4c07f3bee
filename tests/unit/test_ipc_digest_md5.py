"""DIGEST-MD5 server maths and checks (RFC 2831, qop=auth, md5-sess)."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.digest_md5 import (
    DigestMd5Failure,
    DigestMd5Server,
    DigestState,
    parse_directives,
    response_value,
    rspauth_value,
)
from tests.support.ipc_frames import digest_md5_response, parse_challenge

IDENTIFIER = b"\x0a\x0d\x0a\x09\x08\x01\x10\xc7\x81\x87\xd7\xa0\x34\x10\x01\x10\x07"  # AMRMTokenIdentifierProto
PASSWORD = b"\x8f\x01secret-bytes\xff"

# RFC 2831 section 4, example 1 (IMAP).
RFC_EXAMPLE = dict(
    username="chris",
    realm="elwood.innosoft.com",
    password="secret",
    nonce="OA6MG9tEQGm2hh",
    cnonce="OA6MHXh6VqTrRk",
    nc="00000001",
    qop="auth",
    digest_uri="imap/elwood.innosoft.com",
)


def counting_bytes(n: int) -> bytes:
    """A deterministic 'random' source: 0, 1, 2, ..."""
    return bytes(itertools.islice(itertools.cycle(range(256)), n))


def new_server(passwords: dict[bytes, bytes] | None = None) -> DigestMd5Server:
    """A server knowing IDENTIFIER -> PASSWORD (or ``passwords``), challenge not yet sent."""
    table = {IDENTIFIER: PASSWORD} if passwords is None else passwords
    return DigestMd5Server(password_for=table.get, random_bytes=counting_bytes)


def test_rfc_2831_example_response() -> None:
    """The published response value of RFC 2831's example."""
    assert response_value(**RFC_EXAMPLE) == "d388dad90d4bbd760a152321f2143af7"


def test_rfc_2831_example_rspauth() -> None:
    """The published rspauth value of RFC 2831's example."""
    assert rspauth_value(**RFC_EXAMPLE) == "ea40f60335c427b5527b84dbabcdfffd"


def test_challenge_is_what_the_jdk_client_accepts() -> None:
    """realm="default", a Base64 nonce from the injected source, qop auth, utf-8, md5-sess."""
    server = new_server()
    nonce = base64.b64encode(counting_bytes(24)).decode()
    assert server.challenge() == (
        f'realm="default",nonce="{nonce}",qop="auth",charset=utf-8,algorithm=md5-sess'
    ).encode()
    assert server.state is DigestState.CHALLENGED
    with pytest.raises(RuntimeError):
        server.challenge()


def test_a_correct_response_authenticates_the_token_identifier() -> None:
    """The identifier is Base64-decoded from username; rspauth is what the client expects."""
    server = new_server()
    response, expected_rspauth = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=PASSWORD)
    success = server.verify(response)
    assert success.identifier == IDENTIFIER
    assert success.rspauth == expected_rspauth
    assert server.state is DigestState.COMPLETE


def test_authzid_equal_to_the_username_is_accepted() -> None:
    """An authzid naming the same identity enters A1 and is allowed."""
    server = new_server()
    username = base64.b64encode(IDENTIFIER).decode()
    response, rspauth = digest_md5_response(
        server.challenge(), identifier=IDENTIFIER, password=PASSWORD, authzid=username
    )
    assert server.verify(response).rspauth == rspauth


@given(identifier=st.binary(min_size=1, max_size=64), password=st.binary(max_size=64), wrong=st.binary(max_size=64))
def test_only_the_right_password_verifies(identifier: bytes, password: bytes, wrong: bytes) -> None:
    """Property: the client's response verifies with the token's password and no other."""
    server = new_server({identifier: password})
    response, _ = digest_md5_response(server.challenge(), identifier=identifier, password=password)
    assert server.verify(response).identifier == identifier
    if wrong != password:
        other = new_server({identifier: password})
        bad, _ = digest_md5_response(other.challenge(), identifier=identifier, password=wrong)
        with pytest.raises(DigestMd5Failure):
            other.verify(bad)


def _mutate(response: bytes, old: str, new: str) -> bytes:
    assert old.encode() in response
    return response.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    ("mutation", "java_class", "fragment"),
    [
        (lambda r, c: _mutate(r, "qop=auth", "qop=auth-int"), errors.SASL_EXCEPTION, "qop"),
        (lambda r, c: _mutate(r, 'realm="default"', 'realm="other"'), errors.SASL_EXCEPTION, "realm"),
        (lambda r, c: _mutate(r, c["nonce"], "AAAA" + c["nonce"][4:]), errors.SASL_EXCEPTION, "nonce"),
        (lambda r, c: _mutate(r, "nc=00000001", "nc=00000002"), errors.SASL_EXCEPTION, "nonce count"),
        (lambda r, c: _mutate(r, 'digest-uri="/default"', 'digest-uri="hdfs/default"'), errors.SASL_EXCEPTION, "digest-uri"),
        (lambda r, c: _mutate(r, "charset=utf-8", "charset=latin1"), errors.SASL_EXCEPTION, "charset"),
        (lambda r, c: _mutate(r, "cnonce=", "xnonce="), errors.SASL_EXCEPTION, "lacks cnonce"),
        (lambda r, c: r + b',authzid="someone-else"', errors.SASL_EXCEPTION, "authzid"),
        (lambda r, c: r + b",cipher=rc4", errors.SASL_EXCEPTION, "cipher"),
        (lambda r, c: r + b",qop=auth", errors.SASL_EXCEPTION, "twice"),
        (lambda r, c: r + b',x="unterminated', errors.SASL_EXCEPTION, "malformed"),
        (lambda r, c: r + b",pad=" + b"x" * 4096, errors.SASL_EXCEPTION, "4096"),
        (lambda r, c: b"\xff" + r, errors.SASL_EXCEPTION, "UTF-8"),
    ],
    ids=["qop", "realm", "nonce", "nc", "digest-uri", "charset", "no-cnonce", "authzid", "cipher", "duplicate",
         "malformed", "too-long", "not-utf8"],
)
def test_responses_breaking_the_rules_are_refused(mutation: object, java_class: str, fragment: str) -> None:
    """Each broken response is a SaslException naming the problem; the server is FAILED."""
    server = new_server()
    challenge = server.challenge()
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    with pytest.raises(DigestMd5Failure) as failure:
        server.verify(mutation(response, parse_challenge(challenge)))  # type: ignore[operator]
    assert failure.value.java_class == java_class
    assert fragment in failure.value.message
    assert server.state is DigestState.FAILED


def test_wrong_password_is_a_mismatched_response() -> None:
    """A client holding another password gets SaslException 'Mismatched response'."""
    server = new_server()
    response, _ = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=b"guess")
    with pytest.raises(DigestMd5Failure, match="Mismatched response") as failure:
        server.verify(response)
    assert failure.value.java_class == errors.SASL_EXCEPTION


def test_unknown_token_is_invalid_token() -> None:
    """An identifier the password lookup does not know: SecretManager$InvalidToken."""
    server = new_server({})
    response, _ = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=PASSWORD)
    with pytest.raises(DigestMd5Failure) as failure:
        server.verify(response)
    assert failure.value.java_class == errors.INVALID_TOKEN


def test_username_that_is_not_base64_is_invalid_token() -> None:
    """Hadoop cannot de-serialize such an identifier: InvalidToken."""
    server = new_server()
    response, _ = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=PASSWORD)
    username = base64.b64encode(IDENTIFIER).decode()
    with pytest.raises(DigestMd5Failure, match="de-serialize") as failure:
        server.verify(_mutate(response, username, "chris"))
    assert failure.value.java_class == errors.INVALID_TOKEN


def test_password_lookup_may_name_its_own_exception() -> None:
    """A lookup raising DigestMd5Failure (e.g. StandbyException) is reported unchanged."""

    def standby(identifier: bytes) -> bytes:
        raise DigestMd5Failure(errors.STANDBY_EXCEPTION, "Operation category WRITE is not supported in state standby")

    server = DigestMd5Server(password_for=standby, random_bytes=counting_bytes)
    response, _ = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=PASSWORD)
    with pytest.raises(DigestMd5Failure) as failure:
        server.verify(response)
    assert failure.value.java_class == errors.STANDBY_EXCEPTION


def test_response_before_challenge_or_after_completion_is_refused() -> None:
    """verify() is only valid once, after the challenge."""
    server = new_server()
    with pytest.raises(DigestMd5Failure, match="INITIAL"):
        server.verify(b"username=x")
    response, _ = digest_md5_response(server.challenge(), identifier=IDENTIFIER, password=PASSWORD)
    server.verify(response)
    with pytest.raises(DigestMd5Failure, match="COMPLETE"):
        server.verify(response)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'a=1,b="two"', {"a": "1", "b": "two"}),
        (b'  A = 1 , , b = "x\\"y\\\\z" ,', {"a": "1", "b": 'x"y\\z'}),
        (b'realm="with,comma",nonce=abc', {"realm": "with,comma", "nonce": "abc"}),
        (b"", {}),
        (b'q=""', {"q": ""}),
    ],
    ids=["plain", "whitespace-escapes-empty-elements", "comma-in-quotes", "empty", "empty-quoted"],
)
def test_parse_directives(text: bytes, expected: dict[str, str]) -> None:
    """RFC 2831 #rule lists: quoted strings with escapes, LWS, empty elements, any case."""
    assert parse_directives(text) == expected


@pytest.mark.parametrize("text", [b"novalue", b"a=1 b=2", b'a="x"y', b"=1"])
def test_parse_directives_rejects_malformed_lists(text: bytes) -> None:
    """Anything that is not name=value separated by commas is refused."""
    with pytest.raises(DigestMd5Failure):
        parse_directives(text)
