"""ApplicationClientProtocol handlers, called directly with real protobuf requests: who may do what.

A caller is authenticated only by an RM delegation token (SASL TOKEN); a SIMPLE user
name proves nothing.  Anonymous callers see the cluster's metrics and nothing else;
users submit as themselves and see and kill only their own applications (the
admin: everyone's); an application's credential acts on that application only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import SUBMIT_GRACE_MS, UserCredentials
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.client_service import ApplicationClientService
from cortex_rm.yarn_api.delegation_tokens import rm_identifier_bytes
from cortex_rm.yarn_api.errors import ACCESS_CONTROL_EXCEPTION, RemoteError
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from cortex_rm.yarn_api.user_auth import ANONYMOUS_NONE, UserAuthenticator
from tests.support.rm_core import new_table, result_of


class Cluster:
    def __init__(self, anonymous_access: str = "cluster-info") -> None:
        table = new_table()
        self.clock = table.clock
        self.credentials = UserCredentials(
            MasterKey(5, b"k" * 20), MemoryStateStore(), StoredState(), lambda: int(self.clock.seconds() * 1000)
        )
        auth = UserAuthenticator(self.credentials, anonymous_access)
        service = ApplicationClientService(RMContext(table.clock, table, NodeTable(), 0), auth, AppAccess(["admin"]))
        self.handlers = service.handlers()

    def token_call(self, user: str, application: str | None = None) -> CallContext:
        ident = result_of(self.credentials.issue(user, application))
        return _call(None, AuthMethod.TOKEN, rm_identifier_bytes(ident))

    def invoke(self, method: str, call: CallContext, request: object) -> object:
        answer = self.handlers[method](call, request)
        return result_of(answer) if hasattr(answer, "addCallback") else answer

    def submit(self, call: CallContext) -> ys.GetNewApplicationResponseProto:
        new = self.invoke("getNewApplication", call, ys.GetNewApplicationRequestProto())
        assert isinstance(new, ys.GetNewApplicationResponseProto)
        request = ys.SubmitApplicationRequestProto()
        request.application_submission_context.application_id.CopyFrom(new.application_id)
        self.invoke("submitApplication", call, request)
        return new


def _call(user: str | None, auth: AuthMethod = AuthMethod.SIMPLE, identifier: bytes | None = None) -> CallContext:
    return CallContext(
        peer="127.0.0.1:1",
        protocol="org.apache.hadoop.yarn.api.ApplicationClientProtocolPB",
        method="submitApplication",
        call_id=0,
        client_id=b"x" * 16,
        retry_count=0,
        effective_user=user,
        real_user=None,
        auth_method=auth,
        token_identifier=identifier,
    )


def _refused(cluster: Cluster, method: str, call: CallContext, request: object, match: str) -> None:
    with pytest.raises(RemoteError) as e:
        cluster.invoke(method, call, request)
    assert e.value.java_class == ACCESS_CONTROL_EXCEPTION
    assert match in e.value.message


def test_a_simple_user_name_is_anonymous_and_sees_only_the_cluster_metrics() -> None:
    """Claiming to be alice over SIMPLE gets the metrics, and an AccessControlException telling
    what to do for anything else; nothing is created."""
    cluster = Cluster()
    claimed = _call("alice")
    assert cluster.invoke("getClusterMetrics", claimed, ys.GetClusterMetricsRequestProto()) is not None
    for method, request in [
        ("getNewApplication", ys.GetNewApplicationRequestProto()),
        ("getApplications", ys.GetApplicationsRequestProto()),
        ("getClusterNodes", ys.GetClusterNodesRequestProto()),
    ]:
        _refused(cluster, method, claimed, request, "cortex-rm user add")


def test_with_anonymous_access_none_even_the_metrics_need_a_credential() -> None:
    cluster = Cluster(ANONYMOUS_NONE)
    _refused(cluster, "getClusterMetrics", _call(None), ys.GetClusterMetricsRequestProto(), "needs a user's credential")


def test_a_user_submits_as_herself_whatever_her_context_claims_and_only_she_and_the_admin_see_and_kill_it() -> None:
    """alice's application is hers; bob gets AccessControlException on its report and kill and does
    not find it in listings; the admin sees and kills it."""
    cluster = Cluster()
    alice, bob, admin = cluster.token_call("alice"), cluster.token_call("bob"), cluster.token_call("admin")
    new = cluster.submit(alice)
    report_request = ys.GetApplicationReportRequestProto(application_id=new.application_id)
    report = cluster.invoke("getApplicationReport", alice, report_request)
    assert isinstance(report, ys.GetApplicationReportResponseProto) and report.application_report.user == "alice"
    app_id = records.app_id_from_proto(new.application_id)
    _refused(cluster, "getApplicationReport", bob, report_request, f"User bob cannot perform operation VIEW_APP on {app_id}")
    kill = ys.KillApplicationRequestProto(application_id=new.application_id)
    _refused(cluster, "forceKillApplication", bob, kill, "MODIFY_APP")
    for caller, expected in [(bob, []), (alice, ["alice"]), (admin, ["alice"])]:
        listed = cluster.invoke("getApplications", caller, ys.GetApplicationsRequestProto())
        assert isinstance(listed, ys.GetApplicationsResponseProto)
        assert [a.user for a in listed.applications] == expected
    cluster.invoke("forceKillApplication", admin, kill)


def test_an_applications_credential_acts_on_that_application_only_and_cannot_submit() -> None:
    cluster = Cluster()
    alice = cluster.token_call("alice")
    first, second = cluster.submit(alice), cluster.submit(alice)
    own = cluster.token_call("alice", str(records.app_id_from_proto(first.application_id)))
    cluster.invoke("getApplicationReport", own, ys.GetApplicationReportRequestProto(application_id=first.application_id))
    _refused(
        cluster, "getApplicationReport", own, ys.GetApplicationReportRequestProto(application_id=second.application_id),
        "VIEW_APP",
    )
    _refused(cluster, "getNewApplication", own, ys.GetNewApplicationRequestProto(), "cannot submit applications")


def test_a_revoked_users_token_authenticates_nobody_on_the_next_call() -> None:
    """Revocation takes effect at once, even on a connection that authenticated before it."""
    cluster = Cluster()
    alice = cluster.token_call("alice")
    cluster.submit(alice)
    result_of(cluster.credentials.revoke_user("alice"))
    _refused(cluster, "getApplications", alice, ys.GetApplicationsRequestProto(), "can't be found in cache")


def test_a_token_callers_context_claims_nothing() -> None:
    """alice's token with a context naming bob: the application is alice's."""
    cluster = Cluster()
    alice = replace(cluster.token_call("alice"), effective_user="bob")
    new = cluster.submit(alice)
    report = cluster.invoke("getApplicationReport", alice, ys.GetApplicationReportRequestProto(application_id=new.application_id))
    assert isinstance(report, ys.GetApplicationReportResponseProto) and report.application_report.user == "alice"


def test_another_user_cannot_resubmit_an_application_and_gets_no_token_for_it() -> None:
    """bob resubmitting alice's id: AccessControlException, and no application token is minted."""
    cluster = Cluster()
    alice, bob = cluster.token_call("alice"), cluster.token_call("bob")
    new = cluster.submit(alice)
    before = len(cluster.credentials._tokens)
    request = ys.SubmitApplicationRequestProto()
    request.application_submission_context.application_id.CopyFrom(new.application_id)
    _refused(cluster, "submitApplication", bob, request, "another user's application")
    assert len(cluster.credentials._tokens) == before
    cluster.invoke("submitApplication", alice, request)  # alice's retry after a lost reply: accepted, changes nothing


def test_queue_listings_show_only_the_callers_applications() -> None:
    cluster = Cluster()
    alice, bob = cluster.token_call("alice"), cluster.token_call("bob")
    cluster.submit(alice)
    request = ys.GetQueueInfoRequestProto(queueName="default", includeApplications=True)
    for caller, expected in ((alice, ["alice"]), (bob, [])):
        info = cluster.invoke("getQueueInfo", caller, request)
        assert isinstance(info, ys.GetQueueInfoResponseProto)
        assert [a.user for a in info.queueInfo.applications] == expected


def test_an_applications_token_stops_when_its_application_ends() -> None:
    cluster = Cluster()
    alice = cluster.token_call("alice")
    new = cluster.submit(alice)
    app_id = str(records.app_id_from_proto(new.application_id))
    own = cluster.token_call("alice", app_id)
    ended: set[str] = set()
    cluster.credentials.application_running = lambda application: application not in ended
    report = ys.GetApplicationReportRequestProto(application_id=new.application_id)
    cluster.invoke("getApplicationReport", own, report)
    ended.add(app_id)
    cluster.invoke("getApplicationReport", own, report)  # within the submission grace: still valid
    cluster.clock.advance(SUBMIT_GRACE_MS / 1000 + 1)
    _refused(cluster, "getApplicationReport", own, report, "which has ended")
