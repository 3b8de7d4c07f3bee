"""The RM's users: credentials issued to them, the admin's own, and their upkeep.

* ``RMUserAdmin`` issues a user's credential as a Hadoop token file (her RM and
  file system delegation tokens, with the RM's bound addresses as services; a
  client's ``client-config`` sets the services it reaches them at) and revokes them;
  the REST API's admin operations call it.
* At every start the RM makes sure ``<state_dir>/admin.token`` (mode 600) holds a
  valid credential of its admin (the user the RM runs as, the file system's
  superuser): that file is how ``cortex-rm user add`` on the RM's machine, and
  ``local-cluster up``, prove they are the admin.
* Every ``SWEEP_S`` the tokens that can no longer authenticate anyone are
  forgotten: expired ones, and applications' tokens once their application ended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, DelegationIdentifier, InvalidToken, Principal
from cortex_rm.yarn_api.delegation_tokens import read_rm_identifier, read_token_writable
from cortex_rm.yarn_api.tokens import credentials_file_bytes, write_token_file
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.writable import MalformedCredentials, read_token_storage

ADMIN_TOKEN_FILE = "admin.token"
SWEEP_S = 60
#: The admin's credential is replaced when it has less than this left (checked every sweep).
RENEW_BEFORE_MS = 24 * 3600 * 1000

log = Logger()


class RMUserAdmin:
    """Issues and revokes users' credentials (see the module docstring)."""

    def __init__(self, auth: UserAuthenticator, rm_service: str = "", fs_service: str = "") -> None:
        """``rm_service``/``fs_service``: the services the issued tokens name (the RM's bound
        addresses; the RM sets them once its ports are bound, before anyone can call)."""
        self.auth = auth
        self.credentials: UserCredentials = auth.credentials
        self.rm_service = rm_service
        self.fs_service = fs_service

    async def issue(self, user: str) -> bytes:
        ident = await self.credentials.issue(user)
        log.info("issued a credential to user {user} (sequence {seq})", user=user, seq=ident.sequence)
        return credentials_file_bytes(self.auth.tokens_for(ident, self.rm_service, self.fs_service))

    async def revoke(self, user: str) -> int:
        count = await self.credentials.revoke_user(user)
        log.info("revoked user {user}: {count} token(s) forgotten", user=user, count=count)
        return count

    def users(self) -> dict[str, dict[str, Any]]:
        return self.credentials.users()

    async def ensure_admin_credential(self, path: Path, admin: str, run: Runner) -> None:
        """Keep ``path`` if it holds a valid credential of ``admin`` (renewed when its expiry is
        near), else write a new one there (600), also when its max date is near; the file is
        read and written through ``run``."""
        ident = _credential_of(await run(lambda: _read_or_empty(path)), admin, self.credentials)
        now = self.credentials.now_ms()
        if ident is not None and ident.max_ms - now > RENEW_BEFORE_MS:
            if (self.credentials.expiry(ident) or 0) - now <= RENEW_BEFORE_MS:
                await self.credentials.renew(ident, Principal(admin))
            return
        token = await self.issue(admin)
        await run(lambda: write_token_file(path, token))
        log.info("wrote the admin's credential to {path}", path=str(path))


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _credential_of(stored: bytes, user: str, credentials: UserCredentials) -> DelegationIdentifier | None:
    """The RM token in a token file's bytes if it is valid and ``user``'s own; else None."""
    if not stored:
        return None
    try:
        tokens, _ = read_token_storage(stored)
        for raw in tokens.values():
            token = read_token_writable(raw)
            if token.kind == RM_DELEGATION_KIND:
                ident = read_rm_identifier(token.identifier)
                principal = credentials.check(ident)
                return ident if principal == Principal(user) else None
    except (MalformedCredentials, InvalidToken):
        pass
    return None


def start_sweeps(
    credentials: UserCredentials,
    running: Callable[[str], bool],
    clock: IReactorTime,
    keep_admin: Callable[[], defer.Deferred[None]] | None = None,
) -> LoopingCall:
    """Every ``SWEEP_S``: forget expired tokens and those of applications that are not running,
    then (``keep_admin``) make sure the admin's credential file stays valid."""

    def forgot(count: int) -> None:
        if count:
            log.info("forgot {count} unusable delegation token(s)", count=count)

    def sweep() -> defer.Deferred[None]:
        d = credentials.forget_unusable(running).addCallback(forgot)
        if keep_admin is not None:
            d.addCallback(lambda _: keep_admin())
        return d.addErrback(lambda f: log.failure("sweeping delegation tokens failed", f))

    loop = LoopingCall(sweep)
    loop.clock = clock
    loop.start(SWEEP_S, now=False)
    return loop
