"""YARN's tokens: identifiers, passwords, and the credentials file a container reads.

A Hadoop token is ``(identifier bytes, password bytes, kind, service)``.  The RM
makes the identifier (a serialized ``*TokenIdentifierProto``) and derives the
password as HMAC-SHA1 of the identifier under a master key that only the RM — and,
for container tokens, the NodeManagers it hands the key to — know, as Hadoop's
``SecretManager.createPassword`` does.  Whoever holds the key can check a token
without asking the RM:

* ``YARN_AM_RM_TOKEN`` (AMRMTokenIdentifierProto): the AM's identity on the
  scheduler port (DIGEST-MD5 with this password);
* ``ContainerToken`` (ContainerTokenIdentifierProto): proves to a NodeManager that
  the RM allocated this container, with this resource, to this node;
* ``NMToken`` (NMTokenIdentifierProto): lets an attempt talk to a node.

``credentials_file_bytes`` writes Hadoop's token storage for
``HADOOP_TOKEN_FILE_LOCATION`` (see ``writable.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.writable import token_storage, token_writable

AMRM_TOKEN_KIND = "YARN_AM_RM_TOKEN"
CONTAINER_TOKEN_KIND = "ContainerToken"
NM_TOKEN_KIND = "NMToken"


@dataclass(frozen=True)
class MasterKey:
    """A secret that signs tokens; ``key_id`` travels in every identifier it signed."""

    key_id: int
    secret: bytes

    @classmethod
    def generate(cls, key_id: int, random_bytes: Callable[[int], bytes] = os.urandom) -> MasterKey:
        return cls(key_id, random_bytes(20))

    def password(self, identifier: bytes) -> bytes:
        """HMAC-SHA1 of the identifier, Hadoop's token password."""
        return hmac.new(self.secret, identifier, hashlib.sha1).digest()

    def verify(self, identifier: bytes, password: bytes) -> bool:
        return hmac.compare_digest(self.password(identifier), password)


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


def credentials_file_bytes(tokens: Iterable[tuple[str, TokenProto]], secrets: Iterable[tuple[str, bytes]] = ()) -> bytes:
    """The token storage file for ``HADOOP_TOKEN_FILE_LOCATION`` holding ``tokens`` by alias."""
    return token_storage({alias: token_writable(t) for alias, t in tokens}, dict(secrets))


@dataclass(frozen=True)
class RMKeys:
    """The RM's token master keys: AMRMTokens and ContainerTokens (NMTokens share the latter).

    Created at the RM's first start and kept in its state store, so an AM's token and a
    node's key stay valid across an RM restart (a later issue rolls them).
    """

    amrm: MasterKey
    container: MasterKey

    @classmethod
    def recover(cls, store: Any, random_bytes: Callable[[int], bytes] = os.urandom) -> defer.Deferred:
        """Fires with the stored keys, creating and storing any that are missing."""

        @defer.inlineCallbacks
        def run():  # type: ignore[no-untyped-def]
            stored = yield store.load()
            keys = {}
            for number, name in enumerate(("amrm", "container"), start=1):
                if name in stored.master_keys:
                    key_id, secret = stored.master_keys[name]
                    keys[name] = MasterKey(key_id, secret)
                else:
                    key_id = int.from_bytes(random_bytes(3), "big") * 4 + number  # distinct per name
                    keys[name] = MasterKey(key_id, random_bytes(20))
                    yield store.save_master_key(name, key_id, keys[name].secret)
            return cls(keys["amrm"], keys["container"])

        return run()
