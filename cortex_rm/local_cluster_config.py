"""The ``cortex.toml`` that ``cortex-rm local-cluster up`` writes for each of its nodes: which nodes
are RM-eligible (node1, and the standbys of ``--rm-standbys``), their ports, and the keys of the
eligible nodes, made before any config is written since every config names their ring ids."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cortex_rm.client_config import RMAddresses
from cortex_rm.config import RingSection
from cortex_rm.container.id_ranges import NODE_ID_BLOCKS, BLOCK, DEFAULT_BASE, IdRange, node_id_range
from cortex_rm.container.range_leases import LEASE_DIR, is_free
from cortex_rm.internal.identity import (
    IDENTITY_DIR, KEY_FILE, KNOWN_RMS_FILE, IdentityError, KnownResourceManagers, NodeIdentity,
)  # fmt: skip
from cortex_rm.yarn.addresses import HostPort

#: YARN's usual ports, which an isolated node (an address of its own) listens on.
YARN_PORTS = {"rm": 8032, "scheduler": 8030, "rm_web": 8088, "tracker": 8031, "nm_web": 8042, "nm": 45454, "ring": 7946}
#: The ports of an RM-eligible node's ResourceManager, by their names in ``YARN_PORTS``.
RM_PORTS = ("rm", "scheduler", "rm_web", "tracker")
#: The ports of every node (its NodeManager and ring member).
NODE_PORTS = ("nm_web", "nm", "ring")

#: How many nodes' ranges fit between the default base and 2**31.
MAX_NODE_RANGES = (2**31 - DEFAULT_BASE) // (NODE_ID_BLOCKS * BLOCK)


def node_config_text(
    state_dir: Path,
    name: str,
    ports: dict[str, int],
    is_rm: bool,
    host: str,
    introducers: tuple[str, ...] = (),
    runtime_image: str = "",
    rm_host: str = "127.0.0.1",
    index: int = 1,  # 1-based: the node's share of the container id range
    resource_managers: tuple[str, ...] = (),
    ring_settings: tuple[str, ...] = (),
    nm_recovery: bool = False,
) -> str:
    """One node's cortex.toml: the first node runs the RM and starts the ring; the others join
    through ``introducers`` and find the RM through the ring (no RM address in their config).
    ``is_rm``: the node is RM-eligible (the first node, and the standbys of ``--rm-standbys``),
    with its own RM ports at ``rm_host``.  ``resource_managers``: the ring ids of the eligible
    nodes, which may write the RM's ring record, in order of preference (the first live one is the
    active RM); ``ring_settings``: more ``key = value`` lines of the ``[ring]`` table; ``nm_recovery``:
    the NodeManager's ``recovery = true`` (its containers outlive its daemon, a restart takes them back)."""
    lines = [
        "# Written by cortex-rm local-cluster up.",
        "[node]",
        f'name = "{name}"',
        f'state_dir = "{state_dir}"',
        f'host = "{host}"',
        "",
        "[resourcemanager]",
        f"enabled = {'true' if is_rm else 'false'}",
    ]
    if is_rm:
        lines += [
            f'address = "{rm_host}:{ports["rm"]}"',
            f'scheduler_address = "{rm_host}:{ports["scheduler"]}"',
            f'webapp_address = "{rm_host}:{ports["rm_web"]}"',
            f'tracker_address = "{rm_host}:{ports["tracker"]}"',
            f'runtime_image = "{runtime_image}"  # the image every container runs in (cortex-rm image push)',
        ]
    lines += [
        "",
        "[nodemanager]",
        f'webapp_address = "{host}:{ports["nm_web"]}"',
        f'address = "{host}:{ports["nm"]}"  # the NodeId',
        "# no resourcemanager_tracker: the RM is found through the ring; the nodes share this host's ids:",
        f'container_id_range = "{node_id_range(index)}"',
        *(["recovery = true  # NodeManager recovery: containers outlive the daemon (local-cluster up --nm-recovery)"]
          if nm_recovery else []),
        "",
        "[ring]",
        f'address = "{host}:{ports["ring"]}"',
        f"introducers = {json.dumps(list(introducers))}",
        f"resource_managers = {json.dumps(list(resource_managers))}  # RM-eligible nodes' ring ids, preferred first",
        *ring_settings,
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class NodePlan:
    """One node of a local cluster, before it starts."""

    name: str
    host: str  # its address (its NodeManager's, its ring member's)
    ports: dict[str, int]
    rm: RMAddresses | None  # an RM-eligible node's ResourceManager
    config_text: str  # its cortex.toml


def ports_of(free: Iterator[int] | None, names: tuple[str, ...]) -> dict[str, int]:
    """The next free ports for ``names`` (nodes on loopback), or YARN's usual ones (isolated)."""
    return {name: next(free) if free is not None else YARN_PORTS[name] for name in names}


def plan_nodes(
    hosts: list[str],
    state_dirs: list[Path],
    free: Iterator[int] | None,
    resource_managers: tuple[str, ...],
    id_ranges: list[int],
    *,
    isolated: bool = False,
    runtime_image: str = "",
    ring_settings: tuple[str, ...] = (),
    rm_config: str = "",
    node_config: str = "",
    nm_recovery: bool = False,
) -> list[NodePlan]:
    """The nodes at ``hosts`` (their state dirs as their daemons see them: ``state_dirs``), the first
    ``len(resource_managers)`` RM-eligible (node1 first: the first active RM), with ports from ``free``
    (loopback: every RM on 127.0.0.1) or YARN's usual ones at their own address (``isolated``).
    Node1 starts the ring; the others join through it.  ``rm_config`` is added to the RM-eligible
    nodes' configs, ``node_config`` to the others'; ``nm_recovery``: every NodeManager recovers its containers."""
    plans: list[NodePlan] = []
    for i, (host, state_dir) in enumerate(zip(hosts, state_dirs), start=1):
        is_rm = i <= len(resource_managers)
        ports = {**(ports_of(free, RM_PORTS) if is_rm else {}), **ports_of(free, NODE_PORTS)}
        rm_host = host if isolated else "127.0.0.1"
        introducers = () if i == 1 else (f"{hosts[0]}:{plans[0].ports['ring']}",)
        extra = rm_config if is_rm else node_config
        text = node_config_text(
            state_dir, f"node{i}", ports, is_rm=is_rm, host=host, introducers=introducers, runtime_image=runtime_image,
            rm_host=rm_host, index=id_ranges[i - 1], resource_managers=resource_managers, ring_settings=ring_settings,
            nm_recovery=nm_recovery,
        )  # fmt: skip
        if extra:
            text = with_tables(text, extra, "added by --rm-config" if is_rm else "added for the nodes")
        rm = None
        if is_rm:
            rm = RMAddresses(
                *(HostPort(rm_host, ports[name]) for name in ("rm", "scheduler", "rm_web")),
            )
        plans.append(NodePlan(f"node{i}", host, ports, rm, text))
    return plans


def with_tables(text: str, extra: str, why: str) -> str:
    """``text`` (a generated cortex.toml) with the TOML tables of ``extra`` added: the keys of a table that
    ``text`` already has go into it (right after its header: TOML allows a table once), arrays of tables and
    other tables at the end.  ``extra`` must hold tables only (ValueError for a key before its first header,
    which would land in the generated config's last table).  A header is any line starting with ``[``, so a
    multi-line string or array in ``extra`` must not have lines that do; a key given twice makes a config the
    daemon refuses, which ``local-cluster up`` reports before starting anything."""
    chunks: list[tuple[str, list[str]]] = []
    lead: list[str] = []
    for line in extra.strip("\n").split("\n") if extra.strip() else []:
        stripped = line.strip()
        if stripped.startswith("["):  # a table's header, or an array of tables' (never merged)
            chunks.append((stripped.split("#", 1)[0].strip(), []))
        elif chunks:
            chunks[-1][1].append(line)
        elif stripped and not stripped.startswith("#"):
            raise ValueError(f"{stripped!r} comes before any [table]: give every key under its table's header")
        elif stripped:
            lead.append(line)  # a comment before the first table: kept, at the end
    lines = text.split("\n")
    appended: list[str] = [*lead, ""] if lead else []
    for header, body in chunks:
        while body and not body[-1].strip():
            body.pop()
        if not header.startswith("[[") and header in lines:
            at = lines.index(header) + 1
            lines[at:at] = [f"# {why}:", *body]
        else:
            appended += [header, *body, ""]
    if appended:
        lines += [f"# {why}", *appended]
    return "\n".join(lines)


def free_range_indices(count: int, directory: Path = LEASE_DIR) -> list[int]:
    """``count`` node indices (``node_id_range``) whose ranges no running node on this host holds, from a
    random one on: local clusters running at once get ranges of their own, and one started while a node of
    another is down (its range free for the moment) is unlikely to take that node's range."""
    start = random.randrange(MAX_NODE_RANGES)
    order = (1 + (start + k) % MAX_NODE_RANGES for k in range(MAX_NODE_RANGES))
    found = list(itertools.islice((i for i in order if is_free(IdRange.parse(node_id_range(i)), directory)), count))
    if len(found) < count:
        raise ValueError(
            f"only {len(found)} of the {MAX_NODE_RANGES} node id ranges of this host are free: stop another local cluster first"
        )
    return found


def _make_identity(state_dir: str, key_bits: int) -> str:
    """In a worker process: make (or check, or replace) the identity in ``state_dir``; its ring id."""
    return NodeIdentity.load_or_create(Path(state_dir), key_bits=key_bits).ring_id_hex


def rm_identities(
    workdir: Path, nodes: int, eligible: int, say: Callable[[str], None], key_bits: int = RingSection().key_bits
) -> list[NodeIdentity]:
    """The keys of the ``eligible`` RM-eligible nodes (node1 first), made now in the directories their
    daemons keep state in (isolated: bind-mounted at their state_dir), so every node's config can name
    the ring ids that may write the RM's record.

    Each key solves the ring's key puzzle at ``key_bits``, the nodes' (their configs name none: the
    default), a couple of seconds each: several are made in parallel processes.  A key from before
    the puzzle is replaced.  A node's pin of an RM key that is none of these (a cluster that ran here
    before with a replaced key) would make it refuse the RM: such pins are dropped."""
    directories = [workdir / f"node{i}" for i in range(1, eligible + 1)]
    missing = [d for d in directories if not (d / IDENTITY_DIR / KEY_FILE).exists()]
    if missing:
        say(
            f"making the key of {len(missing)} RM-eligible node(s) (each must solve the ring's key puzzle at "
            f"{key_bits} bits: a few seconds) ..."
        )
    if eligible > 1:
        # the puzzle is CPU-bound Python: one process per key, spawned (no fork of a threaded caller)
        workers = max(1, min(eligible, os.cpu_count() or 1))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_make_identity, [str(d) for d in directories], [key_bits] * eligible))
    identities = [NodeIdentity.load_or_create(d, key_bits=key_bits) for d in directories]
    current = {identity.fingerprint for identity in identities}
    for i in range(1, nodes + 1):
        known = workdir / f"node{i}" / IDENTITY_DIR / KNOWN_RMS_FILE
        try:
            stale = known.exists() and bool(KnownResourceManagers(known).fingerprints() - current)
        except IdentityError:
            continue  # unreadable: the node says so itself when it starts
        if stale:
            known.unlink()
            say(f"node{i} had pinned another RM key (from a cluster that ran here before); dropped {known}")
    return identities
