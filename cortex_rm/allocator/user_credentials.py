"""The users' delegation tokens the RM has issued and still honours (values in ``yarn/delegation.py``).

The RM is the only issuer.  Every token it issues is kept, by sequence number, in
the state store, so credentials outlive an RM restart; a token is valid while its
exact identifier is still kept and its max date has not passed.  Revoking a user
forgets all her tokens (her applications' too), which takes effect at once on
every port: the IPC ports, the REST API and WebHDFS all check here.

Passwords are HMAC-SHA1 of the identifier's bytes under the RM's delegation key,
so the two encodings of one identifier (the RM's protobuf, the file system's
Writable) each get a password of their own from the same key.

As in Hadoop, a user's token has two dates: its max date (in the identifier,
``credential_lifetime_s`` after issue) and its expiry, kept here, at most
``renew_interval_ms`` ahead.  Its renewer (the user herself) moves the expiry on,
never past the max date, with ``hadoop dtutil renew`` (``renewDelegationToken``) or
YARN's REST call; a token left to expire is forgotten and she needs a new one
from the admin.  An application's token expires only at its max date: it ends
with its application.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from twisted.internet import defer

from cortex_rm.allocator.errors import AccessDenied
from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.yarn.delegation import (
    APPLICATION_RENEWER_PREFIX,
    DelegationIdentifier,
    InvalidToken,
    Principal,
)
from cortex_rm.yarn.tokens import MasterKey

#: A user's credential lasts this long unless the RM is configured otherwise.
DEFAULT_LIFETIME_MS = 30 * 24 * 3600 * 1000
#: ... and must be renewed at least this often (Hadoop's yarn.resourcemanager.delegation.token.renew-interval is 1 day).
DEFAULT_RENEW_INTERVAL_MS = 7 * 24 * 3600 * 1000
SUBMIT_GRACE_MS = 60_000
#: The stored document's key for the expiry (beside the identifier's fields).
_EXPIRES = "expires_ms"


class UserCredentials:
    """Issues, checks, cancels and revokes users' delegation tokens.

    ``now_ms`` is the RM's clock; ``store`` keeps every change before it is acknowledged.
    """

    def __init__(
        self, key: MasterKey, store: RMStateStore, stored: StoredState, now_ms: Callable[[], int],
        lifetime_ms: int = DEFAULT_LIFETIME_MS,
        reserved_names: frozenset[str] = frozenset(),
        renew_interval_ms: int = DEFAULT_RENEW_INTERVAL_MS,
    ) -> None:
        self.key = key
        self.reserved_names = reserved_names
        self.store = store
        self.now_ms = now_ms
        self.lifetime_ms = lifetime_ms
        self.renew_interval_ms = renew_interval_ms
        self._tokens: dict[int, DelegationIdentifier] = {}
        self._expires: dict[int, int] = {}  # sequence -> expiry (ms)
        for seq, doc in stored.delegation_tokens.items():
            fields = dict(doc)
            expires = fields.pop(_EXPIRES, None)
            ident = self._tokens[seq] = DelegationIdentifier(**fields)
            self._expires[seq] = ident.max_ms if expires is None else min(int(expires), ident.max_ms)
        self._sequence = max([stored.delegation_sequence, *self._tokens])
        #: Whether an application is still running (the RM sets it): an application's token
        #: stops authenticating the moment its application ends, not at the next sweep.
        self.application_running: Callable[[str], bool] = lambda application: True

    # -- issuing ------------------------------------------------------------------------

    def issue(self, owner: str, application: str | None = None) -> defer.Deferred[DelegationIdentifier]:
        """A new token for ``owner`` (bound to ``application`` if given), kept before it is returned.

        An application's token expires with the user's own lifetime too, and is cancelled
        when the application ends (:meth:`cancel_application`)."""
        if not owner or len(owner) > 256 or any(c in owner for c in "/:,\0") or any(c.isspace() for c in owner):
            raise ValueError(f"invalid user name {owner[:64]!r}: no spaces, commas, slashes or colons")
        if owner in self.reserved_names:
            raise ValueError(f"{owner!r} is a reserved name (a group of the file system), not a user")
        self._sequence += 1
        now = self.now_ms()
        # a user renews her own token; an application's token is renewed by nobody
        renewer = APPLICATION_RENEWER_PREFIX + application if application else owner
        ident = DelegationIdentifier(owner, renewer, "", now, now + self.lifetime_ms, self._sequence, self.key.key_id)
        expires = ident.max_ms if application else min(now + self.renew_interval_ms, ident.max_ms)
        return self._keep(ident, expires).addCallback(lambda _: ident)

    def _keep(self, ident: DelegationIdentifier, expires: int) -> defer.Deferred[None]:
        """Store the token with its expiry, then honour it (a failed store changes nothing here)."""

        def stored(_: None) -> None:
            self._tokens[ident.sequence] = ident
            self._expires[ident.sequence] = expires

        return self.store.save_delegation_token(ident.sequence, {**asdict(ident), _EXPIRES: expires}).addCallback(stored)

    # -- renewing and cancelling (by the token's holder) ------------------------------

    def renew(self, ident: DelegationIdentifier, caller: Principal) -> defer.Deferred[int]:
        """Move the token's expiry on by the renew interval (never past its max date); fires
        with the new expiry.  Only its renewer may (AccessDenied); an expired, revoked or
        unknown token cannot be renewed (InvalidToken)."""
        self.check(ident)
        renewer = ident.renewer or ident.owner  # tokens issued before renewers were set
        if caller.user is None or caller.application is not None or caller.user != renewer:
            who = caller.user or "anonymous"
            raise AccessDenied(
                f"{who} tried to renew a token (owner={ident.owner}, sequenceNumber={ident.sequence})"
                f" whose renewer is {renewer!r}: only its renewer may renew it"
            )
        expires = min(self.now_ms() + self.renew_interval_ms, ident.max_ms)
        return self._keep(ident, max(expires, self._expires[ident.sequence])).addCallback(
            lambda _: self._expires[ident.sequence]
        )

    def cancel(self, ident: DelegationIdentifier, caller: Principal) -> defer.Deferred[int]:
        """Forget the token at once (its owner's or renewer's wish, as Hadoop allows them)."""
        known = self._tokens.get(ident.sequence)
        if known is None or known != ident:
            raise InvalidToken(f"token (owner={ident.owner}, sequenceNumber={ident.sequence}) is not known: nothing to cancel")
        if caller.user is None or caller.application is not None or caller.user not in (ident.owner, ident.renewer):
            raise AccessDenied(
                f"{caller.user or 'anonymous'} is not authorized to cancel the token"
                f" (owner={ident.owner}, sequenceNumber={ident.sequence})"
            )
        return self._forget([ident.sequence])

    def expiry(self, ident: DelegationIdentifier) -> int | None:
        """When the token stops authenticating unless renewed (None: not kept)."""
        return self._expires.get(ident.sequence)

    # -- checking -----------------------------------------------------------------------

    def check(self, ident: DelegationIdentifier) -> Principal:
        """Who a token with this identifier authenticates; ``InvalidToken`` (saying why) if nobody.

        The caller has checked the token's password (:meth:`password`) or SASL did."""
        known = self._tokens.get(ident.sequence)
        if known is None or known != ident:
            raise InvalidToken(
                f"token (owner={ident.owner}, sequenceNumber={ident.sequence}) can't be found in cache:"
                " it was revoked, cancelled or never issued by this cluster; ask the cluster's admin for a new one"
            )
        now = self.now_ms()
        expires = self._expires.get(ident.sequence, ident.max_ms)
        if now > expires:
            renewable = "" if expires >= ident.max_ms else " (it was not renewed in time)"
            raise InvalidToken(
                f"token (owner={ident.owner}, sequenceNumber={ident.sequence}) is expired, current time: {now}"
                f" expected renewal time: {expires}{renewable}; ask the cluster's admin for a new one"
            )
        if (
            ident.application is not None
            and now - ident.issue_ms > SUBMIT_GRACE_MS
            and not self.application_running(ident.application)
        ):
            raise InvalidToken(
                f"token (owner={ident.owner}, sequenceNumber={ident.sequence}) belongs to {ident.application},"
                " which has ended"
            )
        return Principal(ident.owner, ident.application)

    def password(self, identifier: bytes) -> bytes:
        """The password of a token whose identifier is these bytes (either encoding)."""
        return self.key.password(identifier)

    # -- forgetting ---------------------------------------------------------------------

    def revoke_user(self, owner: str) -> defer.Deferred[int]:
        """Forget every token of ``owner``; fires with how many there were."""
        return self._forget([s for s, i in self._tokens.items() if i.owner == owner])

    def cancel_application(self, application: str) -> defer.Deferred[int]:
        """Forget the tokens bound to ``application`` (it has ended)."""
        return self._forget([s for s, i in self._tokens.items() if i.application == application])

    def forget_unusable(self, running: Callable[[str], bool]) -> defer.Deferred[int]:
        """Forget the tokens whose max date has passed and those of applications that are not
        ``running`` (they ended, or this RM does not know them: a token is issued just before
        its application is stored, so one younger than ``SUBMIT_GRACE_MS`` is spared)."""
        now = self.now_ms()
        return self._forget(
            [
                s
                for s, i in self._tokens.items()
                if now > self._expires.get(s, i.max_ms)
                or (i.application is not None and now - i.issue_ms > SUBMIT_GRACE_MS and not running(i.application))
            ]
        )

    def _forget(self, sequences: list[int]) -> defer.Deferred[int]:
        for sequence in sequences:
            del self._tokens[sequence]
            self._expires.pop(sequence, None)
        if not sequences:
            return defer.succeed(0)
        removed = self.store.remove_delegation_tokens(sorted(sequences))
        return removed.addCallback(lambda _: len(sequences))

    def users(self) -> dict[str, dict[str, Any]]:
        """Each user with live tokens of her own: how many, when the last one expires unless
        renewed, and the last max date (renewing goes no further)."""
        out: dict[str, dict[str, Any]] = {}
        for sequence, ident in self._tokens.items():
            if ident.application is None:
                entry = out.setdefault(ident.owner, {"tokens": 0, "expires_ms": 0, "max_ms": 0})
                entry["tokens"] += 1
                entry["expires_ms"] = max(entry["expires_ms"], self._expires[sequence])
                entry["max_ms"] = max(entry["max_ms"], ident.max_ms)
        return out
