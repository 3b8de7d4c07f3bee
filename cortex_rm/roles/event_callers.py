"""Who calls the events' REST API here: a user's signed request, checked with her token's entry key.

Users never show a node their token (``events/request_proofs.py``): a request carries the
token's identifier and an HMAC under the token's *entry key* for this node and hour, over
the request and the ``Host`` it was sent to.  ``CallerChecks`` first takes only requests
addressed to this server's own web address (``addresses``), then gets the key, with the
user's ``CallerAssertion`` for this node, from ``key_of`` — on a node, the RM over the
tracker connection (``callerKey``, shown this very request); on the RM, its own
credentials — keeps it ``cache_s`` (one question at a time per token and hour, however
many requests wait on it; a revoked token stops working at a node within ``cache_s``),
checks the signature and the time, and accepts each proof once (``SeenNonces``).  Refusals
are not kept — a forged proof must not lock its token's owner out — so the questions a
client's address may cause are bounded instead (``ORIGIN_RATE``).

The plain token header (``Hadoop-YARN-RM-Delegation-Token``) is taken only where ``plain`` is
given: on the RM, which issued the token; a node refuses it, saying how to sign instead.
Each assertion accepted is handed to ``remember`` (the gateway puts a user's newest in her
triggers, for the executors to check).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cortex_rm.events.caller_assertions import AssertionIssuer, CallerAssertion, CallerKey
from cortex_rm.dht.rate_limits import PeerRateLimit
from cortex_rm.events.request_proofs import (
    NonceCapacityExceeded, ProofError, SeenNonces, SignedRequest, check, window,
)  # fmt: skip
from cortex_rm.internal.errors import CallRateExceeded
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER, InvalidToken
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.event_credentials import Presented
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.rest_errors import RestError

AUTH_CACHE_S = 60.0
CACHE_ENTRIES = 1024
#: Questions to the RM (tokens not in the cache) one client address may cause: a second, and saved up.
ORIGIN_RATE = (5.0, 20.0)

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
        addresses: Callable[[], Collection[str]],
        clock: IReactorTime,
        wall_clock_ms: Callable[[], int],
        key_of: Callable[[SignedRequest], Awaitable[CallerKey]],
        remember: Callable[[CallerAssertion], None],
        *,
        plain: Callable[[str], CallerAssertion] | None = None,
        cache_s: float = AUTH_CACHE_S,
        nonces: SeenNonces | None = None,
    ) -> None:
        self.ring_id, self.addresses, self.clock, self.wall_clock_ms = ring_id, addresses, clock, wall_clock_ms
        self.key_of, self.remember, self.plain, self.cache_s = key_of, remember, plain, cache_s
        self.nonces = nonces if nonces is not None else SeenNonces()
        self._keys: OrderedDict[tuple[bytes, int], tuple[CallerKey, float]] = OrderedDict()
        self._asking: dict[tuple[bytes, int], list[defer.Deferred[CallerKey]]] = {}
        self._origins = PeerRateLimit(*ORIGIN_RATE)

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
        mine = {a.lower() for a in self.addresses()}
        if presented.host.lower() not in mine:
            raise InvalidToken(
                f"the request is addressed to {presented.host[:80]!r}; send it to {', '.join(sorted(mine))} (and sign"
                " it for that address)"
            )
        caller = await self._key(presented)
        now_ms = self.wall_clock_ms()
        try:
            check(presented, caller.entry_key, now_ms)
            fresh = self.nonces.add(proof.nonce, proof.time_ms, now_ms, proof.identifier)
        except ProofError as e:
            raise InvalidToken(str(e)) from None
        except NonceCapacityExceeded as e:
            raise rest_errors.retriable(str(e)) from None
        if not fresh:
            raise InvalidToken("Authorization: this signed request was sent before (each nonce is taken once)")
        self.remember(caller.assertion)
        return caller.assertion.user

    async def _key(self, request: SignedRequest) -> CallerKey:
        slot = (request.proof.identifier, window(request.proof.time_ms))
        now = self.clock.seconds()
        known = self._keys.get(slot)
        if known is not None and known[1] > now:
            return known[0]
        d: defer.Deferred[CallerKey] = defer.Deferred()
        waiting = self._asking.get(slot)
        if waiting is not None:
            waiting.append(d)
            return await d
        if len(self._asking) >= CACHE_ENTRIES:
            raise rest_errors.retriable("this node checks too many credentials at once; retry shortly")
        origin = int.from_bytes(hashlib.sha256(request.origin.encode()).digest()[:8], "big")
        if not self._origins.allow(origin, now):
            raise rest_errors.retriable("too many credential checks from your address; retry shortly")
        self._asking[slot] = [d]
        defer.ensureDeferred(self._ask(request, slot)).addBoth(self._answered, slot)
        return await d

    def _answered(self, outcome: CallerKey | Failure, slot: tuple[bytes, int]) -> None:
        for d in self._asking.pop(slot, []):
            d.callback(outcome)  # (a Failure errbacks it)

    async def _ask(self, request: SignedRequest, slot: tuple[bytes, int]) -> CallerKey:
        try:
            caller = await self.key_of(request)
        except CallRateExceeded as e:
            raise rest_errors.retriable(f"the RM is asked too often by this node; retry shortly ({e})") from None
        except (InvalidToken, RestError):
            raise
        except Exception as e:  # noqa: BLE001 - not connected to the RM yet, or it failed: the caller may retry
            raise rest_errors.retriable(f"this node cannot check credentials now ({e}); retry shortly") from None
        if self.cache_s > 0:
            self._keys[slot] = (caller, self.clock.seconds() + self.cache_s)
            self._keys.move_to_end(slot)
            while len(self._keys) > CACHE_ENTRIES:
                self._keys.popitem(last=False)
        return caller


def rm_caller_checks(
    auth: UserAuthenticator, issuer: AssertionIssuer, ring_id: int, addresses: Callable[[], Collection[str]],
    clock: IReactorTime, wall_clock_ms: Callable[[], int], remember: Callable[[CallerAssertion], None],
) -> CallerChecks:  # fmt: skip
    """The RM's checks: it derives entry keys itself (nothing kept: a revoked token stops at once), asserts
    with its ring key (``issuer``), and takes the plain token header too."""

    async def key_of(request: SignedRequest) -> CallerKey:
        user, key = auth.caller_key(request, ring_id, None)  # (the host: CallerChecks checked it is ours)
        return CallerKey(issuer.issue(user, ring_id), key)

    def plain(token: str) -> CallerAssertion:
        return issuer.issue(auth.user_of_url_token(token), ring_id)

    return CallerChecks(ring_id, addresses, clock, wall_clock_ms, key_of, remember, plain=plain, cache_s=0)
