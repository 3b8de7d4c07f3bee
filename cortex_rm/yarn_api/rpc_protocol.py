"""The methods an IPC port serves: protocols, their methods, and what a handler sees.

Hadoop's protobuf engine (``ProtobufRpcEngine2``) dispatches a call by the
``RequestHeaderProto`` that precedes it: ``declaringClassProtocolName`` picks the
protocol (e.g. ``org.apache.hadoop.yarn.api.ApplicationClientProtocolPB``), its
``clientProtocolVersion`` must match the version the server registered (1 for every
YARN protocol), and ``methodName`` picks the method of the protocol's protobuf
*service*.  This module is that table, and nothing else: no bytes, no Twisted.

A handler is ``handler(call: CallContext, request) -> response`` where the response
is a message of the method's response type, a ``Deferred`` firing with one, or a
coroutine returning one.  To answer an error in Hadoop's form the handler raises
(or fails its Deferred with) :class:`~cortex_rm.yarn_api.errors.RemoteError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import EncodeError, Message
from google.protobuf.message_factory import GetMessageClass

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import ERROR_SERIALIZING_RESPONSE, IO_EXCEPTION, RemoteError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from twisted.internet.defer import Deferred

#: What a handler may return: the response, a Deferred of it, or a coroutine.  The Deferred
#: is of Any: Deferred is invariant, so ``Deferred[Message]`` would refuse a handler's
#: ``Deferred[GetNewApplicationResponseProto]``; ``serialize_response`` checks the type it fires with.
HandlerResult = Union[Message, "Deferred[Any]", "Coroutine[Any, Any, Message]"]
#: ``handler(call, request)``; ``request`` is an instance of the method's request type.
Handler = Callable[["CallContext", Any], HandlerResult]

#: Every YARN protocol is registered at version 1 (``@ProtocolInfo(protocolVersion = 1)``).
DEFAULT_PROTOCOL_VERSION = 1


class AuthMethod(enum.Enum):
    """How the peer authenticated (Hadoop's ``SaslRpcServer.AuthMethod`` names)."""

    SIMPLE = "SIMPLE"
    TOKEN = "TOKEN"


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything a handler may know about one call besides its request message."""

    #: ``host:port`` of the peer, for logs and for placement decisions.
    peer: str
    #: ``declaringClassProtocolName`` of the call (the protocol it was dispatched to).
    protocol: str
    #: ``methodName`` of the call.
    method: str
    #: The client's call id (>= 0); unique per client JVM, not per connection.
    call_id: int
    #: The client's 16-byte id (same for every call from one JVM); with ``call_id``
    #: and ``retry_count`` it identifies a retried call.
    client_id: bytes
    #: 0 on a first try, higher when the client's retry policy resends the call.
    retry_count: int
    #: ``userInfo.effectiveUser`` of the connection context (None when absent, as it
    #: is under TOKEN authentication, where the token identifier names the caller).
    effective_user: str | None
    #: ``userInfo.realUser`` for proxy users, else None.
    real_user: str | None
    #: SIMPLE, or TOKEN after a DIGEST-MD5 exchange.
    auth_method: AuthMethod
    #: The authenticated token identifier bytes (TOKEN only), e.g. a serialized
    #: ``AMRMTokenIdentifierProto``; None under SIMPLE.
    token_identifier: bytes | None


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """One method of a protocol: its name, message types and handler."""

    name: str
    request_type: type[Message]
    response_type: type[Message]
    handler: Handler


@dataclass(frozen=True)
class RpcProtocol:
    """A protocol served on a port: ``name`` is the ``...PB`` interface name.

    ``unsupported`` lists methods the protocol declares but we do not implement; a
    call to one is answered ``YarnException("<method> is not supported by Cortex")``
    instead of ``RpcNoSuchMethodException``, so YARN's client stubs report it plainly.
    """

    name: str
    methods: Mapping[str, RpcMethod]
    unsupported: frozenset[str] = field(default_factory=frozenset)
    version: int = DEFAULT_PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for key, method in self.methods.items():
            if key != method.name:
                raise ValueError(f"{self.name}: method registered as {key!r} is named {method.name!r}")
        both = self.unsupported & set(self.methods)
        if both:
            raise ValueError(f"{self.name}: {sorted(both)} are both served and unsupported")

    @classmethod
    def of(
        cls,
        name: str,
        methods: Iterable[RpcMethod],
        *,
        unsupported: Iterable[str] = (),
        version: int = DEFAULT_PROTOCOL_VERSION,
    ) -> RpcProtocol:
        """A protocol from a list of methods (names must be unique)."""
        table: dict[str, RpcMethod] = {}
        for method in methods:
            if method.name in table:
                raise ValueError(f"{name}: method {method.name!r} registered twice")
            table[method.name] = method
        return cls(name, table, frozenset(unsupported), version)

    @classmethod
    def from_service(
        cls,
        name: str,
        service: ServiceDescriptor,
        handlers: Mapping[str, Handler],
        *,
        version: int = DEFAULT_PROTOCOL_VERSION,
        unsupported: Iterable[str] = (),
    ) -> RpcProtocol:
        """A protocol from a protobuf service descriptor and ``{method_name: handler}``.

        Request and response types come from the descriptor; every method of the
        service without a handler becomes *known but unsupported*, as do the names in
        ``unsupported`` (Hadoop's methods whose messages our .proto subset leaves out).  A handler for a
        method the service does not declare is a wiring mistake and raises.  Example::

            RpcProtocol.from_service(
                "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB",
                applicationclient_protocol_pb2.DESCRIPTOR.services_by_name[
                    "ApplicationClientProtocolService"],
                {"getNewApplication": rm.get_new_application, ...},
            )
        """
        declared = {m.name: m for m in service.methods}
        unknown = set(handlers) - set(declared)
        if unknown:
            raise ValueError(f"{service.full_name} declares no method(s) {sorted(unknown)}")
        methods = [
            RpcMethod(
                name=method_name,
                request_type=GetMessageClass(declared[method_name].input_type),
                response_type=GetMessageClass(declared[method_name].output_type),
                handler=handler,
            )
            for method_name, handler in handlers.items()
        ]
        not_served = (set(declared) - set(handlers)) | set(unsupported)
        return cls.of(name, methods, unsupported=not_served, version=version)


def index_protocols(protocols: Iterable[RpcProtocol]) -> dict[str, RpcProtocol]:
    """``{name: protocol}`` for a port; two protocols with one name is an error."""
    index: dict[str, RpcProtocol] = {}
    for protocol in protocols:
        if protocol.name in index:
            raise ValueError(f"protocol {protocol.name!r} registered twice on one port")
        index[protocol.name] = protocol
    return index


def serialize_response(method: RpcMethod, response: object) -> bytes:
    """The wire bytes of a handler's response, checked against the method's type.

    A handler that returns the wrong type or a message missing ``required`` fields
    has a bug; the client gets ``ERROR_SERIALIZING_RESPONSE`` (as from Hadoop when a
    response cannot be written) rather than bytes its parser would reject.
    """
    if not isinstance(response, method.response_type):
        raise RemoteError(
            IO_EXCEPTION,
            f"{method.name} produced {type(response).__name__}, "
            f"not {method.response_type.DESCRIPTOR.full_name}",
            ERROR_SERIALIZING_RESPONSE,
        )
    try:
        body: bytes = response.SerializeToString()
    except EncodeError as exc:
        raise RemoteError(
            IO_EXCEPTION, f"{method.name} produced an incomplete response: {exc}", ERROR_SERIALIZING_RESPONSE
        ) from exc
    return body


def refusal(
    protocol: RpcProtocol | None,
    protocol_name: str,
    method_name: str,
    client_version: int,
    connection_protocol: str | None,
) -> RemoteError:
    """Why a call cannot be dispatched, as the ERROR Hadoop's protobuf engine sends.

    ``protocol`` is what the port serves under ``protocol_name`` (None if nothing);
    ``connection_protocol`` is the protocol the connection context named, which
    Hadoop quotes in its "Unknown method" message.
    """
    if protocol is None:
        return RemoteError(errors.RPC_NO_SUCH_PROTOCOL, f"Unknown protocol: {protocol_name}", errors.ERROR_NO_SUCH_PROTOCOL)
    if client_version != protocol.version:
        return RemoteError(
            errors.RPC_VERSION_MISMATCH,
            f"Protocol {protocol.name} version mismatch. (client = {client_version}, server = {protocol.version})",
            errors.ERROR_RPC_VERSION_MISMATCH,
        )
    if method_name in protocol.unsupported:
        return errors.unsupported_method(method_name)
    return RemoteError(
        errors.RPC_NO_SUCH_METHOD,
        f"Unknown method {method_name} called on {connection_protocol} protocol.",
        errors.ERROR_NO_SUCH_METHOD,
    )
