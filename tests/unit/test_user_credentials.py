"""The RM's users' delegation tokens (``UserCredentials``) on a fake clock: issued tokens are
valid until their max date, survive a restart, and stop authenticating the moment their user
is revoked or they expire; an application's are swept once it ended (and refused by
``check`` then: see test_client_service)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.errors import AccessDenied
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.allocator.user_credentials import SUBMIT_GRACE_MS, UserCredentials
from cortex_rm.yarn.delegation import InvalidToken, Principal
from cortex_rm.yarn.tokens import MasterKey
from tests.support.rm_core import result_of

KEY = MasterKey(9, b"s" * 20)
LIFETIME_MS = 3_600_000


def credentials(clock: Clock, store: MemoryStateStore) -> UserCredentials:
    return UserCredentials(KEY, store, result_of(store.load()), lambda: int(clock.seconds() * 1000), LIFETIME_MS)


def test_an_issued_token_names_its_owner_until_its_max_date_and_not_a_millisecond_after() -> None:
    clock, store = Clock(), MemoryStateStore()
    clock.advance(1000)
    users = credentials(clock, store)
    ident = result_of(users.issue("alice"))
    assert (ident.owner, ident.issue_ms, ident.max_ms, ident.key_id) == ("alice", 1_000_000, 1_000_000 + LIFETIME_MS, 9)
    assert users.check(ident) == Principal("alice")
    clock.advance(LIFETIME_MS / 1000)
    assert users.check(ident) == Principal("alice")
    clock.advance(0.001)
    with pytest.raises(InvalidToken, match="is expired"):
        users.check(ident)


def test_a_forged_identifier_is_not_in_the_cache() -> None:
    """Another owner, a later max date or an unknown sequence number under a real one: refused."""
    clock, store = Clock(), MemoryStateStore()
    users = credentials(clock, store)
    ident = result_of(users.issue("alice"))
    for forged in (replace(ident, owner="root"), replace(ident, max_ms=ident.max_ms * 2), replace(ident, sequence=999)):
        with pytest.raises(InvalidToken, match="can't be found in cache"):
            users.check(forged)


def test_tokens_survive_a_restart_and_sequence_numbers_are_never_reused() -> None:
    clock, store = Clock(), MemoryStateStore()
    users = credentials(clock, store)
    alice = result_of(users.issue("alice"))
    bob = result_of(users.issue("bob"))
    result_of(users.revoke_user("bob"))
    again = credentials(clock, store)
    assert again.check(alice) == Principal("alice")
    with pytest.raises(InvalidToken):
        again.check(bob)
    assert result_of(again.issue("carol")).sequence == bob.sequence + 1


def test_revoking_a_user_forgets_her_tokens_and_her_applications_tokens_only() -> None:
    clock, store = Clock(), MemoryStateStore()
    users = credentials(clock, store)
    own, app, other = (result_of(users.issue(u, a)) for u, a in (("alice", None), ("alice", "application_1_0001"), ("bob", None)))
    assert users.check(app) == Principal("alice", "application_1_0001")
    assert result_of(users.revoke_user("alice")) == 2
    for gone in (own, app):
        with pytest.raises(InvalidToken):
            users.check(gone)
    assert users.check(other) == Principal("bob")
    assert users.users() == {"bob": {"tokens": 1, "expires_ms": other.max_ms, "max_ms": other.max_ms}}


def test_the_sweep_forgets_expired_tokens_and_ended_applications_after_the_submission_grace() -> None:
    clock, store = Clock(), MemoryStateStore()
    users = credentials(clock, store)
    running = {"application_1_0001"}
    live, ended, user = (result_of(users.issue("alice", a)) for a in ("application_1_0001", "application_1_0002", None))
    assert result_of(users.forget_unusable(running.__contains__)) == 0  # just issued: maybe not stored yet
    clock.advance(SUBMIT_GRACE_MS / 1000 + 1)
    assert result_of(users.forget_unusable(running.__contains__)) == 1
    with pytest.raises(InvalidToken):
        users.check(ended)
    assert users.check(live).application == "application_1_0001"
    clock.advance(LIFETIME_MS / 1000)
    assert result_of(users.forget_unusable(running.__contains__)) == 2
    assert store.state.delegation_tokens == {} and user.sequence == 3


def test_a_user_name_that_could_not_be_a_file_owner_or_an_acl_entry_or_is_reserved_is_refused() -> None:
    clock, store = Clock(), MemoryStateStore()
    users = UserCredentials(KEY, store, result_of(store.load()), lambda: 0, reserved_names=frozenset({"supergroup"}))
    for bad in ("", "a/b", "x" * 300, "a:b", "a b", "a,b", "a\tb", "supergroup"):
        with pytest.raises(ValueError):
            users.issue(bad)


RENEW_MS = 600_000


def renewable(clock: Clock, store: MemoryStateStore) -> UserCredentials:
    return UserCredentials(
        KEY, store, result_of(store.load()), lambda: int(clock.seconds() * 1000), LIFETIME_MS, renew_interval_ms=RENEW_MS
    )


def test_a_users_token_expires_unless_her_renewals_keep_it_alive_up_to_its_max_date() -> None:
    """Expiry = issue + renew interval; each renewal by its renewer (the user) moves it on,
    never past the max date; the expiry survives a restart; an expired token cannot be renewed."""
    clock, store = Clock(), MemoryStateStore()
    users = renewable(clock, store)
    ident = result_of(users.issue("alice"))
    assert ident.renewer == "alice" and users.expiry(ident) == RENEW_MS
    clock.advance(RENEW_MS / 1000 - 1)
    assert result_of(users.renew(ident, Principal("alice"))) == 2 * RENEW_MS - 1000
    assert renewable(clock, store).expiry(ident) == 2 * RENEW_MS - 1000  # kept in the store
    clock.advance(RENEW_MS / 1000)
    assert users.check(ident) == Principal("alice")
    while clock.seconds() * 1000 + RENEW_MS < LIFETIME_MS:
        result_of(users.renew(ident, Principal("alice")))
        clock.advance(RENEW_MS / 1000 - 1)
    assert result_of(users.renew(ident, Principal("alice"))) == ident.max_ms  # capped
    clock.advance(LIFETIME_MS)
    with pytest.raises(InvalidToken, match="is expired"):
        users.renew(ident, Principal("alice"))


def test_a_token_not_renewed_in_time_stops_authenticating_and_is_swept() -> None:
    clock, store = Clock(), MemoryStateStore()
    users = renewable(clock, store)
    ident = result_of(users.issue("alice"))
    clock.advance(RENEW_MS / 1000 + 0.001)
    with pytest.raises(InvalidToken, match="not renewed in time"):
        users.check(ident)
    assert result_of(users.forget_unusable(lambda app: True)) == 1
    assert users.users() == {}


def test_only_the_renewer_renews_and_only_owner_or_renewer_cancels() -> None:
    """bob, anonymous and alice's application token may neither renew nor cancel alice's token;
    an application's own token has no user renewer; a cancelled token authenticates nobody."""
    clock, store = Clock(), MemoryStateStore()
    users = renewable(clock, store)
    ident = result_of(users.issue("alice"))
    app_token = result_of(users.issue("alice", "application_1_0001"))
    assert users.expiry(app_token) == app_token.max_ms  # ends with its application, not renewed
    for caller in (Principal("bob"), Principal(None), Principal("alice", "application_1_0001")):
        with pytest.raises(AccessDenied, match="only its renewer may renew it"):
            users.renew(ident, caller)
        with pytest.raises(AccessDenied, match="not authorized to cancel"):
            users.cancel(ident, caller)
    with pytest.raises(AccessDenied):
        users.renew(app_token, Principal("alice"))
    assert result_of(users.cancel(ident, Principal("alice"))) == 1
    with pytest.raises(InvalidToken, match="can't be found in cache"):
        users.check(ident)
    assert renewable(clock, store).users() == {}  # gone from the store too


def test_a_renewal_the_store_could_not_keep_changes_nothing() -> None:
    """The store fails the renewal's write: the caller gets the error and the old expiry still holds."""

    class FailingStore(MemoryStateStore):
        fail = False

        def save_delegation_token(self, sequence: int, document: dict[str, object]):  # type: ignore[no-untyped-def]
            if self.fail:
                return defer.fail(OSError("disk full"))
            return super().save_delegation_token(sequence, document)

    clock, store = Clock(), FailingStore()
    users = renewable(clock, store)
    ident = result_of(users.issue("alice"))
    clock.advance(60)
    store.fail = True
    with pytest.raises(OSError, match="disk full"):
        result_of(users.renew(ident, Principal("alice")))
    assert users.expiry(ident) == RENEW_MS
