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
from typing import TYPE_CHECKING, Any, TypeVar

from cortex_rm.config.accounting import AccountingSection
from cortex_rm.config.events import EventsSection
from cortex_rm.config.errors import ConfigError
from cortex_rm.config.nodemanager import NodeManagerDirs, NodeManagerSection
from cortex_rm.config.resourcemanager import RM_ADDRESS_KEYS, ResourceManagerSection, SchedulerSection
from cortex_rm.config.ring import WILDCARD_HOSTS, RingSection
from cortex_rm.yarn.addresses import HostPort, MalformedAddress

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class NodeSection:
    """This daemon."""

    name: str = ""  # shown in logs and status; default: the host:port of the node's first service
    state_dir: str = "./cortex-state"  # holds the RM state database, logs and the pid file
    host: str = "127.0.0.1"  # the address this node's services bind to and advertise
    log_level: str = "info"  # the least severe events written: "debug", "info", "warn" or "error"


@dataclass(frozen=True)
class Config:
    """The whole configuration of one daemon."""

    node: NodeSection = field(default_factory=NodeSection)
    resourcemanager: ResourceManagerSection = field(default_factory=ResourceManagerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    nodemanager: NodeManagerSection = field(default_factory=NodeManagerSection)
    ring: RingSection = field(default_factory=RingSection)
    accounting: AccountingSection = field(default_factory=AccountingSection)
    events: EventsSection = field(default_factory=EventsSection)
    source: str = "<defaults>"

    @property
    def state_dir(self) -> Path:
        return Path(self.node.state_dir)

    @property
    def nodemanager_dirs(self) -> NodeManagerDirs:
        """The NodeManager's local, log and read-only dirs, with the defaults under the state dir."""
        return self.nodemanager.dirs(self.state_dir)

    @property
    def state_store_url(self) -> str:
        url = self.resourcemanager.state_store_url
        return url or f"sqlite:///{(self.state_dir / 'rm-state.sqlite').resolve()}"

    @property
    def ledger_url(self) -> str:
        url = self.accounting.ledger_url
        return url or f"sqlite:///{(self.state_dir / 'ledger.sqlite').resolve()}"


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


def _build(cls: type[T], table: dict[str, Any], source: str, section: str) -> T:
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
    if hint is HostPort:
        return _address(value, source, key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a table")
        return _build(typing.cast(type[Any], hint), value, source, key)
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list")
        return tuple(_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        if inner is HostPort and value == "":
            return None  # an optional address left empty: not set
        return _convert(inner, value, source, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, not {type(value).__name__} ({value!r})")
    return value


def _address(value: Any, source: str, key: str) -> HostPort:
    """``host:port`` text from the file as a HostPort, or a ConfigError naming the key."""
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be str, not {type(value).__name__} ({value!r})")
    try:
        return HostPort.parse(value)
    except MalformedAddress:
        raise ConfigError(f"{source}: {key}: {value!r} is not host:port") from None


def _validate(config: Config) -> None:
    """The checks that span sections; each section checks its own values."""
    where = config.source
    if config.ring.enabled:
        config.ring.check(where)
        if config.resourcemanager.enabled:
            for key in RM_ADDRESS_KEYS:
                address: HostPort = getattr(config.resourcemanager, key)
                if address.host in WILDCARD_HOSTS:
                    raise ConfigError(
                        f"{where}: resourcemanager.{key} is a wildcard; with [ring] enabled the RM publishes "
                        "its addresses in the ring, so give the address clients and nodes reach it at"
                    )
        finds_rm = config.nodemanager.enabled and config.nodemanager.resourcemanager_tracker is None
        if finds_rm and not config.resourcemanager.enabled and not config.ring.resource_managers:
            raise ConfigError(
                f"{where}: this NodeManager finds the RM through the ring, so [ring] resource_managers must name "
                "the ring id(s) of the RM's node(s) (its log says 'ring member <id>'; `cortex-rm ring` shows it): "
                "otherwise the first member to write the RM's record, anyone's, would be believed"
            )
    elif config.accounting.mirror:
        raise ConfigError(f"{where}: accounting.mirror needs [ring] enabled (the mirror finds the RM through the ring)")
    elif config.nodemanager.enabled and config.nodemanager.resourcemanager_tracker is None:
        raise ConfigError(
            f"{where}: with [ring] enabled = false the NodeManager cannot find the RM: "
            "set nodemanager.resourcemanager_tracker"
        )
    if config.node.log_level not in ("debug", "info", "warn", "error"):
        raise ConfigError(f'{where}: node.log_level must be "debug", "info", "warn" or "error"')
    config.nodemanager.check(where, config.state_dir)
    config.resourcemanager.check(where)
    config.scheduler.check(where)
    config.accounting.check(where)
    config.events.check(where)
