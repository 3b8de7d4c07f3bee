"""The node keeps acknowledged completed containers until the RM lets it forget them (issue 13).

The ``NodeStatusUpdater`` core is fed answers and checked for what it reports, lists
at registration and keeps (``container/kept_completions.py``); no I/O, no clock needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from cortex_rm.container import status_updater
from cortex_rm.container.status_updater import (
    Action,
    ContainersAcknowledged,
    NodeStatusUpdater,
    SendHeartbeat,
    SendRegistration,
)
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeHealth,
    NodeRegistration,
    RegistrationAnswer,
)
from cortex_rm.yarn.resources import Resource

NODE = NodeId("10.0.0.1", 45454)
REG = NodeRegistration(NODE, "10.0.0.1:8042", "/default-rack", Resource(4096, 4), 1000)
APP, OTHER_APP = ApplicationId(1, 1), ApplicationId(1, 2)


def cid(seq: int, app: ApplicationId = APP) -> ContainerId:
    return ContainerId(ApplicationAttemptId(app, 1), seq)


def completed(seq: int, app: ApplicationId = APP) -> ContainerReport:
    return ContainerReport(cid(seq, app), ContainerState.COMPLETE, 1, f"exited {seq}", Resource(1024, 1))


def running(seq: int) -> ContainerReport:
    return ContainerReport(cid(seq), ContainerState.RUNNING, resource=Resource(1024, 1))


def updater(removes: bool = True, limit: int = 10_000) -> NodeStatusUpdater:
    """A registered updater; ``removes``: the RM said it names the completions a node may forget."""
    u = NodeStatusUpdater(REG, kept_limit=limit)
    u.start()
    u.connected()
    u.registered_with(RegistrationAnswer(800, rm_identifier=7, removes_completed_containers=removes))
    return u


def beat(u: NodeStatusUpdater, *containers: ContainerReport, **answer: Any) -> list[Action]:
    """One heartbeat reporting ``containers``, answered NORMAL with the ``answer`` fields."""
    u.heartbeat_due(NodeHealth(containers=containers))
    return u.answered(HeartbeatAnswer(u.last_response_id + 1, NodeAction.NORMAL, 800, **answer))


def resync(u: NodeStatusUpdater, *containers: ContainerReport) -> NodeRegistration:
    """A heartbeat answered RESYNC: the registration the node sends."""
    u.heartbeat_due(NodeHealth(containers=containers))
    (send,) = u.answered(HeartbeatAnswer(0, NodeAction.RESYNC, 800))
    assert isinstance(send, SendRegistration)
    return send.registration


def test_an_acknowledged_completion_leaves_the_heartbeats_but_is_listed_at_the_next_registration() -> None:
    """Acknowledged: no longer reported (the node's container manager is told), kept with its exit
    status and diagnostics; a registration lists it after what the node reports, and its answer
    acknowledges it again without forgetting it."""
    u = updater()
    assert ContainersAcknowledged((cid(2),)) in beat(u, completed(2), running(3))
    assert u.kept.reports() == (completed(2),)
    registration = resync(u, running(3))
    assert registration.containers == (running(3), completed(2))
    actions = u.registered_with(RegistrationAnswer(800, rm_identifier=8, removes_completed_containers=True))
    assert ContainersAcknowledged((cid(2),)) in actions
    assert u.kept.reports() == (completed(2),)


def test_heartbeats_do_not_carry_kept_completions() -> None:
    """What a heartbeat reports is the node's health as given: the kept list is not added to it."""
    u = updater()
    beat(u, completed(2))
    (send,) = u.heartbeat_due(NodeHealth(containers=(running(3),)))
    assert isinstance(send, SendHeartbeat) and send.status.containers == (running(3),)


def test_a_removal_forgets_a_kept_completion() -> None:
    """The RM names it (its AM has it): forgotten, and no later registration lists it."""
    u = updater()
    beat(u, completed(2), completed(4))
    beat(u, containers_to_remove=(cid(2),))
    assert u.kept.reports() == (completed(4),)
    assert resync(u).containers == (completed(4),)


def test_a_removal_named_before_the_acknowledgement_applies_once_acknowledged() -> None:
    """The RM may name a container the node still reports (the AM released it; the node was still
    stopping it): the name waits, and the completion is not kept once acknowledged.  A name the node
    does not report at all is ignored: that container, completing later, is kept."""
    u = updater()
    beat(u, running(2), containers_to_remove=(cid(2), cid(9)))
    beat(u, completed(2))
    assert u.kept.reports() == ()
    beat(u, completed(9))
    assert u.kept.reports() == (completed(9),)


def test_a_removal_named_again_by_the_answer_that_acknowledges_the_completion_leaves_nothing_behind() -> None:
    """Named while still running (the AM released it), then reported COMPLETE: the answer that acknowledges it
    names it again.  It is forgotten, and no pending name stays behind to fill the bound."""
    u = updater()
    beat(u, running(2), containers_to_remove=(cid(2),))
    beat(u, completed(2), containers_to_remove=(cid(2),))
    assert u.kept.reports() == () and not u.kept._removable


def test_an_application_cleanup_forgets_its_kept_completions() -> None:
    """applications_to_cleanup: the application is over here, its completions are not kept any more."""
    u = updater()
    beat(u, completed(2), completed(3, OTHER_APP))
    beat(u, applications_to_cleanup=(APP,))
    assert u.kept.reports() == (completed(3, OTHER_APP),)


def test_the_kept_list_is_bounded_oldest_dropped_first_and_counted() -> None:
    """At most ``kept_limit``: the oldest go first, and the node counts how many it dropped."""
    u = updater(limit=3)
    beat(u, completed(1), completed(2))
    beat(u, completed(3), completed(4), completed(5))
    assert u.kept.reports() == (completed(3), completed(4), completed(5))
    assert u.kept.dropped == 2


def test_with_an_rm_that_names_no_removals_a_completion_is_forgotten_once_acknowledged() -> None:
    """An older RM (no flag in its registration answer) never names removals: the node forgets an
    acknowledged completion as before, and a registration with such an RM lists the kept ones once
    and then forgets them."""
    u = updater(removes=False)
    beat(u, completed(2))
    assert u.kept.reports() == ()
    assert resync(u).containers == ()
    u = updater()
    beat(u, completed(2))
    assert resync(u).containers == (completed(2),)
    u.registered_with(RegistrationAnswer(800, rm_identifier=9))
    assert u.kept.reports() == ()


def test_a_registration_lists_at_most_max_containers_live_ones_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registration carries at most MAX_CONTAINERS: what the node reports first, then the oldest
    kept; the kept ones left out stay kept and, the listed ones counting as acknowledged anew (the
    newest), come first at the next registration."""
    monkeypatch.setattr(status_updater, "MAX_CONTAINERS", 3)
    u = updater()
    beat(u, completed(5), completed(6))
    registration = resync(u, running(1), running(2))
    assert registration.containers == (running(1), running(2), completed(5))
    u.registered_with(RegistrationAnswer(800, rm_identifier=8, removes_completed_containers=True))
    assert u.kept.reports() == (completed(6), completed(5))
