"""The RM's function registry in-process on a fake clock, for unit tests of its role piece, its REST
resource and the tracker's event calls.

``RegistryRig`` holds a real NameNode (memory store) with alice's code files, the RM's real
users' credentials, a ``FakeRing`` whose puts sign records with a real ring key (as the RM's
ring service would) and can be made to fail, and the ``EventRegistry`` wired to them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_trust import KeyTrust
from cortex_rm.events.functions import MAX_CODE_BYTES
from cortex_rm.events.request_proofs import SignedRequest, parse, sign
from cortex_rm.events.registry_store import MemoryRegistryStore
from cortex_rm.fs.block_map import BlockMap
from cortex_rm.fs.model import BlockRef, User
from cortex_rm.fs.name_node import NameNode, fresh_or_recovered
from cortex_rm.fs.namespace_store import MemoryNamespaceStore
from cortex_rm.fs.paths import parse_path
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.event_registry import EventRegistry, RegistrationRecords
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from tests.support.rm_core import result_of

NOW_MS = 1_700_000_000_000
CODE = "/user/alice/hello.py"
CODE_MTIME = NOW_MS - 60_000
IDENTITY = NodeIdentity.generate()  # the RM's ring key (generated once: the tests only sign with it)


@dataclass
class FakeRing:
    """The ring's ``put`` as the RM's ring service does it (versions from the clock, records signed by
    ``identity``); ``failing`` makes every put fail with RingError."""

    clock: Clock
    identity: NodeIdentity = IDENTITY
    failing: bool = False
    records: dict[str, Record] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)

    def put(self, key: str, value: bytes) -> defer.Deferred[Record]:
        if self.failing:
            return defer.fail(RingError(f"put {key}: no owner answered"))
        held = self.records.get(key)
        version = max(int(self.clock.seconds() * 1000), -1 if held is None else held.version + 1)
        record = KeyTrust(self.identity.key, 0, 0, 0).sign_record(key, value, version)
        self.records[key] = record
        self.puts.append(key)
        return defer.succeed(record)


def alice() -> User:
    return User("alice", frozenset({"alice"}))


def name_node_with_code(clock: Clock) -> NameNode:
    """A NameNode whose /user/alice holds hello.py (644, 5 bytes), private.py (600), big.py (over
    MAX_CODE_BYTES) and a directory dir.py; /user/bob is bob's."""
    namespace, first = fresh_or_recovered([], "root", "supergroup", NOW_MS)
    store = MemoryNamespaceStore()
    store.apply(first)
    nn = NameNode(namespace, BlockMap(clock, random.Random(1)), store, MasterKey(1, b"f" * 32), clock)
    root = User("root", frozenset({"supergroup"}))
    for user in ("alice", "bob"):
        home = parse_path(f"/user/{user}")
        nn.persist(nn.namespace.mkdirs(home, root, 0o755, NOW_MS))
        nn.persist(nn.namespace.set_owner(home, root, user, user))
    files = (
        ("hello.py", 0o644, 5), ("private.py", 0o600, 5), ("big.py", 0o644, MAX_CODE_BYTES + 1), ("deps.zip", 0o644, 9)
    )
    for n, (name, mode, length) in enumerate(files):
        block = BlockRef(f"blk_{n + 1:032x}", length, "0" * 32)
        nn.persist(nn.namespace.create_file(
            parse_path(f"/user/alice/{name}"), alice(), permission=mode, replication=1, block_size=128 << 20,
            blocks=(block,), overwrite=False, now_ms=CODE_MTIME,
        ))  # fmt: skip
    nn.persist(nn.namespace.mkdirs(parse_path("/user/alice/dir.py"), alice(), 0o755, NOW_MS))
    return nn


class RegistryRig:
    """An RM's registry on a fake clock (module docstring)."""

    def __init__(self, *, resource_managers: frozenset[int] = frozenset(), **registry_args: Any) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_MS / 1000)
        self.name_node = name_node_with_code(self.clock)
        credentials = UserCredentials(
            MasterKey(3, b"d" * 20), MemoryStateStore(), StoredState(), lambda: int(self.clock.seconds() * 1000)
        )
        self.auth = UserAuthenticator(credentials)
        self.ring = FakeRing(self.clock)
        self.store = MemoryRegistryStore()
        self.events: EventRegistry = result_of(defer.ensureDeferred(EventRegistry.load(
            self.store, self.name_node, self.auth, self.clock, ring=self.ring,
            records=RegistrationRecords(IDENTITY, resource_managers), **registry_args,
        )))  # fmt: skip

    def token(self, user: str) -> str:
        """A new RM delegation token of ``user``, as the REST header carries it."""
        ident = result_of(self.auth.credentials.issue(user))
        [(_, rm_token), _] = self.auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
        return to_url_string(rm_token)

    def signed(
        self, token: TokenProto, node: int, host: str, method: str = "POST",
        target: str = "/ws/v1/cortex/events/functions/hello/trigger", body: bytes = b"{}",
    ) -> SignedRequest:  # fmt: skip
        """A request ``token``'s holder signed now for the node ``node`` at ``host``, as that node saw it."""
        now = int(self.clock.seconds() * 1000)
        header = sign(token.identifier, token.password, node, method, host, target, body, now)
        return SignedRequest.of(method, host, target, body, parse(header))

    def token_proto(self, user: str) -> TokenProto:
        """A new RM delegation token of ``user`` (identifier and password)."""
        ident = result_of(self.auth.credentials.issue(user))
        [(_, rm_token), _] = self.auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
        return rm_token
