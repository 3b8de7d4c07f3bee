"""Whole ring members witness each other's uptime on the simulated network, and the payout rules pay it.

Each test runs signed ``RingMember``s (real keys: ring ids are their hashes) on
``tests/support/ring_sim.py`` (fake clock, in-memory network, faults), takes
what every live member's witness flushes, signs it per witness with the real
``sign_attestations``, and tallies the encoded batches with ``UptimeTally`` over
``ring_neighbour_table`` built from the *true* memberships (when each process
was up).  So the ring's witnessing is checked against the payout rules' own
neighbour rule: a member witnesses its ``successor_list_length`` successors and
its predecessor, never itself or a finger.

Members probe once a second (``SwimConfig.lan``); in a ring of six a member has
at most five neighbours, so it probes each at least once every 5 s (a *pass*).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import pytest

from cortex_rm.accounting.attestations import Attestation, sign_attestations
from cortex_rm.accounting.intervals import Interval, clipped, intersection, merged, total
from cortex_rm.accounting.neighbour_history import ring_neighbour_table
from cortex_rm.accounting.payouts import UptimeTally, Verdict
from cortex_rm.accounting.periods import Period
from cortex_rm.accounting.uptime_witness import batches
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.ring_member import RingMember, Transmit
from cortex_rm.dht.swim_messages import Ack, MemberStatus, Probe
from cortex_rm.dht.uptime_watch import watches
from tests.support.ring_sim import RingNetwork

PASS_S = 5.0  # a member's probes of one neighbour are at most this far apart (five neighbours, 1 s each)
SLACK_MS = int((3 * PASS_S + 2) * 1000)
"""What witnessing may miss of a session: the join, the pass before a second witness's first ack, the pass
after the last, and a pass of slack (at worst 11 s a session over seeds 31-1131 of these tests)."""


def ring(seed: int, r: int, n: int = 6) -> RingNetwork:
    """``n`` signed members (cheap key puzzle and work) started at time 0, joined, the ring correct."""
    config = RingConfig(successor_list_length=r, replicas=min(3, r), work_bits=16, key_bits=8)
    net = RingNetwork(seed, config, signed=True)
    first = net.add_member()
    for _ in range(n - 1):
        net.join(net.add_member(), [first])
    net.run_until(net.ring_is_correct, timeout=60)
    return net


def probers(ids: Sequence[int], subject: int, r: int) -> set[int]:
    """Who witnesses ``subject`` on the ring of ``ids`` (the neighbour rule: its r predecessors and its successor)."""
    ring_ = sorted(ids)
    i, n = ring_.index(subject), len(ring_)
    return {ring_[(i - k) % n] for k in range(1, min(r, n - 1) + 1)} | {ring_[(i + 1) % n]}


def flushed(members: Iterable[RingMember], now: float) -> list[Attestation]:
    """Everything these members' witnesses hold at ``now`` (a crashed process's unflushed pieces are lost)."""
    return [a for m in members for a in m.flush_attestations(now)]


def spans_of(attestations: Iterable[Attestation], witness: int, subject: int) -> list[Interval]:
    return merged((a.start_ms, a.end_ms) for a in attestations if (a.witness, a.subject) == (witness, subject))


def paid(
    net: RingNetwork, attestations: list[Attestation], truth: Mapping[int, list[Interval]], end_ms: int
) -> UptimeTally:
    """The payout rules over ``attestations``, each witness's signed in batches, as ledger entries in order."""
    by_witness: dict[int, list[Attestation]] = defaultdict(list)
    for a in attestations:
        by_witness[a.witness].append(a)
    tally = UptimeTally(Period(0, end_ms), ring_neighbour_table(truth, net.config.successor_list_length))
    for witness, mine in sorted(by_witness.items()):
        for batch in batches(mine):
            tally.add_entry(sign_attestations(net.keys[witness], batch).encode())
    assert tally.verdicts[Verdict.BAD_SIGNATURE] == tally.verdicts[Verdict.SELF_ATTESTATION] == 0
    return tally


def assert_paid_within_slack(tally: UptimeTally, truth: Mapping[int, list[Interval]]) -> None:
    """Every member is paid at most its true uptime, and at most SLACK_MS a session less."""
    uptimes = tally.uptimes()
    for node, sessions in truth.items():
        short = total(sessions) - uptimes.get(node, 0)
        assert 0 <= short <= SLACK_MS * len(sessions), (hex(node), short)


@pytest.mark.parametrize("r", [8, 2], ids=["successors-cover-the-ring", "two-successors"])
def test_every_member_attests_exactly_its_successors_and_predecessor_and_is_paid_its_uptime(r: int) -> None:
    """Six members for 10 minutes: each witness attests exactly the subjects the neighbour rule gives it (not
    itself, not a finger it probes), each covered from the join to the end within three passes; the payout rules
    pay every member its uptime within SLACK_MS."""
    net = ring(seed=31, r=r)
    converged = net.now
    joining = flushed(net.live(), converged)
    net.run_for(600)
    end = net.now
    steady = flushed(net.live(), end)
    ids = [m.me.node_id for m in net.live()]
    for m in net.live():
        me = m.me.node_id
        expected = {s for s in ids if me in probers(ids, s, r)}
        assert {a.subject for a in steady if a.witness == me} == expected
        for subject in expected:
            seen = clipped(spans_of(joining + steady, me, subject), int(converged * 1000), int(end * 1000))
            assert total(seen) >= (end - converged - 3 * PASS_S) * 1000  # a new neighbour: probed within 2 passes
    if r == 2:  # some members have fingers outside their successors and predecessor: probed, passed over
        finger_only = [m for m in net.live() if any(f is not None and not watches(m.chord, f) for f in m.chord.fingers)]
        assert finger_only and all(m.uptime.passed_over > 0 for m in finger_only)
    truth = {node: [(0, int(end * 1000))] for node in ids}
    assert_paid_within_slack(paid(net, joining + steady, truth, int(end * 1000)), truth)


@pytest.mark.parametrize("down", [60.0, 1.0], ids=["declared-dead", "back-before-suspicion"])
def test_a_crashed_and_restarted_member_is_paid_without_its_downtime(down: float) -> None:
    """A member crashes (SIGKILL) for ``down`` seconds and restarts at a higher incarnation: each of its witnesses
    shows a hole over that time, widened by at most three passes (the one before the crash, the one after the
    restart, the rejoin) -- a restart is never bridged, even one faster than the failure detector: its first
    answer to each witness carries its new incarnation -- and the payout rules pay it its two sessions within
    SLACK_MS each."""
    net = ring(seed=32, r=3)
    net.run_for(60)
    victim = net.live()[2]
    crashed = net.now
    net.crash([victim])
    net.run_for(down)
    back = net.restart(victim, introducers=net.live()[:1])
    restarted = net.now
    net.run_for(240)
    end = net.now
    attestations = flushed(net.live(), end)
    me = back.me.node_id
    ids = [m.me.node_id for m in net.live()]
    for witness in probers(ids, me, 3):
        spans = spans_of(attestations, witness, me)
        assert not intersection(spans, [(int(crashed * 1000), int(restarted * 1000))])
        hole = min(s for s, _ in spans if s >= restarted * 1000) - max(e for _, e in spans if e <= crashed * 1000)
        assert down * 1000 <= hole <= (down + 3 * PASS_S) * 1000
    end_ms = int(end * 1000)
    truth = {node: [(0, end_ms)] for node in ids if node != me}
    truth[me] = [(0, int(crashed * 1000)), (int(restarted * 1000), end_ms)]
    assert_paid_within_slack(paid(net, attestations, truth, end_ms), truth)


def test_unsolicited_acks_from_a_member_no_probe_reaches_earn_nothing() -> None:
    """For a minute no probe reaches S (every Probe to it is lost) while S floods every member with 20 acks a
    second of seqs nobody probed, and sends each of its own messages ten times: no witness attests any instant
    of that minute, and S is paid at least that minute less than its uptime."""
    net = ring(seed=33, r=2)
    net.run_for(30)
    s = net.live()[0]
    deaf_from = net.now

    def fault(sender: RingMember, transmit: Transmit) -> int:
        if transmit.to == s.me and isinstance(transmit.envelope.body, Probe):
            return 0
        return 10 if sender is s else 1

    net.fault = fault
    stray = 10**9
    while net.now < deaf_from + 60:
        for member in net.live():
            if member is not s:
                for _ in range(20):
                    stray += 1
                    net.inject(s, member, Ack(stray))
        net.run_for(1.0)
    deaf_until = net.now
    net.fault = None
    net.run_for(120)
    end_ms = int(net.now * 1000)
    attestations = flushed(net.live(), net.now)
    deaf = [(int(deaf_from * 1000), int(deaf_until * 1000))]
    assert not [a for a in attestations if a.subject == s.me.node_id and intersection([(a.start_ms, a.end_ms)], deaf)]
    truth = {m.me.node_id: [(0, end_ms)] for m in net.live()}
    tally = paid(net, attestations, truth, end_ms)
    assert tally.uptimes().get(s.me.node_id, 0) <= end_ms - 60_000


def test_acks_relayed_by_helpers_do_not_count_for_the_prober() -> None:
    """For six minutes W's own probes of its successor S are lost: helpers probe S for W and relay its acks, so W
    keeps S alive, but W attests none of those minutes (longer than the witness's 5-minute gap, so its run must
    end: counted, the relayed acks would have kept it open); S's other witnesses do, and S is paid in full."""
    net = ring(seed=34, r=2)
    net.run_for(30)
    w = net.live()[1]
    s = next(m for m in net.live() if m.me == w.chord.successor)
    cut_from = net.now

    def fault(sender: RingMember, transmit: Transmit) -> int:
        return 0 if sender is w and transmit.to == s.me and isinstance(transmit.envelope.body, Probe) else 1

    net.fault = fault
    net.run_for(360)
    cut_until = net.now
    assert w.membership.status_of(s.me) is MemberStatus.ALIVE and watches(w.chord, s.me)
    net.fault = None
    net.run_for(60)
    end_ms = int(net.now * 1000)
    attestations = flushed(net.live(), net.now)
    cut = [(int(cut_from * 1000), int(cut_until * 1000))]
    assert not intersection(spans_of(attestations, w.me.node_id, s.me.node_id), cut)
    ids = [m.me.node_id for m in net.live()]
    for other in probers(ids, s.me.node_id, 2) - {w.me.node_id}:
        assert total(intersection(spans_of(attestations, other, s.me.node_id), cut)) >= 360_000 - 2 * PASS_S * 1000
    truth = {node: [(0, end_ms)] for node in ids}
    assert_paid_within_slack(paid(net, attestations, truth, end_ms), truth)
