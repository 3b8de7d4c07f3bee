"""Who is calling, on every port a user talks to: IPC (SASL TOKEN), REST (header) and WebHDFS (``delegation=``).

A caller with a valid delegation token (see ``yarn/delegation.py``) is her token's
owner; anyone else — no token, or only a SIMPLE user name, which anyone can claim —
is anonymous, and may see what ``anonymous_access`` allows: nothing, or the
cluster's info and metrics (the default), never a state change.
"""

from __future__ import annotations

from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.events.request_proofs import ProofError, SignedRequest, check, entry_key, window
from cortex_rm.yarn.delegation import (
    ANONYMOUS,
    RM_DELEGATION_KIND,
    WEBHDFS_DELEGATION_KIND,
    DelegationIdentifier,
    InvalidToken,
    Principal,
)
from cortex_rm.yarn_api.delegation_tokens import (
    from_url_string,
    fs_identifier_bytes,
    read_fs_identifier,
    read_rm_identifier,
    rm_identifier_bytes,
)
from cortex_rm.yarn_api.errors import ACCESS_CONTROL_EXCEPTION, RemoteError
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext

#: ``anonymous_access`` values: what a caller without a credential may see.
ANONYMOUS_NONE = "none"
ANONYMOUS_CLUSTER_INFO = "cluster-info"
ANONYMOUS_ACCESS = (ANONYMOUS_NONE, ANONYMOUS_CLUSTER_INFO)

NEEDS_CREDENTIAL = (
    "{what} needs a user's credential. Ask the cluster's admin for one (`cortex-rm user add NAME --out FILE`),"
    " then write your client configuration with it (`cortex-rm client-config --credential FILE ...`)"
)


class UserAuthenticator:
    """Turns what a request carries into a :class:`Principal`, checked against ``credentials``."""

    def __init__(self, credentials: UserCredentials, anonymous_access: str = ANONYMOUS_CLUSTER_INFO) -> None:
        if anonymous_access not in ANONYMOUS_ACCESS:
            raise ValueError(f"anonymous_access must be one of {ANONYMOUS_ACCESS}, not {anonymous_access!r}")
        self.credentials = credentials
        self.anonymous_access = anonymous_access

    # -- IPC ----------------------------------------------------------------------------

    def sasl_password(self, identifier: bytes) -> bytes | None:
        """The password SASL DIGEST-MD5 checks an RM delegation token against; None for an invalid one."""
        try:
            self.credentials.check(read_rm_identifier(identifier))
        except InvalidToken:
            return None
        return self.credentials.password(identifier)

    def principal_of_call(self, call: CallContext) -> Principal:
        """The caller of an IPC call: her token's owner after SASL TOKEN, else anonymous."""
        if call.auth_method is AuthMethod.TOKEN and call.token_identifier is not None:
            try:
                return self.credentials.check(read_rm_identifier(call.token_identifier))
            except InvalidToken as e:  # revoked between the handshake and this call
                raise RemoteError(ACCESS_CONTROL_EXCEPTION, str(e)) from None
        return ANONYMOUS

    # -- HTTP ---------------------------------------------------------------------------

    def principal_of_url_token(self, text: str, kind: str) -> Principal:
        """The owner of a token given as a URL string (REST header, WebHDFS ``delegation``);
        ``InvalidToken`` saying why it authenticates nobody."""
        return self.url_token(text, kind)[0]

    def url_token(self, text: str, kind: str) -> tuple[Principal, DelegationIdentifier]:
        """``principal_of_url_token`` and the token's identifier (to renew or cancel it)."""
        ident = self.presented(from_url_string(text.strip()), kind)
        return self.credentials.check(ident), ident

    def presented(self, token: TokenProto, kind: str = RM_DELEGATION_KIND) -> DelegationIdentifier:
        """The identifier of a token someone holds (to authenticate, renew or cancel it), if it
        is of ``kind`` and its password is right; ``InvalidToken`` saying why not.  Whether the
        RM still honours it is :meth:`UserCredentials.check`'s to say."""
        if token.kind != kind:
            raise InvalidToken(f"a token of kind {token.kind!r} cannot authenticate here (expected {kind!r})")
        if kind == RM_DELEGATION_KIND:
            ident = read_rm_identifier(token.identifier)
        else:
            ident = read_fs_identifier(token.identifier)
        if not self.credentials.key.verify(token.identifier, token.password):
            raise InvalidToken(f"token (owner={ident.owner}, sequenceNumber={ident.sequence}) has a wrong password")
        return ident

    def user_of_url_token(self, text: str) -> str:
        """The user an RM token (the REST header's URL string) authenticates, if it is a user's own:
        ``InvalidToken`` for an application's credential, which may act on its application only."""
        return own_user(self.principal_of_url_token(text, RM_DELEGATION_KIND))

    # -- signed requests (``events/request_proofs.py``) ----------------------------------

    def caller_key(self, request: SignedRequest, node: int, node_web: str | None) -> tuple[str, bytes]:
        """For the node with ring id ``node`` (whose registered web address is ``node_web``; None: not checked
        here), shown one of a user's requests to it: the user (while the RM honours her token; a user's own
        token only) and the token's entry key for that node and the request's hour, after checking the request
        with it; ``InvalidToken`` saying why not."""
        proof = request.proof
        if proof.node != node:
            raise InvalidToken(f"the request is signed for node {proof.node:040x}, not for {node:040x}")
        if node_web is not None and request.host.lower() != node_web.lower():
            raise InvalidToken(f"the request was addressed to {request.host[:80]!r}, not to the node's {node_web}")
        user = own_user(self.credentials.check(read_rm_identifier(proof.identifier)))
        key = entry_key(self.credentials.password(proof.identifier), node, window(proof.time_ms))
        try:
            check(request, key, self.credentials.now_ms())
        except ProofError as e:
            raise InvalidToken(str(e)) from None
        return user, key

    # -- issuing ------------------------------------------------------------------------

    def tokens_for(self, ident: DelegationIdentifier, rm_service: str, fs_service: str) -> list[tuple[str, TokenProto]]:
        """The pair of tokens of one identifier, by alias (their services), for a token file."""
        rm_id, fs_id = rm_identifier_bytes(ident), fs_identifier_bytes(ident)
        key = self.credentials.key
        return [
            (rm_service, TokenProto(identifier=rm_id, password=key.password(rm_id), kind=RM_DELEGATION_KIND, service=rm_service)),
            (
                fs_service,
                TokenProto(identifier=fs_id, password=key.password(fs_id), kind=WEBHDFS_DELEGATION_KIND, service=fs_service),
            ),
        ]


def own_user(principal: Principal) -> str:
    """The user of a user's own credential; ``InvalidToken`` for an application's (or nobody's)."""
    if principal.user is None:
        raise InvalidToken("the token authenticates nobody")
    if principal.application is not None:
        raise InvalidToken(
            f"the token is {principal.application}'s credential, which may act on that application only"
        )
    return principal.user


def require_user(principal: Principal, what: str) -> str:
    """The authenticated user, or YARN's AccessControlException telling an anonymous caller what to do."""
    if principal.user is None:
        raise RemoteError(ACCESS_CONTROL_EXCEPTION, NEEDS_CREDENTIAL.format(what=what))
    return principal.user
