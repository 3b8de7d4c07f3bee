"""``local-cluster up --rm-standbys N``: the nodes' configurations (which nodes are RM-eligible,
their own RM ports, ``[ring] resource_managers`` in preference order), the eligible nodes' keys
made up front, and the guard on N."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cortex_rm.config import load_config
from cortex_rm.internal.identity import IDENTITY_DIR, KNOWN_RMS_FILE, KnownResourceManagers, NodeIdentity
from cortex_rm.local_cluster import LocalClusterError, up
from cortex_rm.local_cluster_config import YARN_PORTS, NodePlan, plan_nodes, rm_identities, with_tables
from cortex_rm.yarn.addresses import HostPort

KEY_BITS = 4  # a puzzle solved in a few keys: the test is about which keys, not their cost
RING_IDS = ("a" * 40, "b" * 40, "c" * 40)
RM_RECORD = "ring:cortex:resourcemanager"  # the address a node pins the RM's key under


def written(tmp_path: Path, plans: list[NodePlan]) -> list[Path]:
    """Each plan's config written where its node keeps state."""
    paths = []
    for plan in plans:
        path = tmp_path / plan.name / "cortex.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(plan.config_text)
        paths.append(path)
    return paths


def test_with_two_standbys_nodes_1_to_3_run_an_rm_on_ports_of_their_own_and_all_name_them_node1_first(
    tmp_path: Path,
) -> None:
    """Four nodes on loopback, three ring ids given: nodes 1-3 enable the RM, each on 127.0.0.1 with
    four ports no other node uses, the addresses their plan (cluster.json) records; node4 does not;
    every node's config validates and names the three ids in the given order; node1 introduces."""
    hosts = [f"127.0.0.{i}" for i in range(1, 5)]
    state_dirs = [tmp_path / f"node{i}" for i in range(1, 5)]
    plans = plan_nodes(hosts, state_dirs, itertools.count(30000), RING_IDS, [1, 2, 3, 4])
    configs = [load_config(path) for path in written(tmp_path, plans)]
    assert [c.resourcemanager.enabled for c in configs] == [True, True, True, False]
    assert [c.ring.resource_managers for c in configs] == [RING_IDS] * 4
    rm_ports = set()
    for plan, config in zip(plans[:3], configs[:3]):
        section = config.resourcemanager
        addresses = (section.address, section.scheduler_address, section.webapp_address, section.tracker_address)
        assert {a.host for a in addresses} == {"127.0.0.1"}
        rm_ports |= {a.port for a in addresses}
        assert plan.rm is not None
        assert (plan.rm.client, plan.rm.scheduler, plan.rm.webapp) == addresses[:3]
    assert len(rm_ports) == 12 and plans[3].rm is None
    every_port = [port for plan in plans for port in plan.ports.values()]
    assert len(every_port) == len(set(every_port)) == 3 * 4 + 4 * 3
    assert [c.ring.introducers for c in configs[1:]] == [(HostPort("127.0.0.1", plans[0].ports["ring"]),)] * 3
    assert configs[0].ring.introducers == ()


def test_isolated_rm_eligible_nodes_use_yarns_ports_at_their_own_address(tmp_path: Path) -> None:
    """Isolated (each node an address of its own): each eligible node's RM is at its own address on
    YARN's usual ports."""
    hosts = ["10.7.0.2", "10.7.0.3", "10.7.0.4"]
    state_dirs = [tmp_path / f"node{i}" for i in range(1, 4)]
    plans = plan_nodes(hosts, state_dirs, None, RING_IDS[:2], [1, 2, 3], isolated=True)
    configs = [load_config(path) for path in written(tmp_path, plans)]
    for host, config in zip(hosts[:2], configs[:2]):
        assert config.resourcemanager.address == HostPort(host, YARN_PORTS["rm"])
        assert config.resourcemanager.webapp_address == HostPort(host, YARN_PORTS["rm_web"])
    assert not configs[2].resourcemanager.enabled


def test_rm_config_goes_to_every_eligible_node_and_node_config_to_the_others(tmp_path: Path) -> None:
    """The RM's added tables (queues, ACLs...) are every RM-eligible node's: any may become active."""
    rm_config = '[[scheduler.queue]]\nname = "root.team"\ncapacity = 100\n'
    plans = plan_nodes(
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"], [tmp_path / f"node{i}" for i in range(1, 4)], itertools.count(31000),
        RING_IDS[:2], [1, 2, 3], rm_config=rm_config, node_config="# a node's own\n",
    )  # fmt: skip
    assert [rm_config in p.config_text for p in plans] == [True, True, False]
    assert ["# a node's own" in p.config_text for p in plans] == [False, False, True]


def test_the_eligible_nodes_keys_are_made_once_in_parallel_and_stale_pins_dropped(tmp_path: Path) -> None:
    """Three eligible nodes: three distinct keys solving the puzzle, in node1..node3's state dirs; asked
    again, the same keys.  A node's pin of a key none of them has is dropped; a pin of one is kept."""
    stranger = NodeIdentity.generate(key_bits=KEY_BITS).fingerprint
    pins = KnownResourceManagers(tmp_path / "node4" / IDENTITY_DIR / KNOWN_RMS_FILE)
    pins.pin(RM_RECORD, stranger)
    said: list[str] = []
    first = rm_identities(tmp_path, 4, 3, said.append, key_bits=KEY_BITS)
    assert len({i.ring_id for i in first}) == 3
    assert [NodeIdentity.load_or_create(tmp_path / f"node{n}", key_bits=KEY_BITS).fingerprint for n in (1, 2, 3)] == [
        i.fingerprint for i in first
    ]
    assert not (tmp_path / "node4" / IDENTITY_DIR / KNOWN_RMS_FILE).exists()
    assert sum("pinned another RM key" in line for line in said) == 1
    KnownResourceManagers(pins.path).pin(RM_RECORD, first[2].fingerprint)
    again = rm_identities(tmp_path, 4, 3, said.append, key_bits=KEY_BITS)
    assert [i.fingerprint for i in again] == [i.fingerprint for i in first]
    assert (tmp_path / "node4" / IDENTITY_DIR / KNOWN_RMS_FILE).exists()


@pytest.mark.parametrize(("nodes", "standbys"), [(3, 3), (1, 1), (3, -1)])
def test_standbys_must_be_fewer_than_the_nodes(tmp_path: Path, nodes: int, standbys: int) -> None:
    """N standbys need N + 1 nodes (node1 is the first active RM); nothing is made otherwise."""
    with pytest.raises(LocalClusterError, match="--rm-standbys"):
        up(tmp_path / "cluster", nodes, say=lambda _: None, image=False, spark_archive=False, rm_standbys=standbys)
    assert not (tmp_path / "cluster").exists()


def test_added_tables_that_the_generated_config_has_are_merged_into_it(tmp_path: Path) -> None:
    """TOML allows a table once: an added ``[nodemanager]`` (a smaller NodeManager for the RM-eligible nodes)
    goes into the generated one; arrays of tables and new tables are appended; every config validates."""
    rm_config = '[nodemanager]\nmemory_mb = 256\n[[scheduler.queue]]\npath = "root.team"\ncapacity = 100\n'
    plans = plan_nodes(
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"], [tmp_path / f"node{i}" for i in range(1, 4)], itertools.count(32000),
        RING_IDS[:2], [1, 2, 3], rm_config=rm_config, node_config="[nodemanager]\nvcores = 2\n",
    )  # fmt: skip
    configs = [load_config(path) for path in written(tmp_path, plans)]
    assert [c.nodemanager.memory_mb for c in configs[:2]] == [256, 256]
    assert configs[2].nodemanager.memory_mb != 256 and configs[2].nodemanager.vcores == 2
    assert all(c.nodemanager.address.port == plan.ports["nm"] for c, plan in zip(configs, plans))
    assert [q.path for q in configs[0].scheduler.queue] == ["root.team"]


def test_added_config_must_hold_tables_only() -> None:
    """A key before any header would fall into the generated config's last table: refused, saying why."""
    with pytest.raises(ValueError, match="before any"):
        with_tables("[ring]\nx = 1\n", "seeds = 3\n[nodemanager]\nvcores = 2\n", "added")
    assert with_tables("[ring]\nx = 1\n", "# only a comment\n", "added").endswith("# added\n# only a comment\n")
