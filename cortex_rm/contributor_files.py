"""The files ``cortex-rm contributor install`` writes, as text: the node's ``cortex.toml``, its systemd
unit, and the install manifest that ``contributor uninstall`` reads.  Pure functions of their inputs
(no file system, no clock), so each is tested by what it returns; ``contributor.py`` does the IO.

The config is the ordinary daemon config (``cortex_rm/config``), checked with ``config_from_dict``
before anything is written: the caps are its ``[nodemanager]`` keys ``vcores``, ``memory_mb`` and
``disk_gb``.  The node's identity (key, certificate, ring id) is not in it: the daemon makes it in
``<state_dir>/identity`` at its first start (``internal/identity.py``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from cortex_rm.config import Config, ConfigError, config_from_dict
from cortex_rm.container.id_ranges import (
    DEFAULT_BASE, DEFAULT_COUNT, IdRange, IdRangeError, subordinate_ranges,
)  # fmt: skip
from cortex_rm.yarn.addresses import HostPort

UNIT_NAME = "cortex-rm.service"
CONFIG_PATH = PurePosixPath("/etc/cortex-rm/cortex.toml")
UNIT_PATH = PurePosixPath("/etc/systemd/system") / UNIT_NAME
#: What install wrote and which directories it made, for uninstall (beside the config).
MANIFEST_PATH = CONFIG_PATH.parent / "install.json"
#: The daemon's state dir: the unit's ``StateDirectory=cortex-rm``.
STATE_DIR = PurePosixPath("/var/lib/cortex-rm")
#: YARN's usual ports, which a contributed machine (an address of its own) listens on.
RING_PORT, NM_PORT, NM_WEB_PORT = 7946, 45454, 8042
#: How long systemd waits for a stop before SIGKILL: the graceful leave (the default 60 s grace for
#: containers, 30 s for killed ones to end, at most 150 s for the RM's DECOMMISSIONED,
#: ``container/graceful_leave.py``), the NodeManager's bounded wait for its containers (10 s,
#: ``container/runtime_spec.py`` shutdown_timeout_s) and the ring's leave.
STOP_TIMEOUT_S = 300

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_.,:+=@%-")  # % is doubled


class ContributorError(Exception):
    """Install or uninstall cannot go on; the message says what to do."""


@dataclass(frozen=True)
class NodeOffer:
    """What a contributed machine's config says: where it joins, where it is reached, what it offers."""

    introducer: HostPort  # a member's ring address, to join through
    resource_managers: tuple[str, ...]  # the ring ids (40 hex digits) that may write the RM's record
    host: str  # the address this node's services bind to and other members reach it at
    vcores: int  # CPUs offered (the NodeManager's cpu-vcores)
    memory_mb: int  # memory offered to containers
    disk_gb: int  # disk offered; 0: no cap
    container_id_range: str  # "BASE:COUNT": the host uids/gids of the containers


def config_text(offer: NodeOffer) -> str:
    """The node's ``cortex.toml`` for ``offer``: a NodeManager and ring member, no ResourceManager,
    finding the RM through the ring.  ConfigError if the daemon would refuse it."""
    host = offer.host
    text = "\n".join([
        f"# Written by `cortex-rm contributor install`; read by `cortex-rm node --config {CONFIG_PATH}`",
        "# (the systemd unit cortex-rm.service).  Change the caps here and restart the service:",
        "#   systemctl restart cortex-rm",
        "# The node's identity (key, certificate, ring id) is made at its first start in",
        f"# {STATE_DIR}/identity, not here.",
        "",
        "[node]",
        f"state_dir = {json.dumps(str(STATE_DIR))}",
        f"host = {json.dumps(host)}",
        "",
        "[resourcemanager]",
        "enabled = false",
        "",
        "[nodemanager]",
        f"vcores = {offer.vcores}  # CPUs this machine offers to containers",
        f"memory_mb = {offer.memory_mb}  # memory offered to containers, MB",
        f"disk_gb = {offer.disk_gb}  # disk for blocks, images and cached files, GB; 0: no cap",
        f"address = {json.dumps(str(HostPort(host, NM_PORT)))}  # the node's NodeId",
        f"webapp_address = {json.dumps(str(HostPort(host, NM_WEB_PORT)))}",
        "# the containers' host uids/gids: overlaps no entry of /etc/subuid or /etc/subgid",
        f"container_id_range = {json.dumps(offer.container_id_range)}",
        "",
        "[ring]",
        f"address = {json.dumps(str(HostPort(host, RING_PORT)))}",
        f"introducers = {json.dumps([str(offer.introducer)])}",
        f"resource_managers = {json.dumps(list(offer.resource_managers))}  # the RM-eligible nodes' ring ids",
        "",
    ])
    check_config_text(text)
    return text


def check_config_text(text: str, source: str = str(CONFIG_PATH)) -> Config:
    """The Config the daemon would read from ``text``; ConfigError naming the key it refuses."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return config_from_dict(raw, source)


def systemd_word(word: str) -> str:
    """``word`` as one word of a systemd command line: bare when plain, else double-quoted with
    ``\\`` and ``"`` escaped; ``%`` (a specifier) is always doubled.  ValueError for control characters."""
    if not word or any(ord(c) < 0x20 or c == "\x7f" for c in word):
        raise ValueError(f"{word!r} cannot be a word of a systemd command line")
    escaped = word.replace("%", "%%")
    if all(c in _SAFE for c in word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(exec_argv: Sequence[str]) -> str:
    """The hardened systemd unit that runs ``exec_argv`` (``cortex-rm node --config ...`` of the
    installation doing the install; its first word an absolute path)."""
    if not exec_argv or not PurePosixPath(exec_argv[0]).is_absolute():
        raise ValueError(f"ExecStart needs an absolute program path, not {exec_argv[:1]!r}")
    exec_start = " ".join(systemd_word(w) for w in exec_argv)
    return f"""\
# Written by `cortex-rm contributor install`; `cortex-rm contributor uninstall` removes it.
[Unit]
Description=Cortex RM node: this machine's NodeManager and ring member (a contributed machine)
# It binds the address in {CONFIG_PATH}, which must be configured before it starts.
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
# `systemctl reload cortex-rm`: the daemon re-reads {CONFIG_PATH} and applies [nodemanager] memory_mb,
# vcores and disk_gb at once (a file that does not validate is logged and ignored)
ExecReload=/bin/kill -HUP $MAINPID
# Root: the NodeManager starts LXC containers (lxc-execute), each in a user namespace whose ids are
# [nodemanager] container_id_range, with cgroup limits and nftables rules.  Root's LXC maps ids with
# lxc.idmap itself: no /etc/subuid entry is needed, and the NodeManager refuses a range listed there.
# /var/lib/cortex-rm: the node's identity, ring state, containers' dirs and logs (made by systemd).
StateDirectory=cortex-rm
Restart=on-failure
RestartSec=10s

# Stopping.  SIGTERM goes to the daemon alone (KillMode=mixed), which first leaves gracefully, as
# YARN's graceful decommission: the RM shows the node DECOMMISSIONING and places nothing new there,
# running containers get [nodemanager] decommission_grace_s (default 60 s) to finish and are then
# killed (KILLED_BY_RESOURCEMANAGER, not counted against their application), the RM marks the node
# DECOMMISSIONED once its file system blocks have replicas elsewhere (it waits at most 120 s for
# them; the node at most 150 s for the RM).  Then the daemon stops as before: its ports close and
# the ring member leaves (hands its records on, tells its neighbours, gossips LEFT).  What is still
# in the unit's cgroup when it exits is then SIGKILLed.  TimeoutStopSec covers the default grace,
# the wait for the RM and the rest; a longer grace needs a longer timeout (systemctl edit).
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={STOP_TIMEOUT_S}s
# The containers' processes are counted by their own pids cgroups ([nodemanager] pids_limit), not
# by systemd's default TasksMax for the service.
TasksMax=infinity
# Delegate: systemd leaves the cgroups below this unit to the daemon and LXC and does not move
# processes they place; the containers' own cgroups are under cortex/ of each hierarchy.
Delegate=yes

# Sandboxing that root's LXC containers survive:
# ProtectSystem=full: /usr, /boot, /efi and /etc read-only; neither the daemon nor LXC writes them.
#   Not "strict": it would need every path the daemon and LXC write listed in ReadWritePaths=
#   (/run/cortex-rm's id-range leases, /run/cortex-rm-functions, LXC's locks under /run/lxc, what
#   its hooks write) and would fail at run time on one missed; "full" keeps /var and /run writable.
ProtectSystem=full
# ProtectHome=read-only, not yes: an installation (venv, pip --user) or the Spark that containers
# read ([nodemanager] readonly_dirs, default: the installed pyspark) may live under /home or /root.
# The daemon writes nothing there (a shared_dirs entry there would need ReadWritePaths=).
ProtectHome=read-only
# PrivateTmp: the daemon's /tmp is its own (the containers have their own /tmp anyway).
PrivateTmp=yes
# Left out on purpose, each would break the containers:
#   NoNewPrivileges: where AppArmor is on (Debian's default) LXC changes the containers' profile at
#     exec, which no_new_privs refuses (the containers set it themselves: lxc.no_new_privs = 1);
#   ProtectControlGroups, ProtectKernelTunables: LXC writes cgroupfs and mounts a sysfs per container;
#   PrivateDevices, DevicePolicy/DeviceAllow, ProtectClock (implies DeviceAllow): the containers'
#     /dev (pts, ptmx) and the device cgroup;
#   RestrictNamespaces, PrivateNetwork: the containers' namespaces, veths and nftables rules;
#   MemoryDenyWriteExecute, SystemCallFilter, RestrictSUIDSGID: seccomp filters are inherited by
#     the containers (a JVM's JIT maps memory writable and executable);
#   CapabilityBoundingSet: root's LXC needs CAP_SYS_ADMIN and most other capabilities.

[Install]
WantedBy=multi-user.target
"""


def free_id_range(subordinate_texts: Iterable[str]) -> IdRange:
    """The first range of ``DEFAULT_COUNT`` ids from ``DEFAULT_BASE`` up (aligned, below 2**31) that
    meets no entry of the given /etc/subuid and /etc/subgid texts; the default range when none does."""
    taken = [(start, count) for text in subordinate_texts for _, start, count in subordinate_ranges(text)]
    base = DEFAULT_BASE
    while True:
        candidate = IdRange(base, DEFAULT_COUNT)
        try:
            candidate.check()
        except IdRangeError:
            raise ContributorError(
                "every container id range above the default base meets an entry of /etc/subuid or /etc/subgid: "
                "remove one, or set [nodemanager] container_id_range by hand"
            ) from None
        if not any(candidate.overlaps(start, count) for start, count in taken):
            return candidate
        base += DEFAULT_COUNT


@dataclass(frozen=True)
class Manifest:
    """What install wrote (absolute paths on the target system, the manifest itself included) and the
    directories it made (deepest first), so uninstall removes exactly those."""

    files: tuple[str, ...]
    made_dirs: tuple[str, ...]

    def text(self) -> str:
        return json.dumps({"files": list(self.files), "made_dirs": list(self.made_dirs)}, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str, source: str) -> Manifest:
        """The manifest in ``text``; ContributorError naming ``source`` when it is not one."""
        try:
            raw = json.loads(text)
            files, made = raw["files"], raw["made_dirs"]
        except (ValueError, TypeError, KeyError):
            raise ContributorError(f"{source} is not an install manifest") from None
        paths = [*files, *made] if isinstance(files, list) and isinstance(made, list) else None
        if paths is None or not all(isinstance(p, str) and PurePosixPath(p).is_absolute() for p in paths):
            raise ContributorError(f"{source}: its files and made_dirs must be lists of absolute paths")
        if any(".." in PurePosixPath(p).parts for p in paths):
            raise ContributorError(f"{source}: a path with '..' is not one install wrote")
        return cls(tuple(files), tuple(made))
