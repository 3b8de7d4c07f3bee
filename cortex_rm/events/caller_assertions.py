"""The RM's short-lived word on who triggers a function: a caller assertion, issued at authentication.

Grants (``FunctionSpec.may_trigger``) are checked by the entry node, but an executor
cannot take the entry node's word for them: any ring member can send an executor an
``InvokeFunction`` (the registrations are readable from the ring).  So every
activation a user triggers carries a ``CallerAssertion``:

* **Issued by the RM** when it authenticates the user: on its own REST API, and for
  a node in ``NodeTracker.callerKey``.  It says ``user``, the ``audience`` (the
  ring id of the entry node that authenticated her: the node on the other end of the
  tracker connection, or the RM itself), ``issued_ms``, ``expires_ms``
  (``LIFETIME_MS`` later) and a random ``nonce``, signed with the RM's ring key (the
  key whose SHA-1 of DER SPKI is its ring id, carried as ``signer_key``) over
  ``signed_bytes`` under a domain tag of its own.
* **Carried by the entry node** in every ``InvokeFunction`` for that user's trigger
  (the node keeps it with the user: ``roles/events_role.py`` re-asks the RM every
  ``AUTH_CACHE_S``, well within the lifetime).
* **Checked by the executor** (``Verifier.caller_error``): the signer is a ring id in
  ``[ring] resource_managers``, the signature matches, the audience is the member that
  sent the ``InvokeFunction`` (the ring authenticated it), it is not expired (allowing
  ``SKEW_MS`` of clock difference), and then the function's grants admit ``user``.

The audience binds an assertion to the node the user sent her signed request to, so an
executor that saw it cannot replay it elsewhere.  That node never holds her token, only
its entry key for itself (``request_proofs.py``): it can act for her at itself, where
she sent her request, and nowhere else.

Scheduled ticks have no user; the executor admits an ``InvokeFunction`` without an
assertion only as a tick of a function with a schedule (``roles/event_executor.py``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

LIFETIME_MS = 5 * 60_000
#: An assertion issued for a (user, audience) is handed out again while younger than this.
REUSE_MS = 60_000
#: Clock difference between the RM and an executor an assertion's times tolerate.
SKEW_MS = 60_000
#: The longest lifetime an executor accepts (an RM's setting beyond it is refused, not trusted).
MAX_LIFETIME_MS = 15 * 60_000
NONCE_BYTES = 16
MAX_USER_CHARS = 256
SIGNED_DOMAIN = b"cortex-caller-assertion\x00"
MAX_ISSUED = 4096


@dataclass(frozen=True)
class CallerAssertion:
    """The RM's signed word that ``user`` authenticated at the entry node ``audience`` (see the module docstring)."""

    user: str
    audience: int
    issued_ms: int
    expires_ms: int
    nonce: bytes
    signer_key: bytes = b""
    signature: bytes = b""


@dataclass(frozen=True)
class CallerKey:
    """The RM's answer to an entry node about a user's token: her assertion for that node, and the
    token's entry key for it (``request_proofs.entry_key``), to check her signed requests with."""

    assertion: CallerAssertion
    entry_key: bytes


def signed_bytes(assertion: CallerAssertion) -> bytes:
    """What the RM signs: the domain tag, then the fields but the key and signature as canonical JSON."""
    body = {
        "user": assertion.user,
        "audience": f"{assertion.audience:040x}",
        "issued_ms": assertion.issued_ms,
        "expires_ms": assertion.expires_ms,
        "nonce": assertion.nonce.hex(),
    }
    return SIGNED_DOMAIN + json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def time_error(assertion: CallerAssertion, now_ms: int, skew_ms: int = SKEW_MS) -> str | None:
    """Why ``assertion`` is not valid at ``now_ms`` on this node's clock (None: it is)."""
    if assertion.expires_ms <= assertion.issued_ms or assertion.expires_ms - assertion.issued_ms > MAX_LIFETIME_MS:
        return f"its lifetime is not between 0 and {MAX_LIFETIME_MS // 1000} s"
    if assertion.issued_ms > now_ms + skew_ms:
        return "it was issued in the future"
    if assertion.expires_ms + skew_ms <= now_ms:
        return "it has expired"
    return None


class AssertionIssuer:
    """The RM's side: signs assertions with its ring key, one per (user, audience) reused ``REUSE_MS``."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        wall_clock_ms: Callable[[], int],
        *,
        lifetime_ms: int = LIFETIME_MS,
        reuse_ms: int = REUSE_MS,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.key = key
        public = key.public_key()
        self.spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.wall_clock_ms = wall_clock_ms
        self.lifetime_ms, self.reuse_ms = lifetime_ms, reuse_ms
        self.random_bytes = random_bytes
        self._issued: OrderedDict[tuple[str, int], CallerAssertion] = OrderedDict()

    def issue(self, user: str, audience: int) -> CallerAssertion:
        """An assertion that ``user`` authenticated at ``audience`` (fresh, or one issued under ``reuse_ms`` ago)."""
        now = self.wall_clock_ms()
        known = self._issued.get((user, audience))
        if known is not None and known.issued_ms <= now < known.issued_ms + self.reuse_ms:
            self._issued.move_to_end((user, audience))
            return known
        nonce = self.random_bytes(NONCE_BYTES)
        unsigned = CallerAssertion(user, audience, now, now + self.lifetime_ms, nonce, self.spki)
        signature = self.key.sign(signed_bytes(unsigned), ec.ECDSA(hashes.SHA256()))
        assertion = CallerAssertion(**{**unsigned.__dict__, "signature": signature})
        self._issued[(user, audience)] = assertion
        self._issued.move_to_end((user, audience))
        while len(self._issued) > MAX_ISSUED:
            self._issued.popitem(last=False)
        return assertion
