"""The ledger mirror, run: a copy of the RM's ledger in the state directory, kept over the RM's REST API.

``LedgerMirrorRole`` runs the ``accounting/ledger_mirror.LedgerMirror`` core on a
node with ``[accounting] mirror`` (by default the RM-eligible nodes that do not run
the RM): its copy lives in ``<state_dir>/mirror-ledger.sqlite`` and every database
call runs on one dedicated thread.  Each round it finds the RM through the ring
(``ring_records.find_resource_manager``), reads ``/ws/v1/cortex/ledger...`` from
the RM's web address (``RmWebLedger``: every body bounded and parsed by
``yarn_api/ledger_documents.py``), and refuses a head whose key id is not the
fingerprint the RM's ring record names.

Every ring member keeps the heads mirrors gossip in the ``LEDGER_STH_SECTION``
section (``keep_ledger_heads``: the newest per publisher, so it passes them on
whether or not it mirrors; a mirroring node only those signed by the RM's key as
its mirror knows it); a mirror publishes the largest head its copy holds, under
its own ring id, and checks the others' heads each round.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_mirror import LedgerMirror, LogSource, MirrorRoundError
from cortex_rm.accounting.ledger_store import LedgerEntry, SqlLedgerStore
from cortex_rm.accounting.tree_heads import SignedTreeHead, decode_tree_head, encode_tree_head
from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.swim_messages import GossipItem
from cortex_rm.roles.ring_records import RingMembership, find_resource_manager
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.threads import thread_runner
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api import ledger_documents as documents
from cortex_rm.yarn_api.ledger_documents import MalformedLedgerDocument

log = Logger()
T = TypeVar("T")

LEDGER_STH_SECTION = "ledger-sth"
MIRROR_DATABASE = "mirror-ledger.sqlite"
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
MAX_PUBLISHERS = 1024  # gossiped heads kept, one per publisher (remote input: bounded)
REPUBLISH_ROUNDS = 10  # a mirror gossips its head again every this many rounds (members who joined since)


class _BoundedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes into ``done``."""

    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self.limit, self.done = limit, done
        self.parts: list[bytes] = []
        self.length = 0

    def dataReceived(self, data: bytes) -> None:
        self.length += len(data)
        if self.length > self.limit:
            if not self.done.called:
                self.done.errback(MalformedLedgerDocument(f"a response body over {self.limit} bytes"))
            producer = cast(IPushProducer, self.transport)  # a response body's transport produces it
            producer.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class RmWebLedger:
    """The RM's ledger over its REST API at ``web`` (a ``LogSource``); heads must carry ``key_id``."""

    def __init__(self, agent: Agent, reactor: IReactorTime, web: HostPort, key_id: bytes) -> None:
        self.agent, self.reactor, self.web, self.key_id = agent, reactor, web, key_id

    async def _get(self, path: str, limit: int) -> bytes:
        url = f"http://{self.web}/ws/v1/cortex/{path}"
        request = self.agent.request(b"GET", url.encode("ascii"))
        request.addTimeout(REQUEST_TIMEOUT_S, self.reactor)
        response: IResponse = await request
        done: defer.Deferred[bytes] = defer.Deferred()
        response.deliverBody(_BoundedBody(limit, done))
        done.addTimeout(REQUEST_TIMEOUT_S, self.reactor)
        body = await done
        if response.code != 200:
            raise MirrorRoundError(f"GET {url}: HTTP {response.code}: {body[:300].decode('utf-8', errors='replace')}")
        return body

    def tree_head(self) -> defer.Deferred[SignedTreeHead]:
        async def get() -> SignedTreeHead:
            sth = documents.parse_tree_head(await self._get("ledger", documents.MAX_HEAD_BODY))
            if sth.key_id != self.key_id:
                raise MirrorRoundError(
                    f"the RM at {self.web} serves {sth.describe()}, but its ring record names the key {self.key_id.hex()[:12]}"
                )
            return sth

        return defer.ensureDeferred(get())

    def entries(self, start: int, end: int) -> defer.Deferred[list[LedgerEntry]]:
        async def get() -> list[LedgerEntry]:
            body = await self._get(f"ledger/entries?start={start}&end={end}", documents.MAX_ENTRIES_BODY)
            return documents.parse_entries(body, start, end)

        return defer.ensureDeferred(get())

    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]:
        async def get() -> list[bytes]:
            body = await self._get(f"ledger/consistency?first={first}&second={second}", documents.MAX_PROOF_BODY)
            return documents.parse_consistency(body, first, second)

        return defer.ensureDeferred(get())


class LedgerHeads:
    """The heads mirrors gossip, newest per publisher (every ring member keeps them, so they travel);
    a mirror on this node gets each new one to check.

    With a mirror on this node, only a head signed by a key the mirror trusts is kept
    and passed on; any other leaves no state (it comes again when its mirror
    republishes, once this one trusts the key).  A node without a mirror cannot check
    signatures, so it keeps every well-formed head.  Either way a publisher's slot is
    freed when it dies or leaves the ring (``forget``), and with ``MAX_PUBLISHERS``
    kept the least recently updated one makes room, so identities made up to gossip
    heads cannot lock the real mirrors out: a mirror's head comes back every
    ``REPUBLISH_ROUNDS`` rounds.
    """

    def __init__(self) -> None:
        self.heads: dict[int, bytes] = {}  # publisher -> its encoded head, least recently updated first
        self.refused = 0
        self.mirror: LedgerMirror | None = None

    def receive(self, item: GossipItem) -> bool:
        """Keep the head if it is new from its publisher; whether it was (then it is gossiped on)."""
        try:
            sth = decode_tree_head(item.payload)
        except Exception:  # MalformedTreeHead; any decoding error of remote bytes is a refusal
            self.refused += 1
            return False
        if not item.publisher or item.key != format_id(item.publisher):
            self.refused += 1  # a mirror gossips only its own head, under its own ring id
            return False
        if self.heads.get(item.publisher) == item.payload:
            return False
        mirror = self.mirror
        if mirror is not None and mirror.head_error(sth) is not None:
            self.refused += 1
            return False
        self.heads.pop(item.publisher, None)
        while len(self.heads) >= MAX_PUBLISHERS:
            del self.heads[next(iter(self.heads))]
        self.heads[item.publisher] = item.payload
        if mirror is not None:
            mirror.offer_peer_head(item.publisher, sth)
        return True

    def attach(self, mirror: LedgerMirror) -> None:
        """Give ``mirror`` the heads kept so far, keeping only those signed by a key it trusts."""
        self.mirror = mirror
        for publisher, encoded in list(self.heads.items()):
            sth = decode_tree_head(encoded)
            if mirror.head_error(sth) is not None:
                del self.heads[publisher]
            else:
                mirror.offer_peer_head(publisher, sth)

    def forget(self, publisher: int) -> None:
        """Free the slot of a publisher that is no longer a ring member."""
        self.heads.pop(publisher, None)
        if self.mirror is not None:
            self.mirror.forget_peer(publisher)


def keep_ledger_heads(ring: RingMembership) -> LedgerHeads:
    """The ledger heads gossiped on ``ring`` (registered on every member), forgotten when their publisher is gone."""
    heads = LedgerHeads()
    ring.register_section(LEDGER_STH_SECTION, heads.receive)

    def forget(event: MembershipEvent) -> None:
        if isinstance(event, (MemberDied, MemberLeft)):
            heads.forget(event.peer.node_id)

    ring.add_membership_listener(forget)
    return heads


class LedgerMirrorRole:
    """This node's mirror of the RM's ledger (module doc)."""

    def __init__(
        self,
        state_dir: Path,
        reactor: INodeReactor,
        ring: RingService,
        heads: LedgerHeads,
        *,
        resource_managers: frozenset[int],
        interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.url = f"sqlite:///{(Path(state_dir) / MIRROR_DATABASE).resolve()}"
        self.reactor, self.ring, self.heads = reactor, ring, heads
        self.resource_managers, self.interval_s = resource_managers, interval_s
        self.rng = rng or random.SystemRandom()
        self.agent = Agent(reactor, connectTimeout=CONNECT_TIMEOUT_S)
        self.mirror: LedgerMirror | None = None
        self._pool: ThreadPool | None = None
        self._published: tuple[bytes, int] | None = None  # (encoded head, round) last gossiped

    async def start(self) -> None:
        """Open the copy (creating it), then run a round now and every ``interval_s``."""
        run, self._pool = thread_runner(self.reactor, "ledger-mirror")
        self._pool.start()
        copy = await run(lambda: MerkleLog(SqlLedgerStore(self.url)))
        mirror = LedgerMirror(copy, run, self.reactor, self.resource_managers, random.Random(self.rng.random()))
        await mirror.open()
        self.mirror = mirror
        self.heads.attach(mirror)
        log.info("ledger mirror open at {url}: {size} entries; a round every {interval} s",
                 url=self.url, size=mirror.size, interval=self.interval_s)  # fmt: skip
        mirror.start(self._source, self.interval_s)

    def stop(self) -> None:
        """Stop the rounds, let the thread finish what was issued, close the copy."""
        self.heads.mirror = None
        if self.mirror is not None:
            self.mirror.stop()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self.mirror is not None:
            self.mirror.log.store.close()
            self.mirror = None

    def status(self) -> dict[str, Any] | None:
        """The REST document (``yarn_api/mirror_rest.py``), None before the copy is open."""
        return None if self.mirror is None else self.mirror.status_json()

    def _source(self) -> defer.Deferred[LogSource]:
        """Each round: gossip the head the copy holds, then find the RM through the ring."""
        self._publish()

        def located(record: Any) -> LogSource:
            try:
                key_id = bytes.fromhex(record.tracker_fingerprint)
            except ValueError:
                raise MirrorRoundError("the RM's ring record has a malformed key fingerprint") from None
            return RmWebLedger(self.agent, self.reactor, record.webapp_address, key_id)

        return find_resource_manager(self.ring).addCallback(located)

    def _publish(self) -> None:
        mirror = self.mirror
        if mirror is None or mirror.head is None:
            return
        encoded = encode_tree_head(mirror.head)
        last = self._published
        if last is not None and last[0] == encoded and mirror.rounds - last[1] < REPUBLISH_ROUNDS:
            return
        try:
            self.ring.publish(LEDGER_STH_SECTION, format_id(self.ring.identity.ring_id), encoded)
        except Exception as e:  # RingError: not on the ring (yet); the next round publishes
            log.debug("ledger mirror: cannot gossip its head yet ({error})", error=str(e))
            return
        self._published = (encoded, mirror.rounds)
