"""ApplicationClientProtocol's calls on a user's own credential: ``renewDelegationToken`` and
``cancelDelegationToken`` (what ``hadoop dtutil renew`` and ``cancel`` send).

A token the RM does not honour reaches the client as ``SecretManager$InvalidToken``;
someone else's token as ``AccessControlException`` (``UserCredentials`` decides).
``ApplicationClientService`` registers these handlers beside its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet import defer

from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn_api.errors import INVALID_TOKEN, RemoteError
from cortex_rm.yarn_api.proto import Security_pb2 as sec
from cortex_rm.yarn_api.rpc_protocol import CallContext
from cortex_rm.yarn_api.user_auth import UserAuthenticator


@contextmanager
def _invalid_token_as_remote_error() -> Iterator[None]:
    try:
        yield
    except InvalidToken as e:
        raise RemoteError(INVALID_TOKEN, str(e)) from None


class CredentialCalls:
    """The handlers of the two credential calls, over the RM's authenticator."""

    def __init__(self, auth: UserAuthenticator) -> None:
        self.auth = auth

    def renew_delegation_token(
        self, call: CallContext, request: sec.RenewDelegationTokenRequestProto
    ) -> defer.Deferred[sec.RenewDelegationTokenResponseProto]:
        """The token's renewer moves its expiry on."""

        async def renew() -> sec.RenewDelegationTokenResponseProto:
            with _invalid_token_as_remote_error():
                token = self.auth.presented(request.token)
                expiry = await self.auth.credentials.renew(token, self.auth.principal_of_call(call))
            return sec.RenewDelegationTokenResponseProto(newExpiryTime=expiry)

        return defer.ensureDeferred(renew())

    def cancel_delegation_token(
        self, call: CallContext, request: sec.CancelDelegationTokenRequestProto
    ) -> defer.Deferred[sec.CancelDelegationTokenResponseProto]:
        """Its owner or renewer makes the token worthless at once."""

        async def cancel() -> sec.CancelDelegationTokenResponseProto:
            with _invalid_token_as_remote_error():
                await self.auth.credentials.cancel(self.auth.presented(request.token), self.auth.principal_of_call(call))
            return sec.CancelDelegationTokenResponseProto()

        return defer.ensureDeferred(cancel())
