"""The daemon configuration: TOML into frozen dataclasses, with errors that name file, section and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cortex_rm.allocator.queues import DEFAULT_QUEUES, QueueSpec, QueueState, QueueTree
from cortex_rm.config import (
    Config,
    ConfigError,
    NodeManagerSection,
    NodeSection,
    QueueEntry,
    ResourceManagerSection,
    SchedulerSection,
    config_from_dict,
    load_config,
)
from cortex_rm.yarn.addresses import HostPort

SOURCE = "/etc/cortex/cortex.toml"


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, SOURCE)
    return str(info.value)


# -- defaults ------------------------------------------------------------------------


def test_no_file_gives_the_embedded_defaults() -> None:
    """Without a file every section has its documented default: a one-node cluster on loopback."""
    config = load_config(None)
    assert config == Config()
    assert config.source == "<defaults>"
    assert config.resourcemanager.address == HostPort("127.0.0.1", 8032)
    assert config.resourcemanager.webapp_address == HostPort("127.0.0.1", 8088)
    assert config.resourcemanager.max_app_attempts == 2
    assert (config.scheduler.maximum_allocation_mb, config.scheduler.maximum_allocation_vcores) == (8192, 4)
    assert config.scheduler.queue_tree_spec() == DEFAULT_QUEUES


def test_empty_table_gives_the_defaults_with_its_source() -> None:
    """An empty TOML document is the defaults, remembering where it came from."""
    config = config_from_dict({}, SOURCE)
    assert dataclasses.replace(config, source="<defaults>") == Config()
    assert config.source == SOURCE


def test_state_store_url_defaults_to_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    """With no state_store_url the RM keeps its state in <state_dir>/rm-state.sqlite; an explicit URL wins."""
    config = config_from_dict({"node": {"state_dir": str(tmp_path)}})
    assert config.state_dir == tmp_path
    assert config.state_store_url == f"sqlite:///{tmp_path.resolve() / 'rm-state.sqlite'}"
    explicit = config_from_dict({"resourcemanager": {"state_store_url": "sqlite:///:memory:"}})
    assert explicit.state_store_url == "sqlite:///:memory:"


def test_configuration_objects_are_frozen() -> None:
    """Parsed configuration cannot be changed after loading."""
    config = config_from_dict({"node": {"name": "n1"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node.name = "n2"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node = NodeSection()  # type: ignore[misc]


# -- unknown keys and wrong types ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key", "where"),
    [
        ({"nodes": {}}, "nodes", "the top level"),
        ({"source": "x"}, "source", "the top level"),
        ({"resourcemanager": {"adress": "h:1"}}, "adress", "[resourcemanager]"),
        ({"scheduler": {"queues": []}}, "queues", "[scheduler]"),
        ({"scheduler": {"queue": [{"path": "root.a", "capacty": 5}]}}, "capacty", "[scheduler.queue[0]]"),
    ],
)
def test_unknown_key_is_an_error_naming_file_section_and_key(raw: dict[str, Any], key: str, where: str) -> None:
    """A misspelt key never falls back to a default: the error names the file, the section and the key."""
    message = _error(raw)
    assert message.startswith(SOURCE)
    assert f"unknown key {key!r} in {where}" in message
    assert "known keys:" in message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"resourcemanager": {"max_app_attempts": "2"}}, "resourcemanager.max_app_attempts must be int, not str"),
        ({"resourcemanager": {"max_app_attempts": True}}, "resourcemanager.max_app_attempts must be int, not bool"),
        ({"resourcemanager": {"max_app_attempts": 2.0}}, "resourcemanager.max_app_attempts must be int, not float"),
        ({"resourcemanager": {"enabled": 1}}, "resourcemanager.enabled must be bool, not int"),
        ({"node": {"host": 127}}, "node.host must be str, not int"),
        ({"node": "n1"}, "node must be a table"),
        ({"scheduler": {"queue": {"path": "root.a"}}}, "scheduler.queue must be a list"),
        ({"scheduler": {"queue": ["root.a"]}}, "scheduler.queue[0] must be a table"),
        ({"scheduler": {"queue": [{"path": "root.a", "capacity": "50"}]}}, "scheduler.queue[0].capacity must be float"),
        ({"scheduler": {"queue": [{"path": "root.a", "capacity": True}]}}, "scheduler.queue[0].capacity must be float"),
    ],
)
def test_value_of_the_wrong_type_is_an_error_naming_the_key(raw: dict[str, Any], fragment: str) -> None:
    """Wrong types are refused by key (bools are not ints, floats are not ints, tables must be tables)."""
    message = _error(raw)
    assert message.startswith(SOURCE)
    assert fragment in message


def test_integer_capacity_is_taken_as_float() -> None:
    """``capacity = 70`` is a valid float field."""
    config = config_from_dict(
        {"scheduler": {"queue": [{"path": "root.a", "capacity": 70}, {"path": "root.b", "capacity": 30}]}}
    )
    assert config.scheduler.queue[0] == QueueEntry("root.a", 70.0)
    assert isinstance(config.scheduler.queue[0].capacity, float)


def test_queue_entry_without_path_is_an_error() -> None:
    """Every queue entry must say which queue it is."""
    assert "path" in _error({"scheduler": {"queue": [{"capacity": 50}]}})


# -- queues --------------------------------------------------------------------------


def test_queue_entries_build_the_tree_with_implied_parents() -> None:
    """Entries name queues by full path; a parent named only by its children exists with the defaults."""
    config = config_from_dict(
        {
            "scheduler": {
                "queue": [
                    {"path": "root.default", "capacity": 70},
                    {"path": "root.team.etl", "capacity": 40, "state": "STOPPED"},
                    {"path": "root.team.ml", "capacity": 60, "maximum_capacity": 80},
                    {"path": "root.team", "capacity": 30, "maximum_capacity": 50},
                ]
            }
        }
    )
    spec = config.scheduler.queue_tree_spec()
    assert spec == QueueSpec(
        "root",
        children=(
            QueueSpec("default", capacity=70),
            QueueSpec(
                "team",
                capacity=30,
                maximum_capacity=50,
                children=(
                    QueueSpec("etl", capacity=40, state=QueueState.STOPPED),
                    QueueSpec("ml", capacity=60, maximum_capacity=80),
                ),
            ),
        ),
    )
    tree = QueueTree(spec)
    assert tree.find("ml").absolute_capacity == pytest.approx(0.3 * 0.6)


def test_parent_implied_by_deep_leaves_takes_the_whole_of_its_parent() -> None:
    """``root.a.b.c`` alone implies ``root.a`` and ``root.a.b`` at 100%."""
    spec = config_from_dict({"scheduler": {"queue": [{"path": "root.a.b.c"}]}}).scheduler.queue_tree_spec()
    assert spec == QueueSpec("root", children=(QueueSpec("a", children=(QueueSpec("b", children=(QueueSpec("c"),)),)),))


@pytest.mark.parametrize(
    ("queues", "fragment"),
    [
        ([{"path": "root.a", "capacity": 60}, {"path": "root.b", "capacity": 30}], "sum to 100, not 90"),
        ([{"path": "root.a", "capacity": 60, "maximum_capacity": 50}, {"path": "root.b", "capacity": 40}], "root.a"),
        ([{"path": "root.a", "capacity": 100, "maximum_capacity": 101}], "maximum_capacity=101"),
        ([{"path": "root.a.x", "capacity": 100}, {"path": "root.b", "capacity": 50}], "sum to 100, not 150"),
        ([{"path": "root", "capacity": 50}, {"path": "root.a"}], "root"),
    ],
)
def test_bad_capacities_are_errors_naming_the_queue(queues: list[dict[str, Any]], fragment: str) -> None:
    """Capacities that do not form a valid tree are refused at load, naming [[scheduler.queue]]."""
    message = _error({"scheduler": {"queue": queues}})
    assert message.startswith(f"{SOURCE}: [[scheduler.queue]]")
    assert fragment in message


@pytest.mark.parametrize(
    ("queues", "fragment"),
    [
        ([{"path": "default"}], "must start with 'root'"),
        ([{"path": "rootx.a"}], "rootx.a"),
        ([{"path": "root_queue"}], "root_queue"),
        ([{"path": "root..a"}], "root..a"),
        ([{"path": "root.a."}], "root.a."),
        ([{"path": "root.a", "state": "DRAINING"}], "state must be RUNNING or STOPPED"),
        ([{"path": "root.a", "capacity": 40}, {"path": "root.a", "capacity": 60}], "root.a"),
    ],
)
def test_bad_queue_paths_and_states_are_config_errors(queues: list[dict[str, Any]], fragment: str) -> None:
    """Paths outside root, empty path segments, repeated paths and unknown states are ConfigErrors naming the queue."""
    message = _error({"scheduler": {"queue": queues}})
    assert message.startswith(SOURCE)
    assert fragment in message


# -- limits and addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"resourcemanager": {"max_app_attempts": 0}}, "max_app_attempts must be at least 1"),
        pytest.param({"resourcemanager": {"ipc_max_data_length": 1023}}, "ipc_max_data_length", id="frame-limit"),
        pytest.param({"resourcemanager": {"ipc_max_data_length": 2**31}}, "ipc_max_data_length", id="frame-limit-int32"),
        ({"resourcemanager": {"max_application_priority": -1}}, "max_application_priority"),
        ({"scheduler": {"maximum_allocation_mb": 0}}, "maximum allocations must be positive"),
        ({"scheduler": {"maximum_allocation_vcores": -1}}, "maximum allocations must be positive"),
        ({"ring": {"key_bits": 33}}, "ring key_bits must lie in [0, 32]"),
        ({"ring": {"key_bits": -1}}, "ring key_bits must lie in [0, 32]"),
        ({"resourcemanager": {"am_node_class": "volatile"}}, 'am_node_class must be "static" or "any"'),
        ({"resourcemanager": {"am_static_wait_s": -1}}, "am_static_wait_s must not be negative"),
        ({"resourcemanager": {"journal_log_tail": -1}}, "journal_log_tail must be within [0, 1000000]"),
        ({"resourcemanager": {"journal_log_tail": 1_000_001}}, "journal_log_tail must be within [0, 1000000]"),
        ({"resourcemanager": {"am_blacklisting_disable_failure_threshold": 1.5}}, "disable_failure_threshold"),
        ({"resourcemanager": {"am_blacklisting_disable_failure_threshold": -0.1}}, "disable_failure_threshold"),
        ({"ring": {"attestation_interval_s": 0}}, "ring.attestation_interval_s must lie in [1, 86400], not 0"),
        ({"ring": {"attestation_interval_s": 86_401}}, "ring.attestation_interval_s must lie in [1, 86400]"),
        ({"ring": {"direct_messages_per_s": 0}}, "ring.direct_messages_per_s must be at least 1, not 0"),
        ({"ring": {"direct_mib_per_s": -1}}, "ring.direct_mib_per_s must be at least 1, not -1"),
        ({"nodemanager": {"disk_gb": -1}}, "nodemanager.disk_gb must be 0 (no cap) or positive, not -1"),
        ({"nodemanager": {"disk_gb": "10"}}, "nodemanager.disk_gb must be float"),
    ],
)
def test_limits_out_of_range_are_errors(raw: dict[str, Any], fragment: str) -> None:
    """Attempts below 1, a tiny IPC frame limit, a negative priority ceiling, non-positive allocations, a ring
    key puzzle outside [0, 32] bits, an attestation interval outside a second to a day or a negative disk cap
    are refused."""
    message = _error(raw)
    assert message.startswith(SOURCE)
    assert fragment in message


def test_am_placement_keys_are_read_from_the_file() -> None:
    """am_node_class, am_static_wait_s and YARN's AM blacklisting keys reach the ResourceManager section; the
    defaults are static AMs waiting 60 s for a static node and blacklisting on at 0.8
    (yarn.am.blacklisting.disable-failure-threshold)."""
    defaults = load_config(None).resourcemanager
    assert (defaults.am_node_class, defaults.am_static_wait_s, defaults.am_blacklisting_enabled) == ("static", 60, True)
    assert defaults.am_blacklisting_disable_failure_threshold == 0.8
    section = config_from_dict(
        {"resourcemanager": {"am_node_class": "any", "am_static_wait_s": 0, "am_blacklisting_enabled": False,
                             "am_blacklisting_disable_failure_threshold": 1}},
        SOURCE,
    ).resourcemanager
    assert (section.am_node_class, section.am_static_wait_s, section.am_blacklisting_enabled) == ("any", 0, False)
    assert section.am_blacklisting_disable_failure_threshold == 1.0


@pytest.mark.parametrize("key", ["address", "scheduler_address", "webapp_address"])
@pytest.mark.parametrize("value", ["localhost", ":8032", "localhost:", "localhost:http", "localhost:65536", "h:-1"])
def test_bad_resourcemanager_address_names_the_key(key: str, value: str) -> None:
    """An RM address that is not host:port with a port in 0..65535 is refused, naming the key."""
    message = _error({"resourcemanager": {key: value}})
    assert f"{SOURCE}: resourcemanager.{key}" in message
    assert repr(value) in message


def test_bad_nodemanager_address_names_the_key() -> None:
    """The NodeManager web address is checked the same way."""
    assert f"{SOURCE}: nodemanager.webapp_address" in _error({"nodemanager": {"webapp_address": "nm"}})


# -- files ---------------------------------------------------------------------------

EXAMPLE = """
[node]
name = "node1"
state_dir = "/var/lib/cortex-rm"
host = "10.0.0.5"

[resourcemanager]
enabled = true
address = "10.0.0.5:8032"
max_app_attempts = 3
max_application_priority = 10

[scheduler]
maximum_allocation_mb = 16384

[[scheduler.queue]]
path = "root.default"
capacity = 70
[[scheduler.queue]]
path = "root.batch"
capacity = 30
maximum_capacity = 50

[nodemanager]
enabled = false
memory_mb = 4096
"""


def test_toml_file_loads_into_the_configuration(tmp_path: Path) -> None:
    """A real TOML file is read into the sections, with unspecified keys at their defaults."""
    path = tmp_path / "cortex.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config == Config(
        node=NodeSection(name="node1", state_dir="/var/lib/cortex-rm", host="10.0.0.5"),
        resourcemanager=ResourceManagerSection(address=HostPort("10.0.0.5", 8032), max_app_attempts=3, max_application_priority=10),
        scheduler=SchedulerSection(
            maximum_allocation_mb=16384,
            queue=(QueueEntry("root.default", 70.0), QueueEntry("root.batch", 30.0, 50.0)),
        ),
        nodemanager=NodeManagerSection(enabled=False, memory_mb=4096),
        source=str(path),
    )
    assert load_config(str(path)) == config
    assert QueueTree(config.scheduler.queue_tree_spec()).find("batch").absolute_maximum_capacity == 0.5


def test_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    """A mistake in a file is reported with the file's path, the section and the key."""
    path = tmp_path / "cortex.toml"
    path.write_text('[resourcemanager]\nadress = "h:1"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key 'adress' in \[resourcemanager\]"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist is a ConfigError saying so."""
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError naming the file."""
    path = tmp_path / "cortex.toml"
    path.write_text("[node\nname = 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML"):
        load_config(path)


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    """A directory given as the configuration file is a ConfigError, not a stray OSError."""
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(tmp_path)


# -- the NodeManager's containers ---------------------------------------------------


def test_nodemanager_dirs_default_under_the_state_dir(tmp_path: Path) -> None:
    """Without local_dirs/log_dirs the NM uses <state_dir>/nm-local-dir and <state_dir>/nm-logs;
    readonly_dirs defaults to the installed pyspark package; java_home to Debian's JDK 17."""
    config = config_from_dict({"node": {"state_dir": str(tmp_path)}})
    dirs = config.nodemanager_dirs
    assert dirs.local_dirs == (tmp_path.resolve() / "nm-local-dir",)
    assert dirs.log_dirs == (tmp_path.resolve() / "nm-logs",)
    assert dirs.java_home == Path("/usr/lib/jvm/java-17-openjdk-amd64")
    import pyspark

    assert dirs.readonly_dirs == (Path(pyspark.__file__).resolve().parent,)
    nm = config.nodemanager
    assert (nm.container_memory_overhead_mb, nm.pids_limit, nm.runtime) == (256, 4096, "lxc")


def test_nodemanager_dirs_as_configured(tmp_path: Path) -> None:
    """Configured dirs are used as given (resolved); readonly_dirs = [] means none."""
    config = config_from_dict(
        {
            "nodemanager": {
                "local_dirs": [str(tmp_path / "a"), str(tmp_path / "b")],
                "log_dirs": [str(tmp_path / "logs")],
                "readonly_dirs": [],
                "shared_dirs": ["/srv/shared"],
                "java_home": "/opt/jdk",
            }
        }
    )
    dirs = config.nodemanager_dirs
    assert dirs.local_dirs == (tmp_path / "a", tmp_path / "b")
    assert dirs.log_dirs == (tmp_path / "logs",)
    assert dirs.readonly_dirs == ()
    assert dirs.shared_dirs == (Path("/srv/shared"),)
    assert dirs.java_home == Path("/opt/jdk")


@pytest.mark.parametrize(
    ("nodemanager", "message"),
    [
        ({"runtime": "process"}, "'process' is not a container runtime"),
        ({"pids_limit": 3}, "pids_limit must be at least"),
        ({"container_memory_overhead_mb": -1}, "container_memory_overhead_mb must not be negative"),
        ({"java_home": "jdk"}, "java_home: 'jdk' is not an absolute path"),
        ({"readonly_dirs": ["spark"]}, "readonly_dirs: 'spark' is not an absolute path"),
        ({"shared_dirs": ["data"]}, "shared_dirs: 'data' is not an absolute path"),
        ({"local_dirs": ["/x", "/x"]}, "local_dirs names a directory twice"),
        ({"log_dirs": [""]}, "log_dirs has an empty path"),
        ({"local_dirs": ["/x"], "log_dirs": ["/x"]}, "both a local dir and a log dir"),
        ({"readonly_dirs": "/opt"}, "nodemanager.readonly_dirs must be a list"),
        ({"local_dirs": [1]}, r"nodemanager.local_dirs\[0\] must be str"),
    ],
)
def test_invalid_nodemanager_container_settings_are_refused(nodemanager: dict[str, Any], message: str) -> None:
    """Each bad container setting is an error naming the key."""
    import re

    assert re.search(message, _error({"nodemanager": nodemanager}))


def test_the_attestation_interval_reaches_the_ring_and_its_witness() -> None:
    """[ring] attestation_interval_s (default an hour) is RingConfig.attestation_interval and the witness's interval."""
    assert config_from_dict({}).ring.ring_config().witness_config().attestation_interval_ms == 3_600_000
    ring = config_from_dict({"ring": {"attestation_interval_s": 600}}, SOURCE).ring.ring_config()
    assert ring.attestation_interval == 600.0 and ring.witness_config().attestation_interval_ms == 600_000


def test_the_direct_message_limits_reach_the_ring_with_bursts_of_twice_the_rate() -> None:
    """[ring] direct_messages_per_s (2,000) and direct_mib_per_s (64) are the ring's per-sender Direct limits."""
    default = config_from_dict({}).ring.ring_config()
    assert (default.direct_rate, default.direct_burst) == (2000, 4000)
    assert (default.direct_bytes_rate, default.direct_bytes_burst) == (64 * 2**20, 128 * 2**20)
    ring = config_from_dict({"ring": {"direct_messages_per_s": 500, "direct_mib_per_s": 1}}, SOURCE).ring.ring_config()
    assert (ring.direct_rate, ring.direct_burst, ring.direct_bytes_rate, ring.direct_bytes_burst) == (500, 1000, 2**20, 2**21)


def test_the_ring_refuses_wildcard_addresses_it_would_advertise() -> None:
    """The ring advertises ring.address and the RM publishes its addresses: a wildcard
    there is an error that says what to give instead."""
    with pytest.raises(ConfigError, match="ring.address.*wildcard"):
        config_from_dict({"ring": {"address": "0.0.0.0:7946"}})
    with pytest.raises(ConfigError, match="resourcemanager.address is a wildcard"):
        config_from_dict({"resourcemanager": {"address": "0.0.0.0:8032"}})
    config_from_dict({"ring": {"enabled": False}, "resourcemanager": {"address": "0.0.0.0:8032"},
                      "nodemanager": {"resourcemanager_tracker": "127.0.0.1:8031"}})


def test_queue_acls_and_the_anonymous_access_are_read_from_the_file() -> None:
    """acl_submit_applications / acl_administer_queue become the queues' ACLs (unset stays unset);
    anonymous_access takes only its two values."""
    config = config_from_dict(
        {
            "resourcemanager": {"anonymous_access": "none"},
            "scheduler": {
                "queue": [
                    {"path": "root", "acl_submit_applications": " "},
                    {"path": "root.prod", "capacity": 60, "acl_submit_applications": "alice,bob", "acl_administer_queue": "ops"},
                    {"path": "root.dev", "capacity": 40},
                ]
            },
        }
    )
    assert config.resourcemanager.anonymous_access == "none"
    tree = QueueTree(config.scheduler.queue_tree_spec())
    assert tree.may_submit(tree.find("prod"), "bob") and not tree.may_submit(tree.find("dev"), "bob")
    assert tree.may_administer(tree.find("prod"), "ops")
    with pytest.raises(ConfigError, match="anonymous_access"):
        config_from_dict({"resourcemanager": {"anonymous_access": "everything"}})


def test_a_nodemanager_that_finds_the_rm_through_the_ring_must_name_the_rms_ring_ids() -> None:
    """Without [ring] resource_managers anyone's first write of the RM's record would be believed."""
    with pytest.raises(ConfigError, match="resource_managers must name the ring id"):
        config_from_dict({"resourcemanager": {"enabled": False}})
    config_from_dict({"resourcemanager": {"enabled": False}, "ring": {"resource_managers": ["ab" * 20]}})
    config_from_dict({"resourcemanager": {"enabled": False}, "nodemanager": {"resourcemanager_tracker": "127.0.0.1:8031"}})
    config_from_dict({})  # the RM's own node: it pins itself


def test_ledger_mirror_defaults_to_the_rm_eligible_nodes_that_do_not_run_the_rm() -> None:
    """``[accounting] mirror`` unset: RM-eligible non-RM nodes mirror; true/false decide; it needs the ring."""
    from cortex_rm.config import AccountingSection, ConfigError, config_from_dict

    rms = frozenset({5})
    assert AccountingSection().mirrors(5, rms, runs_rm=False)
    assert not AccountingSection().mirrors(5, rms, runs_rm=True)
    assert not AccountingSection().mirrors(6, rms, runs_rm=False)
    assert AccountingSection(mirror=True).mirrors(6, rms, runs_rm=False)
    assert not AccountingSection(mirror=False).mirrors(5, rms, runs_rm=False)
    config = config_from_dict({"accounting": {"mirror": True, "mirror_interval_s": 2}})
    assert config.accounting.mirror is True and config.accounting.mirror_interval_s == 2.0
    try:
        config_from_dict({"ring": {"enabled": False}, "nodemanager": {"resourcemanager_tracker": "127.0.0.1:8031"},
                          "accounting": {"mirror": True}})
    except ConfigError as e:
        assert "accounting.mirror needs [ring]" in str(e)
    else:
        raise AssertionError("mirror without the ring was accepted")


def test_events_running_bounds_are_read_and_checked() -> None:
    """``[events] max_running_mb`` and ``max_running_per_user`` reach the section; zero is refused by key."""
    events = config_from_dict({"events": {"max_running_mb": 8, "max_running_per_user": 5}}).events
    assert (events.max_running_mb, events.max_running_per_user) == (8, 5)
    assert "events.max_running_per_user must lie in 1.." in _error({"events": {"max_running_per_user": 0}})
    assert "events.max_running_mb must lie in 1.." in _error({"events": {"max_running_mb": 0}})


def test_disk_cap_is_an_ordinary_key_with_no_cap_by_default() -> None:
    """[nodemanager] disk_gb is read like memory_mb and vcores; absent, it is 0 (no cap)."""
    assert Config().nodemanager.disk_gb == 0
    assert config_from_dict({"nodemanager": {"disk_gb": 10}}, SOURCE).nodemanager.disk_gb == 10
