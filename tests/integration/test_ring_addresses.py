"""Members that name a ring address not their own, against real ring daemons: nobody believes them.

Three daemons (``cortex-rm node`` with only its ring member, at 127.0.0.1-3) and three
in-process ``RingService``s -- the class the daemons run -- on the test's reactor:

* ``observer`` (127.0.0.4), honest: the node whose view the test reads, as the
  NodeManager's containers' firewall does (``RingService.view`` into
  ``container_members.members_of``);
* ``squatter``: listens on 127.0.0.5 at daemon 1's port and advertises daemon 1's
  address (127.0.0.1:that port): a dial there meets daemon 1's key;
* ``phantom``: listens on 127.0.0.1 and advertises 127.0.0.9, where nothing listens.

Both liars have real keys and work and join through the observer, so it hears from
them and holds them live.  Each liar has (in the test) a capacity report naming ports
on the host it claims (the squatter: 127.0.0.1's database and SSH ports): believed,
it would open them, and the phantom's host, to containers.  The test reads the
observer every 0.1 s on the reactor: whenever a liar is live in its view, the liar is
not verified, its report is not vouched for and its claimed host is no member, while
the daemons are verified and their reports believed; each liar's check fails, the
observer logs it, and a daemon that heard of a liar by gossip logs the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from cortex_rm.config import RingSection
from cortex_rm.dht.address_proofs import DISPROVEN
from cortex_rm.dht.peer import Peer, split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.container_members import OwnEndpoints, members_of, vouched_reports
from cortex_rm.roles.ring_records import CapacityReport
from cortex_rm.roles.ring_service import RingService
from cortex_rm.yarn.addresses import HostPort
from tests.support.reactor import reactor
from tests.support.ring_daemons import TEST_KEY_BITS, TEST_WORK_BITS, RingDaemon, made_daemons, start_ring

pytestmark = pytest.mark.integration

NODES = 3
PROBE_INTERVAL_MS = 500
WAIT_S = 90.0
LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)


def service(state_dir: Path, listen_host: str, advertise_host: str, port: int, introducer: str) -> RingService:
    """An in-process member with a fresh key, at the daemons' settings."""
    state_dir.mkdir(parents=True)
    config = RingSection(probe_interval_ms=PROBE_INTERVAL_MS, work_bits=TEST_WORK_BITS, key_bits=TEST_KEY_BITS).ring_config()
    return RingService(
        NodeIdentity.generate(key_bits=TEST_KEY_BITS), config, reactor(), state_dir, listen_host=listen_host, advertise_host=advertise_host,
        port=port, introducers=[introducer], leave_flush=0.2, connect_timeout=2.0,
    )  # fmt: skip


def report_on(peer: Peer, host: str, ports: tuple[int, int] = (45454, 8042)) -> CapacityReport:
    """A capacity report of ``peer`` naming ``ports`` on ``host`` (as its NodeManager and web address)."""
    return CapacityReport(format_id(peer.node_id), HostPort(host, ports[0]), HostPort(host, ports[1]), "/r", 1, 1)


def live_peers(view: RingView) -> dict[int, Peer]:
    return {peer.node_id: peer for peer, status, _ in view.members if status in LIVE}


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[RingDaemon]]:
    with made_daemons(tmp_path, NODES, PROBE_INTERVAL_MS) as daemons:
        yield daemons


@pytest_twisted.inlineCallbacks
def test_members_claiming_another_members_address_or_an_empty_one_are_not_believed(  # type: ignore[no-untyped-def]
    daemons: list[RingDaemon], tmp_path: Path, logged: list[dict[str, Any]]
):
    """A squatter on daemon 1's address and a phantom at an unused loopback address are live in the
    observer's view but never verified: their reports and claimed hosts count for nothing, while the
    three daemons are verified and their reports believed; both failed checks are logged, by the
    observer and by a daemon."""
    start_ring(daemons)
    observer = service(tmp_path / "observer", "127.0.0.4", "127.0.0.4", 0, daemons[0].ring_address)
    started = [observer]
    try:
        yield observer.start()
        yield observer.joined()
        victim_port = split_address(daemons[0].ring_address)[1]
        squatter = service(tmp_path / "squatter", "127.0.0.5", "127.0.0.1", victim_port, observer.me.address)
        phantom = service(tmp_path / "phantom", "127.0.0.1", "127.0.0.9", 0, observer.me.address)
        liars = [squatter, phantom]
        for liar in liars:
            started.append(liar)
            yield liar.start()
        assert squatter.me.address == daemons[0].ring_address and phantom.me.address.startswith("127.0.0.9:")
        liar_ids = {liar.me.node_id for liar in liars}
        daemon_addresses = {d.ring_address for d in daemons}
        claimed = [report_on(squatter.me, "127.0.0.1", (5432, 22)), report_on(phantom.me, "127.0.0.9")]  # a database, SSH
        seen_disproven: set[int] = set()
        deadline = reactor().seconds() + WAIT_S
        while True:
            view = observer.view()
            live = live_peers(view)
            honest = [p for i, p in live.items() if p.address in daemon_addresses and i not in liar_ids]
            reports = claimed + [report_on(p, split_address(p.address)[0]) for p in honest]
            members = members_of(OwnEndpoints((), ()), view, reports, ())
            vouched = vouched_reports(view, reports)
            judged = {r.ring_id for r in vouched.accepted} | {r.ring_id for r, _ in vouched.refused}
            for liar in liars:
                if liar.me.node_id not in live:
                    continue
                assert live[liar.me.node_id] == liar.me  # held live at the address it claims
                assert liar.me not in view.verified and format_id(liar.me.node_id) not in judged
                if observer.addresses.proofs.state_of(liar.me) == DISPROVEN:
                    seen_disproven.add(liar.me.node_id)
            assert "127.0.0.9" not in members.addresses
            assert not {("127.0.0.1", 5432), ("127.0.0.1", 22)} & members.services
            verified_honest = [p for p in honest if p in view.verified]
            if seen_disproven == liar_ids and len(verified_honest) == NODES:
                break
            if reactor().seconds() > deadline:
                raise AssertionError(
                    f"after {WAIT_S:g} s: liars seen live and disproven: {len(seen_disproven)} of 2; daemons "
                    f"verified: {len(verified_honest)} of {NODES}"
                )
            yield task.deferLater(reactor(), 0.1, lambda: None)
        assert {r.ring_id for r in vouched.accepted} == {format_id(p.node_id) for p in honest}
        assert {"127.0.0.1", "127.0.0.2", "127.0.0.3"} <= members.addresses
        assert {("127.0.0.2", 45454), ("127.0.0.3", 8042)} <= members.services
        shorts = {liar.me.short() for liar in liars}
        assert not [e for e in logged if "is proven" in str(e.get("log_format", "")) and e["member"] in shorts]
        refused = {e["member"]: e["error"] for e in logged if "not believing member" in str(e.get("log_format", ""))}
        [victim] = [p for p in honest if p.address == daemons[0].ring_address]
        assert format_id(victim.node_id)[:10] in refused[squatter.me.short()]
        assert "connection refused" in refused[phantom.me.short()]
        while not any(f"{short}'s ring address" in d.log() for d in daemons for short in shorts):
            if reactor().seconds() > deadline:
                raise AssertionError("no daemon logged a liar's ring address as not believed")
            yield task.deferLater(reactor(), 0.2, lambda: None)
    finally:
        yield defer.gatherResults([s.stop(graceful=False) for s in started], consumeErrors=True)
