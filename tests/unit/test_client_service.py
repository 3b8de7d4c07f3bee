"""ApplicationClientProtocol handlers, called directly with real protobuf requests."""

from __future__ import annotations

from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.client_service import ANONYMOUS_USER, ApplicationClientService
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from tests.support.rm_core import new_table, result_of


def _call(user: str | None) -> CallContext:
    return CallContext(
        peer="127.0.0.1:1",
        protocol="org.apache.hadoop.yarn.api.ApplicationClientProtocolPB",
        method="submitApplication",
        call_id=0,
        client_id=b"x" * 16,
        retry_count=0,
        effective_user=user,
        real_user=None,
        auth_method=AuthMethod.SIMPLE,
        token_identifier=None,
    )


def test_a_connection_without_a_user_submits_as_the_anonymous_user_and_lists_still_work() -> None:
    """A context naming nobody must not poison the application table for everyone else."""
    table = new_table()
    service = ApplicationClientService(RMContext(table.clock, table, NodeTable(), 0))
    new = result_of(service.get_new_application(_call(None), ys.GetNewApplicationRequestProto()))
    request = ys.SubmitApplicationRequestProto()
    request.application_submission_context.application_id.CopyFrom(new.application_id)
    result_of(service.submit_application(_call(None), request))
    listed = service.get_applications(_call("bob"), ys.GetApplicationsRequestProto())
    assert [a.user for a in listed.applications] == [ANONYMOUS_USER]
    report = service.get_application_report(
        _call("bob"), ys.GetApplicationReportRequestProto(application_id=new.application_id)
    )
    assert records.app_id_from_proto(report.application_report.applicationId).id == new.application_id.id
