"""The RM's answer to a node's ``mayViewApplication`` (``user_auth.application_viewer``): a real
credential checked as the REST header's, then the application's VIEW_APP rule."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.errors import UnknownApplication
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import ViewAnswer
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from cortex_rm.yarn_api.user_auth import UserAuthenticator, application_viewer
from tests.support.rm_core import result_of

APP = ApplicationId(1, 1)
SHARED = ApplicationId(1, 2)


def apps() -> dict[ApplicationId, Application]:
    def make(app_id: ApplicationId, acls: tuple[tuple[str, str], ...] = ()) -> Application:
        return Application(app_id, "alice", "job", "default", "SPARK", frozenset(), 0, Resource(1024, 1), 2, False, b"", 0, acls=acls)

    return {APP: make(APP), SHARED: make(SHARED, (("VIEW_APP", "bob"),))}


def find(table: dict[ApplicationId, Application]) -> Callable[[ApplicationId], Application]:
    def get(app_id: ApplicationId) -> Application:
        if app_id not in table:
            raise UnknownApplication(f"no {app_id}")
        return table[app_id]

    return get


def test_the_owner_the_acl_and_the_admin_may_view_others_may_not() -> None:
    clock, store = Clock(), MemoryStateStore()
    credentials = UserCredentials(MasterKey(1, b"k" * 20), store, result_of(store.load()), lambda: int(clock.seconds() * 1000))
    auth = UserAuthenticator(credentials)
    view = application_viewer(auth, AppAccess(["root"]), find(apps()))

    def header(user: str) -> str:
        ident = result_of(credentials.issue(user))
        return to_url_string(dict(auth.tokens_for(ident, "rm:8032", "rm:8088"))["rm:8032"])

    alice, bob, root = header("alice"), header("bob"), header("root")
    assert view(alice, APP) == ViewAnswer(200, "alice")
    assert view(root, APP) == ViewAnswer(200, "root")
    assert view(bob, SHARED) == ViewAnswer(200, "bob")
    refused = view(bob, APP)
    assert (refused.status, refused.user) == (403, "bob") and "cannot perform operation VIEW_APP" in refused.reason
    assert view(alice, ApplicationId(1, 9)).status == 404
    forged = view("AAAA" + alice[4:], APP)
    assert (forged.status, forged.user) == (401, "") and forged.reason
    result_of(credentials.revoke_user("alice"))
    assert view(alice, APP).status == 401
