"""The sandbox's pure parts: id ranges and blocks, the seccomp profile, the nft scripts, the members."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from cortex_rm.container.id_ranges import (
    BLOCK,
    DEFAULT_RANGE_TEXT,
    IdBlock,
    IdBlocks,
    IdRange,
    IdRangeError,
    check_against_subordinate_files,
    node_id_range,
)
from cortex_rm.container.lxc_sandbox import ContainerSandbox
from cortex_rm.container.net_policy import (
    Members,
    PolicySettings,
    driver_endpoints,
    mark_of,
    render_application_added,
    render_application_removed,
    render_members,
    render_table,
    table_name,
)
from cortex_rm.container.seccomp import render_profile
from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.swim_messages import MemberStatus
from cortex_rm.roles.container_members import (
    DEPARTED_GRACE_S,
    MAX_REFUSALS_LOGGED,
    REFRESH_S,
    MembersWatcher,
    OwnEndpoints,
    VouchedReports,
    keep_departed,
    members_of,
    nameservers,
    vouched_reports,
)
from cortex_rm.roles.ring_records import CapacityReport, ResourceManagerRecord
from cortex_rm.yarn.addresses import HostPort

IDS = IdRange.parse(DEFAULT_RANGE_TEXT)


def test_the_default_range_is_whole_aligned_blocks_below_2_31():
    """The default range parses, is block-aligned and ends below 2**31."""
    assert IDS.base % BLOCK == 0 and IDS.count % BLOCK == 0 and IDS.last < 2**31 and IDS.blocks == 1024


@pytest.mark.parametrize("text", ["1:2", "65536", "x:y", "65537:65536", "0:65536", "2147418112:131072"])
def test_bad_ranges_are_refused(text: str):
    """A range that is not BASE:COUNT of aligned blocks of positive ids below 2**31 is refused."""
    with pytest.raises(IdRangeError):
        IdRange.parse(text)


def test_local_nodes_get_disjoint_ranges():
    """Nodes sharing a host get ranges that do not overlap."""
    a, b = IdRange.parse(node_id_range(1)), IdRange.parse(node_id_range(2))
    assert not a.overlaps(b.base, b.count) and a.last + 1 == b.base


def test_blocks_are_held_per_application_until_released():
    """An application keeps its block across containers; a released block goes to the next one."""
    blocks = IdBlocks(IdRange(BLOCK * 10, 2 * BLOCK))
    first, new = blocks.take("app1")
    assert new and first == IdBlock(BLOCK * 10)
    assert blocks.take("app1") == (first, False)
    second, _ = blocks.take("app2")
    assert second.root == BLOCK * 11
    with pytest.raises(IdRangeError):
        blocks.take("app3")
    assert blocks.release("app1") == first
    assert blocks.take("app3") == (first, True)


def test_idmap_lines_map_the_containers_ids_onto_the_block():
    """Root inside is the block's first host id, for users and groups."""
    assert IdBlock(BLOCK * 20).idmap_lines() == [f"lxc.idmap = u 0 {BLOCK * 20} 65536", f"lxc.idmap = g 0 {BLOCK * 20} 65536"]


def test_a_range_meeting_subuid_is_refused(tmp_path: Path):
    """A range overlapping an /etc/subuid entry is refused; a disjoint one passes."""
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\n")
    check_against_subordinate_files(IDS, [subuid])
    with pytest.raises(IdRangeError, match="alice"):
        check_against_subordinate_files(IdRange(65536, 131072), [subuid])


def test_the_seccomp_profile_denies_lxcs_list_and_new_user_namespaces():
    """The profile is LXC's v2 deny list with LXC's defaults, keyrings, bpf, and clone(CLONE_NEWUSER)."""
    lines = render_profile().splitlines()
    assert lines[:3] == ["2", "denylist", "[all]"]
    for name in ("kexec_load", "open_by_handle_at", "init_module", "finit_module", "delete_module", "keyctl", "bpf", "unshare"):
        assert f"{name} errno 1" in lines
    assert "clone3 errno 38" in lines
    assert "clone errno 1 [0,0x10000000,SCMP_CMP_MASKED_EQ,0x10000000]" in lines


SETTINGS = PolicySettings(table_name("127.0.0.2_45454"), IDS, "unified/cortex")
MEMBERS = Members(frozenset({"127.0.0.2"}), frozenset({("127.0.0.2", 8042)}), frozenset({("127.0.0.2", 7946)}))


def test_the_table_replaces_itself_and_holds_the_members():
    """The script creates-then-deletes the table (so it always loads) and lists members, services, control."""
    script = render_table(SETTINGS, MEMBERS)
    lines = script.splitlines()
    assert lines[:3] == ["table inet cortex_127_0_0_2_45454 {}", "delete table inet cortex_127_0_0_2_45454", "table inet cortex_127_0_0_2_45454 {"]
    assert "elements = { 127.0.0.2 . 8042 }" in script and "elements = { 127.0.0.2 . 7946 }" in script
    assert f"meta skuid {IDS.base}-{IDS.last} jump container_out" in script
    assert "ip daddr != @non_public accept" not in script
    assert script.index("@control reject") < script.index("@services accept") < script.index("@members th dport")
    assert "meta mark . ip daddr @peer_hosts th dport 32768-60999 accept" in script  # a driver's block manager
    assert "ip daddr != @non_public accept" in render_table(PolicySettings("t", IDS, "cortex", internet=True), MEMBERS)


def test_an_application_is_added_and_removed_by_its_cgroup_uids_and_mark():
    """Adding names its uid block, cgroup, mark and driver endpoints; removing takes them back."""
    block = IDS.block(3)
    mark = f"{mark_of(block):#x}"
    added = render_application_added("t", block, "unified/cortex/b1", [("10.0.0.9", 40000)])
    assert f"add element inet t uid_marks {{ {block.root}-{block.root + BLOCK - 1} : {mark} }}" in added
    assert f'add element inet t same_app {{ "unified/cortex/b1" . {mark} }}' in added
    assert f"add element inet t peers {{ {mark} . 10.0.0.9 . 40000 }}" in added
    assert f"add element inet t peer_hosts {{ {mark} . 10.0.0.9 }}" in added  # the driver's other ports
    removed = render_application_removed("t", block, "unified/cortex/b1", [("10.0.0.9", 40000)])
    assert f"delete element inet t peers {{ {mark} . 10.0.0.9 . 40000 }}" in removed
    assert f"delete element inet t peer_hosts {{ {mark} . 10.0.0.9 }}" in removed
    assert removed.splitlines()[-1] == 'delete element inet t peer_srcs { "unified/cortex/b1" . 10.0.0.9 }'
    assert 'add element inet t peer_srcs { "unified/cortex/b1" . 10.0.0.9 }' in added  # its own containers only


def test_member_updates_flush_and_refill_in_one_script():
    """A member update flushes each set and adds its elements (an empty set is only flushed)."""
    script = render_members("t", Members(frozenset({"10.1.0.2"})))
    assert script.splitlines() == [
        "flush set inet t members", "add element inet t members { 10.1.0.2 }",
        "flush set inet t services", "flush set inet t control",
    ]  # fmt: skip


def test_driver_endpoints_are_spark_urls_and_client_mode_args_with_unprivileged_ports():
    """The driver's host:port from an executor's --driver-url and a client-mode AM's --arg; low ports and names are not."""
    argv = ["java", "--driver-url", "spark://CoarseGrainedScheduler@10.213.0.1:41234", "--arg", "'10.213.0.1:40001'",
            "--arg", "'10.0.0.1:22'", "spark://x@somehost:5000"]  # fmt: skip
    assert driver_endpoints(argv) == {("10.213.0.1", 41234), ("10.213.0.1", 40001)}


RM_RECORD = ResourceManagerRecord(
    HostPort("10.2.0.1", 8032), HostPort("10.2.0.1", 8030), HostPort("10.2.0.1", 8088), HostPort("10.2.0.1", 8031), "f", 1
)
OWN = OwnEndpoints(("10.2.0.3:45454", "10.2.0.3:8042"), ())
ME = Peer(0x3 << 152, "10.2.0.3:7946")
HONEST = Peer(0xA << 156, "10.2.0.2:7946")  # format_id: "a000..."
HOSTILE = Peer(0xB << 156, "10.2.0.9:7946")


def _view(*members: tuple[Peer, MemberStatus], verified: frozenset[Peer] | None = None) -> RingView:
    """A view holding ``members``, their addresses verified (all of them unless ``verified`` says which)."""
    proven = frozenset(p for p, _ in members) if verified is None else verified
    return RingView(ME, RingState.MEMBER, 1, None, (), 0, tuple((p, s, 1) for p, s in members), 0, verified=proven)


def _report(peer: Peer, node_id: str, http_address: str) -> CapacityReport:
    return CapacityReport(format_id(peer.node_id), HostPort.parse(node_id), HostPort.parse(http_address), "/r", 1, 1)


VIEW = _view((HONEST, MemberStatus.ALIVE), (HOSTILE, MemberStatus.ALIVE))
HONEST_REPORT = _report(HONEST, "10.2.0.2:45454", "10.2.0.2:8042")


def test_members_are_the_ring_the_reports_and_the_rm_with_control_ports_apart():
    """Members' services are NM, web, scheduler and DNS; ring, tracker and client ports are control."""
    found = members_of(OWN, VIEW, [HONEST_REPORT], (RM_RECORD,), ["10.2.0.53"])
    assert found.addresses == {"10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.9"}
    assert found.services == {("10.2.0.3", 45454), ("10.2.0.3", 8042), ("10.2.0.2", 45454), ("10.2.0.2", 8042),
                               ("10.2.0.1", 8030), ("10.2.0.1", 8088), ("10.2.0.53", 53)}  # fmt: skip
    assert found.control == {("10.2.0.3", 7946), ("10.2.0.2", 7946), ("10.2.0.9", 7946), ("10.2.0.1", 8031), ("10.2.0.1", 8032)}


@pytest.mark.parametrize(
    ("node_id", "http_address"),
    [
        ("127.0.0.1:5432", "192.168.1.1:22"),  # the contributor's loopback database, a LAN host's SSH
        ("10.2.0.9:45454", "192.168.1.1:22"),  # one address its own, the other not
        ("127.0.0.1:5432", "10.2.0.9:8042"),
        ("10.2.0.3:22", "10.2.0.9:8042"),  # this node's (the reader's) own host
        ("10.2.0.1:5432", "10.2.0.9:8042"),  # the RM's host
    ],
)
def test_a_member_naming_addresses_off_its_own_host_opens_nothing(node_id: str, http_address: str):
    """A ring member whose report names another host's ports changes neither @services nor @members."""
    hostile = _report(HOSTILE, node_id, http_address)
    without = members_of(OWN, VIEW, [HONEST_REPORT], (RM_RECORD,), ["10.2.0.53"])
    assert members_of(OWN, VIEW, [HONEST_REPORT, hostile], (RM_RECORD,), ["10.2.0.53"]) == without
    vouched = vouched_reports(VIEW, [HONEST_REPORT, hostile])
    assert vouched.accepted == (HONEST_REPORT,) and [r for r, _ in vouched.refused] == [hostile]


def test_an_honest_report_on_its_members_host_adds_its_services():
    """A member's report naming ports on its ring address's host adds them (and the host) to the sets."""
    honest = _report(HOSTILE, "10.2.0.9:45454", "10.2.0.9:8042")  # the same member, telling the truth
    before = members_of(OWN, VIEW, [], ())
    after = members_of(OWN, VIEW, [honest], ())
    assert after.services - before.services == {("10.2.0.9", 45454), ("10.2.0.9", 8042)}
    assert "10.2.0.9" in after.addresses and after.control == before.control


def test_reports_of_no_live_member_are_not_believed():
    """Without a view, or from a member not (or no longer) live in it, a report opens nothing."""
    report = _report(HOSTILE, "10.2.0.9:45454", "10.2.0.9:8042")
    base = members_of(OWN, None, [], ())
    assert members_of(OWN, None, [report], ()) == base
    for view in (_view(), _view((HOSTILE, MemberStatus.DEAD)), _view((HOSTILE, MemberStatus.LEFT))):
        assert vouched_reports(view, [report]) == VouchedReports((), ())
    assert vouched_reports(_view((HOSTILE, MemberStatus.SUSPECT)), [report]).accepted == (report,)


def test_a_member_whose_ring_address_is_not_verified_opens_nothing():
    """A live member whose ring address our own connection has not proven (pending, or another key /
    nothing answered there) adds neither its host, nor its ring port, nor its report's services; the
    same member once verified adds all three."""
    report = _report(HOSTILE, "10.2.0.9:45454", "10.2.0.9:8042")
    unverified = _view((HONEST, MemberStatus.ALIVE), (HOSTILE, MemberStatus.ALIVE), verified=frozenset({HONEST}))
    found = members_of(OWN, unverified, [HONEST_REPORT, report], ())
    assert found == members_of(OWN, _view((HONEST, MemberStatus.ALIVE)), [HONEST_REPORT], ())
    assert "10.2.0.9" not in found.addresses and ("10.2.0.9", 7946) not in found.control
    assert vouched_reports(unverified, [HONEST_REPORT, report]) == VouchedReports((HONEST_REPORT,), ())
    moved = Peer(HOSTILE.node_id, "10.2.0.10:7946")  # verified at one address, now claiming another
    stale = _view((HONEST, MemberStatus.ALIVE), (moved, MemberStatus.ALIVE), verified=frozenset({HONEST, HOSTILE}))
    assert members_of(OWN, stale, [report], ()) == members_of(OWN, _view((HONEST, MemberStatus.ALIVE)), [], ())
    verified = members_of(OWN, VIEW, [HONEST_REPORT, report], ())
    assert "10.2.0.9" in verified.addresses and {("10.2.0.9", 45454), ("10.2.0.9", 8042)} <= verified.services


def test_this_nodes_own_report_is_checked_against_its_own_ring_address():
    """The node's own report (kept by ``receive_own``) counts, on its own ring host."""
    own = _report(ME, "10.2.0.3:45454", "10.2.0.3:8042")
    assert vouched_reports(_view(), [own]).accepted == (own,)


def test_the_watcher_counts_each_refused_report_once_and_logs_a_bounded_number():
    """A refused report is counted (and logged) once however often the members are recomputed;
    a changed report counts again; a flood is logged MAX_REFUSALS_LOGGED lines per interval."""
    clock, applied = Clock(), []
    reports = [HONEST_REPORT, _report(HOSTILE, "127.0.0.1:5432", "192.168.1.1:22")]
    watcher = MembersWatcher(clock, OWN, applied.append, view=lambda: VIEW, reports=lambda: reports,
                             resolv_conf=Path("/nonexistent"))  # fmt: skip
    watcher.start()
    clock.advance(REFRESH_S)
    watcher.refresh()
    assert watcher.refused_reports == 1 and len(applied) == 3
    assert ("127.0.0.1", 5432) not in applied[-1].services and "192.168.1.1" not in applied[-1].addresses
    reports[1] = _report(HOSTILE, "127.0.0.1:5433", "192.168.1.1:22")
    watcher.refresh()
    assert watcher.refused_reports == 2
    many = [Peer((0xC << 156) + i, f"10.2.1.{i}:7946") for i in range(1, 31)]
    flood_view = _view(*((p, MemberStatus.ALIVE) for p in many))
    logged: list[dict[str, object]] = []
    observer = lambda event: logged.append(event)  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        watcher._view = lambda: flood_view
        reports[:] = [_report(p, "127.0.0.1:5432", "10.2.1.1:8042") for p in many]
        clock.advance(REFRESH_S)  # a new interval (the watcher's own refresh runs)
        clock.advance(REFRESH_S)  # the next one: its first refresh sums up the flood
    finally:
        globalLogPublisher.removeObserver(observer)
        watcher.stop()
    refusals = [e for e in logged if "not believing" in str(e.get("log_format", ""))]
    assert watcher.refused_reports == 32 and len(refusals) == MAX_REFUSALS_LOGGED
    assert [e["count"] for e in logged if "more capacity reports" in str(e.get("log_format", ""))] == [30 - MAX_REFUSALS_LOGGED]


def test_nameservers_are_the_ipv4_lines_of_resolv_conf():
    """Only IPv4 nameserver lines count."""
    assert nameservers("# x\nnameserver 10.0.0.53\nnameserver ::1\nsearch lan\n") == ["10.0.0.53"]


def test_a_departed_members_address_stays_for_the_grace_then_goes():
    """A member that left keeps its address (not its endpoints) for the grace; one that comes back is fresh again."""
    both = Members(frozenset({"10.2.0.1", "10.2.0.2"}), frozenset({("10.2.0.2", 45454)}), frozenset({("10.2.0.2", 7946)}))
    alone = Members(frozenset({"10.2.0.1"}))
    kept, departed = keep_departed(both.addresses, alone, {}, now=100.0, grace=60.0)
    assert kept == Members(frozenset({"10.2.0.1", "10.2.0.2"}))
    kept, departed = keep_departed(alone.addresses, alone, departed, now=159.0, grace=60.0)
    assert kept.addresses == {"10.2.0.1", "10.2.0.2"}
    kept, departed = keep_departed(alone.addresses, alone, departed, now=160.0, grace=60.0)
    assert kept == alone and departed == {}
    kept, departed = keep_departed(both.addresses, alone, {}, now=0.0, grace=60.0)
    kept, departed = keep_departed(alone.addresses, both, departed, now=1.0, grace=60.0)
    assert kept == both and departed == {}


def test_the_watcher_keeps_a_member_that_left_the_ring_for_the_grace():
    """With a fake clock: the ring loses a member, the firewall keeps its address until the grace is over."""
    clock, applied = Clock(), []
    reports = [_report(HONEST, "10.2.0.2:45454", "10.2.0.2:8042")]
    alive = [(HONEST, MemberStatus.ALIVE)]
    watcher = MembersWatcher(clock, OwnEndpoints(("10.2.0.3:45454",), ()), applied.append, reports=lambda: reports,
                             view=lambda: _view(*alive), resolv_conf=Path("/nonexistent"))
    watcher.start()
    assert applied[-1].addresses == {"10.2.0.2", "10.2.0.3"}
    reports.clear()
    alive.clear()
    clock.advance(REFRESH_S)
    assert applied[-1].addresses == {"10.2.0.2", "10.2.0.3"} and ("10.2.0.2", 45454) not in applied[-1].services
    clock.advance(DEPARTED_GRACE_S)
    assert applied[-1].addresses == {"10.2.0.3"}
    watcher.stop()


def test_a_released_application_leaves_its_cgroup_in_no_hierarchy(tmp_path: Path) -> None:
    """The application's cgroup goes from every hierarchy (v1 controllers, one behind a symlink, and cgroup2's
    ``unified``) when it is released; the node's cgroup above it stays."""
    sandbox = ContainerSandbox(IDS, tmp_path)
    block, _ = sandbox.blocks.take("app1")
    real = ("memory", "cpu,cpuacct", "pids", "unified")
    for hierarchy in real:
        (tmp_path / hierarchy / sandbox.app_cgroup(block)).mkdir(parents=True)
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    sandbox.release("app1")
    assert [h for h in real if (tmp_path / h / sandbox.app_cgroup(block)).exists()] == []
    assert all((tmp_path / h / sandbox.node_cgroup).is_dir() for h in real)
