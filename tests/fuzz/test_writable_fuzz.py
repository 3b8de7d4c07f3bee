"""Fuzzing Hadoop's Writable readers: variable-length longs and the token storage ("HDTS").

A submitted application's ``tokens`` reach the NodeManager as token storage bytes the
client wrote (through REST or IPC), so ``read_token_storage`` reads untrusted bytes:

* ``read_vlong`` over any bytes and position: a value and a later position within the
  data, or ``IndexError`` (its documented "too short"); ``write_vlong`` round-trips
  every 64-bit value.
* ``read_token_storage`` over random bytes and mutated valid storages (both versions):
  ``MalformedCredentials``, or tokens and secrets that write back to the same bytes
  (version 0).
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from cortex_rm.yarn_api.proto.Security_pb2 import CredentialsKVProto, CredentialsProto, TokenProto
from cortex_rm.yarn_api.writable import (
    MalformedCredentials,
    read_token_storage,
    read_vlong,
    token_storage,
    token_writable,
    write_vlong,
)
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.messages import bounded_integers

tokens = st.builds(
    TokenProto,
    identifier=st.binary(max_size=16),
    password=st.binary(max_size=16),
    kind=st.text(max_size=8),
    service=st.text(max_size=8),
)
storages = st.builds(
    token_storage,
    st.dictionaries(st.text(max_size=8), tokens.map(token_writable), max_size=3),
    st.dictionaries(st.text(max_size=8), st.binary(max_size=16), max_size=3),
)


def _version_one(kvs: list[tuple[str, TokenProto]], secrets: list[tuple[str, bytes]]) -> bytes:
    """Credentials as Hadoop writes them in the protobuf format (version 1): delim(CredentialsProto)."""
    creds = CredentialsProto(
        tokens=[CredentialsKVProto(alias=a, token=t) for a, t in kvs],
        secrets=[CredentialsKVProto(alias=a, secret=s) for a, s in secrets],
    )
    body = creds.SerializeToString()
    return b"HDTS\x01" + write_vlong(len(body)) + body


storages_v1 = st.builds(
    _version_one,
    st.lists(st.tuples(st.text(max_size=8), tokens), max_size=3),
    st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=3),
)


@fuzz_settings(210)
@given(value=bounded_integers(-(2**63), 2**63 - 1))
def test_vlongs_round_trip(value: int) -> None:
    """write_vlong then read_vlong gives the value back, consuming exactly what was written."""
    data = write_vlong(value) + b"\x00"
    assert read_vlong(data, 0) == (value, len(data) - 1)


@fuzz_settings(210)
@given(data=st.binary(max_size=12), pos=st.integers(0, 12))
def test_vlongs_read_or_are_index_errors(data: bytes, pos: int) -> None:
    """Any bytes and position: (value, next position) within the data, or IndexError."""
    try:
        value, after = read_vlong(data, pos)
    except IndexError:
        return
    assert pos < after <= len(data)
    assert -(2**63) <= value < 2**64


@fuzz_settings(180)
@given(
    data=st.one_of(
        st.binary(max_size=60),
        st.binary(max_size=40).map(lambda b: b"HDTS\x00" + b),
        mutated(storages),
        mutated(storages_v1),
    )
)
@example(data=b"HDTS\x00\x8f" + b"\x7f" + b"\xff" * 7).via("a token count of 2**63 - 1")
@example(data=b"HDTS\x00\x01\x81").via("a negative alias length")
@example(data=b"HDTS\x01\x05\x12\x03\n\x01\x80").via("version 1, a secret's alias not UTF-8 (protobuf gives bytes)")
def test_token_storages_read_or_are_malformed(data: bytes) -> None:
    """Any bytes: MalformedCredentials, or text aliases mapped to token Writables and secrets."""
    try:
        tokens_by_alias, secrets = read_token_storage(data)
    except MalformedCredentials:
        return
    for alias, token in tokens_by_alias.items():
        assert isinstance(alias, str) and isinstance(token, bytes)
        pos = 0
        for _ in range(4):  # identifier, password, kind, service: each length-prefixed, inside the token
            length, pos = read_vlong(token, pos)
            pos += length
        assert pos == len(token)
    assert all(isinstance(a, str) and isinstance(s, bytes) for a, s in secrets.items())


@fuzz_settings(70)
@given(data=storages)
def test_written_storages_read_back(data: bytes) -> None:
    """What token_storage writes, read_token_storage reads back to the same tokens and secrets."""
    assert token_storage(*read_token_storage(data)) == data
