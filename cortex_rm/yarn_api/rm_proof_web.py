"""``GET /ws/v1/cortex/rm-proof``: an RM proves, to a client that found it in a node's directory, that it holds
the key her credential was issued with (what and why: ``yarn/rm_proof.py``).

Served on the RM's web port by the active (``rest.py``) and by each standby (``standby_web.py``), each from its
own ``ProofSecrets``: the active's live ``UserCredentials`` (``LiveSecrets``), a standby's copy of the RM's
state store (``StoredSecrets``: the delegation key and the tokens the active issued, as its journal applied
them).  No credential is needed to ask, so the work is bounded per client address (``PeerRateLimit``, before
anything else), and a standby reloads its copy (the keys and tokens alone, not the applications) at most every
``MIN_RELOAD_S``.

Answers are JSON: ``{"proof": "<64 hex>"}``, or a ``RemoteException`` as the REST API's and WebHDFS's:

* 400 ``BadRequestException``: the query is not ``identifier`` and ``nonce`` (``rm_proof.parse_query``);
* 403 ``ForbiddenException``: ``Host`` is not this RM's own web address (it proves only its own);
* 403 ``SecretManager$InvalidToken``: the identifier is not a WebHDFS token's, or names a token this RM does
  not honour (unknown, revoked, expired, an application's);
* 503 ``RetriableException`` (``Retry-After``): too many questions from the address; the RM has not bound its
  ports yet; a standby without a copy of the keys yet (no RM has ever been active).

Only a WebHDFS token's identifier is taken (Hadoop's Writable form, a leading zero byte): the RM token's
password, which keys the signed requests' entry keys, never keys a proof.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.rm_proof import PROOF_PATH, MalformedProofQuery, parse_query, rm_proof
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.delegation_tokens import read_fs_identifier
from cortex_rm.yarn_api.errors import INVALID_TOKEN
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.user_auth import own_user

log = Logger()

#: Questions one client address may ask a second, and saved up (a ``client-config`` asks each RM once).
CLIENT_RATE = (2.0, 20.0)
#: A standby reloads its copy of the store at most this often (for a token it does not know yet) ...
MIN_RELOAD_S = 2.0
#: ... and always once its copy is this old (a revoked token stops proving within this).
MAX_AGE_S = 30.0
DELEGATION_KEY = "delegation"  # the name ``RMKeys`` stores the delegation key under
INVALID_TOKEN_EXCEPTION = ("InvalidToken", INVALID_TOKEN)


class ProofSecrets(Protocol):
    def password(self, identifier: bytes) -> defer.Deferred[bytes]:
        """The password of the user's own WebHDFS token with this identifier while the RM honours it; fails with
        InvalidToken (saying why) otherwise, or RestError (503) when it cannot tell yet."""


def _fs_identifier(identifier: bytes, credentials: UserCredentials) -> bytes:
    own_user(credentials.check(read_fs_identifier(identifier)))  # InvalidToken: malformed, unknown, an app's
    return credentials.password(identifier)


class LiveSecrets:
    """The active RM's: its own ``UserCredentials``."""

    def __init__(self, credentials: UserCredentials) -> None:
        self.credentials = credentials

    def password(self, identifier: bytes) -> defer.Deferred[bytes]:
        return defer.maybeDeferred(_fs_identifier, identifier, self.credentials)


class StoredSecrets:
    """A standby's: ``UserCredentials`` over what its copy of the RM's state store holds, loaded when first asked,
    again for a token not known (at most every ``MIN_RELOAD_S``), and whenever older than ``MAX_AGE_S``."""

    def __init__(self, store: RMStateStore, clock: IReactorTime, now_ms: Callable[[], int]) -> None:
        self.store, self.clock, self.now_ms = store, clock, now_ms
        self._copy: UserCredentials | None = None
        self._loaded_s = float("-inf")
        self._waiting: list[defer.Deferred[UserCredentials | None]] | None = None

    def password(self, identifier: bytes) -> defer.Deferred[bytes]:
        return defer.Deferred.fromCoroutine(self._password(identifier))

    async def _password(self, identifier: bytes) -> bytes:
        read_fs_identifier(identifier)  # a malformed one costs no load
        age = self.clock.seconds() - self._loaded_s
        copy = self._copy if age < MAX_AGE_S else None
        if copy is not None:
            try:
                return _fs_identifier(identifier, copy)
            except InvalidToken:
                if age < MIN_RELOAD_S:
                    raise
        copy = await self._reload()
        if copy is None:
            raise rest_errors.retriable("this standby has no copy of the ResourceManager's keys yet; retry shortly")
        return _fs_identifier(identifier, copy)

    def _reload(self) -> defer.Deferred[UserCredentials | None]:
        """The copy as the store holds it now (one load at a time: callers meanwhile share it)."""
        waiting: defer.Deferred[UserCredentials | None] = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(waiting)
            return waiting
        self._waiting = [waiting]
        self.store.load(applications=False).addCallback(self._loaded).addBoth(self._reloaded)
        return waiting

    def _reloaded(self, outcome: UserCredentials | None | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(outcome)  # (a Failure errbacks it)

    def _loaded(self, stored: StoredState) -> UserCredentials | None:
        self._loaded_s = self.clock.seconds()
        key = stored.master_keys.get(DELEGATION_KEY)
        # (only read: check and password; nothing is written to the store through it)
        self._copy = None if key is None else UserCredentials(MasterKey(*key), self.store, stored, self.now_ms)
        return self._copy


@dataclass(frozen=True)
class OwnAddresses:
    """The addresses an RM proves it is at: its web, client and scheduler addresses, as the directory lists them."""

    webapp: HostPort
    client: HostPort
    scheduler: HostPort


class RmProofs:
    """The endpoint's logic, sans-IO (the module docstring); ``claim`` once the RM's addresses are known."""

    def __init__(self, secrets: ProofSecrets, clock: IReactorTime, own: OwnAddresses | None = None) -> None:
        self.secrets, self.clock, self.own = secrets, clock, own
        self._clients = PeerRateLimit(*CLIENT_RATE)

    def claim(self, webapp: HostPort, client: HostPort, scheduler: HostPort) -> None:
        self.own = OwnAddresses(webapp, client, scheduler)

    def answer(self, args: dict[bytes, list[bytes]], host: str, origin: str) -> defer.Deferred[dict[str, Any]]:
        """The answer to a question with query ``args``, ``Host`` header ``host``, from client address ``origin``;
        fails with RestError."""
        return defer.Deferred.fromCoroutine(self._answer(args, host, origin))

    async def _answer(self, args: dict[bytes, list[bytes]], host: str, origin: str) -> dict[str, Any]:
        client = int.from_bytes(hashlib.sha256(origin.encode("utf-8", "replace")).digest()[:8], "big")
        if not self._clients.allow(client, self.clock.seconds()):
            raise RestError(503, rest_errors.RETRIABLE, "too many RM proofs asked from your address; retry shortly",
                            headers=((b"Retry-After", b"1"),))  # fmt: skip
        own = self.own
        if own is None:
            raise RestError(503, rest_errors.RETRIABLE, "this RM has not bound its ports yet; retry shortly",
                            headers=((b"Retry-After", b"1"),))  # fmt: skip
        if host.lower() != str(own.webapp).lower():
            raise rest_errors.forbidden(
                f"this ResourceManager's web address is {own.webapp}, not {host[:80]!r}: it proves only its own"
            )
        try:
            query = parse_query(args)
        except MalformedProofQuery as e:
            raise rest_errors.bad_request(f"{PROOF_PATH}: {e}") from None
        try:
            password = await self.secrets.password(query.identifier)
        except InvalidToken as e:
            raise RestError(403, INVALID_TOKEN_EXCEPTION, f"no proof for this identifier: {e}") from None
        proof = rm_proof(password, query.nonce, str(own.webapp), str(own.client), str(own.scheduler))
        return {"proof": proof.hex()}


class RmProofResource(Resource):
    """``PROOF_PATH`` over twisted.web: GET only; JSON with its Content-Type."""

    isLeaf = True

    def __init__(self, proofs: RmProofs) -> None:
        super().__init__()
        self.proofs = proofs

    def render(self, request: Request) -> int | bytes:
        method = (request.method or b"GET").decode("latin-1")
        if method != "GET":
            _write(request, rest_errors.method_not_allowed(method, PROOF_PATH, ["GET"]))
            return NOT_DONE_YET
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        origin = str(getattr(request.getClientAddress(), "host", ""))
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        d = self.proofs.answer(dict(request.args or {}), host, origin)
        d.addErrback(_refusal, request)
        d.addCallback(lambda body: None if gone else _write(request, body))
        d.addErrback(lambda f: log.failure("could not answer an RM proof's question", f))
        return NOT_DONE_YET


def _refusal(failure: Failure, request: Request) -> RestError:
    error = failure.value
    if not isinstance(error, RestError):
        log.failure("an RM proof failed", failure)
        error = rest_errors.internal_error("GET", PROOF_PATH, error)
    else:
        rest_errors.log_refused(log, "GET", PROOF_PATH, error, request)
    return error


def _write(request: Request, reply: dict[str, Any] | RestError) -> None:
    status, body = (reply.status, reply.body()) if isinstance(reply, RestError) else (200, reply)
    data = json.dumps(body).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-cache")
    for name, value in reply.headers if isinstance(reply, RestError) else ():
        request.setHeader(name, value)
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    request.write(data)
    request.finish()
