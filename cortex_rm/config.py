"""The daemon's configuration: a TOML file parsed once into frozen objects.

Every section is a frozen dataclass whose fields document themselves; an unknown
key or a value of the wrong type is an error naming the file, the section and the
key, so a typo never silently falls back to a default.  Every field has an
embedded default, so an empty file (or none) runs a one-node cluster on loopback.

Example (every key optional)::

    [node]
    name = "node1"
    state_dir = "/var/lib/cortex-rm"
    host = "127.0.0.1"

    [resourcemanager]
    enabled = true
    address = "127.0.0.1:8032"

    [ring]
    address = "127.0.0.1:7946"
    introducers = ["192.0.2.10:7946"]

    [[scheduler.queue]]
    path = "root.default"
    capacity = 70
    [[scheduler.queue]]
    path = "root.batch"
    capacity = 30
    maximum_capacity = 50
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex_rm.allocator.queues import DEFAULT_QUEUES, QueueSpec, QueueState
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.dht.swim_config import SwimConfig


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and what to change."""


@dataclass(frozen=True)
class NodeSection:
    """This daemon."""

    name: str = ""  # shown in logs and status; default: the host:port of the node's first service
    state_dir: str = "./cortex-state"  # holds the RM state database, logs and the pid file
    host: str = "127.0.0.1"  # the address this node's services bind to and advertise


@dataclass(frozen=True)
class ResourceManagerSection:
    """The ResourceManager role (one active RM per cluster)."""

    enabled: bool = True
    address: str = "127.0.0.1:8032"  # ApplicationClientProtocol (yarn.resourcemanager.address)
    scheduler_address: str = "127.0.0.1:8030"  # ApplicationMasterProtocol (yarn.resourcemanager.scheduler.address)
    webapp_address: str = "127.0.0.1:8088"  # REST API (yarn.resourcemanager.webapp.address)
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
    tracker_address: str = "127.0.0.1:8031"
    # A node silent for longer than this is LOST (yarn.nm.liveness-monitor.expiry-interval-ms).
    # YARN's default is 600000 (10 min), made for machine rooms; volunteered machines come and
    # go, and their containers should be re-requested within seconds, not minutes.  Nodes are
    # granted a heartbeat interval of at most a third of this.
    nm_expiry_ms: int = 10_000


@dataclass(frozen=True)
class QueueEntry:
    """One queue of the capacity scheduler, named by its full path (``root.x.y``)."""

    path: str
    capacity: float = 100.0  # guaranteed percent of the parent; siblings sum to 100
    maximum_capacity: float = 100.0  # ceiling, percent of the parent
    state: str = "RUNNING"  # RUNNING or STOPPED


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
            )

        return build("root")


@dataclass(frozen=True)
class NodeManagerSection:
    """The NodeManager role: what this machine offers to containers."""

    enabled: bool = True
    webapp_address: str = "127.0.0.1:8042"  # NodeManager REST API (yarn.nodemanager.webapp.address)
    memory_mb: int = 8192  # yarn.nodemanager.resource.memory-mb
    vcores: int = 8  # yarn.nodemanager.resource.cpu-vcores
    # The NodeManager's RPC address (yarn.nodemanager.address); also its NodeId, host:port
    address: str = "127.0.0.1:45454"
    # The RM's NodeTracker this node reports to; "" (the default): find the RM through the
    # ring (the RM publishes its addresses under the ring key "cortex:resourcemanager")
    resourcemanager_tracker: str = ""
    # The heartbeat interval this node asks for; the RM may shorten it
    # (yarn.resourcemanager.nodemanagers.heartbeat-interval-ms)
    heartbeat_interval_ms: int = 1000
    rack: str = "/default-rack"  # the node's rack, a path (YARN's topology)
    # Where containers' work dirs and localized files go (yarn.nodemanager.local-dirs), as
    # usercache/<user>/appcache/<appId>/...; default: <state_dir>/nm-local-dir
    local_dirs: tuple[str, ...] = ()
    # Where containers' stdout/stderr go, as <log_dir>/<appId>/<containerId>
    # (yarn.nodemanager.log-dirs); kept after the application ends; default: <state_dir>/nm-logs
    log_dirs: tuple[str, ...] = ()
    # The JVM containers get as JAVA_HOME (Spark's commands start with {{JAVA_HOME}}/bin/java);
    # mounted read-only into every container
    java_home: str = "/usr/lib/jvm/java-17-openjdk-amd64"
    # Added to a container's allocated memory to make its hard limit: the JVM's off-heap
    # memory and the launching shell live outside -Xmx and outside Spark's own overhead
    container_memory_overhead_mb: int = 256
    # Most processes and threads one container may run (the pids cgroup)
    pids_limit: int = 4096
    # The container runtime: "lxc" (LXC containers with cgroup limits) is the only one
    runtime: str = "lxc"
    # Host directories containers may read (mounted read-only), e.g. the Spark installation
    # named by spark.yarn.jars=local:...; default (key absent): the installed pyspark
    # package's directory, if pyspark is installed; [] for none
    readonly_dirs: tuple[str, ...] | None = None
    # Host directories containers may read and write: the part of the host's file system
    # that plays the cluster file system when clients use fs.defaultFS=file:/// (Spark's
    # spark.yarn.stagingDir, job input and output).  An application's own staging dir
    # (a file: resource's directory named after the application) is shared with its
    # containers without being listed here.
    shared_dirs: tuple[str, ...] = ()
    # $HOME of every container (yarn.nodemanager.user-home-dir)
    user_home_dir: str = "/home/"


@dataclass(frozen=True)
class RingSection:
    """This node's ring member: Chord membership, SWIM failure detection, the key space."""

    enabled: bool = True
    # Where the ring's RPC listens (Thrift over mutual TLS); other members reach it here
    address: str = "127.0.0.1:7946"
    # Ring addresses (host:port) of members to join through.  None: this node starts a new
    # ring, unless its neighbour log (<state_dir>/ring-neighbours.json) is fresh enough to
    # rejoin through the peers it knew
    introducers: tuple[str, ...] = ()
    # SWIM's probe interval; the probe timeouts and the suspicion timeout scale with it
    # (1000 ms: a crashed node is declared dead within about 8 s in a ring of 10)
    probe_interval_ms: int = 1000
    # r, the successor-list length: a node keeps its place unless all r fail at once
    successor_list_length: int = 8
    # Copies of each key-space record beyond its owner's, on the owner's next successors
    replicas: int = 3
    # A neighbour log older than this is not trusted on restart (use the introducers)
    neighbour_log_max_age_s: int = 600
    # Where GET /ws/v1/ring (what `cortex-rm ring` reads) is served on a node without a
    # NodeManager; "" (the default): on the NodeManager's webapp_address, or nowhere
    status_address: str = ""

    def ring_config(self) -> RingConfig:
        """The ring core's settings: the LAN profile with its timings (probes, dead-member probes and
        retention) scaled to probe_interval_ms."""
        scale = self.probe_interval_ms / 1000
        lan = SwimConfig.lan()
        swim = dataclasses.replace(
            lan,
            probe_interval=lan.probe_interval * scale,
            probe_timeout=lan.probe_timeout * scale,
            indirect_probe_timeout=lan.indirect_probe_timeout * scale,
            dead_probe_interval=lan.dead_probe_interval * scale,
            dead_member_retention=lan.dead_member_retention * scale,
        )
        return RingConfig(
            successor_list_length=self.successor_list_length,
            replicas=self.replicas,
            neighbour_log_max_age=float(self.neighbour_log_max_age_s),
            swim=swim,
        )


@dataclass(frozen=True)
class Config:
    """The whole configuration of one daemon."""

    node: NodeSection = field(default_factory=NodeSection)
    resourcemanager: ResourceManagerSection = field(default_factory=ResourceManagerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    nodemanager: NodeManagerSection = field(default_factory=NodeManagerSection)
    ring: RingSection = field(default_factory=RingSection)
    source: str = "<defaults>"

    @property
    def state_dir(self) -> Path:
        return Path(self.node.state_dir)

    @property
    def nodemanager_dirs(self) -> NodeManagerDirs:
        """The NodeManager's local, log and read-only dirs, with the defaults under the state dir."""
        nm = self.nodemanager
        state = self.state_dir.resolve()
        if nm.readonly_dirs is None:
            found = _installed_pyspark_dir()
            readonly = (Path(found),) if found else ()
        else:
            readonly = tuple(Path(d) for d in nm.readonly_dirs)
        return NodeManagerDirs(
            local_dirs=tuple(Path(d).resolve() for d in nm.local_dirs) or (state / "nm-local-dir",),
            log_dirs=tuple(Path(d).resolve() for d in nm.log_dirs) or (state / "nm-logs",),
            readonly_dirs=readonly,
            shared_dirs=tuple(Path(d) for d in nm.shared_dirs),
            java_home=Path(nm.java_home),
        )

    @property
    def state_store_url(self) -> str:
        url = self.resourcemanager.state_store_url
        return url or f"sqlite:///{(self.state_dir / 'rm-state.sqlite').resolve()}"


CONTAINER_RUNTIMES = ("lxc",)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # listen everywhere: not an address anyone can reach
MIN_PIDS_LIMIT = 16  # a JVM alone starts a few dozen threads; fewer cannot run anything


def _installed_pyspark_dir() -> str | None:
    """The directory of the installed pyspark package (its SPARK_HOME), if any."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


@dataclass(frozen=True)
class NodeManagerDirs:
    """The NodeManager's directories, resolved to absolute paths (defaults filled in)."""

    local_dirs: tuple[Path, ...]
    log_dirs: tuple[Path, ...]
    readonly_dirs: tuple[Path, ...]
    shared_dirs: tuple[Path, ...]
    java_home: Path


def parse_address(text: str, where: str) -> tuple[str, int]:
    """``host:port`` into its parts, or a ConfigError naming ``where``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {text!r} is not host:port")
    return host, int(port)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(raw, str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from parsed TOML, rejecting unknown keys and wrong types by name."""
    config = _build(Config, {k: v for k, v in raw.items()}, source, "")
    config = dataclasses.replace(config, source=source)
    _validate(config)
    return config


def _build(cls: type, table: dict[str, Any], source: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(table) - names)
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in table.items():
        key = f"{section}.{name}" if section else name
        values[name] = _convert(hints[name], value, source, key)
    try:
        return cls(**values)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{source}: [{section}] {e}") from None


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a table")
        return _build(hint, value, source, key)  # type: ignore[arg-type]
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list")
        return tuple(_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _convert(inner, value, source, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, not {type(value).__name__} ({value!r})")
    return value


def _validate(config: Config) -> None:
    rm = config.resourcemanager
    for key in ("address", "scheduler_address", "webapp_address", "tracker_address"):
        parse_address(getattr(rm, key), f"{config.source}: resourcemanager.{key}")
    nm = config.nodemanager
    for key in ("webapp_address", "address"):
        parse_address(getattr(nm, key), f"{config.source}: nodemanager.{key}")
    if nm.resourcemanager_tracker:
        parse_address(nm.resourcemanager_tracker, f"{config.source}: nodemanager.resourcemanager_tracker")
    _validate_ring(config)
    if parse_address(nm.address, "nodemanager.address")[1] == 0:
        raise ConfigError(f"{config.source}: nodemanager.address needs a port (it is the node's NodeId)")
    if rm.nm_expiry_ms < 300:
        raise ConfigError(f"{config.source}: resourcemanager.nm_expiry_ms must be at least 300")
    if nm.heartbeat_interval_ms < 50:
        raise ConfigError(f"{config.source}: nodemanager.heartbeat_interval_ms must be at least 50")
    if nm.memory_mb < 1 or nm.vcores < 1:
        raise ConfigError(f"{config.source}: nodemanager memory_mb and vcores must be positive")
    if not nm.rack.startswith("/"):
        raise ConfigError(f"{config.source}: nodemanager.rack must be a path starting with '/', not {nm.rack!r}")
    _validate_nodemanager_dirs(config)
    if rm.max_app_attempts < 1:
        raise ConfigError(f"{config.source}: resourcemanager.max_app_attempts must be at least 1")
    if rm.max_application_priority < 0:
        raise ConfigError(f"{config.source}: resourcemanager.max_application_priority must not be negative")
    if rm.am_expiry_ms < 1000:
        raise ConfigError(f"{config.source}: resourcemanager.am_expiry_ms must be at least 1000")
    if config.scheduler.node_locality_delay_ms < 0 or config.scheduler.rack_locality_delay_ms < 0:
        raise ConfigError(f"{config.source}: scheduler locality delays must not be negative")
    if not 0.0 <= config.scheduler.max_am_share <= 1.0:
        raise ConfigError(f"{config.source}: scheduler.max_am_share must be within [0, 1]")
    if rm.max_completed_applications < 0:
        raise ConfigError(f"{config.source}: resourcemanager.max_completed_applications must not be negative")
    if not 1024 <= rm.ipc_max_data_length <= 2**31 - 1:
        raise ConfigError(
            f"{config.source}: resourcemanager.ipc_max_data_length must be between 1024 and 2147483647 bytes"
        )
    sched = config.scheduler
    if sched.maximum_allocation_mb < 1 or sched.maximum_allocation_vcores < 1:
        raise ConfigError(f"{config.source}: scheduler maximum allocations must be positive")
    from cortex_rm.allocator.queues import QueueTree

    try:
        QueueTree(sched.queue_tree_spec())
    except ConfigError as e:
        raise ConfigError(f"{config.source}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{config.source}: [[scheduler.queue]]: {e}") from None


def _validate_ring(config: Config) -> None:
    ring, where = config.ring, f"{config.source}: ring"
    if not ring.enabled:
        if config.nodemanager.enabled and not config.nodemanager.resourcemanager_tracker:
            raise ConfigError(
                f"{config.source}: with [ring] enabled = false the NodeManager cannot find the RM: "
                "set nodemanager.resourcemanager_tracker"
            )
        return
    host, _ = parse_address(ring.address, f"{where}.address")
    if host in WILDCARD_HOSTS:
        raise ConfigError(
            f"{where}.address: {ring.address!r} is a wildcard; give the address other members reach this "
            "node at (the ring advertises it)"
        )
    if config.resourcemanager.enabled:
        for key in ("address", "scheduler_address", "webapp_address", "tracker_address"):
            rm_host, _ = parse_address(getattr(config.resourcemanager, key), key)
            if rm_host in WILDCARD_HOSTS:
                raise ConfigError(
                    f"{config.source}: resourcemanager.{key} is a wildcard; with [ring] enabled the RM publishes "
                    "its addresses in the ring, so give the address clients and nodes reach it at"
                )
    if ring.status_address:
        parse_address(ring.status_address, f"{where}.status_address")
    for introducer in ring.introducers:
        _, port = parse_address(introducer, f"{where}.introducers")
        if port == 0:
            raise ConfigError(f"{where}.introducers: {introducer!r} needs a port")
    if ring.probe_interval_ms < 50:
        raise ConfigError(f"{where}.probe_interval_ms must be at least 50")
    if ring.neighbour_log_max_age_s < 1:
        raise ConfigError(f"{where}.neighbour_log_max_age_s must be at least 1")
    try:
        ring.ring_config()
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _validate_nodemanager_dirs(config: Config) -> None:
    nm, where = config.nodemanager, f"{config.source}: nodemanager"
    for key in ("local_dirs", "log_dirs"):
        dirs = getattr(nm, key)
        if any(not d for d in dirs):
            raise ConfigError(f"{where}.{key} has an empty path")
        if len({str(Path(d).resolve()) for d in dirs}) != len(dirs):
            raise ConfigError(f"{where}.{key} names a directory twice")
    for key in ("readonly_dirs", "shared_dirs"):
        for d in getattr(nm, key) or ():
            if not Path(d).is_absolute():
                raise ConfigError(f"{where}.{key}: {d!r} is not an absolute path")
    if not Path(nm.java_home).is_absolute():
        raise ConfigError(f"{where}.java_home: {nm.java_home!r} is not an absolute path")
    if not nm.user_home_dir.startswith("/"):
        raise ConfigError(f"{where}.user_home_dir: {nm.user_home_dir!r} is not an absolute path")
    if nm.container_memory_overhead_mb < 0:
        raise ConfigError(f"{where}.container_memory_overhead_mb must not be negative")
    if nm.pids_limit < MIN_PIDS_LIMIT:
        raise ConfigError(f"{where}.pids_limit must be at least {MIN_PIDS_LIMIT}")
    if nm.runtime not in CONTAINER_RUNTIMES:
        raise ConfigError(
            f"{where}.runtime: {nm.runtime!r} is not a container runtime; known: {', '.join(CONTAINER_RUNTIMES)}"
        )
    dirs = config.nodemanager_dirs
    overlap = set(dirs.local_dirs) & set(dirs.log_dirs)
    if overlap:
        raise ConfigError(f"{where}: {sorted(map(str, overlap))[0]} is both a local dir and a log dir")
