"""YARN's tokens as values: the master keys that sign them, and what a token and its identifier say.

A Hadoop token is ``(identifier bytes, password bytes, kind, service)``.  The RM
makes the identifier (a serialized ``*TokenIdentifierProto``, see
``yarn_api/tokens.py``) and derives the password as HMAC-SHA1 of the identifier
under a master key that only the RM — and, for container tokens, the NodeManagers
it hands the key to — know, as Hadoop's ``SecretManager.createPassword`` does.
Whoever holds the key can check a token without asking the RM:

* ``YARN_AM_RM_TOKEN``: the AM's identity on the scheduler port;
* ``ContainerToken``: proves to a NodeManager that the RM allocated this
  container, with this resource, to this node (``ContainerTokenIdentifier``);
* ``NMToken``: lets an attempt talk to a node.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId
from cortex_rm.yarn.resources import Resource

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


@dataclass(frozen=True)
class Token:
    """A Hadoop token as it arrives: the identifier's bytes (what the password signs), the password, kind, service."""

    identifier: bytes
    password: bytes = field(repr=False)
    kind: str
    service: str


@dataclass(frozen=True)
class ContainerTokenIdentifier:
    """What a ContainerToken's identifier says (Hadoop's ``ContainerTokenIdentifier``)."""

    container_id: ContainerId
    node_address: str  # the NodeId (host:port) the container was allocated on
    app_submitter: str
    resource: Resource
    expiry_ms: int
    master_key_id: int
    is_am: bool  # containerType APPLICATION_MASTER
    priority: int = 0  # the priority of the ask the container satisfies
    creation_time_ms: int = 0  # when the RM allocated it
    rm_identifier: int = 0  # the RM that allocated it (its start time: a new one after a restart or failover)


@dataclass(frozen=True)
class NMTokenIdentifier:
    """What an NMToken's identifier says (Hadoop's ``NMTokenIdentifier``): this application
    attempt, of this user, may talk to the NodeManager at this address."""

    attempt_id: ApplicationAttemptId
    node_address: str  # the NodeId (host:port)
    app_submitter: str
    master_key_id: int
