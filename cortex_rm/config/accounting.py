"""``[accounting]``: the uptime ledger the active RM keeps, its pay periods, and the node classes it derives."""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.accounting.node_classes import ClassThresholds
from cortex_rm.accounting.payouts import PayoutRules
from cortex_rm.accounting.periods import PeriodScheme
from cortex_rm.config.errors import ConfigError


@dataclass(frozen=True)
class AccountingSection:
    """The ledger of witnessed uptime (kept by the RM), payouts and node classes."""

    # SQLAlchemy URL of the ledger's database; "" (the default): sqlite:///<state_dir>/ledger.sqlite.
    # PostgreSQL: postgresql+psycopg://user:password@host/dbname
    ledger_url: str = ""
    # Length of a pay period in seconds; 0 (the default): calendar months, UTC
    period_length_s: int = 0
    # With period_length_s: when the first period starts (ms since the epoch)
    period_origin_ms: int = 0
    # A period is closed (its payout statement signed and appended) this long after it ends,
    # so the witnesses' last attestations of it have arrived (they attest once an hour)
    close_delay_s: int = 7200
    # Distinct witnesses an instant of uptime needs (fewer when the ring gave the node fewer probers)
    min_witnesses: int = 2
    # How often the RM checks for periods to close and re-classes the nodes
    class_update_interval_s: int = 300
    # Node classes (accounting/node_classes.py says why these defaults): static after a session
    # this long with this fraction of the window up; volatile again below the lower fraction or
    # when silent for gone_after_s.  A gap up to session_gap_s does not end a session
    class_window_s: int = 7 * 24 * 3600
    static_after_s: int = 12 * 3600
    static_uptime_fraction: float = 0.90
    volatile_below_fraction: float = 0.75
    session_gap_s: int = 15 * 60
    gone_after_s: int = 90 * 60
    # Witnessed batches a node may submit per hour (a witness sends about one)
    max_batches_per_hour: int = 120
    # Keep a mirror of the RM's ledger (<state_dir>/mirror-ledger.sqlite), check every signed tree head's
    # consistency and re-read mirrored entries, gossip the heads and report forks and rewrites
    # (GET /ws/v1/ledger-mirror).  Unset (the default): nodes whose ring id is in [ring] resource_managers
    # and that do not run the RM mirror; false: never; true: this node mirrors too (it needs [ring])
    mirror: bool | None = None
    # Seconds between a mirror's rounds (find the RM, fetch its head and new entries, re-read a sample)
    mirror_interval_s: float = 60.0

    def check(self, where: str) -> None:
        """ConfigError naming the first key whose value cannot work."""
        positive = ("close_delay_s", "class_update_interval_s", "class_window_s", "gone_after_s", "max_batches_per_hour")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}: accounting.{key} must be positive")
        if self.period_length_s < 0 or self.period_origin_ms < 0:
            raise ConfigError(f"{where}: accounting.period_length_s and period_origin_ms must not be negative")
        if self.period_length_s and self.period_length_s < 60:
            raise ConfigError(f"{where}: accounting.period_length_s must be 0 (calendar months) or at least 60")
        if not 1 <= self.min_witnesses <= 255:
            raise ConfigError(f"{where}: accounting.min_witnesses must lie in 1..255")
        if not 0 <= self.volatile_below_fraction <= self.static_uptime_fraction <= 1:
            raise ConfigError(
                f"{where}: accounting needs 0 <= volatile_below_fraction <= static_uptime_fraction <= 1"
            )
        if not 0.1 <= self.mirror_interval_s <= 86400:
            raise ConfigError(f"{where}: accounting.mirror_interval_s must lie in 0.1..86400")
        if self.static_after_s < 0 or self.session_gap_s < 0:
            raise ConfigError(f"{where}: accounting.static_after_s and session_gap_s must not be negative")

    def mirrors(self, ring_id: int, resource_managers: frozenset[int], runs_rm: bool) -> bool:
        """Whether the node of ``ring_id`` keeps a ledger mirror (see ``mirror``)."""
        if self.mirror is not None:
            return self.mirror and not runs_rm
        return ring_id in resource_managers and not runs_rm

    def periods(self) -> PeriodScheme:
        return PeriodScheme(self.period_length_s * 1000, self.period_origin_ms)

    def rules(self) -> PayoutRules:
        return PayoutRules(self.min_witnesses)

    def thresholds(self) -> ClassThresholds:
        return ClassThresholds(
            window_ms=self.class_window_s * 1000,
            promote_fraction=self.static_uptime_fraction,
            demote_fraction=self.volatile_below_fraction,
            promote_session_ms=self.static_after_s * 1000,
            session_gap_ms=self.session_gap_s * 1000,
            freshness_ms=self.gone_after_s * 1000,
        )
