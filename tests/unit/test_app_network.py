"""Applications' slots of source ports: the ranges, the RM's choice of slot, the tracker's
answer, and the nft rules that rewrite and check them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rm.allocator.app_states import AppState
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.container.id_ranges import DEFAULT_RANGE_TEXT, IdRange
from cortex_rm.container.net_firewall import NftFirewall
from cortex_rm.container.net_policy import Members, PolicySettings, mark_of, render_application_added, render_application_removed, render_nat, render_table
from cortex_rm.internal import block_codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.yarn.app_network import PORT_SLOTS, PORT_SLOTS_PER_USER, UNASSIGNED_SOURCE_PORTS, AppNetwork, free_slot, source_ports
from tests.support.rm_core import result_of
from tests.unit.test_app_table import new_clock, recover, sql_store, submit

IDS = IdRange.parse(DEFAULT_RANGE_TEXT)
SETTINGS = PolicySettings("cortex_t", IDS, "unified/cortex")


def test_slots_are_disjoint_ranges_below_the_ephemeral_ports():
    """Every slot's ports, and the unassigned ones, are disjoint and lie below 32768."""
    ranges = [source_ports(s) for s in range(PORT_SLOTS)] + [UNASSIGNED_SOURCE_PORTS]
    ports = [p for first, last in ranges for p in range(first, last + 1)]
    assert len(ports) == len(set(ports)) and min(ports) >= 1024 and max(ports) <= 32767
    for bad in (-1, PORT_SLOTS):
        with pytest.raises(ValueError):
            source_ports(bad)


def test_a_free_slot_is_taken_in_turn_from_the_sequence_number():
    """Slots are tried from the sequence number on, skipping held ones; None when all are held."""
    assert free_slot(3, set()) == 3
    assert free_slot(PORT_SLOTS + 3, {3, 4}) == 5
    assert free_slot(PORT_SLOTS - 1, {PORT_SLOTS - 1}) == 0
    assert free_slot(7, set(range(PORT_SLOTS))) is None


def test_one_user_holds_at_most_half_the_slots():
    """A user's submission past PORT_SLOTS_PER_USER live applications fails naming the limit;
    another user's is still accepted."""
    table = recover(new_clock(), MemoryStateStore())
    for _ in range(PORT_SLOTS_PER_USER):
        assert submit(table, user="alice").state is AppState.ACCEPTED
    refused = submit(table, user="alice")
    assert refused.state is AppState.FAILED and "Maximum application limit of user alice" in refused.diagnostics
    assert submit(table, user="bob").state is AppState.ACCEPTED


def test_accepted_applications_hold_distinct_slots_until_they_end():
    """Each accepted application gets a slot no live one holds; past the last slot a submission
    fails naming the limit; a slot freed by an ended application is given again."""
    table = recover(new_clock(), MemoryStateStore())
    apps = [submit(table, user=f"user{i % 2}") for i in range(PORT_SLOTS)]
    assert sorted(a.port_slot for a in apps) == list(range(PORT_SLOTS))  # type: ignore[type-var]
    refused = submit(table, user="carol")
    assert refused.state is AppState.FAILED and refused.port_slot is None
    assert "Maximum system application limit reached" in refused.diagnostics
    result_of(table.kill(apps[10].app_id))
    again = submit(table, user="carol")
    assert again.state is AppState.ACCEPTED and again.port_slot == apps[10].port_slot


def test_a_slot_survives_a_restart_and_an_application_stored_without_one_gets_one(tmp_path: Path):
    """A recovered application keeps its slot; one stored before slots existed is given a free one."""
    clock = new_clock()
    table = recover(clock, sql_store(tmp_path))
    first, second = submit(table), submit(table)
    again = recover(clock, sql_store(tmp_path))
    assert again.get(first.app_id).port_slot == first.port_slot
    assert again.get(second.app_id).port_slot == second.port_slot

    store = MemoryStateStore()
    old = submit(recover(clock, store))
    for document, _ in store._apps.values():
        del document["port_slot"]  # as an RM before slots stored it
    resumed = recover(clock, store).get(old.app_id)
    assert resumed.state is AppState.ACCEPTED and resumed.port_slot is not None


def test_the_tracker_answer_carries_a_slot_in_range_or_none():
    """The node checks the RM's answer: a slot in 0..127 or none, a host without blanks."""
    for network in (AppNetwork("10.0.0.5", 0), AppNetwork("", None), AppNetwork("h", PORT_SLOTS - 1)):
        assert block_codec.network_from_thrift(block_codec.network_to_thrift(network)) == network
    for bad in (ttypes.ApplicationNetwork("h", PORT_SLOTS), ttypes.ApplicationNetwork("h", -1), ttypes.ApplicationNetwork("a b", 1), ttypes.ApplicationNetwork("h", True)):
        with pytest.raises(MalformedMessage):
            block_codec.network_from_thrift(bad)


def test_the_table_rewrites_container_connections_to_members_ephemeral_ports():
    """Postrouting sends containers' connections to members' ephemeral ports through app_nat,
    whose last rule puts every unlisted application in the unassigned range; a container socket
    accepts its slot's ports before any other container is refused, and members are not
    accepted by address."""
    script = render_table(SETTINGS, Members())
    assert f"meta skuid {IDS.base}-{IDS.last} ip daddr @members th dport 32768-60999 jump app_nat" in script
    first, last = UNASSIGNED_SOURCE_PORTS
    assert f"meta l4proto {{ tcp, udp }} snat ip to ip saddr:{first}-{last}" in script
    assert script.index("th sport @app_srcs accept") < script.index("== 0xc0a70000 reject")
    # this node's other applications are refused whatever source port they chose, before the slots
    assert script.index(f"meta mark {mark_of(IDS.block(0)):#x}-") < script.index("th sport @app_srcs accept")
    # a slot counts only on the packets a node rewrites: member to member, to an ephemeral port
    assert "ip saddr @members ip daddr @members th dport 32768-60999 socket cgroupv2 level 3 . th sport @app_srcs accept" in script
    assert "th sport != 10000-32767 socket cgroupv2 level 3 . ip saddr @peer_srcs accept" in script  # a driver host's containers are not its driver
    assert "priority srcnat - 1;" in script  # before anyone's masquerade
    assert "ip saddr @members accept" not in script
    assert 'socket cgroupv2 level 1 "unified/cortex" accept' in script  # another local node's container: its table judges


def test_an_application_with_a_slot_is_rewritten_and_accepted_by_its_ports():
    """Adding an application with a slot adds its cgroup's source ports; the nat rules list each
    slot by mark before the unassigned catch-all; removing takes the ports back."""
    block = IDS.block(3)
    first, last = source_ports(9)
    added = render_application_added("t", block, "unified/cortex/b3", [], 9)
    assert f'add element inet t app_srcs {{ "unified/cortex/b3" . {first}-{last} }}' in added
    assert "app_srcs" not in render_application_added("t", block, "unified/cortex/b3", [], None)
    nat = render_nat("t", {mark_of(block): 9}).splitlines()
    assert nat[0] == "flush chain inet t app_nat"
    assert nat[1] == f"add rule inet t app_nat meta mark {mark_of(block):#x} meta l4proto {{ tcp, udp }} snat ip to ip saddr:{first}-{last}"
    assert nat[2].endswith(f"snat ip to ip saddr:{UNASSIGNED_SOURCE_PORTS[0]}-{UNASSIGNED_SOURCE_PORTS[1]}")
    removed = render_application_removed("t", block, "unified/cortex/b3", [], 9)
    assert f'delete element inet t app_srcs {{ "unified/cortex/b3" . {first}-{last} }}' in removed


def test_the_firewall_keeps_the_nat_rules_of_the_applications_it_holds(tmp_path: Path):
    """Each add or remove is one script that also rewrites app_nat for the applications still held."""
    scripts: list[str] = []

    def run(argv: list[str], script: str) -> tuple[int, str]:
        scripts.append(script)
        return 0, ""

    (tmp_path / "unified").mkdir()
    firewall = NftFirewall(SETTINGS, tmp_path, nft="/usr/sbin/nft", run=run, tables=lambda: [])
    firewall.install(Members())
    a, b = IDS.block(1), IDS.block(2)
    firewall.application_added(a, "unified/cortex/b1", frozenset(), 4)
    firewall.application_added(b, "unified/cortex/b2", frozenset(), None)
    assert f"meta mark {mark_of(a):#x}" in scripts[-1] and f"meta mark {mark_of(b):#x}" not in scripts[-1]
    firewall.application_removed(a, "unified/cortex/b1")
    assert "delete element inet cortex_t app_srcs" in scripts[-1] and f"meta mark {mark_of(a):#x}" not in scripts[-1]
    assert "flush chain inet cortex_t app_nat" in scripts[-1]
