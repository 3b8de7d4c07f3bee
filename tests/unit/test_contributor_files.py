"""The texts `contributor install` writes: the node's config (read back by the config layer), the systemd
unit, the container id range that avoids /etc/subuid and /etc/subgid, and the install manifest."""

from __future__ import annotations

import configparser
import dataclasses
import json
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.config import ConfigError
from cortex_rm.container.id_ranges import BLOCK, DEFAULT_BASE, DEFAULT_COUNT, IdRange
from cortex_rm.contributor_files import (
    STATE_DIR, ContributorError, Manifest, NodeOffer, check_config_text, config_text, free_id_range, systemd_word,
    unit_text,
)  # fmt: skip
from cortex_rm.yarn.addresses import HostPort

RM_ID = "0123456789abcdef0123456789abcdef01234567"
OFFER = NodeOffer(
    introducer=HostPort("192.0.2.10", 7946), resource_managers=(RM_ID,), host="192.0.2.20", vcores=2, memory_mb=2048,
    disk_gb=10, container_id_range=f"{DEFAULT_BASE}:{DEFAULT_COUNT}",
)  # fmt: skip
EXEC = ["/opt/cortex/bin/cortex-rm", "node", "--config", "/etc/cortex-rm/cortex.toml"]


def test_config_text_is_a_valid_config_with_the_caps() -> None:
    """The config reads back through the config layer: the caps as [nodemanager] keys, the introducer and the
    RM's ring id in [ring], the state dir, every address on the given host, and no ResourceManager."""
    config = check_config_text(config_text(OFFER))
    nm = config.nodemanager
    assert (nm.vcores, nm.memory_mb, nm.disk_gb) == (2, 2048, 10)
    assert config.ring.introducers == (HostPort("192.0.2.10", 7946),)
    assert config.ring.resource_managers == (RM_ID,)
    assert str(config.state_dir) == str(STATE_DIR)
    assert {nm.address.host, nm.webapp_address.host, config.ring.address.host, config.node.host} == {"192.0.2.20"}
    assert nm.container_id_range == OFFER.container_id_range
    assert not config.resourcemanager.enabled


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"vcores": 0}, "nodemanager memory_mb and vcores must be positive"),
        ({"memory_mb": -1}, "nodemanager memory_mb and vcores must be positive"),
        ({"disk_gb": -5}, "nodemanager.disk_gb must be 0 (no cap) or positive"),
        ({"resource_managers": ()}, "resource_managers must name the ring id"),
        ({"resource_managers": ("abc",)}, "'abc' is not a ring id"),
        ({"host": "0.0.0.0"}, "wildcard"),
        ({"container_id_range": "5:7"}, "container_id_range"),
    ],
)
def test_config_text_refuses_what_the_daemon_would(change: dict[str, Any], fragment: str) -> None:
    """A cap below its minimum, no or a malformed RM ring id, a wildcard host or a bad id range is the config
    layer's ConfigError, raised before any text is returned (so before anything is written)."""
    offer = dataclasses.replace(OFFER, **change)
    with pytest.raises(ConfigError) as info:
        config_text(offer)
    assert fragment in str(info.value)


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string(text)
    return parser


def test_unit_runs_the_daemon_with_restart_graceful_stop_and_sandboxing() -> None:
    """The unit runs the given command with its state dir, reloads it with SIGHUP, restarts on failure, sends SIGTERM to the daemon alone
    with room to leave, delegates cgroups, and has only the sandboxing that LXC survives."""
    service = _unit(unit_text(EXEC))["Service"]
    assert service["ExecStart"] == " ".join(EXEC)
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the caps, re-read without a restart
    assert service["StateDirectory"] == "cortex-rm"
    assert service["Restart"] == "on-failure"
    assert (service["KillMode"], service["KillSignal"]) == ("mixed", "SIGTERM")
    assert int(service["TimeoutStopSec"].removesuffix("s")) >= 60
    assert service["Delegate"] == "yes"
    assert (service["ProtectSystem"], service["ProtectHome"], service["PrivateTmp"]) == ("full", "read-only", "yes")
    for breaks_lxc in ("NoNewPrivileges", "ProtectControlGroups", "ProtectKernelTunables", "PrivateDevices",
                       "RestrictNamespaces", "MemoryDenyWriteExecute", "CapabilityBoundingSet", "User"):  # fmt: skip
        assert breaks_lxc not in service
    assert _unit(unit_text(EXEC))["Install"]["WantedBy"] == "multi-user.target"


def test_unit_refuses_a_relative_program() -> None:
    """systemd needs an absolute path for ExecStart's program."""
    with pytest.raises(ValueError, match="absolute"):
        unit_text(["cortex-rm", "node"])


@pytest.mark.parametrize(
    ("word", "written"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("--config", "--config"),
        ("/opt/my venv/bin/python", '"/opt/my venv/bin/python"'),
        ("/opt/100%/python", "/opt/100%%/python"),
        ('/a"b\\c', '"/a\\"b\\\\c"'),
    ],
)
def test_systemd_words_are_quoted_and_specifiers_escaped(word: str, written: str) -> None:
    """Plain words stay bare; a space or quote makes a double-quoted word with \\ and " escaped; % is doubled."""
    assert systemd_word(word) == written


@pytest.mark.parametrize("word", ["", "a\nb", "tab\there"])
def test_systemd_words_refuse_empty_and_control_characters(word: str) -> None:
    """An empty word or a control character cannot be written on a unit's command line."""
    with pytest.raises(ValueError):
        systemd_word(word)


def test_free_range_is_the_default_when_nothing_meets_it() -> None:
    """Usual /etc/subuid entries (100000-based) leave the default range free."""
    found = free_id_range(["root:100000:65536\nalice:165536:65536\n", "root:100000:65536\n"])
    assert found == IdRange(DEFAULT_BASE, DEFAULT_COUNT)


def test_free_range_steps_past_an_entry_of_either_file() -> None:
    """An entry that meets the default range, in subuid or subgid, moves the range to the next free one."""
    assert free_id_range(["", f"lxd:{DEFAULT_BASE + 5}:1\n"]) == IdRange(DEFAULT_BASE + DEFAULT_COUNT, DEFAULT_COUNT)
    both = [f"a:{DEFAULT_BASE}:1\n", f"b:{DEFAULT_BASE + DEFAULT_COUNT}:{BLOCK}\n"]
    assert free_id_range(both) == IdRange(DEFAULT_BASE + 2 * DEFAULT_COUNT, DEFAULT_COUNT)


def test_free_range_runs_out_below_two_to_the_31() -> None:
    """When entries cover everything from the default base to 2**31 there is no range, and the error says so."""
    with pytest.raises(ContributorError, match="container_id_range by hand"):
        free_id_range([f"all:{DEFAULT_BASE}:{2**31 - DEFAULT_BASE}\n"])


@given(st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 2**28)), max_size=8))
def test_free_range_never_meets_an_entry(entries: list[tuple[int, int]]) -> None:
    """Whatever the entries, a range found is whole blocks below 2**31 and meets none of them."""
    text = "".join(f"u{i}:{start}:{count}\n" for i, (start, count) in enumerate(entries))
    try:
        found = free_id_range([text])
    except ContributorError:
        return
    found.check()
    assert not any(found.overlaps(start, count) for start, count in entries)


def test_manifest_reads_back_what_it_wrote() -> None:
    """The manifest's text parses into the same files and made directories."""
    manifest = Manifest(("/etc/cortex-rm/cortex.toml", "/etc/cortex-rm/install.json"), ("/etc/cortex-rm",))
    assert Manifest.parse(manifest.text(), "m") == manifest


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"files": []}',
        '{"files": "x", "made_dirs": []}',
        '{"files": ["etc/passwd"], "made_dirs": []}',
        '{"files": ["/etc/cortex-rm/../passwd"], "made_dirs": []}',
        '{"files": [], "made_dirs": [3]}',
    ],
)
def test_manifest_refuses_what_install_never_writes(text: str) -> None:
    """Uninstall removes only absolute paths without '..' from a well-formed manifest; anything else is refused."""
    with pytest.raises(ContributorError, match="/etc/cortex-rm/install.json"):
        Manifest.parse(text, "/etc/cortex-rm/install.json")


def test_state_dir_is_the_units_state_directory() -> None:
    """The config's state dir is where systemd's StateDirectory=cortex-rm puts it."""
    assert STATE_DIR == PurePosixPath("/var/lib") / _unit(unit_text(EXEC))["Service"]["StateDirectory"]


@given(st.one_of(st.text(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["files", "made_dirs", "x"]), inner),
    max_leaves=10,
).map(json.dumps)))
def test_manifest_parse_of_any_text_is_a_manifest_or_a_contributor_error(text: str) -> None:
    """Whatever a damaged manifest holds, uninstall gets a Manifest of absolute paths or a ContributorError."""
    try:
        manifest = Manifest.parse(text, "m")
    except ContributorError:
        return
    assert all(PurePosixPath(p).is_absolute() for p in (*manifest.files, *manifest.made_dirs))
