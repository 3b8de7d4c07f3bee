"""What an events' REST request shows of its caller, and the 401 that tells her how to show it.

A request shows either a signed proof in ``Authorization`` (``events/request_proofs.py``;
any node takes it) or the plain token in ``Hadoop-YARN-RM-Delegation-Token`` (only the RM
takes it).  A 401 from a node names the node's ring id twice — in the ``WWW-Authenticate``
challenge and in ``Cortex-Ring-Id`` — so a client that did not know it can sign and retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.web.server import Request

from cortex_rm.events.request_proofs import RING_ID_HEADER, SCHEME, ProofError, SignedRequest, parse
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn_api.rest_errors import UNAUTHORIZED, RestError

Presented = str | SignedRequest
Authenticate = Callable[[Presented], Awaitable[str]]
"""The user a request's credential stands for; raises (InvalidToken, RestError) with why nobody."""


def body_of(request: Request) -> bytes:
    """The request's whole body (it is buffered, and bounded, before a resource renders)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    content.seek(0)
    return data


def challenge(ring_id_hex: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a 401 from the node ``ring_id_hex`` (none when it is not on the ring)."""
    if ring_id_hex is None:
        return ()
    return (
        (b"WWW-Authenticate", f'{SCHEME} node="{ring_id_hex}"'.encode("ascii")),
        (RING_ID_HEADER.encode("ascii"), ring_id_hex.encode("ascii")),
    )


def unauthorized(message: str, ring_id_hex: str | None) -> RestError:
    """401 ``AuthorizationException`` with the node's challenge."""
    return RestError(401, UNAUTHORIZED, message, challenge(ring_id_hex))


def presented(request: Request, ring_id_hex: str | None) -> Presented | None:
    """The credential ``request`` shows (None: none); a malformed proof is a 401 saying what is wrong."""
    proof = request.getHeader(b"authorization")
    if proof is not None and proof.strip():
        try:
            parsed = parse(proof.decode("ascii", errors="replace"))
        except ProofError as e:
            raise unauthorized(str(e), ring_id_hex) from None
        method = (request.method or b"GET").decode("ascii", errors="replace")
        host = (request.getHeader(b"host") or b"").decode("ascii", errors="replace")
        target = (request.uri or b"/").decode("utf-8", errors="replace")
        origin = str(getattr(request.getClientAddress(), "host", ""))
        return SignedRequest.of(method, host, target, body_of(request), parsed, origin)
    token = request.getHeader(REST_TOKEN_HEADER.encode("ascii"))
    if token is not None and token.strip():
        return token.decode("ascii", errors="replace")
    return None


async def user_of(authenticate: Authenticate, shown: Presented, ring_id_hex: str | None) -> str:
    """``authenticate(shown)``, a refusal as a 401 with the challenge (a RestError passes as it is)."""
    try:
        return await authenticate(shown)
    except RestError:
        raise
    except Exception as e:  # noqa: BLE001 - the RM's refusal (or its absence): the caller is told why
        where = "Authorization" if isinstance(shown, SignedRequest) else REST_TOKEN_HEADER
        message = str(e) if str(e).startswith("Authorization") else f"{where}: {e}"
        raise unauthorized(message, ring_id_hex) from None
