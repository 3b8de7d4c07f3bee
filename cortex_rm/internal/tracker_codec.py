"""NodeTracker messages to and from the generated Thrift structs, validated on the way in.

Thrift's Python decoder checks neither ``required`` fields nor ranges nor enum
values, so every ``*_from_thrift`` function calls the struct's ``validate()`` and
then checks each value against the protocol's rules, raising
``MalformedMessage`` naming the field.  Nothing decoded touches state before it
passed here.  The frame itself is bounded before it is buffered
(``MAX_FRAME_BYTES``, used by both ends' protocols).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
from thrift.protocol.TProtocol import TProtocolException

from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    MAX_CONTAINERS,
    MAX_RESPONSE_ID,
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeLeave,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey

T = TypeVar("T")

# The largest NodeTracker frame either end accepts: a heartbeat with MAX_CONTAINERS
# statuses and full diagnostics stays well below it.
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_HOST_CHARS = 255
MAX_ADDRESS_CHARS = 300
MAX_RACK_CHARS = 255
MAX_VERSION_CHARS = 64
MAX_TEXT_CHARS = 16 * 1024  # a health report or a diagnostics string
MAX_INT32 = 2**31 - 1
MAX_MEMORY_MB = 2**40  # a petabyte of memory: any larger figure is a bug or a lie
# A master key's secret: Hadoop's are 20 bytes (HmacSHA1 key generator); a shorter
# one is too weak to sign anything, a longer one than this is not a key.
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 256

# The binary protocol, strict, with its own bounds on strings and containers.
PROTOCOL_FACTORY = TBinaryProtocolFactory(
    strictRead=True, strictWrite=True, string_length_limit=MAX_FRAME_BYTES, container_length_limit=MAX_CONTAINERS
)

_CONTAINER_STATES = {
    ContainerState.NEW: ttypes.ContainerState.NEW,
    ContainerState.RUNNING: ttypes.ContainerState.RUNNING,
    ContainerState.COMPLETE: ttypes.ContainerState.COMPLETE,
}
_CONTAINER_STATES_BACK = {v: k for k, v in _CONTAINER_STATES.items()}
_ACTIONS = {
    NodeAction.NORMAL: ttypes.NodeAction.NORMAL,
    NodeAction.RESYNC: ttypes.NodeAction.RESYNC,
    NodeAction.SHUTDOWN: ttypes.NodeAction.SHUTDOWN,
}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}
_LEAVES = {
    NodeLeave.DECOMMISSIONING: ttypes.NodeLeave.DECOMMISSIONING,
    NodeLeave.DRAINED: ttypes.NodeLeave.DRAINED,
}
_LEAVES_BACK = {v: k for k, v in _LEAVES.items()}


# ------------------------------------------------------------- checks


def _validate(struct: Any, what: str) -> None:
    try:
        struct.validate()
    except TProtocolException as e:
        raise MalformedMessage(f"{what}: {e.message}") from None


def _text(value: Any, field: str, limit: int, allow_empty: bool = True) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedMessage(f"{field} must be a string")
    if len(value) > limit:
        raise MalformedMessage(f"{field} is longer than {limit} characters")
    if not allow_empty and not value:
        raise MalformedMessage(f"{field} must not be empty")
    return value


def _int(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedMessage(f"{field} must be an integer in [{low}, {high}], not {value!r}")
    return value


def _address(value: Any, field: str) -> str:
    text = _text(value, field, MAX_ADDRESS_CHARS, allow_empty=False)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 < int(port) <= 65535:
        raise MalformedMessage(f"{field} must be host:port, not {text!r}")
    return text


def _node_id(value: Any, field: str) -> NodeId:
    if not isinstance(value, ttypes.NodeAddress):
        raise MalformedMessage(f"{field} is missing")
    _validate(value, field)
    host = _text(value.host, f"{field}.host", MAX_HOST_CHARS, allow_empty=False)
    return NodeId(host, _int(value.port, f"{field}.port", 1, 65535))


def _yarn_id(value: Any, field: str, parse: Callable[[str], T]) -> T:
    """A YARN id in its string form (``ContainerId.parse``, ``ApplicationId.parse``...)."""
    text = _text(value, field, MAX_ADDRESS_CHARS, allow_empty=False)
    try:
        return parse(text)
    except MalformedId as e:
        raise MalformedMessage(f"{field}: {e}") from None


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedMessage(f"{field} must be a list")
    if len(value) > MAX_CONTAINERS:
        raise MalformedMessage(f"{field} has more than {MAX_CONTAINERS} entries")
    return value


def _node_address(node_id: NodeId) -> ttypes.NodeAddress:
    return ttypes.NodeAddress(host=node_id.host, port=node_id.port)


# ------------------------------------------------------------- registerNode


def _capacity_to_thrift(capability: Resource) -> ttypes.Capacity:
    return ttypes.Capacity(memory_mb=capability.memory_mb, vcores=capability.vcores)


def _capacity_from_thrift(t: Any, field: str) -> Resource:
    """A node's capacity (at least 1 MB and 1 vcore), or MalformedMessage."""
    if not isinstance(t, ttypes.Capacity):
        raise MalformedMessage(f"{field} is missing")
    _validate(t, field)
    return Resource(_int(t.memory_mb, f"{field}.memory_mb", 1, MAX_MEMORY_MB), _int(t.vcores, f"{field}.vcores", 1, MAX_INT32))


def registration_to_thrift(reg: NodeRegistration) -> ttypes.NodeRegistration:
    return ttypes.NodeRegistration(
        node_id=_node_address(reg.node_id),
        http_address=reg.http_address,
        rack=reg.rack,
        capacity=_capacity_to_thrift(reg.capability),
        heartbeat_interval_ms=reg.heartbeat_interval_ms,
        version=reg.version or None,
        healthy=reg.healthy,
        health_report=reg.health_report or None,
        containers=[_container_to_thrift(c) for c in reg.containers] or None,
        leave=None if reg.leave is None else _LEAVES[reg.leave],
    )


def registration_from_thrift(t: Any) -> NodeRegistration:
    """A registration as received by the RM, or MalformedMessage."""
    if not isinstance(t, ttypes.NodeRegistration):
        raise MalformedMessage("registerNode: the registration is missing")
    _validate(t, "registration")
    rack = _text(t.rack, "registration.rack", MAX_RACK_CHARS, allow_empty=False)
    if not rack.startswith("/"):
        raise MalformedMessage(f"registration.rack must start with '/', not {rack!r}")
    capability = _capacity_from_thrift(t.capacity, "registration.capacity")
    if t.healthy is not None and not isinstance(t.healthy, bool):
        raise MalformedMessage("registration.healthy must be a bool")
    containers = _list(t.containers or [], "registration.containers")
    leave = _leave(t.leave, "registration.leave")
    return NodeRegistration(
        node_id=_node_id(t.node_id, "registration.node_id"),
        http_address=_address(t.http_address, "registration.http_address"),
        rack=rack,
        capability=capability,
        heartbeat_interval_ms=_int(t.heartbeat_interval_ms, "registration.heartbeat_interval_ms", 1, MAX_INT32),
        version=_text(t.version, "registration.version", MAX_VERSION_CHARS),
        healthy=t.healthy is not False,
        health_report=_text(t.health_report, "registration.health_report", MAX_TEXT_CHARS),
        containers=tuple(
            _container_from_thrift(c, f"registration.containers[{i}]") for i, c in enumerate(containers)
        ),
        leave=leave,
    )


def registration_answer_to_thrift(answer: RegistrationAnswer) -> ttypes.RegistrationResponse:
    return ttypes.RegistrationResponse(
        heartbeat_interval_ms=answer.heartbeat_interval_ms,
        rm_identifier=answer.rm_identifier,
        diagnostics=answer.diagnostics or None,
        container_token_master_key=_master_key_to_thrift(answer.container_token_master_key),
        removes_completed_containers=answer.removes_completed_containers or None,
    )


def _master_key_to_thrift(key: MasterKey | None) -> ttypes.MasterKey | None:
    return None if key is None else ttypes.MasterKey(key_id=key.key_id, secret=key.secret)


def _master_key_from_thrift(t: Any, field: str) -> MasterKey | None:
    if t is None:
        return None
    if not isinstance(t, ttypes.MasterKey):
        raise MalformedMessage(f"{field} is not a MasterKey")
    _validate(t, field)
    if not isinstance(t.secret, bytes) or not MIN_SECRET_BYTES <= len(t.secret) <= MAX_SECRET_BYTES:
        raise MalformedMessage(f"{field}.secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return MasterKey(_int(t.key_id, f"{field}.key_id", -MAX_INT32 - 1, MAX_INT32), t.secret)


def registration_answer_from_thrift(t: Any) -> RegistrationAnswer:
    """The RM's answer as received by the node, or MalformedMessage."""
    if not isinstance(t, ttypes.RegistrationResponse):
        raise MalformedMessage("registerNode: the answer is missing")
    _validate(t, "registration response")
    if t.removes_completed_containers is not None and not isinstance(t.removes_completed_containers, bool):
        raise MalformedMessage("response.removes_completed_containers must be a bool")
    return RegistrationAnswer(
        heartbeat_interval_ms=_int(t.heartbeat_interval_ms, "response.heartbeat_interval_ms", 1, MAX_INT32),
        rm_identifier=_int(t.rm_identifier, "response.rm_identifier", 0, 2**63 - 1),
        diagnostics=_text(t.diagnostics, "response.diagnostics", MAX_TEXT_CHARS),
        container_token_master_key=_master_key_from_thrift(
            t.container_token_master_key, "response.container_token_master_key"
        ),
        removes_completed_containers=t.removes_completed_containers is True,
    )


# ------------------------------------------------------------- nodeHeartbeat


def _container_to_thrift(c: ContainerReport) -> ttypes.ContainerStatus:
    resource = c.resource
    return ttypes.ContainerStatus(
        container_id=str(c.container_id),
        state=_CONTAINER_STATES[c.state],
        exit_status=c.exit_status,
        diagnostics=c.diagnostics or None,
        resource=None if resource is None else ttypes.Capacity(memory_mb=resource.memory_mb, vcores=resource.vcores),
        priority=c.priority or None,
        creation_time_ms=c.creation_time_ms or None,
    )


def _container_from_thrift(t: Any, field: str) -> ContainerReport:
    if not isinstance(t, ttypes.ContainerStatus):
        raise MalformedMessage(f"{field} is not a ContainerStatus")
    _validate(t, field)
    state = _CONTAINER_STATES_BACK.get(t.state)
    if state is None:
        raise MalformedMessage(f"{field}.state: unknown ContainerState {t.state!r}")
    resource = None
    if t.resource is not None:
        if not isinstance(t.resource, ttypes.Capacity):
            raise MalformedMessage(f"{field}.resource is not a Capacity")
        _validate(t.resource, f"{field}.resource")
        resource = Resource(
            _int(t.resource.memory_mb, f"{field}.resource.memory_mb", 0, MAX_MEMORY_MB),
            _int(t.resource.vcores, f"{field}.resource.vcores", 0, MAX_INT32),
        )
    return ContainerReport(
        container_id=_yarn_id(t.container_id, f"{field}.container_id", ContainerId.parse),
        state=state,
        exit_status=_int(t.exit_status, f"{field}.exit_status", -MAX_INT32 - 1, MAX_INT32),
        diagnostics=_text(t.diagnostics, f"{field}.diagnostics", MAX_TEXT_CHARS),
        resource=resource,
        priority=0 if t.priority is None else _int(t.priority, f"{field}.priority", 0, MAX_INT32),
        creation_time_ms=_int(t.creation_time_ms or 0, f"{field}.creation_time_ms", 0, 2**63 - 1),
    )


def status_to_thrift(status: NodeStatusReport) -> ttypes.NodeStatus:
    return ttypes.NodeStatus(
        node_id=_node_address(status.node_id),
        response_id=status.response_id,
        healthy=status.healthy,
        health_report=status.health_report,
        containers=[_container_to_thrift(c) for c in status.containers],
        leave=None if status.leave is None else _LEAVES[status.leave],
        capability=None if status.capability is None else _capacity_to_thrift(status.capability),
        offering=None if status.offering else False,
    )


def _leave(value: Any, field: str) -> NodeLeave | None:
    leave = None if value is None else _LEAVES_BACK.get(value)
    if value is not None and leave is None:
        raise MalformedMessage(f"{field}: unknown NodeLeave {value!r}")
    return leave


def status_from_thrift(t: Any) -> NodeStatusReport:
    """A heartbeat as received by the RM, or MalformedMessage."""
    if not isinstance(t, ttypes.NodeStatus):
        raise MalformedMessage("nodeHeartbeat: the status is missing")
    _validate(t, "status")
    if not isinstance(t.healthy, bool):
        raise MalformedMessage("status.healthy must be a bool")
    if t.offering is not None and not isinstance(t.offering, bool):
        raise MalformedMessage("status.offering must be a bool")
    containers = _list(t.containers, "status.containers")
    leave = _leave(t.leave, "status.leave")
    return NodeStatusReport(
        node_id=_node_id(t.node_id, "status.node_id"),
        response_id=_int(t.response_id, "status.response_id", 0, MAX_RESPONSE_ID),
        healthy=t.healthy,
        health_report=_text(t.health_report, "status.health_report", MAX_TEXT_CHARS),
        containers=tuple(_container_from_thrift(c, f"status.containers[{i}]") for i, c in enumerate(containers)),
        leave=leave,
        capability=None if t.capability is None else _capacity_from_thrift(t.capability, "status.capability"),
        offering=t.offering is not False,
    )


def heartbeat_answer_to_thrift(answer: HeartbeatAnswer) -> ttypes.HeartbeatResponse:
    return ttypes.HeartbeatResponse(
        response_id=answer.response_id,
        action=_ACTIONS[answer.action],
        next_heartbeat_interval_ms=answer.next_heartbeat_interval_ms,
        containers_to_cleanup=[str(c) for c in answer.containers_to_cleanup],
        diagnostics=answer.diagnostics or None,
        applications_to_cleanup=[str(a) for a in answer.applications_to_cleanup] or None,
        containers_to_remove=[str(c) for c in answer.containers_to_remove] or None,
        decommissioned=answer.decommissioned or None,
    )


def heartbeat_answer_from_thrift(t: Any) -> HeartbeatAnswer:
    """The RM's answer to a heartbeat as received by the node, or MalformedMessage."""
    if not isinstance(t, ttypes.HeartbeatResponse):
        raise MalformedMessage("nodeHeartbeat: the answer is missing")
    _validate(t, "heartbeat response")
    action = _ACTIONS_BACK.get(t.action)
    if action is None:
        raise MalformedMessage(f"response.action: unknown NodeAction {t.action!r}")
    cleanup = _list(t.containers_to_cleanup, "response.containers_to_cleanup")
    apps = _list(t.applications_to_cleanup or [], "response.applications_to_cleanup")
    remove = _list(t.containers_to_remove or [], "response.containers_to_remove")
    if t.decommissioned is not None and not isinstance(t.decommissioned, bool):
        raise MalformedMessage("response.decommissioned must be a bool")
    return HeartbeatAnswer(
        response_id=_int(t.response_id, "response.response_id", 0, MAX_RESPONSE_ID),
        action=action,
        next_heartbeat_interval_ms=_int(
            t.next_heartbeat_interval_ms, "response.next_heartbeat_interval_ms", 1, MAX_INT32
        ),
        containers_to_cleanup=tuple(
            _yarn_id(c, f"response.containers_to_cleanup[{i}]", ContainerId.parse) for i, c in enumerate(cleanup)
        ),
        diagnostics=_text(t.diagnostics, "response.diagnostics", MAX_TEXT_CHARS),
        applications_to_cleanup=tuple(
            _yarn_id(a, f"response.applications_to_cleanup[{i}]", ApplicationId.parse) for i, a in enumerate(apps)
        ),
        containers_to_remove=tuple(
            _yarn_id(c, f"response.containers_to_remove[{i}]", ContainerId.parse) for i, c in enumerate(remove)
        ),
        decommissioned=bool(t.decommissioned),
    )
