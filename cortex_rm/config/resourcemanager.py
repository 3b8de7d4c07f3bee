"""``[resourcemanager]`` and ``[scheduler]``: the ResourceManager role's ports, limits and queues."""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.allocator.acls import AccessControlList
from cortex_rm.allocator.queues import DEFAULT_QUEUES, QueueSpec, QueueState, QueueTree
from cortex_rm.config.errors import ConfigError
from cortex_rm.container.runtime_image import is_sha256
from cortex_rm.yarn.addresses import HostPort

#: The RM's four ports, by their keys in ``[resourcemanager]``.
RM_ADDRESS_KEYS = ("address", "scheduler_address", "webapp_address", "tracker_address")


@dataclass(frozen=True)
class ResourceManagerSection:
    """The ResourceManager role (one active RM per cluster)."""

    enabled: bool = True
    address: HostPort = HostPort("127.0.0.1", 8032)  # ApplicationClientProtocol (yarn.resourcemanager.address)
    # ApplicationMasterProtocol (yarn.resourcemanager.scheduler.address)
    scheduler_address: HostPort = HostPort("127.0.0.1", 8030)
    webapp_address: HostPort = HostPort("127.0.0.1", 8088)  # REST API (yarn.resourcemanager.webapp.address)
    state_store_url: str = ""  # SQLAlchemy URL; default: sqlite:///<state_dir>/rm-state.sqlite
    max_app_attempts: int = 2  # yarn.resourcemanager.am.max-attempts
    max_application_priority: int = 0  # yarn.cluster.max-application-priority
    max_completed_applications: int = 1000  # yarn.resourcemanager.max-completed-applications
    # yarn.am.liveness-monitor.expiry-interval-ms: an AM silent this long fails its attempt
    am_expiry_ms: int = 600_000
    # Hadoop's ipc.maximum.data.length: the largest request frame accepted, in bytes
    ipc_max_data_length: int = 64 * 1024 * 1024
    # NodeTracker, where NodeManagers register and heartbeat (Thrift over mutual TLS; the
    # role of yarn.resourcemanager.resource-tracker.address)
    tracker_address: HostPort = HostPort("127.0.0.1", 8031)
    # A node silent for longer than this is LOST (yarn.nm.liveness-monitor.expiry-interval-ms).
    # YARN's default is 600000 (10 min), made for machine rooms; volunteered machines come and
    # go, and their containers should be re-requested within seconds, not minutes.  Nodes are
    # granted a heartbeat interval of at most a third of this.
    nm_expiry_ms: int = 10_000
    # How long finished applications' aggregated logs are kept in the file system
    # (yarn.log-aggregation.retain-seconds; -1 keeps them for ever), and how often the RM
    # looks for expired ones (yarn.log-aggregation.retain-check-interval-seconds; 0: a tenth
    # of the retention)
    log_retention_s: int = 7 * 24 * 3600
    log_retention_check_s: int = 0
    # The root file system every container runs in: the SHA-256 of the archive that
    # `cortex-rm image build` made and `cortex-rm image push` put into the file system
    # (/cortex/images/<sha256>.tar.zst). Nodes fetch and unpack it, and take no containers
    # until they have it.
    runtime_image: str = ""
    # What a caller without a user's credential may see: "cluster-info" (the cluster's info
    # and metrics, on REST and IPC) or "none"; never a state change.
    anonymous_access: str = "cluster-info"
    # How long a user's credential (`cortex-rm user add`) stays valid; issue a new one before.
    credential_lifetime_s: int = 30 * 24 * 3600
    # ... and stops working unless its user renews it this often (hadoop dtutil renew).
    credential_renew_interval_s: int = 7 * 24 * 3600
    # Where ApplicationMasters go: "static" (nodes the ledger classes static; a volatile node
    # only when no static node could ever hold the AM, e.g. on a fresh cluster, where every
    # node is still volatile, or after am_static_wait_s) or "any" (a static node if one has
    # room, else any node). An application's own AM label expression
    # (spark.yarn.am.nodeLabelExpression) wins.
    am_node_class: str = "static"
    # With am_node_class "static": how long an AM waits for room on a static node before it
    # may go to any node (meanwhile executors without a label keep off static nodes); 0: it
    # waits for as long as a static node could hold it.
    am_static_wait_s: int = 60
    # yarn.am.blacklisting.enabled: a node where an application's AM container failed is
    # avoided by its next attempts ...
    am_blacklisting_enabled: bool = True
    # ... until those nodes are this fraction of the nodes the AM could go to; then the list
    # is ignored (yarn.am.blacklisting.disable-failure-threshold)
    am_blacklisting_disable_failure_threshold: float = 0.8
    # With standbys ([ring] resource_managers): how many applied entries each eligible node keeps
    # in its copy of the RM's journal beyond what its stores hold (older ones are discarded; a
    # node further behind than this is sent a snapshot of the stores instead). Memory and disk
    # for the journal stay within about 1.25 times this many entries (each at most 512 KiB).
    journal_log_tail: int = 1000

    def check(self, where: str) -> None:
        """ConfigError naming the key of the first value that cannot work (``where``: the file)."""
        if self.nm_expiry_ms < 300:
            raise ConfigError(f"{where}: resourcemanager.nm_expiry_ms must be at least 300")
        if self.anonymous_access not in ("none", "cluster-info"):
            raise ConfigError(f'{where}: resourcemanager.anonymous_access must be "none" or "cluster-info"')
        if self.credential_lifetime_s < 60:
            raise ConfigError(f"{where}: resourcemanager.credential_lifetime_s must be at least 60")
        if self.credential_renew_interval_s < 60:
            raise ConfigError(f"{where}: resourcemanager.credential_renew_interval_s must be at least 60")
        if self.max_app_attempts < 1:
            raise ConfigError(f"{where}: resourcemanager.max_app_attempts must be at least 1")
        if self.max_application_priority < 0:
            raise ConfigError(f"{where}: resourcemanager.max_application_priority must not be negative")
        if self.am_expiry_ms < 1000:
            raise ConfigError(f"{where}: resourcemanager.am_expiry_ms must be at least 1000")
        if self.max_completed_applications < 0:
            raise ConfigError(f"{where}: resourcemanager.max_completed_applications must not be negative")
        if self.log_retention_s < -1 or self.log_retention_s == 0:
            raise ConfigError(f"{where}: resourcemanager.log_retention_s must be positive, or -1 to keep logs for ever")
        if self.runtime_image and not is_sha256(self.runtime_image):
            raise ConfigError(
                f"{where}: resourcemanager.runtime_image must be the archive's SHA-256 (64 lowercase hex digits), "
                "as `cortex-rm image build` prints it"
            )
        if self.am_node_class not in ("static", "any"):
            raise ConfigError(f'{where}: resourcemanager.am_node_class must be "static" or "any"')
        if self.am_static_wait_s < 0:
            raise ConfigError(f"{where}: resourcemanager.am_static_wait_s must not be negative (0: no limit)")
        if not 0.0 <= self.am_blacklisting_disable_failure_threshold <= 1.0:
            raise ConfigError(f"{where}: resourcemanager.am_blacklisting_disable_failure_threshold must be within [0, 1]")
        if not 0 <= self.journal_log_tail <= 1_000_000:
            raise ConfigError(f"{where}: resourcemanager.journal_log_tail must be within [0, 1000000]")
        if self.log_retention_check_s < 0:
            raise ConfigError(f"{where}: resourcemanager.log_retention_check_s must not be negative")
        if not 1024 <= self.ipc_max_data_length <= 2**31 - 1:
            raise ConfigError(
                f"{where}: resourcemanager.ipc_max_data_length must be between 1024 and 2147483647 bytes"
            )


@dataclass(frozen=True)
class QueueEntry:
    """One queue of the capacity scheduler, named by its full path (``root.x.y``)."""

    path: str
    capacity: float = 100.0  # guaranteed percent of the parent; siblings sum to 100
    maximum_capacity: float = 100.0  # ceiling, percent of the parent
    state: str = "RUNNING"  # RUNNING or STOPPED
    # who may submit to / administer the queue (and its children): "user1,user2", "*" everyone,
    # " " nobody; unset: nobody, except that root lets everyone submit (YARN's
    # acl_submit_applications, acl_administer_queue). Queue admins see and change the queue's
    # applications.
    acl_submit_applications: str | None = None
    acl_administer_queue: str | None = None


@dataclass(frozen=True)
class SchedulerSection:
    """Limits and queues of the scheduler."""

    maximum_allocation_mb: int = 8192  # yarn.scheduler.maximum-allocation-mb
    maximum_allocation_vcores: int = 4  # yarn.scheduler.maximum-allocation-vcores
    # delay scheduling: how long an ask naming hosts waits for them before its rack,
    # then before any node (0 and 0: place at once wherever there is room)
    node_locality_delay_ms: int = 1000
    rack_locality_delay_ms: int = 1000
    # maximum-am-resource-percent: the share of a queue its ApplicationMasters may hold
    # together (one AM may always run)
    max_am_share: float = 0.1
    queue: tuple[QueueEntry, ...] = ()  # none: a single leaf root.default

    def queue_tree_spec(self) -> QueueSpec:
        """The configured queues as a tree under ``root``."""
        if not self.queue:
            return DEFAULT_QUEUES
        by_path: dict[str, QueueEntry] = {}
        for entry in self.queue:
            parts = entry.path.split(".")
            if parts[0] != "root":
                raise ConfigError(f"[[scheduler.queue]] path {entry.path!r} must start with 'root'")
            if not all(parts):
                raise ConfigError(f"[[scheduler.queue]] path {entry.path!r} has an empty queue name")
            if entry.state not in QueueState.__members__:
                raise ConfigError(f"[[scheduler.queue]] {entry.path}: state must be RUNNING or STOPPED")
            if entry.path in by_path:
                raise ConfigError(f"[[scheduler.queue]] {entry.path} is configured twice")
            by_path[entry.path] = entry
        for path in list(by_path):  # parents named only by their children
            parts = path.split(".")
            for i in range(1, len(parts)):
                by_path.setdefault(".".join(parts[:i]), QueueEntry(".".join(parts[:i])))

        def build(path: str) -> QueueSpec:
            entry = by_path[path]
            kids = sorted(p for p in by_path if p.rsplit(".", 1)[0] == path and p != path)
            return QueueSpec(
                name=path.rsplit(".", 1)[-1],
                capacity=entry.capacity,
                maximum_capacity=entry.maximum_capacity,
                state=QueueState(entry.state),
                children=tuple(build(k) for k in kids),
                submit_acl=_acl(entry.acl_submit_applications),
                admin_acl=_acl(entry.acl_administer_queue),
            )

        return build("root")

    def check(self, where: str) -> None:
        """ConfigError naming the key of the first value that cannot work (``where``: the file)."""
        if self.node_locality_delay_ms < 0 or self.rack_locality_delay_ms < 0:
            raise ConfigError(f"{where}: scheduler locality delays must not be negative")
        if not 0.0 <= self.max_am_share <= 1.0:
            raise ConfigError(f"{where}: scheduler.max_am_share must be within [0, 1]")
        if self.maximum_allocation_mb < 1 or self.maximum_allocation_vcores < 1:
            raise ConfigError(f"{where}: scheduler maximum allocations must be positive")
        try:
            QueueTree(self.queue_tree_spec())
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"{where}: [[scheduler.queue]]: {e}") from None


def _acl(text: str | None) -> AccessControlList | None:
    return None if text is None else AccessControlList.parse(text)
