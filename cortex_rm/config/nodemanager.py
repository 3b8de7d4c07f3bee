"""``[nodemanager]``: what this machine offers to containers, and where their files go."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from cortex_rm.config.errors import ConfigError
from cortex_rm.container.id_ranges import DEFAULT_RANGE_TEXT, IdRange, IdRangeError
from cortex_rm.container.offer_schedule import OfferSchedule, ScheduleError
from cortex_rm.yarn.addresses import HostPort

CONTAINER_RUNTIMES = ("lxc",)
MIN_LOG_RETAIN_S = 60  # a minute: an aggregation's retries keep their logs anyway
MIN_PIDS_LIMIT = 16  # a JVM alone starts a few dozen threads; fewer cannot run anything
MAX_DECOMMISSION_GRACE_S = 3600  # YARN's default graceful decommission timeout: the longest we allow


@dataclass(frozen=True)
class NodeManagerSection:
    """The NodeManager role: what this machine offers to containers."""

    enabled: bool = True
    # NodeManager REST API (yarn.nodemanager.webapp.address)
    webapp_address: HostPort = HostPort("127.0.0.1", 8042)
    memory_mb: int = 8192  # yarn.nodemanager.resource.memory-mb
    vcores: int = 8  # yarn.nodemanager.resource.cpu-vcores
    # The disk this node offers (GB, 10**9 bytes; fractions allowed): its file system's block
    # replicas, the runtime image cache and the localizer's shared caches stay within it together.
    # A write that would go over first evicts unused cached images and localized resources (least
    # recently used first), then is refused (DiskOutOfSpaceException); block replicas are never
    # evicted.  0 (the default): no cap.  `contributor install --disk-gb` sets it
    disk_gb: float = 0
    # When the node offers its caps, in this machine's local time: "22:00-07:00" (only at night),
    # "08:00-12:00, 14:00-18:00"...; outside it the node takes no new containers (the RM leaves it
    # out of placement) and those it runs go on to their end.  "" (the default): always
    schedule: str = ""
    # The NodeManager's RPC address (yarn.nodemanager.address); also its NodeId, host:port.
    # It and webapp_address must be on the host of [ring] address: other nodes open them to
    # their containers only there (a member's ring address is the host it is known at)
    address: HostPort = HostPort("127.0.0.1", 45454)
    # The RM's NodeTracker this node reports to; "" (the default): find the RM through the
    # ring (the RM publishes its addresses under the ring key "cortex:resourcemanager")
    resourcemanager_tracker: HostPort | None = None
    # The heartbeat interval this node asks for; the RM may shorten it
    # (yarn.resourcemanager.nodemanagers.heartbeat-interval-ms)
    heartbeat_interval_ms: int = 1000
    rack: str = "/default-rack"  # the node's rack, a path (YARN's topology)
    # Where containers' work dirs and localized files go (yarn.nodemanager.local-dirs), as
    # usercache/<user>/appcache/<appId>/...; default: <state_dir>/nm-local-dir
    local_dirs: tuple[str, ...] = ()
    # Where containers' stdout/stderr go, as <log_dir>/<appId>/<containerId>
    # (yarn.nodemanager.log-dirs); default: <state_dir>/nm-logs
    log_dirs: tuple[str, ...] = ()
    # When an application ends, put its containers' logs into the cluster's file system
    # (yarn.log-aggregation-enable; where `yarn logs -applicationId` reads them) and
    # remove the local copies; false: keep them here
    log_aggregation: bool = True
    # How long a finished application's logs stay in the log dirs when they are not
    # aggregated (aggregation off, or given up after its retries), counted from the
    # application's end here and from their last write, whichever is later; logs found at
    # start count as ended then (yarn.nodemanager.log.retain-seconds); -1 keeps them
    log_retain_s: int = 10800
    # The JVM containers get as JAVA_HOME (Spark's commands start with {{JAVA_HOME}}/bin/java):
    # a path inside the runtime image (Debian 12's OpenJDK 17 there), not on this machine
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
    # The host uids/gids of this node's unprivileged containers, "BASE:COUNT" (multiples of
    # 65536): each running application gets a block of 65536 (its containers' 0..65535), so
    # root inside is an unprivileged user outside.  Must not overlap /etc/subuid, /etc/subgid
    # or another node's range on the same host (local-cluster gives each node its own)
    container_id_range: str = DEFAULT_RANGE_TEXT
    # Containers may reach public internet addresses (members, their driver and DNS always)
    container_internet: bool = False
    # NodeManager recovery (yarn.nodemanager.recovery.enabled): containers outlive the daemon
    # (killed or crashed) and a restart of it on the same state dir takes the running ones back
    # and reports the ended ones with their exit codes; false: they die with the daemon and a
    # restart reaps what is left.  A daemon that stops cleanly kills its containers either way
    recovery: bool = False
    # Graceful leave (SIGTERM, `systemctl stop`, `cortex-rm node leave`): the node goes
    # DECOMMISSIONING, takes no new containers, and the running ones get this long to finish
    # before they are killed (exit status KILLED_BY_RESOURCEMANAGER, which Spark does not count
    # against the application); YARN's graceful decommission timeout.  0: kill them at once.
    # At most MAX_DECOMMISSION_GRACE_S; systemd's stop timeout (contributor install) allows 60 s
    decommission_grace_s: int = 60

    def dirs(self, state_dir: Path) -> NodeManagerDirs:
        """The NodeManager's local, log and read-only dirs, with the defaults under ``state_dir``."""
        state = state_dir.resolve()
        readonly: tuple[Path, ...]
        if self.readonly_dirs is None:
            found = _installed_pyspark_dir()
            readonly = (Path(found),) if found else ()
        else:
            readonly = tuple(Path(d) for d in self.readonly_dirs)
        return NodeManagerDirs(
            local_dirs=tuple(Path(d).resolve() for d in self.local_dirs) or (state / "nm-local-dir",),
            log_dirs=tuple(Path(d).resolve() for d in self.log_dirs) or (state / "nm-logs",),
            readonly_dirs=readonly,
            shared_dirs=tuple(Path(d) for d in self.shared_dirs),
            java_home=Path(self.java_home),
        )

    def check(self, where: str, state_dir: Path) -> None:
        """ConfigError naming the key of the first value that cannot work (``where``: the file)."""
        if self.address.port == 0:
            raise ConfigError(f"{where}: nodemanager.address needs a port (it is the node's NodeId)")
        if self.log_retain_s != -1 and self.log_retain_s < MIN_LOG_RETAIN_S:
            raise ConfigError(f"{where}: nodemanager.log_retain_s must be -1 (keep) or at least {MIN_LOG_RETAIN_S}")
        if self.heartbeat_interval_ms < 50:
            raise ConfigError(f"{where}: nodemanager.heartbeat_interval_ms must be at least 50")
        if self.memory_mb < 1 or self.vcores < 1:
            raise ConfigError(f"{where}: nodemanager memory_mb and vcores must be positive")
        if self.disk_gb < 0:
            raise ConfigError(f"{where}: nodemanager.disk_gb must be 0 (no cap) or positive, not {self.disk_gb}")
        if not 0 <= self.decommission_grace_s <= MAX_DECOMMISSION_GRACE_S:
            raise ConfigError(
                f"{where}: nodemanager.decommission_grace_s must be 0..{MAX_DECOMMISSION_GRACE_S}, "
                f"not {self.decommission_grace_s}"
            )
        try:
            OfferSchedule.parse(self.schedule)
        except ScheduleError as e:
            raise ConfigError(f"{where}: nodemanager.schedule: {e}") from None
        if not self.rack.startswith("/"):
            raise ConfigError(f"{where}: nodemanager.rack must be a path starting with '/', not {self.rack!r}")
        self._check_dirs(f"{where}: nodemanager", state_dir)
        try:
            IdRange.parse(self.container_id_range)
        except IdRangeError as e:
            raise ConfigError(f"{where}: nodemanager.container_id_range: {e}") from None

    def _check_dirs(self, where: str, state_dir: Path) -> None:
        for key in ("local_dirs", "log_dirs"):
            dirs = getattr(self, key)
            if any(not d for d in dirs):
                raise ConfigError(f"{where}.{key} has an empty path")
            if len({str(Path(d).resolve()) for d in dirs}) != len(dirs):
                raise ConfigError(f"{where}.{key} names a directory twice")
        for key in ("readonly_dirs", "shared_dirs"):
            for d in getattr(self, key) or ():
                if not Path(d).is_absolute():
                    raise ConfigError(f"{where}.{key}: {d!r} is not an absolute path")
        if not Path(self.java_home).is_absolute():
            raise ConfigError(f"{where}.java_home: {self.java_home!r} is not an absolute path")
        if not self.user_home_dir.startswith("/"):
            raise ConfigError(f"{where}.user_home_dir: {self.user_home_dir!r} is not an absolute path")
        if self.container_memory_overhead_mb < 0:
            raise ConfigError(f"{where}.container_memory_overhead_mb must not be negative")
        if self.pids_limit < MIN_PIDS_LIMIT:
            raise ConfigError(f"{where}.pids_limit must be at least {MIN_PIDS_LIMIT}")
        if self.runtime not in CONTAINER_RUNTIMES:
            raise ConfigError(
                f"{where}.runtime: {self.runtime!r} is not a container runtime; known: {', '.join(CONTAINER_RUNTIMES)}"
            )
        dirs = self.dirs(state_dir)
        overlap = set(dirs.local_dirs) & set(dirs.log_dirs)
        if overlap:
            raise ConfigError(f"{where}: {sorted(map(str, overlap))[0]} is both a local dir and a log dir")


@dataclass(frozen=True)
class NodeManagerDirs:
    """The NodeManager's directories, resolved to absolute paths (defaults filled in)."""

    local_dirs: tuple[Path, ...]
    log_dirs: tuple[Path, ...]
    readonly_dirs: tuple[Path, ...]
    shared_dirs: tuple[Path, ...]
    java_home: Path


def _installed_pyspark_dir() -> str | None:
    """The directory of the installed pyspark package (its SPARK_HOME), if any."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())
