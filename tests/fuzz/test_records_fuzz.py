"""Fuzzing YARN's protobuf request bodies: the record decoders and ApplicationClientProtocol's handlers.

* ``records.*_from_proto`` over random messages (required fields set or not): a value,
  or a ``YarnError`` (``MalformedId`` ...), which the handlers turn into YARN's exceptions.
* The token identifier readers of ``tokens.py`` over random bytes and random identifier
  messages: a value or ``ValueError`` (``MalformedId`` is one).
* Every ApplicationClientProtocol handler, called as the IPC layer calls it, with random
  requests whose application ids are often those of a submitted and a new application:
  a response message (at once or from a fired Deferred) or ``RemoteError`` (an ERROR
  reply); any other exception would reach the client as "Cortex failed to serve".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.python.failure import Failure

from dataclasses import replace

from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.delegation_tokens import rm_identifier_bytes
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.allocator.app_model import Submission
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn.errors import YarnError
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records, rest_app_json, tokens
from cortex_rm.yarn_api.client_service import CLIENT_PROTOCOL, ApplicationClientService
from cortex_rm.yarn_api.errors import RemoteError
from cortex_rm.yarn_api.proto import applicationclient_protocol_pb2
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext
from tests.fuzz.fuzzing import fuzz_settings
from tests.fuzz.messages import protobuf_messages, with_text_not_utf8
from tests.support.rm_core import T0, new_table, result_of

SERVICE = applicationclient_protocol_pb2.DESCRIPTOR.services_by_name["ApplicationClientProtocolService"]


def _outcome(action: Any, *args: Any) -> Any:
    """``action(*args)``; a YarnError is an expected refusal and comes back as None."""
    try:
        return action(*args)
    except YarnError:
        return None


# --- the record decoders ------------------------------------------------------------------------


@fuzz_settings(100)
@given(
    app=protobuf_messages(yp.ApplicationIdProto),
    attempt=protobuf_messages(yp.ApplicationAttemptIdProto),
    container=protobuf_messages(yp.ContainerIdProto),
    resource=protobuf_messages(yp.ResourceProto),
)
def test_ids_and_resources_decode_or_are_yarn_errors(app: Any, attempt: Any, container: Any, resource: Any) -> None:
    """Ids decode to their fields or raise MalformedId; a resource always decodes to integers."""
    app_id = _outcome(records.app_id_from_proto, app)
    if app_id is not None:
        assert (app_id.cluster_timestamp, app_id.id) == (app.cluster_timestamp, app.id)
    _outcome(records.attempt_id_from_proto, attempt)
    container_id = _outcome(records.container_id_from_proto, container)
    if container_id is not None:
        assert container_id.id == container.id
    value = _outcome(records.resource_from_proto, resource)
    if value is not None:
        assert isinstance(value.memory_mb, int) and isinstance(value.vcores, int)


SUBMISSION_CONTEXTS = protobuf_messages(yp.ApplicationSubmissionContextProto, depth=3, initialized=True)


@fuzz_settings(80)
@given(context=with_text_not_utf8(SUBMISSION_CONTEXTS) | SUBMISSION_CONTEXTS, user=st.text(max_size=8))
@example(
    context=yp.ApplicationSubmissionContextProto(
        application_id=yp.ApplicationIdProto(id=1, cluster_timestamp=1),
        resource=yp.ResourceProto(
            resource_value_map=[yp.ResourceInformationProto(key="memory-mb", value=1, units="Pi")]
        ),
    ),
    user="u",
).via("a memory unit YARN does not know")
def test_submission_contexts_decode_or_are_yarn_errors(context: Any, user: str) -> None:
    """submission_from_proto: a Submission of text fields (even from bytes that are not UTF-8) keeping
    the context's bytes, or a YarnError."""
    submission = _outcome(records.submission_from_proto, context, user)
    if submission is not None:
        assert submission.user == user
        assert all(isinstance(text, str) for text in (submission.name, submission.queue, submission.app_type))
        assert all(isinstance(tag, str) for tag in submission.tags)
        assert yp.ApplicationSubmissionContextProto.FromString(submission.context) == context


@fuzz_settings(50)
@given(
    app_state=st.sampled_from([v.number for v in yp.YarnApplicationStateProto.DESCRIPTOR.values]),
    node_state=st.sampled_from([v.number for v in yp.NodeStateProto.DESCRIPTOR.values]),
)
def test_every_state_number_a_client_can_send_decodes(app_state: int, node_state: int) -> None:
    """Protobuf only delivers declared enum numbers (proto2); each maps to a state or a YarnError."""
    _outcome(records.app_state_from_proto, app_state)
    _outcome(records.node_state_from_proto, node_state)


# --- token identifiers ----------------------------------------------------------------------------

identifier_bytes = st.one_of(
    st.binary(max_size=60),
    protobuf_messages(yst.ContainerTokenIdentifierProto).map(lambda m: m.SerializePartialToString()),
    protobuf_messages(yst.NMTokenIdentifierProto).map(lambda m: m.SerializePartialToString()),
    protobuf_messages(yst.AMRMTokenIdentifierProto).map(lambda m: m.SerializePartialToString()),
)


@fuzz_settings(140)
@given(identifier=identifier_bytes)
def test_token_identifiers_are_read_or_refused_with_value_error(identifier: bytes) -> None:
    """Each identifier reader: a value, or ValueError (MalformedId included), for any bytes."""
    for reader in (
        tokens.parse_amrm_identifier,
        tokens.parse_container_identifier,
        tokens.read_container_identifier,
        tokens.read_nm_token_identifier,
    ):
        try:
            reader(identifier)
        except ValueError:
            pass


# --- ApplicationClientProtocol's handlers -----------------------------------------------------------


def _call(method: str, user: str | None) -> CallContext:
    return CallContext(
        peer="127.0.0.1:1",
        protocol=CLIENT_PROTOCOL,
        method=method,
        call_id=0,
        client_id=b"x" * 16,
        retry_count=0,
        effective_user=user,
        real_user=None,
        auth_method=AuthMethod.SIMPLE,
        token_identifier=None,
    )


def _retarget(message: Message, app_ids: list[ApplicationId], choice: int) -> None:
    """Point every application id set in ``message`` (at any depth) at one of ``app_ids``."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            if isinstance(item, yp.ApplicationIdProto):
                records.app_id_to_proto(app_ids[choice % len(app_ids)], item)
            elif isinstance(item, Message):
                _retarget(item, app_ids, choice)


class ClientRM:
    """An RM core on a Clock with one node, a submitted application and a new (unsubmitted) one."""

    CLUSTER_TIMESTAMP = int(T0 * 1000)  # the table's start, in ms: its applications' cluster timestamp

    def __init__(self) -> None:
        table = new_table()
        nodes = NodeTable()
        nodes.register(NodeId("127.0.0.1", 45454), "127.0.0.1:8042", Resource(8192, 8), 0)
        self.rm = RMContext(table.clock, table, nodes, 0)
        submitted = result_of(table.new_application("alice"))
        result_of(table.submit(Submission(submitted, "alice")))
        self.app_ids = [submitted, result_of(table.new_application("alice"))]
        credentials = UserCredentials(MasterKey(2, b"f" * 20), MemoryStateStore(), StoredState(), lambda: 0)
        self.identifiers = {
            user: rm_identifier_bytes(result_of(credentials.issue(user))) for user in ("alice", "bob", "admin")
        }
        auth = UserAuthenticator(credentials)
        self.handlers = ApplicationClientService(self.rm, auth, AppAccess(["admin"], table.queues)).handlers()

    def call(self, method: str, user: str | None) -> CallContext:
        """A call by ``user`` authenticated by her token (alice owns the submitted application, bob
        does not, admin sees all); None or another name: a SIMPLE, anonymous caller."""
        identifier = self.identifiers.get(user or "")
        if identifier is None:
            return _call(method, user)
        return replace(_call(method, None), auth_method=AuthMethod.TOKEN, token_identifier=identifier)


METHODS = sorted(m.name for m in SERVICE.methods)
REQUESTS = {m.name: message_factory.GetMessageClass(m.input_type) for m in SERVICE.methods}




@st.composite
def client_calls(draw: st.DrawFn) -> tuple[str, Message, int | None]:
    method = draw(st.sampled_from(METHODS))
    requests = protobuf_messages(REQUESTS[method], depth=4, initialized=True)
    requests = requests | with_text_not_utf8(requests)
    request = draw(requests)
    return method, request, draw(st.none() | st.integers(0, 1))


def _submission_not_utf8(field: str) -> ys.SubmitApplicationRequestProto:
    """submitApplication of the new application (…_0002) whose ``field`` is text that is not UTF-8."""
    request = ys.SubmitApplicationRequestProto()
    context = request.application_submission_context
    context.application_id.cluster_timestamp, context.application_id.id = ClientRM.CLUSTER_TIMESTAMP, 2
    setattr(context, field, "~~~~")
    return ys.SubmitApplicationRequestProto.FromString(
        request.SerializeToString().replace(b"~~~~", b"\xff\xfe\x80\xc3")
    )


def _about_alices(request: Any) -> Any:
    """``request`` naming alice's submitted application (…_0001)."""
    request.application_id.cluster_timestamp, request.application_id.id = ClientRM.CLUSTER_TIMESTAMP, 1
    return request


@fuzz_settings(210)
@given(call=client_calls(), user=st.sampled_from([None, "alice", "bob", "admin", ""]))
@example(call=("submitApplication", _submission_not_utf8("application_name"), None), user="alice").via(
    "an application name that is not UTF-8"
)
@example(call=("submitApplication", _submission_not_utf8("node_label_expression"), None), user="alice").via(
    "a node label expression that is not UTF-8, shown by the REST API"
)
@example(call=("forceKillApplication", _about_alices(ys.KillApplicationRequestProto()), None), user="bob").via("bob kills alice's application")
@example(call=("forceKillApplication", _about_alices(ys.KillApplicationRequestProto()), None), user=None).via("nobody kills alice's application")
@example(call=("moveApplicationAcrossQueues", _about_alices(ys.MoveApplicationAcrossQueuesRequestProto(target_queue="default")), None), user="bob").via(
    "bob moves alice's application"
)
def test_client_protocol_handlers_answer_or_raise_remote_errors(
    call: tuple[str, Message, int | None], user: str | None
) -> None:
    """Any well-formed request to any method: a response, or RemoteError (an ERROR reply), never
    another exception; by bob or an anonymous caller, alice's applications stay as they were."""
    method, request, target = call
    rm = ClientRM()
    if target is not None:
        _retarget(request, rm.app_ids, target)
    before = {str(a.app_id): a.to_document() for a in rm.rm.apps}
    _answer(rm, method, request, user)
    if user not in ("alice", "admin"):
        after = {str(a.app_id): a.to_document() for a in rm.rm.apps}
        assert {k: v for k, v in after.items() if v["user"] == "alice"} == before


def _answer(rm: ClientRM, method: str, request: Message, user: str | None) -> None:
    """``method``'s handler answers ``request`` by ``user`` with a message or a RemoteError."""
    handler = rm.handlers.get(method)
    if handler is None:
        return  # known but unsupported: the IPC layer answers it without a handler
    try:
        result = handler(rm.call(method, user), request)
    except RemoteError:
        return
    if isinstance(result, defer.Deferred):
        outcome: list[Any] = []
        result.addBoth(outcome.append)
        rm.rm.clock.advance(0)  # type: ignore[attr-defined]
        assert outcome, f"{method} did not answer"
        result = outcome[0]
        if isinstance(result, Failure):
            assert isinstance(result.value, RemoteError), result.getTraceback()
            return
    assert isinstance(result, Message)
    result.SerializeToString()  # complete: the reply can be sent
    # What the handler stored can be shown: the REST API lists every application as JSON.
    json.dumps(rest_app_json.apps_info(rm.rm.apps.matching(), rm.rm, frozenset()))


def test_kill_diagnostics_that_are_not_utf8_are_stored_as_text() -> None:
    """A found input: forceKillApplication with diagnostics that are not UTF-8 kills the application."""
    rm = ClientRM()
    request = ys.KillApplicationRequestProto(diagnostics="~~~~")
    records.app_id_to_proto(rm.app_ids[0], request.application_id)
    request = ys.KillApplicationRequestProto.FromString(
        request.SerializeToString().replace(b"~~~~", b"\xff\xfe\x80\xc3")
    )
    answer = rm.handlers["forceKillApplication"](rm.call("forceKillApplication", "alice"), request)
    assert isinstance(result_of(answer), ys.KillApplicationResponseProto)
