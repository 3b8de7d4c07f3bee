"""How this node runs containers, and the ``ContainerSpec`` it hands the runtime for each one.

A container's memory limit is its allocated memory plus ``memory_overhead_mb`` (the
JVM's off-heap memory and the shell live outside Spark's accounting); its pids limit
is ``pids_limit``.  It may write to its application's local dirs, its log dirs, the
configured shared dirs and its application's staging dir (see
``container_files.application_staging_dirs``), and read the configured read-only
dirs.  It runs in the cluster's runtime image (its /usr holds the JVM and Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cortex_rm.container.launch import LaunchPlan
from cortex_rm.container.net_policy import driver_endpoints
from cortex_rm.container.nm_container import NMContainer
from cortex_rm.container.runtime import ContainerSpec
from cortex_rm.yarn.app_network import AppNetwork

MIB = 1024 * 1024


@dataclass(frozen=True)
class ContainerSettings:
    """How this node runs containers (from ``[nodemanager]``)."""

    local_dirs: tuple[Path, ...]
    log_dirs: tuple[Path, ...]
    readonly_dirs: tuple[Path, ...] = ()
    #: Host dirs every container may read and write (the shared file system under file:///).
    shared_dirs: tuple[Path, ...] = ()
    memory_overhead_mb: int = 256
    pids_limit: int = 4096
    #: SIGTERM, then SIGKILL after this long (yarn.nodemanager.sleep-delay-before-sigkill.ms).
    kill_grace_s: float = 0.25
    completed_retention_ms: int = 10 * 60 * 1000
    #: How long ``stop_all`` waits for containers to end.
    shutdown_timeout_s: float = 10.0


def runtime_spec(
    c: NMContainer, plan: LaunchPlan, settings: ContainerSettings, image_root: Path | None, network: AppNetwork = AppNetwork("", None)
) -> ContainerSpec:
    """What the runtime is asked to run for ``c`` (see the module docstring); ``network``: where
    its application was submitted from (the only host outside the cluster its driver may be on)
    and its slot of source ports."""
    return ContainerSpec(
        container_id=str(c.container_id),
        work_dir=c.paths.work_dir,
        log_dir=c.paths.log_dir,
        command=plan.argv,
        env=plan.process_environment,
        memory_limit_bytes=(c.resource.memory_mb + settings.memory_overhead_mb) * MIB,
        pids_limit=settings.pids_limit,
        # the work dir is inside the first app dir; log_dir is given on its own
        writable_dirs=tuple(
            dict.fromkeys(
                (
                    *c.paths.app_dirs,
                    *(d for d in c.paths.log_dirs if d != c.paths.log_dir),
                    *settings.shared_dirs,
                    *c.staging_dirs,
                )
            )
        ),
        # the shared caches the work dir's links may point into: the node's PUBLIC one, the user's PRIVATE one
        readonly_dirs=tuple(
            dict.fromkeys(
                (*settings.readonly_dirs, c.paths.public_cache, c.paths.private_cache)
            )
        ),
        root_image=image_root,
        application=str(c.app_id),
        # given to the application's unprivileged root: never the shared dirs
        own_dirs=tuple(
            dict.fromkeys((*c.paths.app_dirs, *(d for d in c.paths.log_dirs if d != c.paths.log_dir), *c.staging_dirs))
        ),
        # the script runs the CLC's command: the driver it names (client mode) is outside the
        # cluster, and may be reached only on the host the application was submitted from
        peers=frozenset(p for p in driver_endpoints([plan.command]) if network.client_host and p[0] == network.client_host),
        port_slot=network.port_slot,
    )
