"""YARN's ACLs without Kerberos: Hadoop ACL strings, queue submit/administer ACLs inherited
down the tree, and who may view or modify an application."""

from __future__ import annotations

import pytest

from cortex_rm.allocator.acls import AccessControlList
from cortex_rm.allocator.app_access import MODIFY_APP, VIEW_APP, AppAccess
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.errors import AccessDenied
from cortex_rm.allocator.queues import QueueSpec, QueueTree
from cortex_rm.yarn.delegation import ANONYMOUS, Principal
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.resources import Resource


@pytest.mark.parametrize(
    ("text", "allowed", "refused"),
    [
        ("*", ["anyone"], []),
        (" ", [], ["alice"]),
        ("", [], ["alice"]),
        ("alice,bob", ["alice", "bob"], ["carol"]),
        ("alice analysts", ["alice", "analysts"], ["bob"]),
        (" ops", ["ops"], ["alice"]),
    ],
)
def test_hadoop_acl_strings(text: str, allowed: list[str], refused: list[str]) -> None:
    acl = AccessControlList.parse(text)
    assert all(acl.allows(u) for u in allowed) and not any(acl.allows(u) for u in refused)


def tree() -> QueueTree:
    """root (unset: everyone may submit) restricted to nobody; root.prod for alice, administered by ops;
    root.dev unset (inherits: nobody besides root's)."""
    return QueueTree(
        QueueSpec(
            "root",
            submit_acl=AccessControlList.parse(" "),
            admin_acl=AccessControlList.parse("boss"),
            children=(
                QueueSpec("prod", 50, submit_acl=AccessControlList.parse("alice"), admin_acl=AccessControlList.parse("ops")),
                QueueSpec("dev", 50),
            ),
        )
    )


def test_queue_acls_are_inherited_from_the_ancestors() -> None:
    queues = tree()
    prod, dev = queues.find("prod"), queues.find("dev")
    assert queues.may_submit(prod, "alice") and not queues.may_submit(prod, "bob")
    assert not queues.may_submit(dev, "alice")
    assert queues.may_administer(prod, "ops") and queues.may_administer(dev, "boss") and not queues.may_administer(dev, "ops")
    default = QueueTree(QueueSpec("root", children=(QueueSpec("default"),)))
    assert default.may_submit(default.find("default"), "anyone")  # YARN's default: root allows everyone


def app(user: str = "alice", queue: str = "prod", acls: tuple[tuple[str, str], ...] = ()) -> Application:
    return Application(
        ApplicationId(1, 1), user, "job", queue, "SPARK", frozenset(), 0, Resource(1024, 1), 2, False, b"", 0, acls=acls
    )


def test_who_may_view_and_modify_an_application() -> None:
    access = AppAccess(["root"], tree())
    job = app(acls=(("VIEW_APP", "viewer"), ("MODIFY_APP", "operator")))
    cases = {
        "alice": (True, True),  # the owner
        "root": (True, True),  # the cluster's admin
        "ops": (True, True),  # prod's queue admin
        "boss": (True, True),  # an ancestor's queue admin
        "viewer": (True, False),
        "operator": (True, True),  # MODIFY_APP implies VIEW_APP
        "bob": (False, False),
    }
    for user, (view, modify) in cases.items():
        assert (access.allows(Principal(user), job, VIEW_APP), access.allows(Principal(user), job, MODIFY_APP)) == (view, modify), user
    assert not access.allows(ANONYMOUS, job, VIEW_APP)
    assert access.allows(Principal("alice", "application_1_0001"), job, MODIFY_APP)
    assert not access.allows(Principal("alice", "application_1_0002"), job, VIEW_APP)
    with pytest.raises(AccessDenied, match="User bob cannot perform operation MODIFY_APP on application_1_0001"):
        access.check(Principal("bob"), job, MODIFY_APP)


def test_submitting_needs_the_queues_submit_acl() -> None:
    access = AppAccess(["root"], tree())
    assert access.may_submit(Principal("alice"), "prod") == "alice"
    with pytest.raises(AccessDenied, match="User bob cannot submit applications to queue root.prod"):
        access.may_submit(Principal("bob"), "prod")
    with pytest.raises(AccessDenied, match="root.dev"):
        access.may_submit(Principal("alice"), "dev")
    assert access.may_submit(Principal("root"), "dev") == "root"  # the cluster's admin
    assert access.may_submit(Principal("bob"), "nosuch") == "bob"  # the submission fails on its own
    with pytest.raises(AccessDenied, match="needs a user's credential"):
        access.may_submit(ANONYMOUS, "prod")


def test_by_default_everyone_submits_and_nobody_administers() -> None:
    """Unset ACLs: root lets everyone submit, but makes nobody a queue admin (else every user
    could see and kill every application)."""
    queues = QueueTree(QueueSpec("root", children=(QueueSpec("default"),)))
    access = AppAccess(["root"], queues)
    assert not queues.may_administer(queues.find("default"), "bob")
    assert not access.allows(Principal("bob"), app(queue="default"), VIEW_APP)
