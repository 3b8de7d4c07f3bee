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
Usage (the composition root does this)::

    factory = IpcServerFactory([client_protocol], SaslServer.simple_only())
    reactor.listenTCP(8032, factory, interface="0.0.0.0")
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import cast

from google.protobuf.message import Message
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from cortex_rm.yarn_api.errors import RemoteError, internal_error
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_events import CloseConnection, ConnectionState, IncomingCall, SendBytes, StateChanged
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


# Bounds a daemon's IPC ports share: a connection stops being read while this many of its
# calls are unanswered (Hadoop's bounded call queue pushes back the same way), and one
# silent this long is closed (twice Hadoop's client-side idle close of 10 s).
PORT_MAX_OUTSTANDING_CALLS = 256
PORT_IDLE_TIMEOUT_S = 20.0


class IpcServerFactory(Factory):
    """Serves ``protocols`` on every connection of one listening port.

    ``sasl_server`` is the port's SASL policy (simple-only by default);
    ``max_data_length`` bounds every frame (Hadoop's ``ipc.maximum.data.length``);
    ``max_outstanding_calls`` (optional) stops reading from a connection while that
    many of its calls are unanswered, as Hadoop's bounded call queue pushes back.
    """

    def __init__(
        self,
        protocols: Iterable[RpcProtocol],
        sasl_server: SaslServer | None = None,
        *,
        max_data_length: int = DEFAULT_MAX_DATA_LENGTH,
        max_outstanding_calls: int | None = None,
        log: Logger | None = None,
        idle_timeout: float | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if max_outstanding_calls is not None and max_outstanding_calls < 1:
            raise ValueError("max_outstanding_calls must be at least 1")
        self.protocols = index_protocols(protocols)
        self.sasl_server = sasl_server if sasl_server is not None else SaslServer.simple_only()
        self.max_data_length = max_data_length
        self.max_outstanding_calls = max_outstanding_calls
        if idle_timeout is not None and clock is None:
            raise ValueError("an idle timeout needs a clock")
        # Hadoop's client closes a connection after 10 s idle (ipc.client.connection.maxidletime);
        # the server drops connections idle for longer, so abandoned sockets do not pile up.
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.log = log if log is not None else Logger(namespace="cortex_rm.yarn_api.ipc_server")
        # Fail at wiring time, not on the first connection, if the limit is wrong.
        IpcConnection(self.protocols, self.sasl_server, peer="-", max_data_length=max_data_length)

    @classmethod
    def daemon_port(
        cls, protocols: Iterable[RpcProtocol], sasl_server: SaslServer, *, max_data_length: int, clock: IReactorTime
    ) -> IpcServerFactory:
        """A port of the daemon (the RM's and the NodeManager's): the shared bounds on calls in flight
        and idle connections, and the configured frame limit."""
        return cls(
            protocols,
            sasl_server,
            max_data_length=max_data_length,
            max_outstanding_calls=PORT_MAX_OUTSTANDING_CALLS,
            idle_timeout=PORT_IDLE_TIMEOUT_S,
            clock=clock,
        )

    def buildProtocol(self, addr: IAddress | None) -> IpcServerProtocol:
        """A protocol instance for one accepted connection from ``addr``."""
        protocol = IpcServerProtocol(self, format_peer(addr) if addr is not None else "unknown")
        protocol.factory = self
        return protocol


class IpcServerProtocol(Protocol):
    """One connection: forwards bytes to its :class:`IpcConnection` and runs calls."""

    def __init__(self, factory: IpcServerFactory, peer: str) -> None:
        self.core = IpcConnection(
            factory.protocols, factory.sasl_server, peer=peer, max_data_length=factory.max_data_length
        )
        self.peer = peer
        self._log = factory.log
        self._limit = factory.max_outstanding_calls
        self._paused = False
        # Replies produced while dataReceived runs are written in one go at its end.
        self._batch: list[bytes] | None = None
        self._idle_timeout = factory.idle_timeout
        self._clock = factory.clock
        self._idle_call: IDelayedCall | None = None
        self._last_activity = 0.0

    @property
    def _tcp(self) -> ITCPTransport:
        """The connection's transport: Twisted types a Protocol's as a bare ITransport; ours is TCP's."""
        return cast(ITCPTransport, self.transport)

    @property
    def _reading(self) -> IPushProducer:
        """The same transport as the producer of what we read: pausing it stops reading the peer."""
        return cast(IPushProducer, self.transport)

    def connectionMade(self) -> None:
        """Disable Nagle (as Hadoop's ``ipc.server.tcpnodelay`` does) and log the connection."""
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if self._idle_timeout is not None and self._clock is not None:
            self._last_activity = self._clock.seconds()
            self._idle_call = self._clock.callLater(self._idle_timeout, self._check_idle)
        self._log.debug("IPC connection from {peer} opened", peer=self.peer, state_to=self.core.state.name)

    def dataReceived(self, data: bytes) -> None:
        """Feed the core; run the calls it decodes; write replies; close on FATAL."""
        core = self.core
        if self._clock is not None:
            self._last_activity = self._clock.seconds()
        try:
            events = core.receive(data)
        except Exception:
            self._log.failure("IPC connection from {peer} hit an internal error; aborting it", peer=self.peer)
            core.connection_lost()
            self._tcp.abortConnection()
            return
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
            self._tcp.loseConnection()
        elif self._limit is not None and core.outstanding >= self._limit and not self._paused:
            self._paused = True
            self._reading.pauseProducing()

    def _check_idle(self) -> None:
        """Close the connection if nothing came in for the idle timeout and no call is running."""
        assert self._clock is not None and self._idle_timeout is not None
        idle_for = self._clock.seconds() - self._last_activity
        if idle_for >= self._idle_timeout and self.core.outstanding == 0:
            self._idle_call = None
            self._log.debug("IPC connection from {peer} idle for {s:.0f} s: closing it", peer=self.peer, s=idle_for)
            self._tcp.loseConnection()
            return
        wait = self._idle_timeout - idle_for if idle_for < self._idle_timeout else self._idle_timeout
        self._idle_call = self._clock.callLater(wait, self._check_idle)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Tell the core; replies to calls still running will be dropped."""
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
            self._idle_call = None
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
        if self._paused and self._limit is not None and self.core.outstanding < self._limit:
            self._paused = False
            if self.core.state is not ConnectionState.CLOSED:
                self._reading.resumeProducing()

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
        if error is None:
            self._log.info("IPC connection from {peer} closed: {reason}", peer=self.peer, reason=close.reason)
            return
        self._log.warn(
            "IPC connection from {peer} refused: {error_class}: {error_message}",
            peer=self.peer,
            reason=close.reason,
            error_class=error.java_class,
            error_message=error.message,
            error_detail=error.error_detail,
            call_id=error.call_id,
        )
