"""The method registry (RpcProtocol/RpcMethod) and the wire error types."""

from __future__ import annotations

import pytest

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import FatalRpcError, RemoteError, internal_error, unsupported_method
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto, UserInformationProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import (
    RpcMethod,
    RpcProtocol,
    index_protocols,
    serialize_response,
)
from tests.support.ipc_frames import TEST_PROTOCOL, TEST_SERVICE


def echo(call: object, request: UserInformationProto) -> UserInformationProto:
    """A handler that answers with its request."""
    return request


def test_from_service_takes_types_from_the_descriptor_and_marks_the_rest_unsupported() -> None:
    """Handled methods get the descriptor's generated classes; unhandled ones are 'unsupported'."""
    protocol = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": echo, "whoAmI": echo})
    assert protocol.name == TEST_PROTOCOL
    assert protocol.version == 1
    assert set(protocol.methods) == {"echoUser", "whoAmI"}
    assert protocol.methods["whoAmI"].request_type is IpcConnectionContextProto
    assert protocol.methods["whoAmI"].response_type is UserInformationProto
    assert protocol.methods["echoUser"].handler is echo
    assert protocol.unsupported == {"renewDelegationToken"}


def test_from_service_rejects_a_handler_for_an_undeclared_method() -> None:
    """Wiring a handler to a name the service lacks fails at construction, naming it."""
    with pytest.raises(ValueError, match="getNewApplication"):
        RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"getNewApplication": echo})


def test_of_rejects_duplicate_methods_and_overlap_with_unsupported() -> None:
    """A method may be registered once, and not also listed as unsupported."""
    method = RpcMethod("echoUser", UserInformationProto, UserInformationProto, echo)
    with pytest.raises(ValueError, match="twice"):
        RpcProtocol.of(TEST_PROTOCOL, [method, method])
    with pytest.raises(ValueError, match="both served and unsupported"):
        RpcProtocol.of(TEST_PROTOCOL, [method], unsupported=["echoUser"])


def test_index_protocols_rejects_two_protocols_with_one_name() -> None:
    """A port cannot serve two tables under one protocol name."""
    protocol = RpcProtocol.of(TEST_PROTOCOL, [])
    assert index_protocols([protocol]) == {TEST_PROTOCOL: protocol}
    with pytest.raises(ValueError, match="twice"):
        index_protocols([protocol, protocol])


def test_serialize_response_checks_type_and_required_fields() -> None:
    """Wrong types and incomplete messages become ERROR_SERIALIZING_RESPONSE errors."""
    method = RpcMethod("negotiate", RpcSaslProto, RpcSaslProto, echo)
    assert serialize_response(method, RpcSaslProto(state=RpcSaslProto.SUCCESS)) == b"\x10\x00"
    with pytest.raises(RemoteError) as wrong_type:
        serialize_response(method, UserInformationProto())
    assert wrong_type.value.error_detail == errors.ERROR_SERIALIZING_RESPONSE
    assert "UserInformationProto" in wrong_type.value.message
    with pytest.raises(RemoteError) as incomplete:
        serialize_response(method, RpcSaslProto())  # 'state' is required
    assert incomplete.value.error_detail == errors.ERROR_SERIALIZING_RESPONSE


def test_remote_error_accepts_only_non_fatal_codes() -> None:
    """RemoteError is an ERROR reply: FATAL codes and unknown codes are refused."""
    error = RemoteError(errors.APPLICATION_NOT_FOUND, "Application with id 'application_1_0001' doesn't exist")
    assert error.error_detail == errors.ERROR_APPLICATION
    assert error.java_class == "org.apache.hadoop.yarn.exceptions.ApplicationNotFoundException"
    with pytest.raises(ValueError):
        RemoteError(errors.YARN_EXCEPTION, "x", errors.FATAL_UNAUTHORIZED)
    with pytest.raises(ValueError):
        RemoteError(errors.YARN_EXCEPTION, "x", 99)
    with pytest.raises(ValueError):
        FatalRpcError(errors.YARN_EXCEPTION, "x", errors.ERROR_APPLICATION)


def test_java_class_names_are_spelled_as_the_jvm_does() -> None:
    """Nested classes use '$'; packages are Hadoop's."""
    assert errors.INVALID_TOKEN == "org.apache.hadoop.security.token.SecretManager$InvalidToken"
    assert errors.RPC_VERSION_MISMATCH == "org.apache.hadoop.ipc.RPC$VersionMismatch"
    assert errors.STANDBY_EXCEPTION == "org.apache.hadoop.ipc.StandbyException"
    assert errors.SASL_EXCEPTION == "javax.security.sasl.SaslException"


def test_unsupported_and_internal_errors_are_yarn_exceptions() -> None:
    """Both answers surface in YARN clients as YarnException with a readable message."""
    assert unsupported_method("getQueueInfo").java_class == errors.YARN_EXCEPTION
    assert unsupported_method("getQueueInfo").message == "getQueueInfo is not supported by Cortex"
    failure = internal_error(KeyError("app"), "getApplicationReport")
    assert failure.java_class == errors.YARN_EXCEPTION
    assert "getApplicationReport" in failure.message and "KeyError" in failure.message
