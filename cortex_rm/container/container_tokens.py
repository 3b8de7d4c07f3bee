"""The NodeManager's check of ContainerTokens: YARN's NMContainerTokenSecretManager.

The RM signs every container it allocates with a ContainerToken: the identifier is a
serialized ``ContainerTokenIdentifierProto`` (container id, the node it is for, the
submitting user, the resource, an expiry time, the id of the master key) and the
password is HMAC-SHA1 of the identifier under the RM's container-token master key.
The node receives that key when it registers with the RM (over mutual TLS, see
``allocator/node_tracker.py``) and keeps the current and the previous one, so tokens
signed just before a key change still verify.

An NMToken (identifier: the application attempt, this node, the key id; password: the
HMAC under the same key) is what every caller proves on the NodeManager's port with
SASL's DIGEST-MD5 (``nm_token_password``); stop and status then act only on containers of
the token's application (``yarn_api/nm_service.py``).

A ContainerToken lets ``startContainers`` start its container when

1. it is a ContainerToken whose identifier parses;
2. its master key id is the current or the previous key's, and the password is the
   HMAC of the identifier under that key;
3. ``nmHostAddr`` is this node's NodeId (``host:port``);
3a. ``rmIdentifier`` is the RM's this node is registered with (fencing: an RM that lost the lead, or
   an earlier start of it, is refused; YARN's "allocated by a previous RM");
4. ``expiryTimeStamp`` has not passed;
5. the container was not started on this node before: a started container's id is
   remembered until its token expires (after that the token is refused anyway).

Any failure is ``InvalidContainerToken``, answered to the AM as Hadoop's
``SecretManager$InvalidToken`` with YARN's messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from cortex_rm.yarn.ids import ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import CONTAINER_TOKEN_KIND, ContainerTokenIdentifier, MasterKey, NMTokenIdentifier, Token

#: Reads a ContainerToken's identifier bytes (the wire's job: ``yarn_api.tokens.read_container_identifier``);
#: raises ``ValueError`` (``MalformedId`` included) for bytes that say nothing usable.
IdentifierReader = Callable[[bytes], ContainerTokenIdentifier]
#: Reads an NMToken's identifier bytes (``yarn_api.tokens.read_nm_token_identifier``), likewise.
NMIdentifierReader = Callable[[bytes], NMTokenIdentifier]


class InvalidContainerToken(Exception):
    """The token does not allow starting the container; the message is YARN's.

    ``container_id`` is the container the token names, when its identifier could be
    read (even if the signature is wrong), so the refusal can be filed under it.
    """

    def __init__(self, message: str, container_id: ContainerId | None = None) -> None:
        super().__init__(message)
        self.container_id = container_id


@dataclass(frozen=True)
class ContainerGrant:
    """What a verified ContainerToken says: this container, of this user, with this resource."""

    container_id: ContainerId
    user: str
    resource: Resource
    expiry_ms: int
    is_am: bool
    priority: int = 0
    creation_time_ms: int = 0


class ContainerTokenVerifier:
    """Checks ContainerTokens for the node ``node_id`` (see the module docstring)."""

    def __init__(
        self,
        node_id: NodeId,
        clock: IReactorTime,
        read_identifier: IdentifierReader,
        read_nm_identifier: NMIdentifierReader,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.read_identifier = read_identifier
        self.read_nm_identifier = read_nm_identifier
        self.current_key: MasterKey | None = None
        self.previous_key: MasterKey | None = None
        self._started: dict[ContainerId, int] = {}  # container -> its token's expiry (ms)
        self.rm_identifier: int | None = None  # the RM this node is registered with (None: not yet)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def set_master_key(self, key: MasterKey) -> None:
        """The RM's current container-token key (from a registration); the old one stays as previous."""
        if self.current_key is not None and self.current_key.key_id == key.key_id:
            self.current_key = key
            return
        self.previous_key, self.current_key = self.current_key, key

    def _key(self, key_id: int) -> MasterKey | None:
        for key in (self.current_key, self.previous_key):
            if key is not None and key.key_id == key_id:
                return key
        return None

    def verify(self, token: Token) -> ContainerGrant:
        """The grant in ``token`` (rules 1-4), or InvalidContainerToken saying why not."""
        if token.kind and token.kind != CONTAINER_TOKEN_KIND:
            raise InvalidContainerToken(f"Invalid container token: kind {token.kind!r} is not {CONTAINER_TOKEN_KIND}")
        try:
            ident = self.read_identifier(token.identifier)
        except ValueError as e:  # MalformedId is a ValueError too
            raise InvalidContainerToken(f"Invalid container token: {e}") from None
        container_id = ident.container_id
        key = self._key(ident.master_key_id)
        if key is None or not key.verify(token.identifier, token.password):
            raise InvalidContainerToken(
                f"Given Container {container_id} seems to have an illegally generated token.", container_id
            )
        if ident.node_address != str(self.node_id):
            raise InvalidContainerToken(
                f"Given Container {container_id} identifier is not valid for current Node manager. "
                f"Expected : {self.node_id} Found : {ident.node_address}",
                container_id,
            )
        if self.rm_identifier is not None and ident.rm_identifier != self.rm_identifier:
            # fencing: an RM that lost the lead (or an earlier start of it) may still hand out tokens
            raise InvalidContainerToken(
                f"Container {container_id} rejected as it is allocated by a previous RM", container_id
            )
        now = self.now_ms()
        if ident.expiry_ms < now:
            raise InvalidContainerToken(
                f"This token is expired. current time is {now} found {ident.expiry_ms}\n"
                "Note: System times on machines may be out of sync. Check system time and time zones.",
                container_id,
            )
        return ContainerGrant(
            container_id=container_id,
            user=ident.app_submitter,
            resource=ident.resource,
            expiry_ms=ident.expiry_ms,
            is_am=ident.is_am,
            priority=ident.priority,
            creation_time_ms=ident.creation_time_ms,
        )

    def nm_token_password(self, identifier: bytes) -> bytes | None:
        """The password of an NMToken for this node signed with the current or the previous key,
        which SASL's DIGEST-MD5 checks the caller's proof against; None for anything else (the
        caller is then refused as holding an invalid token).  NMTokens do not expire by time:
        they die with their key, as YARN's ``NMTokenSecretManagerInNM`` has it."""
        try:
            ident = self.read_nm_identifier(identifier)
        except ValueError:  # MalformedId is a ValueError too
            return None
        key = self._key(ident.master_key_id)
        if key is None or ident.node_address != str(self.node_id):
            return None
        return key.password(identifier)

    def check_not_started(self, grant: ContainerGrant) -> None:
        """InvalidContainerToken if the grant's container was started here before (rule 5)."""
        self._forget_expired(self.now_ms())
        if grant.container_id in self._started:
            raise InvalidContainerToken(
                f"Container {grant.container_id} was started on this node before", grant.container_id
            )

    def mark_started(self, grant: ContainerGrant) -> None:
        """Remember that the grant's container was started: its token cannot start it again."""
        self._started[grant.container_id] = grant.expiry_ms

    def _forget_expired(self, now_ms: int) -> None:
        for cid in [c for c, expiry in self._started.items() if expiry < now_ms]:
            del self._started[cid]
