"""The ``cortex.toml`` that ``cortex-rm local-cluster up`` writes for each of its nodes."""

from __future__ import annotations

import json
from pathlib import Path

from cortex_rm.container.id_ranges import NODE_ID_BLOCKS, BLOCK, DEFAULT_BASE, IdRange, node_id_range
from cortex_rm.container.range_leases import LEASE_DIR, is_free

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
) -> str:
    """One node's cortex.toml: the first node runs the RM and starts the ring; the others join
    through ``introducers`` and find the RM through the ring (no RM address in their config).
    ``resource_managers``: the ring ids that may write the RM's ring record; ``ring_settings``:
    more ``key = value`` lines of the ``[ring]`` table."""
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
        "",
        "[ring]",
        f'address = "{host}:{ports["ring"]}"',
        f"introducers = {json.dumps(list(introducers))}",
        f"resource_managers = {json.dumps(list(resource_managers))}  # ring ids that may write the RM's record",
        *ring_settings,
        "",
    ]
    return "\n".join(lines)


def free_range_indices(count: int, directory: Path = LEASE_DIR) -> list[int]:
    """``count`` node indices (``node_id_range``) whose ranges no running node on this host holds,
    lowest first: local clusters running at once get ranges of their own."""
    found = [i for i in range(1, MAX_NODE_RANGES + 1) if is_free(IdRange.parse(node_id_range(i)), directory)][:count]
    if len(found) < count:
        raise ValueError(
            f"only {len(found)} of the {MAX_NODE_RANGES} node id ranges of this host are free: stop another local cluster first"
        )
    return found
