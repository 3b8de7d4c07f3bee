"""What a developer asks for when she registers a function: the REST body, checked.

``POST /ws/v1/cortex/events/functions/{name}`` carries::

    {"code": {"path": "/user/alice/.cortex/functions/hello/1a2b...-hello.py"},
     "handler": "handler",                 # optional: a Python name, or module.function (zip)
     "kind": "python",                     # optional: python | zip; default from the path's suffix
     "limits": {"memoryMb": 256, "timeoutS": 60, "maxConcurrency": 4},   # optional, each key too
     "replicas": 1, "mode": "first",       # optional
     "schedule": "every 5m",               # optional: cron (five fields, UTC) or every <N>s|m|h
     "grants": ["bob"]}                    # optional: who else may trigger it

Every registration is complete: a field left out takes its default, not the previous
version's value.  A key this module does not know is refused (a misspelt
``"replica"`` must not silently register one replica).  ``RegistrationRequest.from_json``
raises ``InvalidFunction`` naming the field as the body spells it; the owner, the
version and the code file's length and modification time are the registry's to add
(``spec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortex_rm.events.schedules import check_schedule
from cortex_rm.events.functions import (
    CODE_KINDS,
    HANDLER_PATTERN,
    MAX_CONCURRENCY,
    MAX_GRANTS,
    MAX_REPLICAS,
    MAX_SCHEDULE_CHARS,
    MEMORY_MB,
    MODES,
    TIMEOUT_S,
    USER_PATTERN,
    FunctionLimits,
    FunctionSpec,
    InvalidFunction,
)

MAX_CODE_PATH_CHARS = 1024
#: The code file's suffix that names its kind when the body gives none.
KIND_OF_SUFFIX = {".py": "python", ".zip": "zip"}

_KEYS = frozenset({"code", "handler", "kind", "limits", "replicas", "mode", "schedule", "grants"})
_LIMIT_KEYS = frozenset({"memoryMb", "timeoutS", "maxConcurrency"})


@dataclass(frozen=True)
class RegistrationRequest:
    """A registration as asked (see the module docstring); ``code_kind`` None: from the path's suffix."""

    code_path: str
    handler: str = "handler"
    code_kind: str | None = None
    limits: FunctionLimits = field(default_factory=FunctionLimits)
    replicas: int = 1
    mode: str = "first"
    schedule: str | None = None
    grants: frozenset[str] = frozenset()

    @property
    def kind(self) -> str:
        """The code's kind: as given, else from the path's suffix (InvalidFunction naming ``kind`` if neither)."""
        if self.code_kind is not None:
            return self.code_kind
        for suffix, kind in KIND_OF_SUFFIX.items():
            if self.code_path.endswith(suffix):
                return kind
        raise InvalidFunction(
            f"kind: the code file {self.code_path[-80:]!r} ends in neither .py nor .zip; say which it is "
            f"(\"kind\": one of {', '.join(CODE_KINDS)})"
        )

    def spec(
        self, name: str, owner: str, version: int, code_length: int, code_mtime_ms: int, now_ms: int
    ) -> FunctionSpec:
        """The registration this request makes (``FunctionSpec`` checks the whole, naming the field)."""
        return FunctionSpec(
            name=name,
            owner=owner,
            version=version,
            code_path=self.code_path,
            code_length=code_length,
            code_mtime_ms=code_mtime_ms,
            code_kind=self.kind,
            handler=self.handler,
            limits=self.limits,
            replicas=self.replicas,
            mode=self.mode,
            schedule=self.schedule,
            grants=self.grants,
            registered_ms=now_ms,
        )

    @classmethod
    def from_json(cls, body: object) -> RegistrationRequest:
        """The request a REST body makes; InvalidFunction naming the first field that is wrong."""
        obj = _object(body, "the body")
        _known(obj, _KEYS, "")
        code = _object(obj.get("code"), "code")
        _known(code, frozenset({"path"}), "code.")
        path = code.get("path")
        if not isinstance(path, str) or not path.startswith("/") or not 1 < len(path) <= MAX_CODE_PATH_CHARS:
            raise InvalidFunction(
                f"code.path must be the absolute path of the code file in the cluster's file system "
                f"(at most {MAX_CODE_PATH_CHARS} characters)"
            )
        kind = obj.get("kind")
        if kind is not None and kind not in CODE_KINDS:
            raise InvalidFunction(f"kind must be one of {', '.join(CODE_KINDS)} (got {str(kind)[:40]!r})")
        handler = obj.get("handler", "handler")
        if not isinstance(handler, str) or not HANDLER_PATTERN.fullmatch(handler):
            raise InvalidFunction(f"handler must be a Python name, or module.function (got {str(handler)[:80]!r})")
        mode = obj.get("mode", "first")
        if mode not in MODES:
            raise InvalidFunction(f"mode must be one of {', '.join(MODES)} (got {str(mode)[:40]!r})")
        schedule = obj.get("schedule")
        if schedule is not None and (not isinstance(schedule, str) or not 0 < len(schedule) <= MAX_SCHEDULE_CHARS):
            raise InvalidFunction(
                f"schedule must be a cron expression or 'every <N>s|m|h' of 1 to {MAX_SCHEDULE_CHARS} characters"
            )
        if schedule is not None:
            schedule = check_schedule(schedule)  # InvalidSchedule (an InvalidFunction) naming the field
        request = cls(
            code_path=path,
            handler=handler,
            code_kind=kind,
            limits=_limits(obj.get("limits", {})),
            replicas=_number(obj.get("replicas", 1), "replicas", (1, 1, MAX_REPLICAS), int),
            mode=mode,
            schedule=schedule,
            grants=_grants(obj.get("grants", [])),
        )
        if request.kind == "zip" and "." not in handler:  # (a kind neither given nor implied is refused here too)
            raise InvalidFunction("handler: a zip's handler is module.function (e.g. main.handler)")
        return request


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFunction(f"{what} must be a JSON object")
    return value


def _known(obj: dict[str, Any], keys: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in keys)
    if unknown:
        raise InvalidFunction(
            f"{where}{unknown[0][:40]}: unknown field (known: {', '.join(where + k for k in sorted(keys))})"
        )


def _number(value: object, name: str, bounds: tuple[Any, Any, Any], kinds: type | tuple[type, ...]) -> Any:
    _, low, high = bounds
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise InvalidFunction(f"{name} must be a number from {low} to {high} (got {str(value)[:40]!r})")
    return value


def _limits(value: object) -> FunctionLimits:
    limits = _object(value, "limits")
    _known(limits, _LIMIT_KEYS, "limits.")
    return FunctionLimits(
        memory_mb=_number(limits.get("memoryMb", MEMORY_MB[0]), "limits.memoryMb", MEMORY_MB, int),
        timeout_s=float(_number(limits.get("timeoutS", TIMEOUT_S[0]), "limits.timeoutS", TIMEOUT_S, (int, float))),
        max_concurrency=_number(
            limits.get("maxConcurrency", MAX_CONCURRENCY[0]), "limits.maxConcurrency", MAX_CONCURRENCY, int
        ),
    )


def _grants(value: object) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > MAX_GRANTS:
        raise InvalidFunction(f"grants must be a list of at most {MAX_GRANTS} user names")
    for user in value:
        if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
            raise InvalidFunction(f"grants: {str(user)[:80]!r} is not a user name")
    return frozenset(value)
