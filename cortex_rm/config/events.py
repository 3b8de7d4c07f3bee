"""``[events]``: serverless functions on this node -- taking triggers, running activations, keeping them."""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.config.errors import ConfigError


@dataclass(frozen=True)
class EventsSection:
    """The entry side (every ring member) and the executor side (members with a NodeManager)."""

    # Run activations here (a member with a NodeManager); false: this node only takes triggers
    execute: bool = True
    # Activations waiting for a sandbox on this node; when full, a trigger goes to the next replica
    queue_length: int = 64
    # Sandboxes kept on this node at once, warm or busy, all functions together ...
    max_sandboxes: int = 16
    # ... whose memory limits sum to at most this (idle ones are stopped to make room)
    max_sandbox_memory_mb: int = 4096
    # A warm sandbox unused this long is stopped
    sandbox_idle_timeout_s: float = 600.0
    # An ended activation is kept (result, logs, signatures) this long by the node that took the trigger
    activation_retention_s: int = 24 * 3600
    # ... and at most this many activations (the oldest ended go first)
    max_activations: int = 20_000
    # Activations still running on this node (as their entry node): the events they hold, in MiB ...
    max_running_mb: int = 64
    # ... and how many one user may have running here at once (beyond either: 429 with Retry-After)
    max_running_per_user: int = 1000
    # An executor that has not taken an activation within this time is replaced by the next replica
    accept_timeout_s: float = 2.0
    # How long a node trusts a registration it read from the ring before reading it again
    registry_cache_s: float = 5.0
    # Adaptive replication (BOINC's): the owner of a replicated vote function, once its results agreed
    # with the other replicas trust_after times in a row, runs triggers alone but for a spot_check_rate
    # fraction, which still run on every replica; any disagreement makes it untrusted again
    adaptive_replication: bool = True
    trust_after: int = 10
    spot_check_rate: float = 0.1
    # How often a node reads the list of scheduled functions (a new owner takes over within this time)
    schedules_refresh_s: float = 30.0

    def check(self, where: str) -> None:
        """ConfigError naming the first key whose value cannot work."""
        for key, low, high in (
            ("queue_length", 0, 100_000),
            ("max_sandboxes", 1, 4096),
            ("max_sandbox_memory_mb", 32, 1 << 24),
            ("max_activations", 1, 10_000_000),
            ("max_running_mb", 1, 1 << 20),
            ("max_running_per_user", 1, 10_000_000),
            ("activation_retention_s", 1, 90 * 24 * 3600),
            ("trust_after", 1, 1_000_000),
        ):
            if not low <= getattr(self, key) <= high:
                raise ConfigError(f"{where}: events.{key} must lie in {low}..{high}")
        for key, flow, fhigh in (
            ("sandbox_idle_timeout_s", 1.0, 86400.0),
            ("accept_timeout_s", 0.05, 60.0),
            ("registry_cache_s", 0.0, 3600.0),
            ("spot_check_rate", 0.0, 1.0),
            ("schedules_refresh_s", 0.1, 3600.0),
        ):
            if not flow <= getattr(self, key) <= fhigh:
                raise ConfigError(f"{where}: events.{key} must lie in {flow:g}..{fhigh:g}")
