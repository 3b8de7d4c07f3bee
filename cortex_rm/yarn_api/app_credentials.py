"""An application's own credential in place of its user's, in the AM's launch context.

Spark (and any YARN client) ships the submitting user's tokens to the AM in the
launch context's ``tokens``, and the AM hands them on to its executors; on Cortex
those run on contributors' machines, whose owners can read them.  So the RM never
lets the user's own delegation tokens through: each RM or file system delegation
token in a submitted context is replaced by one of the same kind and service that
is bound to the application (``UserCredentials.issue(user, application)``).  It
acts as the user on the file system, on that application alone on the RM, and is
forgotten when the application ends.  Other tokens pass unchanged.
"""

from __future__ import annotations

from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.errors import AccessDenied, InvalidSubmission, UnknownApplication
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.yarn_api import records
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND, InvalidToken
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn_api.delegation_tokens import fs_identifier_bytes, read_token_writable, rm_identifier_bytes
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.writable import MalformedCredentials, read_token_storage, token_storage, token_writable

DELEGATION_KINDS = (RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND)


async def substitute_application_tokens(
    context: yp.ApplicationSubmissionContextProto, user: str, app_id: ApplicationId, credentials: UserCredentials
) -> int:
    """Replace the user's delegation tokens in ``context``'s AM launch context (in place); how many.

    ``MalformedCredentials`` if the tokens blob is not a token storage (the submission is refused)."""
    blob = context.am_container_spec.tokens
    if not blob:
        return 0
    tokens, secrets = read_token_storage(blob)
    kept: dict[str, bytes] = {}
    replaced: list[tuple[str, TokenProto]] = []
    for alias, raw in tokens.items():
        try:
            token = read_token_writable(raw)
        except InvalidToken as e:
            raise MalformedCredentials(f"token {alias!r} of the launch context: {e}") from None
        if token.kind in DELEGATION_KINDS:
            replaced.append((alias, token))
        else:
            kept[alias] = raw
    if not replaced:
        return 0
    ident = await credentials.issue(user, str(app_id))
    for alias, token in replaced:
        identifier = rm_identifier_bytes(ident) if token.kind == RM_DELEGATION_KIND else fs_identifier_bytes(ident)
        own = TokenProto(
            identifier=identifier, password=credentials.password(identifier), kind=token.kind, service=token.service
        )
        kept[alias] = token_writable(own)
    context.am_container_spec.tokens = token_storage(kept, secrets)
    return len(replaced)


async def submit_as(
    rm: RMContext,
    context: yp.ApplicationSubmissionContextProto,
    user: str,
    credentials: UserCredentials,
    client_host: str = "",
) -> Application:
    """Submit ``context`` as ``user`` with the application's own credential in place of hers.

    A resubmission of a known id changes nothing (a client retrying after a lost reply),
    and only its owner may make it; an application token is issued only for a new
    submission and cancelled if the submission fails."""
    app_id = records.app_id_from_proto(context.application_id)
    try:
        existing = rm.apps.get(app_id)
    except UnknownApplication:
        existing = None
    if existing is not None:
        if existing.user != user:
            raise AccessDenied(f"User {user} cannot submit {app_id}: it is another user's application")
        return existing
    try:
        await substitute_application_tokens(context, user, app_id, credentials)
    except MalformedCredentials as e:
        raise InvalidSubmission(f"the AM's launch context carries unreadable tokens: {e}") from None
    try:
        return await rm.apps.submit(records.submission_from_proto(context, user, client_host))
    except Exception:
        await credentials.cancel_application(str(app_id))
        raise
