"""A registered function: what a developer named, where its code is, how it may run.

A function is registered by name, cluster-wide, and belongs to the user who
registered it first (``owner``); only she may replace or delete it, and only she and
the users she names in ``grants`` may trigger it.  Each registration makes a new
``version``.  Its code is a file in the cluster's file system (``code_path``): a
Python module (``code_kind`` ``"python"``) whose ``handler`` names a function of it,
or a zip (``"zip"``) put on ``sys.path`` whose handler is ``module.function``.  The
node that runs it checks the file's length and modification time against the
registration, as YARN's NodeManager checks a resource's, so the code run is the
code registered.

The registry lives in the ring's key space under ``function_key(name)``, written only
by the RMs (``dht/write_policy.py``): the record's signature by an RM's ring key is
what makes a ``FunctionSpec`` trustworthy wherever it is read.  The function runs on
the owner of that same key and its successors, so the member that runs a function
holds its registration too.

``FunctionSpec.decode`` takes bytes from the ring or a request: it checks every
field's type and bounds and raises ``InvalidFunction`` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: Keys of the registry: ``cortex:event:fn:<name>``; the whole prefix is the RMs' to write.
FUNCTION_KEY_PREFIX = "cortex:event:"
#: Keys of the schedules' last fired ticks: ``cortex:event-tick:<name>`` (any member may write them).
TICK_KEY_PREFIX = "cortex:event-tick:"
#: The RM's list of functions with a schedule (every node reads it to fire what it owns).
SCHEDULES_KEY = FUNCTION_KEY_PREFIX + "schedules"

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USER_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
HANDLER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,7}")
CODE_KINDS = ("python", "zip")
MODES = ("first", "vote")

MAX_REPLICAS = 7
MAX_GRANTS = 64
MAX_CODE_BYTES = 64 * 1024 * 1024
MAX_SCHEDULE_CHARS = 128
MAX_SPEC_BYTES = 16 * 1024  # a registration's JSON, far below the ring's 64 KiB record values

# Limits: (default, lowest, highest).
MEMORY_MB = (256, 32, 8192)
TIMEOUT_S = (60.0, 0.1, 900.0)
MAX_CONCURRENCY = (4, 1, 256)


class InvalidFunction(ValueError):
    """A registration, or bytes said to be one, is not valid; the message names the field."""


def function_key(name: str) -> str:
    """The ring key of ``name``'s registration (the same key places its executions)."""
    return f"{FUNCTION_KEY_PREFIX}fn:{name}"


def tick_key(name: str) -> str:
    """The ring key of the last tick ``name``'s schedule fired."""
    return f"{TICK_KEY_PREFIX}{name}"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidFunction(f"a function's name must match {NAME_PATTERN.pattern} (got {str(name)[:80]!r})")
    return name


@dataclass(frozen=True)
class FunctionLimits:
    """What one activation may use: memory (the sandbox's cgroup), time, and sandboxes at once per node."""

    memory_mb: int = MEMORY_MB[0]
    timeout_s: float = TIMEOUT_S[0]
    max_concurrency: int = MAX_CONCURRENCY[0]

    def __post_init__(self) -> None:
        _bounded("memory_mb", self.memory_mb, MEMORY_MB, int)
        _bounded("timeout_s", self.timeout_s, TIMEOUT_S, (int, float))
        _bounded("max_concurrency", self.max_concurrency, MAX_CONCURRENCY, int)

    @property
    def timeout_ms(self) -> int:
        return int(self.timeout_s * 1000)


@dataclass(frozen=True)
class FunctionSpec:
    """One version of a registered function (see the module docstring)."""

    name: str
    owner: str
    version: int
    code_path: str
    code_length: int
    code_mtime_ms: int
    code_kind: str = "python"
    handler: str = "handler"
    limits: FunctionLimits = field(default_factory=FunctionLimits)
    replicas: int = 1
    mode: str = "first"
    #: A cron expression (five fields) or ``every <N>s|m|h``; None: fired only by triggers.
    schedule: str | None = None
    grants: frozenset[str] = frozenset()
    registered_ms: int = 0
    #: A deleted function's last registration (the ring keeps it so a deletion wins over older copies).
    deleted: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.owner, str) or not USER_PATTERN.fullmatch(self.owner):
            raise InvalidFunction(f"owner must be a user name (got {str(self.owner)[:80]!r})")
        _bounded("version", self.version, (1, 1, 1 << 62), int)
        if not isinstance(self.code_path, str) or not self.code_path.startswith("/") or len(self.code_path) > 1024:
            raise InvalidFunction("code_path must be an absolute path in the cluster's file system")
        _bounded("code_length", self.code_length, (0, 0, MAX_CODE_BYTES), int)
        _bounded("code_mtime_ms", self.code_mtime_ms, (0, 0, 1 << 62), int)
        if self.code_kind not in CODE_KINDS:
            raise InvalidFunction(f"code_kind must be one of {CODE_KINDS} (got {str(self.code_kind)[:40]!r})")
        if not isinstance(self.handler, str) or not HANDLER_PATTERN.fullmatch(self.handler):
            raise InvalidFunction(f"handler must be a Python name, or module.function (got {str(self.handler)[:80]!r})")
        if self.code_kind == "zip" and "." not in self.handler:
            raise InvalidFunction("a zip's handler is module.function (e.g. main.handler)")
        if not isinstance(self.limits, FunctionLimits):
            raise InvalidFunction("limits must be FunctionLimits")
        _bounded("replicas", self.replicas, (1, 1, MAX_REPLICAS), int)
        if self.mode not in MODES:
            raise InvalidFunction(f"mode must be one of {MODES} (got {str(self.mode)[:40]!r})")
        if self.schedule is not None and (not isinstance(self.schedule, str) or not 0 < len(self.schedule) <= MAX_SCHEDULE_CHARS):
            raise InvalidFunction(f"schedule must be a cron expression or 'every <N>s' of at most {MAX_SCHEDULE_CHARS} characters")
        if not isinstance(self.grants, frozenset) or len(self.grants) > MAX_GRANTS:
            raise InvalidFunction(f"grants must be a set of at most {MAX_GRANTS} user names")
        for user in self.grants:
            if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
                raise InvalidFunction(f"grants: {str(user)[:80]!r} is not a user name")
        _bounded("registered_ms", self.registered_ms, (0, 0, 1 << 62), int)
        if not isinstance(self.deleted, bool):
            raise InvalidFunction("deleted must be true or false")

    @property
    def key(self) -> str:
        return function_key(self.name)

    def may_trigger(self, user: str | None) -> bool:
        """Whether ``user`` (None: anonymous) may trigger this function: its owner, or one she granted."""
        return user is not None and (user == self.owner or user in self.grants)

    def next_version(self, **changes: Any) -> FunctionSpec:
        """This function registered again with ``changes`` (a version above this one)."""
        return replace(self, version=self.version + 1, **changes)

    def to_json(self) -> dict[str, Any]:
        """The registration as JSON (what the ring keeps and the REST API shows)."""
        return {
            "name": self.name,
            "owner": self.owner,
            "version": self.version,
            "code": {"path": self.code_path, "length": self.code_length, "modificationTime": self.code_mtime_ms,
                     "kind": self.code_kind},  # fmt: skip
            "handler": self.handler,
            "limits": {"memoryMb": self.limits.memory_mb, "timeoutS": self.limits.timeout_s,
                       "maxConcurrency": self.limits.max_concurrency},  # fmt: skip
            "replicas": self.replicas,
            "mode": self.mode,
            "schedule": self.schedule,
            "grants": sorted(self.grants),
            "registeredTime": self.registered_ms,
            "deleted": self.deleted,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: object) -> FunctionSpec:
        """The registration ``to_json`` wrote; InvalidFunction naming what is wrong."""
        obj = _object(data, "the registration")
        code = _object(obj.get("code"), "code")
        limits = _object(obj.get("limits"), "limits")
        grants = obj.get("grants", [])
        if not isinstance(grants, list):
            raise InvalidFunction("grants must be a list of user names")
        try:
            return cls(
                name=_at(obj, "name"),
                owner=_at(obj, "owner"),
                version=_at(obj, "version"),
                code_path=_at(code, "path", "code."),
                code_length=_at(code, "length", "code."),
                code_mtime_ms=_at(code, "modificationTime", "code."),
                code_kind=_at(code, "kind", "code."),
                handler=_at(obj, "handler"),
                limits=FunctionLimits(
                    memory_mb=_at(limits, "memoryMb", "limits."),
                    timeout_s=_at(limits, "timeoutS", "limits."),
                    max_concurrency=_at(limits, "maxConcurrency", "limits."),
                ),
                replicas=_at(obj, "replicas"),
                mode=_at(obj, "mode"),
                schedule=obj.get("schedule"),
                grants=frozenset(grants),
                registered_ms=obj.get("registeredTime", 0),
                deleted=obj.get("deleted", False),
            )
        except TypeError as e:  # an unhashable grant
            raise InvalidFunction(f"the registration has a value of the wrong type: {e}") from None

    @classmethod
    def decode(cls, data: bytes) -> FunctionSpec:
        """``encode``'s bytes back; InvalidFunction for anything else."""
        if len(data) > MAX_SPEC_BYTES:
            raise InvalidFunction(f"a registration of {len(data)} bytes (at most {MAX_SPEC_BYTES})")
        try:
            return cls.from_json(json.loads(data))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise InvalidFunction(f"a registration that is not JSON: {e}") from None


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFunction(f"{what} must be a JSON object")
    return value


def _at(obj: Mapping[str, Any], name: str, where: str = "") -> Any:
    if name not in obj:
        raise InvalidFunction(f"the registration has no {where}{name}")
    return obj[name]


def _bounded(name: str, value: object, bounds: tuple[Any, Any, Any], kinds: type | tuple[type, ...]) -> None:
    _, low, high = bounds
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise InvalidFunction(f"{name} must be a number from {low} to {high} (got {str(value)[:40]!r})")
