"""YARN's tokens on the wire: identifiers as protobuf, ``TokenProto``, and the credentials file.

The values (master keys, kinds, what a ContainerToken's identifier says) are in
``cortex_rm/yarn/tokens.py``; this module writes and reads their wire forms:

* ``YARN_AM_RM_TOKEN`` (AMRMTokenIdentifierProto): the AM's identity on the
  scheduler port (DIGEST-MD5 with this password);
* ``ContainerToken`` (ContainerTokenIdentifierProto), read into a
  ``ContainerTokenIdentifier`` for the NodeManager's check;
* ``NMToken`` (NMTokenIdentifierProto).

``credentials_file_bytes`` writes Hadoop's token storage for
``HADOOP_TOKEN_FILE_LOCATION`` (see ``writable.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cortex_rm.yarn.ids import ApplicationAttemptId, NodeId
from cortex_rm.yarn.tokens import NM_TOKEN_KIND, ContainerTokenIdentifier, MasterKey, NMTokenIdentifier, Token
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.writable import token_storage, token_writable


def make_token(key: MasterKey, identifier: bytes, kind: str, service: str) -> TokenProto:
    return TokenProto(identifier=identifier, password=key.password(identifier), kind=kind, service=service)


def amrm_identifier(attempt: yst.AMRMTokenIdentifierProto) -> bytes:
    return attempt.SerializeToString()


def parse_amrm_identifier(identifier: bytes) -> yst.AMRMTokenIdentifierProto:
    """Decode an AMRMToken identifier; ``ValueError`` if it is not one."""
    parsed = yst.AMRMTokenIdentifierProto()
    try:
        parsed.ParseFromString(identifier)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"not an AMRMTokenIdentifier: {e}") from None
    if not parsed.HasField("appAttemptId"):
        raise ValueError("AMRMTokenIdentifier without an application attempt id")
    return parsed


def parse_container_identifier(identifier: bytes) -> yst.ContainerTokenIdentifierProto:
    """Decode a ContainerToken identifier; ``ValueError`` if it is not one."""
    parsed = yst.ContainerTokenIdentifierProto()
    try:
        parsed.ParseFromString(identifier)
    except Exception as e:
        raise ValueError(f"not a ContainerTokenIdentifier: {e}") from None
    if not parsed.HasField("containerId") or not parsed.HasField("nmHostAddr"):
        raise ValueError("ContainerTokenIdentifier without a container id or node address")
    return parsed


def read_container_identifier(identifier: bytes) -> ContainerTokenIdentifier:
    """What a ContainerToken's identifier says; ``ValueError`` (or ``MalformedId``) if it says nothing usable."""
    ident = parse_container_identifier(identifier)
    return ContainerTokenIdentifier(
        container_id=records.container_id_from_proto(ident.containerId),
        node_address=ident.nmHostAddr,
        app_submitter=ident.appSubmitter,
        resource=records.resource_from_proto(ident.resource),
        expiry_ms=ident.expiryTimeStamp,
        master_key_id=ident.masterKeyId,
        is_am=ident.containerType == yp.APPLICATION_MASTER,
        priority=max(0, ident.priority.priority),
        creation_time_ms=max(0, ident.creationTime),
        rm_identifier=ident.rmIdentifier,
    )


def nm_token(key: MasterKey, attempt_id: ApplicationAttemptId, node_id: NodeId, user: str) -> TokenProto:
    """The NMToken that lets ``attempt_id`` (of ``user``) talk to the NodeManager ``node_id``:
    what the RM gives an AM with its first container on a node, and what the RM's own AM
    launcher proves itself with."""
    ident = yst.NMTokenIdentifierProto(appSubmitter=user, keyId=key.key_id)
    records.attempt_id_to_proto(attempt_id, ident.appAttemptId)
    records.node_id_to_proto(node_id, ident.nodeId)
    return make_token(key, ident.SerializeToString(), NM_TOKEN_KIND, str(node_id))


def read_nm_token_identifier(identifier: bytes) -> NMTokenIdentifier:
    """What an NMToken's identifier says; ``ValueError`` (or ``MalformedId``) if it says nothing usable."""
    parsed = yst.NMTokenIdentifierProto()
    try:
        parsed.ParseFromString(identifier)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"not an NMTokenIdentifier: {e}") from None
    if not parsed.HasField("appAttemptId") or not parsed.HasField("nodeId"):
        raise ValueError("NMTokenIdentifier without an application attempt or a node")
    return NMTokenIdentifier(
        attempt_id=records.attempt_id_from_proto(parsed.appAttemptId),
        node_address=f"{parsed.nodeId.host}:{parsed.nodeId.port}",
        app_submitter=parsed.appSubmitter,
        master_key_id=parsed.keyId,
    )


def token_from_proto(proto: TokenProto) -> Token:
    """A ``TokenProto`` as the value the cores check."""
    return Token(identifier=proto.identifier, password=proto.password, kind=proto.kind, service=proto.service)


def credentials_file_bytes(tokens: Iterable[tuple[str, TokenProto]], secrets: Iterable[tuple[str, bytes]] = ()) -> bytes:
    """The token storage file for ``HADOOP_TOKEN_FILE_LOCATION`` holding ``tokens`` by alias."""
    return token_storage({alias: token_writable(t) for alias, t in tokens}, dict(secrets))


def write_token_file(path: Path, data: bytes) -> None:
    """Write a token file readable by its owner only (atomically: the old file or the whole new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)  # an old one would keep its looser mode
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    partial.replace(path)
