"""The Twisted edge of the Hadoop IPC server: move bytes, run handlers, log.

All protocol decisions live in :class:`~cortex_rm.yarn_api.ipc_connection.IpcConnection`;
this module only feeds it what the transport reads, writes what it returns, runs the
handlers of the calls it decodes, and turns their results into replies:

* a response message -> SUCCESS;
* :class:`~cortex_rm.yarn_api.errors.RemoteError` (raised, or as a Deferred's failure)
  -> ERROR with its Java class, message and error code;
* any other exception -> ERROR ``YarnException`` naming the method, and an error log
  event with the method, protocol and peer (a handler bug must not kill a connection).

A bad frame ends its own connection only; the factory goes on serving the others.
Each port keeps the bounds of an :class:`~cortex_rm.yarn_api.ipc_limits.IpcLimits`:
connections beyond its caps (in all, per source address) are answered FATAL
``RetriableException`` and closed at once; partial frames share one buffer budget; a
connection is not read while its calls or unsent replies pile up; with a clock
(``ipc_deadlines``), connections that do not finish their header, stall in a frame or
stay idle are closed.  Refusals are logged rate-limited (``ipc_refusals.RefusalLog``).

Usage (the composition root does this)::

    factory = IpcServerFactory([client_protocol], SaslServer.simple_only())
    reactor.listenTCP(8032, factory, interface="0.0.0.0")
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import cast

from google.protobuf.message import Message
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IConsumer, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import RemoteError, internal_error
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_deadlines import ConnectionDeadlines
from cortex_rm.yarn_api.ipc_events import (
    CloseConnection,
    ConnectionState,
    IncomingCall,
    IpcEvent,
    SendBytes,
    StateChanged,
)
from cortex_rm.yarn_api.ipc_limits import (
    BUFFER_BUDGET_EXHAUSTED,
    IDLE,
    TOO_MANY_FROM_ADDRESS,
    BufferBudget,
    ConnectionSlots,
    IpcLimits,
)
from cortex_rm.yarn_api.ipc_refusals import RefusalLog, RefusedConnection, sanitised
from cortex_rm.yarn_api.ipc_wire import DEFAULT_MAX_DATA_LENGTH
from cortex_rm.yarn_api.rpc_protocol import RpcProtocol, index_protocols, serialize_response
from cortex_rm.yarn_api.sasl import SaslServer


def format_peer(address: IAddress) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a Twisted address, else its repr."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_of(address: IAddress | None) -> str:
    """The peer's host as the kernel reported it (never client bytes): what per-address limits count."""
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else str(address)


def _port_name(protocols: Mapping[str, RpcProtocol]) -> str:
    """The short names of the protocols a port serves, to name it in logs."""
    return ",".join(sorted(name.rsplit(".", 1)[-1] for name in protocols))


class IpcServerFactory(Factory):
    """Serves ``protocols`` on every connection of one listening port.

    ``sasl_server`` is the port's SASL policy (simple-only by default);
    ``max_data_length`` bounds every frame (Hadoop's ``ipc.maximum.data.length``);
    ``limits`` are the port's bounds (:class:`IpcLimits` defaults when not given).  The
    connection caps and the buffer budget always hold; the timeouts need ``clock``
    (without one, as in some tests, connections never time out and refusals are logged
    one by one).
    """

    def __init__(
        self,
        protocols: Iterable[RpcProtocol],
        sasl_server: SaslServer | None = None,
        *,
        max_data_length: int = DEFAULT_MAX_DATA_LENGTH,
        limits: IpcLimits | None = None,
        log: Logger | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.protocols = index_protocols(protocols)
        self.sasl_server = sasl_server if sasl_server is not None else SaslServer.simple_only()
        self.max_data_length = max_data_length
        self.limits = limits if limits is not None else IpcLimits()
        if self.limits.max_buffered_bytes < max_data_length + 4:
            raise ValueError(
                f"max_buffered_bytes {self.limits.max_buffered_bytes} cannot hold one frame of max_data_length "
                f"{max_data_length} (use IpcLimits.fitting)"
            )
        self.clock = clock
        self.log = log if log is not None else Logger(namespace="cortex_rm.yarn_api.ipc_server")
        self.name = _port_name(self.protocols)
        self.slots = ConnectionSlots(self.limits.max_connections, self.limits.max_connections_per_address)
        self.budget = BufferBudget(self.limits.max_buffered_bytes)
        self.refusals = RefusalLog(self.log, self.name, self.limits.refusal_log_interval_s, clock)
        # Fail at wiring time, not on the first connection, if the limit is wrong.
        IpcConnection(self.protocols, self.sasl_server, peer="-", max_data_length=max_data_length)

    @classmethod
    def daemon_port(
        cls,
        protocols: Iterable[RpcProtocol],
        sasl_server: SaslServer,
        *,
        max_data_length: int,
        clock: IReactorTime,
        limits: IpcLimits | None = None,
    ) -> IpcServerFactory:
        """A port of the daemon (the RM's and the NodeManager's): the default bounds (their budget
        grown to hold one frame of the configured limit), timeouts on ``clock``."""
        return cls(
            protocols,
            sasl_server,
            max_data_length=max_data_length,
            limits=(limits if limits is not None else IpcLimits()).fitting(max_data_length),
            clock=clock,
        )

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """The protocol for a connection accepted from ``addr``: served, or refused if over a cap."""
        host = _host_of(addr)
        refusal = self.slots.admit(host)
        if refusal is not None:
            self.refusals.refused(refusal, host)
            refused = RefusedConnection(self._cap_message(refusal, host))
            refused.factory = self
            return refused
        protocol = IpcServerProtocol(self, format_peer(addr) if addr is not None else "unknown", host)
        protocol.factory = self
        return protocol

    def _cap_message(self, refusal: str, host: str) -> str:
        if refusal == TOO_MANY_FROM_ADDRESS:
            return (
                f"Server too busy: {host} already has {self.slots.from_address(host)} connections open to this "
                "IPC port, its limit; retry later"
            )
        return f"Server too busy: this IPC port has {self.slots.total} connections open, its limit; retry later"

    def stopFactory(self) -> None:
        """The port stopped listening: log what refusals are still counted, cancel the log's timer."""
        self.refusals.stop()


#: Why a connection is not being read: too many calls unanswered, or too many replies unsent.
_CALLS = "calls"
_REPLIES = "replies"


@implementer(IPushProducer)
class _UnsentReplies:
    """The transport's producer: paused by Twisted while replies pile up unsent, resumed once they drain."""

    def __init__(self, protocol: IpcServerProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        """Replies wait unsent: stop reading the peer."""
        self._protocol.pause_reading(_REPLIES)

    def resumeProducing(self) -> None:
        """Replies drained: read again (unless calls hold it)."""
        self._protocol.resume_reading(_REPLIES)

    def stopProducing(self) -> None:
        """The connection is gone; nothing to do."""


class IpcServerProtocol(Protocol):
    """One connection: forwards bytes to its :class:`IpcConnection`, runs calls, keeps its deadlines."""

    def __init__(self, factory: IpcServerFactory, peer: str, host: str) -> None:
        self.core = IpcConnection(
            factory.protocols,
            factory.sasl_server,
            peer=peer,
            max_data_length=factory.max_data_length,
            account=factory.budget.account(self._evicted),
        )
        self.peer = peer
        self.host = host
        self._port = factory
        self._log = factory.log
        self._limits = factory.limits
        self._limit = factory.limits.max_outstanding_calls
        self._pauses: set[str] = set()  # why reading is paused: _CALLS, _REPLIES
        self._released = False
        # Replies produced while dataReceived runs are written in one go at its end.
        self._batch: list[bytes] | None = None
        self._clock = factory.clock
        self._deadlines: ConnectionDeadlines | None = None  # with a clock, from connectionMade

    @property
    def _tcp(self) -> ITCPTransport:
        """The connection's transport: Twisted types a Protocol's as a bare ITransport; ours is TCP's."""
        return cast(ITCPTransport, self.transport)

    @property
    def _reading(self) -> IPushProducer:
        """The same transport as the producer of what we read: pausing it stops reading the peer."""
        return cast(IPushProducer, self.transport)

    def connectionMade(self) -> None:
        """Disable Nagle (as Hadoop's ``ipc.server.tcpnodelay`` does), watch unsent replies, start the deadlines."""
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        # Twisted pauses this producer while more than 64 KiB of replies wait unsent: a peer
        # that sends calls but does not read its answers stops being read (and goes idle).
        cast(IConsumer, self.transport).registerProducer(_UnsentReplies(self), True)
        if self._clock is not None:
            self._deadlines = ConnectionDeadlines(self._limits, self._clock, self.core, self._expired)
        self._log.debug("IPC connection from {peer} opened", peer=self.peer, state_to=self.core.state.name)

    def dataReceived(self, data: bytes) -> None:
        """Feed the core; run the calls it decodes; write replies; close on FATAL."""
        core = self.core
        frames_before = core.frames_read
        try:
            events = core.receive(data)
        except Exception:
            self._log.failure("IPC connection from {peer} hit an internal error; aborting it", peer=self.peer)
            core.connection_lost()
            self._tcp.abortConnection()
            return
        if self._deadlines is not None:
            self._deadlines.input_seen(frames_before)
        self._act(events)
        if not core.closed and core.outstanding >= self._limit:
            self.pause_reading(_CALLS)

    def _act(self, events: list[IpcEvent]) -> None:
        """Run calls, write replies and SendBytes in one write, then close if told to."""
        batch: list[bytes] = []
        self._batch = batch
        close: CloseConnection | None = None
        try:
            for event in events:
                if type(event) is IncomingCall:
                    reply = self._run(event)
                    if reply:
                        batch.append(reply)
                elif type(event) is SendBytes:
                    batch.append(event.data)
                elif type(event) is StateChanged:
                    self._log_transition(event)
                else:
                    assert type(event) is CloseConnection
                    close = event
                    self._log_close(event)
        finally:
            self._batch = None
        if batch:
            self._tcp.write(b"".join(batch))
        if close is not None:
            self._close()

    # --- limits and deadlines -----------------------------------------------------------

    def _evicted(self) -> None:
        """The port's buffer budget took this connection's bytes for a smaller frame: refuse it."""
        self._act(
            self.core.refuse(
                errors.RETRIABLE_EXCEPTION,
                "Server too busy: this IPC port's buffers are full and this connection holds the most; retry later",
                BUFFER_BUDGET_EXHAUSTED,
            )
        )

    def _expired(self, reason: str) -> None:
        """A deadline passed: an idle connection closes quietly, the others get a FATAL."""
        assert self._deadlines is not None
        if reason == IDLE:
            self._log.debug("IPC connection from {peer} idle: closing it", peer=self.peer)
            self.core.connection_lost()
            self._close()
            return
        message = f"{reason} ({self._deadlines.waited(reason):g} s)"
        self._act(self.core.refuse(errors.RETRIABLE_EXCEPTION, message, reason))

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Give back the slot and buffered bytes; replies to calls still running will be dropped."""
        if self._deadlines is not None:
            self._deadlines.stop()
        if not self._released:
            self._released = True
            self._port.slots.release(self.host)
        if self.core.state is not ConnectionState.CLOSED:
            self.core.connection_lost()
        self._log.debug(
            "IPC connection from {peer} closed ({outstanding} calls unanswered)",
            peer=self.peer,
            outstanding=self.core.outstanding,
            state_to=ConnectionState.CLOSED.name,
        )

    # --- running calls ------------------------------------------------------------------

    def _run(self, call: IncomingCall) -> bytes | None:
        """Run one handler; the reply if it is ready now, else None (sent later)."""
        try:
            # object, not HandlerResult: a buggy handler may return anything (_encode says so)
            result: object = call.method.handler(call.context, call.request)
        except RemoteError as error:
            return self.core.error_reply(call.context, error)
        except Exception as exc:
            return self._internal_error(call, exc, Failure())
        if isinstance(result, Message):
            return self._encode(call, result)
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            result.addCallbacks(self._completed, self._failed, callbackArgs=(call,), errbackArgs=(call,))
            result.addErrback(self._reply_failed)
            return None
        return self._encode(call, result)

    def _encode(self, call: IncomingCall, response: object) -> bytes:
        try:
            body = serialize_response(call.method, response)
        except RemoteError as error:
            self._log.error(
                "RPC {protocol}.{method} from {peer}: bad response: {error_message}",
                protocol=call.context.protocol,
                method=call.context.method,
                peer=self.peer,
                error_message=error.message,
            )
            return self.core.error_reply(call.context, error)
        return self.core.success_reply(call.context, body)

    def _internal_error(self, call: IncomingCall, exc: BaseException, failure: Failure) -> bytes:
        self._log.failure(
            "RPC {protocol}.{method} from {peer} failed unexpectedly",
            failure,
            LogLevel.error,
            protocol=call.context.protocol,
            method=call.context.method,
            peer=self.peer,
            call_id=call.context.call_id,
        )
        return self.core.error_reply(call.context, internal_error(exc, call.context.method))

    def _completed(self, response: object, call: IncomingCall) -> None:
        self._send_later(self._encode(call, response))

    def _failed(self, failure: Failure, call: IncomingCall) -> None:
        error = failure.value
        if isinstance(error, RemoteError):
            self._send_later(self.core.error_reply(call.context, error))
        else:
            assert error is not None
            self._send_later(self._internal_error(call, error, failure))

    def _reply_failed(self, failure: Failure) -> None:
        self._log.failure("IPC reply to {peer} could not be sent", failure, peer=self.peer)

    def _send_later(self, reply: bytes) -> None:
        if self._batch is not None:  # completed synchronously, inside dataReceived
            self._batch.append(reply)
        elif reply:
            self._tcp.write(reply)
            if self._deadlines is not None:
                self._deadlines.replied()
        if self.core.outstanding < self._limit:
            self.resume_reading(_CALLS)

    def pause_reading(self, why: str) -> None:
        """Stop reading the peer for ``why`` (until every reason is resumed)."""
        if not self._pauses and not self.core.closed:
            self._reading.pauseProducing()
        self._pauses.add(why)
        if self._deadlines is not None:
            self._deadlines.paused = True

    def resume_reading(self, why: str) -> None:
        """``why`` no longer holds; read again if no other reason does."""
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if self._pauses or self.core.closed:
            return
        self._reading.resumeProducing()
        if self._deadlines is not None:
            self._deadlines.paused = False
            self._deadlines.reading_resumed()

    def _close(self) -> None:
        """Close after flushing (Twisted holds a transport open while a producer is registered)."""
        cast(IConsumer, self.transport).unregisterProducer()
        self._tcp.loseConnection()

    def _log_transition(self, change: StateChanged) -> None:
        core = self.core
        self._log.debug(
            "IPC connection from {peer}: {state_from} -> {state_to}",
            peer=self.peer,
            state_from=change.old.name,
            state_to=change.new.name,
            protocol=core.protocol_name,
            auth_method=core.auth_method.name,
            effective_user=core.effective_user,
        )

    def _log_close(self, close: CloseConnection) -> None:
        error = close.error
        if close.refusal is not None:  # a port limit: counted, logged per interval, without client bytes
            self._port.refusals.refused(close.refusal, self.host)
            return
        if error is None:
            self._log.info("IPC connection from {peer} closed: {reason}", peer=self.peer, reason=close.reason)
            return
        if not self._port.refusals.may_detail(self.host):  # a flood of bad input: counted, not logged
            return
        self._log.warn(
            "IPC connection from {peer} refused: {error_class}: {error_message}",
            peer=self.peer,
            reason=sanitised(close.reason),
            error_class=error.java_class,
            error_message=sanitised(error.message),
            error_detail=error.error_detail,
            call_id=error.call_id,
        )
