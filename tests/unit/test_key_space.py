"""The replicated key space: scenarios in an in-memory network over an oracle ring view, and core steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.key_space import KeySpace
from cortex_rm.dht.kv_messages import (
    GetRecord,
    GetReply,
    PutRecord,
    PutReply,
    Record,
    ReplicaDigest,
    ReplicaWant,
    StoreReplicas,
)
from cortex_rm.dht.kv_operations import GetDone, PutDone
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.record_store import MAX_KEY_LENGTH, MAX_VALUE_BYTES, RecordTooLarge, record_order
from cortex_rm.dht.ring_math import distance, key_id
from tests.support.key_space_sim import KeySpaceNetwork

KEYS = [f"app-{i}" for i in range(40)]


def network(seed: int = 1, n: int = 12, replicas: int = 3) -> KeySpaceNetwork:
    """``n`` nodes with random ids, each given its converged view."""
    net = KeySpaceNetwork(seed, replicas)
    net.build(n)
    return net


def put_all(net: KeySpaceNetwork, keys: list[str], tag: bytes = b"v1") -> None:
    """Write every key once, each from a different client, and check each write succeeded."""
    clients = net.live_nodes()
    for i, key in enumerate(keys):
        done = net.put(clients[i % len(clients)], key, tag + b":" + key.encode())
        assert done.error == "" and done.record is not None, done


def value_of(done: PutDone | GetDone) -> bytes:
    """The value an operation ended with (it must have ended with a record)."""
    assert done.record is not None, done
    return done.record.value


def assert_fully_replicated(net: KeySpaceNetwork, key: str, value: bytes) -> None:
    """The owner and its next r successors hold the same record, with ``value``; no member holds
    a newer one (a node pushed out of the replica set by joins may keep an older copy: nothing
    is pruned, and an older copy never wins)."""
    holders = net.holders(key)
    replicas = [holders.get(node.me.address) for node in net.replica_set(key)]
    assert len(set(replicas)) == 1, (key, replicas)
    newest = replicas[0]
    assert newest is not None and newest.value == value, (key, newest)
    for record in holders.values():
        assert record_order(record) <= record_order(newest), (key, record)


# ------------------------------------------------------------------ scenarios


def test_put_then_get_from_any_node_returns_the_value() -> None:
    """A value written through its owner is read back by every node, and is stored at r + 1 nodes."""
    net = network()
    put_all(net, KEYS)
    for key in KEYS:
        assert_fully_replicated(net, key, b"v1:" + key.encode())
        for client in net.live_nodes():
            done = net.get(client, key)
            assert done.error == "" and done.record is not None
            assert done.record.value == b"v1:" + key.encode()


def test_a_key_nobody_wrote_reads_as_none() -> None:
    """A get of an unknown key ends without error and without a record (after the owner asked its replicas)."""
    net = network()
    done = net.get(net.live_nodes()[0], "never-written")
    assert done == GetDone(done.op_id, "never-written", None, "")


def test_a_newer_put_wins_everywhere_after_replication() -> None:
    """A second write of a key gets a higher version; after a replicate round every copy is the second value."""
    net = network()
    put_all(net, KEYS)
    net.advance()
    clients = net.live_nodes()
    firsts = {key: net.holders(key) for key in KEYS}
    for i, key in enumerate(KEYS):
        done = net.put(clients[(i + 5) % len(clients)], key, b"v2")
        assert done.record is not None
        assert all(done.record.version > r.version for r in firsts[key].values())
        assert done.record.writer == clients[(i + 5) % len(clients)].me.node_id  # the writer, not the owner
    net.replicate_rounds(1)
    for key in KEYS:
        assert_fully_replicated(net, key, b"v2")
        assert net.get(clients[0], key).record == net.owner_of(key).store.get(key)


def test_two_puts_in_the_same_millisecond_get_increasing_versions() -> None:
    """The owner gives each write max(now_ms, held + 1), so versions of a key never repeat."""
    net = network()
    client = net.live_nodes()[0]
    versions = [net.put(client, "k", bytes([i])).record for i in range(3)]
    assert [r.version for r in versions if r is not None] == [0, 1, 2]  # the clock is at 0 ms
    assert net.get(client, "k").record == versions[-1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_writes_delivered_in_any_order_leave_the_last_accepted_everywhere(seed: int) -> None:
    """Six writes of one key in flight at once (each versioned by its writer, all in the same
    millisecond) reach the owner and its replicas in a random order; the owner accepts each
    that beats what it holds by (version, writer, value), refuses the rest as stale, and every
    copy ends as the greatest accepted write, without a replicate round."""
    net = network(seed)
    clients = net.live_nodes()
    ops = [(client, net.start_put(client, "hot", f"from-{i}".encode())) for i, client in enumerate(clients[:6])]
    net.deliver()
    outcomes = [net.outcomes[(c.me.address, op_id)] for c, op_id in ops]
    records = [o.record for o in outcomes if o.record is not None]
    assert records and all(o.error.startswith("stale") for o in outcomes if o.record is None)
    last = max(records, key=record_order)
    assert last.writer == max(c.me.node_id for c in clients[:6])
    assert_fully_replicated(net, "hot", last.value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_record_survives_the_crash_of_its_owner_and_r_minus_1_successors(seed: int) -> None:
    """Crash the owner and its next r - 1 successors at once: after the ring view settles and
    a replicate round, every key reads back and is again stored at r + 1 nodes."""
    net = network(seed, n=14)
    put_all(net, KEYS)
    victim_key = KEYS[seed]
    net.crash(net.replica_set(victim_key)[: net.replicas])
    net.stabilise()
    net.replicate_rounds(2)
    for key in KEYS:
        assert_fully_replicated(net, key, b"v1:" + key.encode())
        assert net.get(net.live_nodes()[-1], key).record is not None


def test_records_survive_owners_crashing_one_after_another() -> None:
    """Crashing the current owner of every key, ten times over with repair rounds between, loses nothing."""
    net = network(seed=7, n=16)
    put_all(net, KEYS[:10])
    for round_ in range(10):
        net.crash([net.owner_of(KEYS[round_])])
        net.stabilise()
        net.replicate_rounds(1)
    for key in KEYS[:10]:
        assert_fully_replicated(net, key, b"v1:" + key.encode())


@pytest.mark.parametrize("position", [0, 1, 3])
def test_a_node_down_during_a_write_does_not_resurrect_its_stale_record(position: int) -> None:
    """The owner (position 0) or a replica misses a write while crashed; restarted with its old
    store, it ends holding the newest record, and no node holds or serves the old one."""
    net = network(seed=3)
    key = "rm-state"
    client = net.live_nodes()[0]
    old = net.put(client, key, b"old")
    sleeper = net.replica_set(key)[position]
    net.crash([sleeper])
    net.stabilise()
    net.advance()
    client = net.live_nodes()[0]
    assert net.put(client, key, b"new").error == ""
    back = net.restart(sleeper)
    assert back.store.get(key) == old.record  # it comes back with the stale record
    net.stabilise()  # its neighbours see it again; digests flow at once
    assert value_of(net.get(client, key)) == b"new"
    net.replicate_rounds(2)
    assert_fully_replicated(net, key, b"new")


def test_a_joining_node_receives_the_keys_it_now_owns() -> None:
    """A node placed inside an owner's range takes over the keys before it: once the views
    change, before any replicate round, it holds them and answers for them."""
    net = network(seed=5, n=8, replicas=1)
    put_all(net, KEYS)
    owner = max(net.live_nodes(), key=lambda n: sum(net.owner_of(k) is n for k in KEYS))
    ring = net.live_nodes()
    predecessor = ring[ring.index(owner) - 1]
    theirs = sorted((k for k in KEYS if net.owner_of(k) is owner), key=lambda k: distance(predecessor.me.node_id, key_id(k)))
    assert len(theirs) >= 2
    middle = theirs[len(theirs) // 2 - 1]
    joiner = net.add_node(key_id(middle))  # owns (predecessor, middle]
    taken = theirs[: len(theirs) // 2]
    net.stabilise()
    for key in taken:
        assert net.owner_of(key) is joiner
        assert joiner.store.get(key) is not None, key
        assert value_of(net.get(ring[0], key)) == b"v1:" + key.encode()
    net.advance()  # a later write: the writer's clock gives it a higher version
    rewritten = net.put(ring[0], taken[0], b"after-join").record
    assert rewritten is not None and rewritten.writer == ring[0].me.node_id
    net.replicate_rounds(1)
    for key in KEYS:
        assert_fully_replicated(net, key, b"after-join" if key == taken[0] else b"v1:" + key.encode())


def test_two_nodes_joining_in_one_range_both_receive_their_keys() -> None:
    """Two nodes that join between the same neighbours at once: the nearer one gets its keys
    through the other (backward digests) within a replicate round."""
    net = network(seed=6, n=6, replicas=2)
    put_all(net, KEYS)
    owner = max(net.live_nodes(), key=lambda n: sum(net.owner_of(k) is n for k in KEYS))
    ring = net.live_nodes()
    predecessor = ring[ring.index(owner) - 1]
    theirs = sorted((k for k in KEYS if net.owner_of(k) is owner), key=lambda k: distance(predecessor.me.node_id, key_id(k)))
    assert len(theirs) >= 4
    first, second = net.add_node(key_id(theirs[0])), net.add_node(key_id(theirs[2]))
    net.stabilise()
    net.replicate_rounds(1)
    assert first.store.get(theirs[0]) is not None
    assert {theirs[1], theirs[2]} <= {r.key for r in second.store}
    for key in KEYS:
        assert_fully_replicated(net, key, b"v1:" + key.encode())


def test_a_graceful_leave_hands_keys_to_the_successor() -> None:
    """Without replication (r = 0) the owner holds the only copy; hand_off gives it to the
    successor, which answers for the keys once the views change."""
    net = network(seed=2, n=6, replicas=0)
    put_all(net, KEYS)
    leaver = net.owner_of(KEYS[0])
    ring = net.live_nodes()
    successor = ring[(ring.index(leaver) + 1) % len(ring)]
    owned = [k for k in KEYS if net.owner_of(k) is leaver]
    assert all(successor.store.get(k) is None for k in owned)
    net.leave(leaver)
    net.stabilise()
    for key in owned:
        assert successor.store.get(key) is not None
        assert net.get(ring[0] if ring[0] is not leaver else ring[1], key).record is not None


def test_the_simulation_replays_exactly_from_its_seed() -> None:
    """Two runs of the same crash-and-repair scenario with one seed deliver the same messages and end equal."""

    def run() -> tuple[int, list[list[Record]]]:
        net = network(seed=11)
        put_all(net, KEYS[:10])
        net.crash(net.live_nodes()[:3])
        net.stabilise()
        net.replicate_rounds(2)
        return net.messages_delivered, [list(n.store) for n in net.live_nodes()]

    assert run() == run()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.lists(st.sampled_from(["put", "crash", "crash-r", "restart", "join", "replicate"]), min_size=1, max_size=12),
)
def test_random_churn_never_loses_or_reverts_a_key(seed: int, steps: list[str]) -> None:
    """Any sequence of writes, crashes (of one node, or of a key's owner and r - 1 successors at
    once), restarts (with old stores) and joins, each followed by a view change and one
    replicate round, leaves every key readable with its last written value at all r + 1 places."""
    net = network(seed, n=8)
    last: dict[str, bytes] = {}
    down: list[KeySpace] = []
    for i, step in enumerate(steps):
        if step == "put":
            key = KEYS[i % 5]
            done = net.put(net.live_nodes()[i % 3], key, f"{i}".encode())
            assert done.error == ""
            last[key] = value_of(done)
        elif step == "crash" and len(net.live_nodes()) > 5:
            victim = net.live_nodes()[net.random.randrange(len(net.live_nodes()))]
            net.crash([victim])
            down.append(victim)
        elif step == "crash-r" and len(net.live_nodes()) > net.replicas + 4:
            victims = net.replica_set(KEYS[i % 5])[: net.replicas]  # the owner and r - 1 successors
            net.crash(victims)
            down += victims
        elif step == "restart" and down:
            net.restart(down.pop(0))
        elif step == "join":
            net.add_node()
        net.stabilise()
        net.replicate_rounds(1)  # each fault is repaired before the next: nothing may be lost
        net.advance()
    for key, value in last.items():
        assert_fully_replicated(net, key, value)
        assert value_of(net.get(net.live_nodes()[0], key)) == value


# ------------------------------------------------------------------ reads through a new owner


def test_an_owner_that_lost_its_store_answers_from_its_replicas_and_keeps_the_record() -> None:
    """An owner restarted with an empty store asks its successors on a miss, answers with their
    record and keeps it (read repair)."""
    net = network(seed=4)
    put_all(net, KEYS[:5])
    owner = net.owner_of(KEYS[0])
    net.crash([owner])
    blank = KeySpace(owner.me, net.replicas, owner.request_timeout)
    net.nodes[owner.me.address] = blank
    net.crash([blank])
    net.restart(blank)
    fresh = net.nodes[owner.me.address]
    predecessor, successors = net.view_of(fresh)
    fresh.set_ring(predecessor, successors, net.now)  # its view only: no digests delivered
    assert fresh.store.get(KEYS[0]) is None
    done = net.get(net.live_nodes()[0], KEYS[0])
    assert done.record is not None and done.record.value == b"v1:" + KEYS[0].encode()
    assert fresh.store.get(KEYS[0]) == done.record


def test_an_owner_gathering_from_a_dead_replica_answers_after_half_the_timeout() -> None:
    """A gather whose replica never answers ends at now + timeout / 2 with what the others had."""
    me, a, b = Peer(100, "me"), Peer(200, "a"), Peer(300, "b")
    node = KeySpace(me, replicas=2, request_timeout=1.0)
    node.set_ring(b, (a, b), 0.0)
    _, sends = node.get("k", me, 0.0)  # key_id("k") lies in (b, me] = (300, 100] wrapping: almost all ids
    assert [s.to for s in sends if isinstance(s, Send)] == [a, b]
    first = sends[0]
    assert isinstance(first, Send) and isinstance(first.message, GetRecord)
    assert node.receive(a, GetReply(first.message.request_id, None), 0.1) == []
    assert node.expire(0.4) == []
    [done] = node.expire(0.5)
    assert isinstance(done, GetDone) and done.record is None and done.error == ""


def test_asks_for_a_key_while_its_owner_gathers_all_get_the_gathered_record() -> None:
    """A second get arriving while the owner gathers the same key waits for that gather (no
    second gather) and both askers receive the replica's record."""
    me, a, x, y = Peer(100, "me"), Peer(200, "a"), Peer(300, "x"), Peer(400, "y")
    node = KeySpace(me, replicas=1, request_timeout=1.0)
    node.set_ring(a, (a,), 0.0)  # owns (200, 100]: wraps round, "k" lies in it
    [gather] = node.receive(x, GetRecord(1, "k"), 0.0)
    assert isinstance(gather, Send) and gather.to == a and isinstance(gather.message, GetRecord)
    assert node.receive(y, GetRecord(2, "k"), 0.1) == []
    record = Record("k", b"v", 3, 200)
    answers = node.receive(a, GetReply(gather.message.request_id, record), 0.2)
    assert answers == [Send(x, GetReply(1, record)), Send(y, GetReply(2, record))]


# ------------------------------------------------------------------ refusals and strangers


def test_a_put_to_a_node_that_does_not_own_the_key_is_refused() -> None:
    """A put reaching a non-owner (stale lookup) fails with an error saying to look the owner up again."""
    net = network()
    owner = net.owner_of("k")
    wrong = next(n for n in net.live_nodes() if n is not owner)
    done = net.put(net.live_nodes()[0], "k", b"v", owner=wrong)
    assert done.record is None and "not the owner" in done.error and "look the owner up again" in done.error
    assert net.holders("k") == {}


def test_ownership_follows_the_ring_view() -> None:
    """Before set_ring a node owns nothing; alone it owns everything; with successors but no
    predecessor it refuses writes yet still offers all it holds to its successors."""
    me, other = Peer(10, "me"), Peer(20, "other")
    node = KeySpace(me, replicas=1, request_timeout=1.0)
    assert not node.owns("k")
    node.set_ring(None, (), 0.0)
    assert node.owns("k") and node.owns("anything")
    node.put("k", b"v", me, 0.0)
    node.set_ring(None, (other,), 0.0)
    assert not node.owns("k")
    _, [refused] = node.put("k2", b"v", me, 0.0)
    assert isinstance(refused, PutDone) and "does not know its predecessor" in refused.error
    [digest] = node.replicate(1.0)
    assert digest == Send(other, ReplicaDigest((("k", 0),)))


def test_oversized_keys_and_values_are_refused() -> None:
    """Locally a too-long key or too-big value raises RecordTooLarge; from the wire a put is
    answered with the error and oversized replicas are dropped."""
    me, peer = Peer(10, "me"), Peer(20, "peer")
    node = KeySpace(me, replicas=1, request_timeout=1.0)
    node.set_ring(None, (), 0.0)
    with pytest.raises(RecordTooLarge):
        node.put("k" * (MAX_KEY_LENGTH + 1), b"v", me, 0.0)
    with pytest.raises(RecordTooLarge):
        node.put("k", b"v" * (MAX_VALUE_BYTES + 1), me, 0.0)
    with pytest.raises(RecordTooLarge):
        node.get("k" * (MAX_KEY_LENGTH + 1), me, 0.0)
    [reply] = node.receive(peer, PutRecord(7, Record("k", b"v" * (MAX_VALUE_BYTES + 1), 0, peer.node_id)), 0.0)
    assert isinstance(reply, Send) and isinstance(reply.message, PutReply)
    assert reply.message.record is None and "limit is 65536" in reply.message.error
    node.receive(peer, StoreReplicas((Record("k" * 300, b"", 1, 1), Record("ok", b"v", 1, 1))), 0.0)
    assert [r.key for r in node.store] == ["ok"]
    _, [done] = node.put("k" * MAX_KEY_LENGTH, b"v" * MAX_VALUE_BYTES, me, 0.0)
    assert isinstance(done, PutDone) and done.error == ""


def test_replies_from_strangers_or_too_late_are_ignored() -> None:
    """A PutReply from a peer we did not ask, a reply of the wrong kind, and a reply after the
    timeout change nothing; the owner's own reply in time ends the put."""
    me, owner, stranger = Peer(10, "me"), Peer(20, "owner"), Peer(30, "stranger")
    node = KeySpace(me, replicas=1, request_timeout=1.0)
    node.set_ring(owner, (owner,), 0.0)
    op_id, [send] = node.put("k", b"v", owner, 0.0)
    assert isinstance(send, Send) and isinstance(send.message, PutRecord)
    rid = send.message.request_id
    forged = Record("k", b"forged", 99, 30)
    assert node.receive(stranger, PutReply(rid, forged, ""), 0.1) == []
    assert node.receive(owner, GetReply(rid, forged), 0.1) == []
    record = Record("k", b"v", 5, 20)
    assert node.receive(owner, PutReply(rid, record, ""), 0.2) == [PutDone(op_id, "k", record, "")]
    op_id, [send] = node.get("k", owner, 1.0)
    assert isinstance(send, Send) and isinstance(send.message, GetRecord)
    [timeout] = node.expire(2.0)
    assert isinstance(timeout, GetDone) and timeout.record is None and "timeout" in timeout.error
    assert node.receive(owner, GetReply(send.message.request_id, record), 2.1) == []


def test_a_replica_want_from_a_peer_we_offered_nothing_is_ignored() -> None:
    """Wants are honoured only from the peer a digest went to, for the keys it offered, while the offer stands."""
    me, successor, stranger = Peer(10, "me"), Peer(20, "succ"), Peer(30, "stranger")
    node = KeySpace(me, replicas=1, request_timeout=1.0)
    node.set_ring(None, (), 0.0)
    node.put("k", b"v", me, 0.0)
    [digest] = node.set_ring(successor, (successor,), 0.0)
    assert isinstance(digest, Send) and digest.to == successor
    assert node.receive(stranger, ReplicaWant(("k",)), 0.1) == []
    assert node.receive(successor, ReplicaWant(("other",)), 0.1) == []
    [store] = node.receive(successor, ReplicaWant(("k",)), 0.1)
    assert isinstance(store, Send) and isinstance(store.message, StoreReplicas)
    node.expire(1.0)
    assert node.receive(successor, ReplicaWant(("k",)), 1.1) == []
