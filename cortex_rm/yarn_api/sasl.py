"""Hadoop's SASL negotiation (callId -33 frames), server side, without I/O.

A client that opens with auth byte 0xDF sends ``RpcSaslProto`` messages
(``Server.Connection.processSaslMessage`` is the reference)::

    client NEGOTIATE                 -> server NEGOTIATE{auths}   (or SUCCESS: "use SIMPLE")
    client INITIATE{auths:[chosen]}  -> SIMPLE: no reply, SIMPLE from here on
                    {token}          -> TOKEN: server SUCCESS{token=rspauth}  (DIGEST-MD5, one round)

A *simple-only* port answers NEGOTIATE with ``{state: SUCCESS}``, which makes the Java
client fall back to SIMPLE.  A *token* port advertises
``[{TOKEN, DIGEST-MD5, protocol "", serverId "default", challenge}, {SIMPLE, ""}]``
(TOKEN first, carrying the first challenge, as Hadoop does) and checks DIGEST-MD5
responses against the passwords it can look up.

Failures are :class:`SaslRejected`; the connection answers them FATAL under callId
-33 and closes.  Authentication failures carry ``FATAL_UNAUTHORIZED``; messages that
make no sense at this point of the exchange carry ``FATAL_INVALID_RPC_HEADER``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

from cortex_rm.yarn_api.digest_md5 import DigestMd5Failure, DigestMd5Server
from cortex_rm.yarn_api.errors import (
    ACCESS_CONTROL_EXCEPTION,
    FATAL_INVALID_RPC_HEADER,
    FATAL_UNAUTHORIZED,
    SASL_EXCEPTION,
    ErrorCode,
    FatalRpcError,
)
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod

MECHANISM_DIGEST_MD5 = "DIGEST-MD5"
#: ``SaslRpcServer.SASL_DEFAULT_REALM``: the serverId and realm of token auth.
DEFAULT_REALM = "default"

SaslAuth = RpcSaslProto.SaslAuth
PasswordLookup = Callable[[bytes], "bytes | None"]


class SaslRejected(FatalRpcError):
    """The exchange failed: a FATAL reply, ``FATAL_UNAUTHORIZED`` unless said otherwise.

    The negotiation does not see frames; the connection answers it under the SASL
    frame's call id (:meth:`FatalRpcError.for_call`).
    """

    def __init__(self, java_class: str, message: str, error_detail: ErrorCode = FATAL_UNAUTHORIZED) -> None:
        super().__init__(java_class, message, error_detail)


@dataclass(frozen=True)
class SaslOutcome:
    """Who the peer is once SASL is over: SIMPLE (anyone), or TOKEN with its identifier."""

    auth_method: AuthMethod
    token_identifier: bytes | None


@dataclass(frozen=True)
class SaslStep:
    """The answer to one client message: a reply (or None) and, when done, the outcome."""

    reply: RpcSaslProto | None
    outcome: SaslOutcome | None


class SaslServer:
    """The SASL policy of one port; :meth:`start` makes one negotiation per connection.

    ``password_for(identifier_bytes) -> password_bytes | None`` enables TOKEN
    (DIGEST-MD5) authentication; without it the port is simple-only.
    ``random_bytes(n)`` is the nonce source (``os.urandom`` unless a test injects one).
    ``allow_simple=False`` makes TOKEN mandatory (a NONE preamble or a SIMPLE choice
    is then refused with ``AccessControlException``).
    """

    def __init__(
        self,
        password_for: PasswordLookup | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        allow_simple: bool = True,
        server_id: str = DEFAULT_REALM,
        protocol: str = "",
    ) -> None:
        if password_for is None and not allow_simple:
            raise ValueError("a SASL policy needs TOKEN or SIMPLE authentication (or both)")
        self.password_for = password_for
        self.random_bytes = random_bytes
        self.simple_allowed = allow_simple
        self.server_id = server_id
        self.protocol = protocol
        methods = []
        if password_for is not None:
            methods.append(
                SaslAuth(method=AuthMethod.TOKEN.value, mechanism=MECHANISM_DIGEST_MD5, protocol=protocol, serverId=server_id)
            )
        if allow_simple:
            methods.append(SaslAuth(method=AuthMethod.SIMPLE.value, mechanism=""))
        #: What NEGOTIATE advertises (without the per-connection challenge).
        self.advertised: tuple[RpcSaslProto.SaslAuth, ...] = tuple(methods)

    @classmethod
    def simple_only(cls) -> SaslServer:
        """A port that lets every SASL client fall back to SIMPLE (the RM client port, NMs)."""
        return cls()

    @property
    def token_enabled(self) -> bool:
        """True when TOKEN/DIGEST-MD5 is offered."""
        return self.password_for is not None

    def describe_methods(self) -> str:
        """``[TOKEN, SIMPLE]``, as Hadoop prints its enabled methods in error messages."""
        return "[" + ", ".join(a.method for a in self.advertised) + "]"

    def start(self) -> SaslNegotiation:
        """A fresh negotiation for a connection that opened with the SASL auth byte."""
        return SaslNegotiation(self)


class NegotiationState(enum.Enum):
    """AWAIT_NEGOTIATE -> NEGOTIATED -> (TOKEN_SUCCEEDED | SIMPLE_CHOSEN); any -> FAILED."""

    AWAIT_NEGOTIATE = "AWAIT_NEGOTIATE"
    NEGOTIATED = "NEGOTIATED"
    TOKEN_SUCCEEDED = "TOKEN_SUCCEEDED"
    SIMPLE_CHOSEN = "SIMPLE_CHOSEN"
    FAILED = "FAILED"


def _auth_key(auth: RpcSaslProto.SaslAuth) -> tuple[str, str, str, str]:
    return (auth.method, auth.mechanism, auth.protocol, auth.serverId)


class SaslNegotiation:
    """One connection's SASL exchange: feed it each client ``RpcSaslProto``."""

    def __init__(self, policy: SaslServer) -> None:
        self._policy = policy
        self._digest: DigestMd5Server | None = None
        self.state = NegotiationState.AWAIT_NEGOTIATE

    @property
    def done(self) -> bool:
        """True once the client is authenticated or has chosen SIMPLE."""
        return self.state in (NegotiationState.TOKEN_SUCCEEDED, NegotiationState.SIMPLE_CHOSEN)

    def receive(self, message: RpcSaslProto) -> SaslStep:
        """Process one client message; raises :class:`SaslRejected` (and moves to FAILED)."""
        try:
            return self._receive(message)
        except SaslRejected:
            self.state = NegotiationState.FAILED
            raise

    def _receive(self, message: RpcSaslProto) -> SaslStep:
        if self.state is NegotiationState.FAILED:
            raise SaslRejected(SASL_EXCEPTION, "SASL negotiation already failed", FATAL_INVALID_RPC_HEADER)
        if self.done:
            raise SaslRejected(SASL_EXCEPTION, "Negotiation is already complete", FATAL_INVALID_RPC_HEADER)
        state = message.state
        if state == RpcSaslProto.WRAP:
            raise SaslRejected(SASL_EXCEPTION, "Server is not wrapping data", FATAL_INVALID_RPC_HEADER)
        if state == RpcSaslProto.NEGOTIATE:
            if self.state is not NegotiationState.AWAIT_NEGOTIATE:
                raise SaslRejected(ACCESS_CONTROL_EXCEPTION, "Client already attempted negotiation")
            return self._negotiate()
        if state == RpcSaslProto.INITIATE:
            return self._initiate(message)
        if state == RpcSaslProto.RESPONSE:
            if self._digest is None:
                raise SaslRejected(SASL_EXCEPTION, "Client sent RESPONSE before INITIATE")
            return self._digest_step(message)
        raise SaslRejected(SASL_EXCEPTION, f"Client sent unsupported state {RpcSaslProto.SaslState.Name(state)}")

    def _negotiate(self) -> SaslStep:
        self.state = NegotiationState.NEGOTIATED
        if not self._policy.token_enabled:
            # A simple-only server: SUCCESS tells the client to switch to SIMPLE.
            self.state = NegotiationState.SIMPLE_CHOSEN
            return SaslStep(RpcSaslProto(state=RpcSaslProto.SUCCESS), SaslOutcome(AuthMethod.SIMPLE, None))
        reply = RpcSaslProto(state=RpcSaslProto.NEGOTIATE)
        reply.auths.extend(self._policy.advertised)
        # Hadoop speeds the exchange up by putting the first DIGEST-MD5 challenge in
        # the advertised TOKEN auth (always first), so INITIATE can carry the response.
        self._digest = self._new_digest_server()
        reply.auths[0].challenge = self._digest.challenge()
        return SaslStep(reply, None)

    def _initiate(self, message: RpcSaslProto) -> SaslStep:
        if len(message.auths) != 1:
            raise SaslRejected(SASL_EXCEPTION, "Client mechanism is malformed")
        chosen = message.auths[0]
        advertised = {_auth_key(a) for a in self._policy.advertised}
        if _auth_key(chosen) not in advertised:
            if self.state is NegotiationState.AWAIT_NEGOTIATE:
                # A client that skipped NEGOTIATE is told what is on offer instead.
                return self._negotiate()
            raise SaslRejected(
                ACCESS_CONTROL_EXCEPTION,
                f"{chosen.method} authentication is not enabled.  Available:{self._policy.describe_methods()}",
            )
        if chosen.method == AuthMethod.SIMPLE.value:
            # The client considers itself done; Hadoop sends no reply.
            self.state = NegotiationState.SIMPLE_CHOSEN
            return SaslStep(None, SaslOutcome(AuthMethod.SIMPLE, None))
        if self._digest is None:
            raise SaslRejected(SASL_EXCEPTION, "DIGEST-MD5: INITIATE without the challenge of a NEGOTIATE")
        return self._digest_step(message)

    def _digest_step(self, message: RpcSaslProto) -> SaslStep:
        assert self._digest is not None
        if not message.HasField("token"):
            raise SaslRejected(SASL_EXCEPTION, "Client did not send a token")
        try:
            success = self._digest.verify(message.token)
        except DigestMd5Failure as exc:
            raise SaslRejected(exc.java_class, exc.message) from exc
        self.state = NegotiationState.TOKEN_SUCCEEDED
        return SaslStep(
            RpcSaslProto(state=RpcSaslProto.SUCCESS, token=success.rspauth),
            SaslOutcome(AuthMethod.TOKEN, success.identifier),
        )

    def _new_digest_server(self) -> DigestMd5Server:
        password_for = self._policy.password_for
        assert password_for is not None
        return DigestMd5Server(
            password_for=password_for,
            random_bytes=self._policy.random_bytes,
            realm=self._policy.server_id,
            digest_uri=f"{self._policy.protocol}/{self._policy.server_id}",
        )
