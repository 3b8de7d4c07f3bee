"""Credentials over REST: the admins' user management (``/ws/v1/cluster/cortex/users``) and a
user's own token, renewed or cancelled as YARN's RMWebServices does
(``POST /ws/v1/cluster/delegation-token/expiration``, ``DELETE /ws/v1/cluster/delegation-token``,
each with the token in the ``Hadoop-YARN-RM-Delegation-Token`` header)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from cortex_rm.allocator.errors import AccessDenied
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn.delegation import DelegationIdentifier, InvalidToken
from cortex_rm.yarn_api.rest_call import Reply, RestCall
from cortex_rm.yarn_api.rest_errors import bad_request, forbidden, not_found, unauthorized


class UserAdmin(Protocol):
    """What the admin operations need from the RM (``roles/user_admin.py`` implements it)."""

    async def issue(self, user: str) -> bytes:
        """A new credential for ``user``: a Hadoop token file with her RM and file system tokens."""

    async def revoke(self, user: str) -> int:
        """Forget every token of ``user``; how many there were."""

    def users(self) -> dict[str, dict[str, Any]]:
        """Each user with live tokens: how many, and when the last expires."""


class CredentialWebServices:
    """The credential operations of ``ClusterWebServices``."""

    admin: UserAdmin | None
    credentials: UserCredentials | None

    # -- users (admins only) ---------------------------------------------------------

    def _user_admin(self) -> UserAdmin:
        if self.admin is None:
            raise not_found("this ResourceManager does not manage users")
        return self.admin

    def users(self, call: RestCall) -> Reply:
        listed = self._user_admin().users()
        return Reply(body={"users": {"user": [{"name": n, **v} for n, v in sorted(listed.items())]}})

    async def issue_credential(self, call: RestCall) -> Reply:
        """A new credential for the user named in the path: ``{"user", "tokenFile"}`` (Base64 of a token file)."""
        user = call.params[0]
        try:
            token_file = await self._user_admin().issue(user)
        except ValueError as e:
            raise bad_request(str(e)) from None
        return Reply(body={"user": user, "tokenFile": base64.b64encode(token_file).decode("ascii")})

    async def revoke_user(self, call: RestCall) -> Reply:
        user = call.params[0]
        count = await self._user_admin().revoke(user)
        return Reply(body={"user": user, "revokedTokens": count})

    # -- the caller's own token ------------------------------------------------------

    def _own_token(self, call: RestCall) -> tuple[UserCredentials, DelegationIdentifier]:
        if self.credentials is None or call.token is None:
            raise unauthorized(f"{call.path} needs the token in the Hadoop-YARN-RM-Delegation-Token header")
        return self.credentials, call.token

    async def renew_delegation_token(self, call: RestCall) -> Reply:
        """The header's token, renewed by its renewer: ``{"expiration-time": ms}``."""
        credentials, token = self._own_token(call)
        with _refusals_as_rest_errors():
            expiry = await credentials.renew(token, call.principal)
        return Reply(body={"expiration-time": expiry})

    async def cancel_delegation_token(self, call: RestCall) -> Reply:
        """The header's token, cancelled: it authenticates nobody from now on."""
        credentials, token = self._own_token(call)
        with _refusals_as_rest_errors():
            await credentials.cancel(token, call.principal)
        return Reply()


@contextmanager
def _refusals_as_rest_errors() -> Iterator[None]:
    """RMWebServices' answers: a token the RM does not honour is 400, someone else's 403."""
    try:
        yield
    except InvalidToken as e:
        raise bad_request(str(e)) from None
    except AccessDenied as e:
        raise forbidden(str(e)) from None
