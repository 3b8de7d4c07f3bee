"""Users' delegation tokens on the wire: Cortex's encodings read back by Hadoop's own classes.

``TokenFileProbe.java`` reads a token file with ``Credentials.readTokenStorageFile`` and
decodes each identifier with the class Hadoop registers for its kind
(``RMDelegationTokenIdentifier`` for RM_DELEGATION_TOKEN, the WebHDFS one for
``WEBHDFS delegation``), so the fields Cortex writes are the fields the stock client sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND, DelegationIdentifier, InvalidToken
from cortex_rm.yarn_api.delegation_tokens import (
    from_url_string,
    fs_identifier_bytes,
    read_fs_identifier,
    read_rm_identifier,
    rm_identifier_bytes,
    to_url_string,
)
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.tokens import credentials_file_bytes
from tests.support import java

IDENT = DelegationIdentifier("alice", "app:application_1_0001", "", 1_700_000_000_123, 1_702_592_000_123, 300, 77)

identifiers = st.builds(
    DelegationIdentifier,
    owner=st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s),
    renewer=st.text(max_size=40),
    real_user=st.text(max_size=10),
    issue_ms=st.integers(0, 2**62),
    max_ms=st.integers(0, 2**62),
    sequence=st.integers(0, 2**31 - 1),
    key_id=st.integers(0, 2**31 - 1),
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(identifiers)
def test_both_encodings_read_back_the_same_identifier(ident: DelegationIdentifier) -> None:
    assert read_rm_identifier(rm_identifier_bytes(ident)) == ident
    assert read_fs_identifier(fs_identifier_bytes(ident)) == ident


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_an_identifier_or_invalid_token(data: bytes) -> None:
    """Garbage never raises anything but InvalidToken (the ports answer that as a refusal)."""
    for reader in (read_fs_identifier, read_rm_identifier):
        try:
            reader(data)
        except InvalidToken:
            pass
    try:
        from_url_string(data.decode("latin-1"))
    except InvalidToken:
        pass


def test_a_url_string_round_trips_and_refuses_garbage() -> None:
    token = TokenProto(identifier=fs_identifier_bytes(IDENT), password=b"p" * 20, kind=WEBHDFS_DELEGATION_KIND, service="127.0.0.1:8088")
    assert from_url_string(to_url_string(token)) == token
    for bad in ("", "!!!", to_url_string(token)[:-3], "A" * 5000):
        with pytest.raises(InvalidToken):
            from_url_string(bad)


def test_hadoop_decodes_cortex_tokens_with_its_own_identifier_classes(tmp_path: Path) -> None:
    """The RM token decodes as RMDelegationTokenIdentifier and the file system's as a WebHDFS
    delegation identifier, with every field as written; Hadoop's URL string is ours."""
    rm = TokenProto(identifier=rm_identifier_bytes(IDENT), password=b"r" * 20, kind=RM_DELEGATION_KIND, service="127.0.0.1:8032")
    fs = TokenProto(identifier=fs_identifier_bytes(IDENT), password=b"f" * 20, kind=WEBHDFS_DELEGATION_KIND, service="127.0.0.1:8088")
    path = tmp_path / "user.token"
    path.write_bytes(credentials_file_bytes([(rm.service, rm), (fs.service, fs)]))
    result = java.run_driver(
        "TokenFileProbe", [str(path)], classes=java.compile_driver("TokenFileProbe"), jvm_options=java.quiet_jvm_options()
    )
    assert result.returncode == 0, result.stderr
    decoded = {d["kind"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert decoded[RM_DELEGATION_KIND]["class"].endswith("RMDelegationTokenIdentifier")
    assert decoded[WEBHDFS_DELEGATION_KIND]["class"].endswith("$WebHdfsDelegationTokenIdentifier")
    for kind, token in ((RM_DELEGATION_KIND, rm), (WEBHDFS_DELEGATION_KIND, fs)):
        d = decoded[kind]
        assert (d["owner"], d["renewer"], d["issueDate"], d["maxDate"], d["sequenceNumber"], d["masterKeyId"]) == (
            IDENT.owner, IDENT.renewer, IDENT.issue_ms, IDENT.max_ms, IDENT.sequence, IDENT.key_id,
        )
        assert d["user"] == "alice" and d["service"] == token.service
        assert d["urlString"] == to_url_string(token)
