"""The RM never lets a user's own delegation tokens into an AM's launch context: each is
replaced by the application's own (same kind and service), other tokens pass unchanged."""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND, Principal
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.app_credentials import substitute_application_tokens
from cortex_rm.yarn_api.delegation_tokens import read_fs_identifier, read_rm_identifier, read_token_writable
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.writable import MalformedCredentials, read_token_storage, token_storage, token_writable
from tests.support.rm_core import result_of

APP = ApplicationId(1_700_000_000_000, 7)


def _setup() -> tuple[UserCredentials, UserAuthenticator, yp.ApplicationSubmissionContextProto, TokenProto]:
    clock = Clock()
    credentials = UserCredentials(MasterKey(4, b"q" * 20), MemoryStateStore(), StoredState(), lambda: int(clock.seconds() * 1000))
    auth = UserAuthenticator(credentials)
    own = result_of(credentials.issue("alice"))
    [(_, rm), (_, fs)] = auth.tokens_for(own, "10.0.0.1:8032", "10.0.0.1:8088")
    other = TokenProto(identifier=b"hdfs-ident", password=b"pw", kind="HDFS_DELEGATION_TOKEN", service="nn:8020")
    context = yp.ApplicationSubmissionContextProto()
    context.am_container_spec.tokens = token_storage(
        {"rm": token_writable(rm), "fs": token_writable(fs), "other": token_writable(other)}, {"s": b"secret"}
    )
    return credentials, auth, context, other


def test_the_users_tokens_become_the_applications_and_the_rest_pass() -> None:
    credentials, auth, context, other = _setup()
    assert result_of(ensureDeferred(substitute_application_tokens(context, "alice", APP, credentials))) == 2
    tokens, secrets = read_token_storage(context.am_container_spec.tokens)
    assert secrets == {"s": b"secret"}
    decoded = {alias: read_token_writable(raw) for alias, raw in tokens.items()}
    assert decoded["other"] == other
    rm, fs = decoded["rm"], decoded["fs"]
    assert (rm.kind, rm.service, fs.kind, fs.service) == (RM_DELEGATION_KIND, "10.0.0.1:8032", WEBHDFS_DELEGATION_KIND, "10.0.0.1:8088")
    for ident in (read_rm_identifier(rm.identifier), read_fs_identifier(fs.identifier)):
        assert credentials.check(ident) == Principal("alice", str(APP))
    assert credentials.key.verify(rm.identifier, rm.password) and credentials.key.verify(fs.identifier, fs.password)


def test_a_launch_context_without_tokens_or_with_garbage() -> None:
    credentials, _, context, _ = _setup()
    empty = yp.ApplicationSubmissionContextProto()
    assert result_of(ensureDeferred(substitute_application_tokens(empty, "alice", APP, credentials))) == 0
    context.am_container_spec.tokens = b"HDTS\x00\x01\x02rm\x05abc"
    with pytest.raises(MalformedCredentials):
        result_of(ensureDeferred(substitute_application_tokens(context, "alice", APP, credentials)))
