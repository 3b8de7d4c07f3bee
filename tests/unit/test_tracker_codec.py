"""NodeTracker messages to Thrift and back: faithful round trips, and every rule checked on the way in."""

from __future__ import annotations

import dataclasses

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.internal import tracker_codec as codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey

CID = ContainerId(ApplicationAttemptId(ApplicationId(1700000000000, 3), 1), (2 << 40) | 7)
REG = NodeRegistration(
    NodeId("node-7.example", 45454), "node-7.example:8042", "/rack/a", Resource(4096, 4), 1000, "0.1"
)


def test_registration_round_trip() -> None:
    """A registration survives to_thrift -> from_thrift unchanged."""
    assert codec.registration_from_thrift(codec.registration_to_thrift(REG)) == REG
    sick = dataclasses.replace(REG, healthy=False, health_report="fetching the runtime image")
    assert codec.registration_from_thrift(codec.registration_to_thrift(sick)) == sick
    older = codec.registration_to_thrift(REG)
    older.healthy = older.health_report = None  # a node that does not say: healthy
    assert codec.registration_from_thrift(older) == REG


def test_a_registration_carries_the_nodes_containers_as_nm_container_statuses() -> None:
    """The containers a node reports when it registers keep their resource, priority and creation time
    (what a restarted RM needs to count them in); a status without them decodes with none."""
    running = ContainerReport(CID, ContainerState.RUNNING, resource=Resource(2048, 2), priority=1, creation_time_ms=5)
    done = ContainerReport(CID, ContainerState.COMPLETE, 143, "killed", Resource(1024, 1))
    reg = dataclasses.replace(REG, containers=(running, done))
    assert codec.registration_from_thrift(codec.registration_to_thrift(reg)) == reg
    bare = codec.registration_to_thrift(reg)
    bare.containers[0].resource = bare.containers[0].priority = bare.containers[0].creation_time_ms = None
    assert codec.registration_from_thrift(bare).containers[0] == ContainerReport(CID, ContainerState.RUNNING)
    for change, message in [
        (setter("resource", ttypes.Capacity(memory_mb=-1, vcores=1)), "resource.memory_mb"),
        (setter("priority", -3), "priority"),
        (setter("creation_time_ms", -1), "creation_time_ms"),
    ]:
        broken = codec.registration_to_thrift(reg)
        change(broken.containers[0])
        with pytest.raises(MalformedMessage, match=r"registration\.containers\[0\]"):
            codec.registration_from_thrift(broken)
        with pytest.raises(MalformedMessage, match=message):
            codec.registration_from_thrift(broken)


def test_answers_round_trip() -> None:
    """Both answers, with cleanup ids, actions and diagnostics, survive the round trip."""
    reg_answer = RegistrationAnswer(800, 1700000000000, "hello")
    assert codec.registration_answer_from_thrift(codec.registration_answer_to_thrift(reg_answer)) == reg_answer
    for action in NodeAction:
        hb = HeartbeatAnswer(12, action, 900, (CID,), "why")
        assert codec.heartbeat_answer_from_thrift(codec.heartbeat_answer_to_thrift(hb)) == hb


@given(
    response_id=st.integers(0, 2**31 - 1),
    healthy=st.booleans(),
    report=st.text(max_size=200),
    states=st.lists(st.sampled_from(list(ContainerState)), max_size=5),
    exit_status=st.integers(-(2**31), 2**31 - 1),
    capability=st.none() | st.builds(Resource, st.integers(1, 2**40), st.integers(1, 2**31 - 1)),
    offering=st.booleans(),
)
def test_status_round_trip(
    response_id: int, healthy: bool, report: str, states: list[ContainerState], exit_status: int,
    capability: Resource | None, offering: bool,
) -> None:
    """Any valid heartbeat survives the round trip, with or without a new capability (the caps) and
    in or out of its schedule."""
    containers = tuple(ContainerReport(CID, s, exit_status, "d") for s in states)
    status = NodeStatusReport(NodeId("h", 1), response_id, healthy, report, containers, capability, offering)
    assert codec.status_from_thrift(codec.status_to_thrift(status)) == status


def test_a_heartbeat_capability_below_one_mb_or_one_vcore_is_malformed() -> None:
    """The capability a heartbeat carries is checked as a registration's."""
    t = codec.status_to_thrift(NodeStatusReport(NodeId("h", 1), 0, capability=Resource(1024, 1)))
    t.capability.vcores = 0
    with pytest.raises(MalformedMessage, match="status.capability.vcores"):
        codec.status_from_thrift(t)


def broken_registration(change: Callable[[ttypes.NodeRegistration], None]) -> ttypes.NodeRegistration:
    t = codec.registration_to_thrift(REG)
    change(t)
    return t


def setter(path: str, value: Any) -> Callable[[Any], None]:
    def change(t: Any) -> None:
        *parents, last = path.split(".")
        for p in parents:
            t = getattr(t, p)
        setattr(t, last, value)

    return change


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("node_id", None, "node_id"),
        ("node_id.host", "", "host must not be empty"),
        ("node_id.host", "h" * 300, "longer than"),
        ("node_id.port", 0, "port"),
        ("node_id.port", 70000, "port"),
        ("http_address", "no-port", "host:port"),
        ("rack", "rack-without-slash", "start with '/'"),
        ("capacity.memory_mb", 0, "memory_mb"),
        ("capacity.vcores", -1, "vcores"),
        ("capacity", None, "capacity"),
        ("heartbeat_interval_ms", 0, "heartbeat_interval_ms"),
        ("version", "v" * 100, "version"),
    ],
)
def test_invalid_registration_is_malformed_naming_the_field(path: str, value: Any, message: str) -> None:
    """Each broken field of a registration raises MalformedMessage that names it."""
    with pytest.raises(MalformedMessage, match=message):
        codec.registration_from_thrift(broken_registration(setter(path, value)))


def test_invalid_heartbeat_fields_are_malformed() -> None:
    """Unknown container state, bad container id, too many containers, negative response id: all refused."""
    report = NodeStatusReport(NodeId("h", 1), 0, containers=(ContainerReport(CID, ContainerState.NEW),))
    good = codec.status_to_thrift(report)
    cases: list[tuple[Callable[[Any], None], str]] = [
        (lambda t: setattr(t.containers[0], "state", 99), "unknown ContainerState"),
        (lambda t: setattr(t.containers[0], "container_id", "container_x"), "invalid ContainerId"),
        (lambda t: setattr(t, "containers", t.containers * (codec.MAX_CONTAINERS + 1)), "more than"),
        (lambda t: setattr(t, "response_id", -1), "response_id"),
        (lambda t: setattr(t, "health_report", "x" * (codec.MAX_TEXT_CHARS + 1)), "health_report"),
        (lambda t: setattr(t, "healthy", None), "healthy"),
    ]
    for change, message in cases:
        t = codec.status_to_thrift(codec.status_from_thrift(good))
        change(t)
        with pytest.raises(MalformedMessage, match=message):
            codec.status_from_thrift(t)


def test_invalid_answers_are_malformed() -> None:
    """An answer with an unknown action or a zero interval breaks the protocol."""
    t = codec.heartbeat_answer_to_thrift(HeartbeatAnswer(1, NodeAction.NORMAL, 100))
    t.action = 7
    with pytest.raises(MalformedMessage, match="NodeAction"):
        codec.heartbeat_answer_from_thrift(t)
    r = ttypes.RegistrationResponse(heartbeat_interval_ms=0, rm_identifier=1)
    with pytest.raises(MalformedMessage, match="heartbeat_interval_ms"):
        codec.registration_answer_from_thrift(r)


def test_registration_answer_carries_the_container_token_master_key() -> None:
    """The container-token master key (id and secret) survives the round trip; absent stays absent."""
    key = MasterKey(42, b"s" * 20)
    answer = RegistrationAnswer(800, 1700000000000, container_token_master_key=key)
    decoded = codec.registration_answer_from_thrift(codec.registration_answer_to_thrift(answer))
    assert decoded.container_token_master_key == key
    assert codec.registration_answer_to_thrift(RegistrationAnswer(800, 1)).container_token_master_key is None
    assert "sss" not in repr(answer)  # the secret is kept out of logs


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * (codec.MAX_SECRET_BYTES + 1)])
def test_master_key_with_a_weak_or_absurd_secret_is_malformed(secret: bytes) -> None:
    """A master key whose secret is not 16..256 bytes breaks the protocol."""
    t = ttypes.RegistrationResponse(
        heartbeat_interval_ms=800, rm_identifier=1, container_token_master_key=ttypes.MasterKey(1, secret)
    )
    with pytest.raises(MalformedMessage, match="secret"):
        codec.registration_answer_from_thrift(t)


def test_heartbeat_answer_carries_applications_to_clean_up() -> None:
    """Finished applications survive the round trip; a bad application id is malformed."""
    hb = HeartbeatAnswer(3, NodeAction.NORMAL, 900, applications_to_cleanup=(ApplicationId(1700000000000, 3),))
    assert codec.heartbeat_answer_from_thrift(codec.heartbeat_answer_to_thrift(hb)) == hb
    t = codec.heartbeat_answer_to_thrift(hb)
    t.applications_to_cleanup = ["application_x"]
    with pytest.raises(MalformedMessage, match="applications_to_cleanup"):
        codec.heartbeat_answer_from_thrift(t)


def test_removals_and_the_flag_saying_the_rm_names_them_survive_the_round_trip() -> None:
    """containers_to_remove and removes_completed_containers round-trip; absent (an older peer) they
    decode as none and False; a bad container id or a non-bool flag is malformed."""
    done = ContainerId(ApplicationAttemptId(ApplicationId(1700000000000, 3), 1), 4)
    hb = HeartbeatAnswer(3, NodeAction.NORMAL, 900, containers_to_remove=(done,))
    assert codec.heartbeat_answer_from_thrift(codec.heartbeat_answer_to_thrift(hb)) == hb
    older = ttypes.HeartbeatResponse(response_id=3, action=ttypes.NodeAction.NORMAL, next_heartbeat_interval_ms=900,
                                     containers_to_cleanup=[])  # fmt: skip
    assert codec.heartbeat_answer_from_thrift(older).containers_to_remove == ()
    t = codec.heartbeat_answer_to_thrift(hb)
    t.containers_to_remove = ["container_x"]
    with pytest.raises(MalformedMessage, match="containers_to_remove"):
        codec.heartbeat_answer_from_thrift(t)
    answer = RegistrationAnswer(800, 1, removes_completed_containers=True)
    assert codec.registration_answer_from_thrift(codec.registration_answer_to_thrift(answer)) == answer
    assert codec.registration_answer_to_thrift(RegistrationAnswer(800, 1)).removes_completed_containers is None
    r = ttypes.RegistrationResponse(heartbeat_interval_ms=800, rm_identifier=1)
    assert not codec.registration_answer_from_thrift(r).removes_completed_containers
    r.removes_completed_containers = 1
    with pytest.raises(MalformedMessage, match="removes_completed_containers"):
        codec.registration_answer_from_thrift(r)
