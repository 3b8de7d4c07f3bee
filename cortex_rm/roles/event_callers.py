"""Who calls the events' REST API here: a user's signed request, checked with her token's entry key.

Users never show a node their token (``events/request_proofs.py``): a request carries the
token's identifier and an HMAC under the token's *entry key* for this node.  ``CallerChecks``
gets that key, with the user's ``CallerAssertion`` for this node, from ``key_of`` — on a
node, the RM over the tracker connection (``callerKey``); on the RM, its own credentials —
keeps the answer ``cache_s`` (a refusal ``REFUSAL_CACHE_S``; one question at a time per
identifier, however many requests wait on it), checks the signature and the time, and
accepts each proof once (``SeenNonces``).  A revoked token therefore stops working at a node
within ``cache_s``.

The plain token header (``Hadoop-YARN-RM-Delegation-Token``) is taken only where ``plain`` is
given: on the RM, which issued the token; a node refuses it, saying how to sign instead.
Each assertion accepted is handed to ``remember`` (the gateway puts a user's newest in her
triggers, for the executors to check).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cortex_rm.events.caller_assertions import AssertionIssuer, CallerAssertion, CallerKey
from cortex_rm.events.request_proofs import (
    NonceCapacityExceeded, ProofError, SeenNonces, check,
)  # fmt: skip
from cortex_rm.internal.errors import CallRateExceeded
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER, InvalidToken
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.event_credentials import Presented
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.rest_errors import RestError

AUTH_CACHE_S = 60.0
REFUSAL_CACHE_S = 10.0
CACHE_ENTRIES = 1024

NODE_TAKES_NO_TOKEN = (
    f"this node takes no {REST_TOKEN_HEADER} header: nodes are contributors' machines, so sign your request for"
    " this node instead (Authorization: Cortex-HMAC-SHA256; cortex_rm.client.Cortex and `cortex-rm event` do it,"
    " and `cortex-rm event sign` prints the header for curl), or send the token to the ResourceManager's web"
    " address, which issued it"
)

class CallerChecks:
    """See the module docstring."""

    def __init__(
        self,
        ring_id: int,
        clock: IReactorTime,
        wall_clock_ms: Callable[[], int],
        key_of: Callable[[bytes], Awaitable[CallerKey]],
        remember: Callable[[CallerAssertion], None],
        *,
        plain: Callable[[str], CallerAssertion] | None = None,
        cache_s: float = AUTH_CACHE_S,
        nonces: SeenNonces | None = None,
    ) -> None:
        self.ring_id, self.clock, self.wall_clock_ms = ring_id, clock, wall_clock_ms
        self.key_of, self.remember, self.plain, self.cache_s = key_of, remember, plain, cache_s
        self.nonces = nonces if nonces is not None else SeenNonces()
        self._keys: OrderedDict[bytes, tuple[CallerKey | Exception, float]] = OrderedDict()
        self._asking: dict[bytes, list[defer.Deferred[CallerKey]]] = {}

    async def user_of(self, presented: Presented) -> str:
        """The user ``presented`` authenticates; InvalidToken saying why nobody, RestError 503 to retry."""
        if isinstance(presented, str):
            if self.plain is None:
                raise InvalidToken(NODE_TAKES_NO_TOKEN)
            assertion = self.plain(presented)
            self.remember(assertion)
            return assertion.user
        proof = presented.proof
        if proof.node != self.ring_id:
            raise InvalidToken(
                f"the request is signed for node {proof.node:040x}; this node is {self.ring_id:040x}: sign for it"
            )
        caller = await self._key(proof.identifier)
        now_ms = self.wall_clock_ms()
        try:
            check(presented, caller.entry_key, now_ms)
            fresh = self.nonces.add(proof.nonce, proof.time_ms, now_ms)
        except ProofError as e:
            raise InvalidToken(str(e)) from None
        except NonceCapacityExceeded as e:
            raise rest_errors.retriable(str(e)) from None
        if not fresh:
            raise InvalidToken("Authorization: this signed request was sent before (each nonce is taken once)")
        self.remember(caller.assertion)
        return caller.assertion.user

    async def _key(self, identifier: bytes) -> CallerKey:
        now = self.clock.seconds()
        known = self._keys.get(identifier)
        if known is not None and known[1] > now:
            if isinstance(known[0], Exception):
                raise known[0]
            return known[0]
        d: defer.Deferred[CallerKey] = defer.Deferred()
        waiting = self._asking.get(identifier)
        if waiting is not None:
            waiting.append(d)
            return await d
        if len(self._asking) >= CACHE_ENTRIES:
            raise rest_errors.retriable("this node checks too many credentials at once; retry shortly")
        self._asking[identifier] = [d]
        defer.ensureDeferred(self._ask(identifier)).addBoth(self._answered, identifier)
        return await d

    def _answered(self, outcome: CallerKey | Failure, identifier: bytes) -> None:
        for d in self._asking.pop(identifier, []):
            d.callback(outcome)  # (a Failure errbacks it)

    async def _ask(self, identifier: bytes) -> CallerKey:
        try:
            caller = await self.key_of(identifier)
        except CallRateExceeded as e:
            raise rest_errors.retriable(f"the RM is asked too often by this node; retry shortly ({e})") from None
        except InvalidToken as e:
            self._keep(identifier, e, REFUSAL_CACHE_S)
            raise
        except RestError:
            raise
        except Exception as e:  # noqa: BLE001 - not connected to the RM yet, or it failed: the caller may retry
            raise rest_errors.retriable(f"this node cannot check credentials now ({e}); retry shortly") from None
        self._keep(identifier, caller, self.cache_s)
        return caller

    def _keep(self, identifier: bytes, answer: CallerKey | Exception, seconds: float) -> None:
        if seconds <= 0:
            return
        self._keys[identifier] = (answer, self.clock.seconds() + seconds)
        self._keys.move_to_end(identifier)
        while len(self._keys) > CACHE_ENTRIES:
            self._keys.popitem(last=False)


def rm_caller_checks(
    auth: UserAuthenticator, issuer: AssertionIssuer, ring_id: int, clock: IReactorTime,
    wall_clock_ms: Callable[[], int], remember: Callable[[CallerAssertion], None],
) -> CallerChecks:  # fmt: skip
    """The RM's checks: it derives entry keys itself (nothing kept: a revoked token stops at once), asserts
    with its ring key (``issuer``), and takes the plain token header too."""

    async def key_of(identifier: bytes) -> CallerKey:
        user, key = auth.caller_key(identifier, ring_id)
        return CallerKey(issuer.issue(user, ring_id), key)

    def plain(token: str) -> CallerAssertion:
        return issuer.issue(auth.user_of_url_token(token), ring_id)

    return CallerChecks(ring_id, clock, wall_clock_ms, key_of, remember, plain=plain, cache_s=0)
