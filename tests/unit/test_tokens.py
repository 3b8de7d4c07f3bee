"""Tokens: HMAC passwords under a master key, identifiers, and the token storage file."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.yarn.tokens import AMRM_TOKEN_KIND, MasterKey
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.tokens import (
    credentials_file_bytes,
    make_token,
    parse_amrm_identifier,
    parse_container_identifier,
)
from cortex_rm.yarn_api.writable import read_vlong, write_vlong


def test_empty_credentials_are_the_bytes_spark_sends() -> None:
    """An empty token storage is HDTS, version 0, no tokens, no secrets (Spark's SERUUwAAAA==)."""
    assert base64.b64encode(credentials_file_bytes([])) == b"SERUUwAAAA=="


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (127, "7f"), (-112, "90"), (128, "8f80"), (-113, "8770"), (256, "8e0100"), (-1000, "8603e7")],
)
def test_vlong_matches_hadoops_writable_utils(value: int, encoded: str) -> None:
    """WritableUtils.writeVLong's published encodings."""
    assert write_vlong(value).hex() == encoded


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_vlong_round_trips(value: int) -> None:
    """readVLong(writeVLong(x)) == x over the whole long range."""
    raw = write_vlong(value)
    assert read_vlong(raw, 0) == (value, len(raw))


def test_token_password_verifies_only_under_its_key() -> None:
    """A token made under one master key verifies with it and not with another."""
    key = MasterKey.generate(7)
    other = MasterKey.generate(8)
    ident = yst.AMRMTokenIdentifierProto(keyId=7)
    ident.appAttemptId.application_id.id = 1
    ident.appAttemptId.application_id.cluster_timestamp = 1700000000000
    ident.appAttemptId.attemptId = 1
    token = make_token(key, ident.SerializeToString(), AMRM_TOKEN_KIND, "127.0.0.1:8030")
    assert key.verify(token.identifier, token.password)
    assert not other.verify(token.identifier, token.password)
    assert parse_amrm_identifier(token.identifier).appAttemptId.attemptId == 1


def test_credentials_file_layout_holds_each_token_by_alias() -> None:
    """The storage file lists each token: alias, identifier, password, kind, service."""
    key = MasterKey(1, b"k" * 20)
    token = make_token(key, b"\x01\x02", AMRM_TOKEN_KIND, "svc")
    raw = credentials_file_bytes([("amrm", token)])
    assert raw.startswith(b"HDTS\x00\x01")
    pos = 6
    fields = []
    for _ in range(5):  # alias, identifier, password, kind, service: each length-prefixed
        length, pos = read_vlong(raw, pos)
        fields.append(raw[pos : pos + length])
        pos += length
    assert fields == [b"amrm", b"\x01\x02", key.password(b"\x01\x02"), AMRM_TOKEN_KIND.encode(), b"svc"]
    assert read_vlong(raw, pos) == (0, len(raw))  # no secrets


@pytest.mark.parametrize("parse", [parse_amrm_identifier, parse_container_identifier])
def test_garbage_identifiers_are_refused(parse) -> None:  # type: ignore[no-untyped-def]
    """Bytes that are not the identifier (or lack its key fields) raise ValueError."""
    with pytest.raises(ValueError):
        parse(b"\xff\xff\xff")
    with pytest.raises(ValueError):
        parse(b"")


def test_rm_keys_are_created_once_and_recovered_after_a_restart() -> None:
    """The first start creates and stores both keys; a later start gets the same keys back."""
    from cortex_rm.allocator.master_keys import RMKeys
    from cortex_rm.allocator.state_store import MemoryStateStore
    from tests.support.rm_core import result_of

    store = MemoryStateStore()
    first = result_of(RMKeys.recover(store))
    assert first.amrm != first.container and first.amrm.key_id != first.container.key_id
    again = result_of(RMKeys.recover(store))
    assert again == first


def test_token_storage_round_trips_tokens_and_secrets() -> None:
    """read_token_storage(token_storage(...)) gives back every token and secret by alias."""
    from cortex_rm.yarn_api.writable import read_token_storage, token_storage, token_writable

    key = MasterKey(3, b"s" * 20)
    token = make_token(key, b"ident", AMRM_TOKEN_KIND, "127.0.0.1:8030")
    blob = token_storage({"a": token_writable(token)}, {"k": b"secret"})
    assert read_token_storage(blob) == ({"a": token_writable(token)}, {"k": b"secret"})
    assert read_token_storage(b"") == ({}, {})
    assert read_token_storage(base64.b64decode("SERUUwAAAA==")) == ({}, {})


@pytest.mark.parametrize("blob", [b"HDTX\x00\x00\x00", b"HDTS\x07", b"HDTS\x00\x05\x03ab", b"HDTS\x01\xff"])
def test_garbled_token_storage_is_refused(blob: bytes) -> None:
    """Wrong magic, unknown version or truncated fields raise MalformedCredentials."""
    from cortex_rm.yarn_api.writable import MalformedCredentials, read_token_storage

    with pytest.raises(MalformedCredentials):
        read_token_storage(blob)
