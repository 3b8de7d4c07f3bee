"""Errors of the RM REST API, in the form YARN's web services answer them.

Hadoop's ``GenericExceptionHandler`` turns every exception of a web service into
an HTTP status and a body naming the Java exception::

    {"RemoteException": {"exception": "NotFoundException",
                         "message": "app with id: application_1_0001 not found",
                         "javaClassName": "org.apache.hadoop.yarn.webapp.NotFoundException"}}

Clients (``yarn-api-client``, scripts that read ``RemoteException.exception``)
depend on that shape, so every answer that is not a success leaves the REST API
as a :class:`RestError`.  Client mistakes are 4xx; 500 is kept for our own bugs.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.logger import Logger

from cortex_rm.allocator import errors as alloc
from cortex_rm.yarn.errors import IllegalTransition, YarnError
from cortex_rm.yarn_api.http_access import details_allowed
from cortex_rm.yarn_api.log_text import sanitise

WEBAPP: Final = "org.apache.hadoop.yarn.webapp."
NOT_FOUND: Final = ("NotFoundException", WEBAPP + "NotFoundException")
BAD_REQUEST: Final = ("BadRequestException", WEBAPP + "BadRequestException")
# What Jersey raises for the statuses it decides itself (405, 413, 415).
WEB_APPLICATION: Final = ("WebApplicationException", "javax.ws.rs.WebApplicationException")
FORBIDDEN: Final = ("ForbiddenException", "org.apache.hadoop.yarn.webapp.ForbiddenException")
UNAUTHORIZED: Final = ("AuthorizationException", "org.apache.hadoop.security.authorize.AuthorizationException")
INTERNAL: Final = ("YarnRuntimeException", "org.apache.hadoop.yarn.exceptions.YarnRuntimeException")
# Hadoop's "busy now, try again" (its clients retry it): a web port over its cap on work answers it with 503.
RETRIABLE: Final = ("RetriableException", "org.apache.hadoop.ipc.RetriableException")


class RestError(Exception):
    """A non-success answer: HTTP status, Java exception (simple and full name), message."""

    def __init__(
        self,
        status: int,
        exception: tuple[str, str],
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.exception, self.java_class = exception
        self.message = message
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {
            "RemoteException": {
                "exception": self.exception,
                "message": self.message,
                "javaClassName": self.java_class,
            }
        }


def not_found(message: str) -> RestError:
    return RestError(404, NOT_FOUND, message)


def bad_request(message: str) -> RestError:
    return RestError(400, BAD_REQUEST, message)


def forbidden(message: str) -> RestError:
    """An authenticated caller who may not do this (YARN's ForbiddenException, 403)."""
    return RestError(403, FORBIDDEN, message)


def unauthorized(message: str) -> RestError:
    """A caller without a valid credential (YARN's AuthorizationException, 401)."""
    return RestError(401, UNAUTHORIZED, message)


def method_not_allowed(method: str, path: str, allowed: list[str]) -> RestError:
    allow = ", ".join(sorted(allowed))
    return RestError(
        405,
        WEB_APPLICATION,
        f"HTTP method {method} is not supported by {path}; allowed: {allow}",
        headers=((b"Allow", allow.encode("ascii")),),
    )


def body_too_large(limit: int) -> RestError:
    return RestError(413, WEB_APPLICATION, f"the request body is larger than the limit of {limit} bytes")


def retriable(message: str) -> RestError:
    """503 ``RetriableException``: the server cannot do it now; the client may try again shortly."""
    return RestError(503, RETRIABLE, message)


def unsupported_media_type(content_type: str) -> RestError:
    return RestError(
        415,
        WEB_APPLICATION,
        f"unsupported Content-Type {content_type!r}: this ResourceManager reads and writes application/json only",
    )


def internal_error(method: str, path: str, exc: BaseException | None) -> RestError:
    """A bug of ours: the message names the call and the Python exception, nothing more."""
    return RestError(500, INTERNAL, f"Cortex failed to serve {method} {path}: {type(exc).__name__}: {exc}")


def from_allocator(error: YarnError) -> RestError | None:
    """The REST answer to a refusal of the decision core (what RMWebServices does for each).

    ``None`` for ``IllegalTransition``: that one is a bug of ours, answered as a 500.
    """
    if isinstance(error, IllegalTransition):
        return None
    if isinstance(error, (alloc.UnknownApplication, alloc.UnknownAttempt, alloc.UnknownContainer, alloc.UnknownNode)):
        return not_found(str(error))
    if isinstance(error, alloc.AccessDenied):
        return forbidden(str(error))
    # MalformedId, InvalidSubmission, RefusedOperation, UnknownQueue: the request can never succeed as sent.
    return bad_request(str(error))


def log_refused(logger: Logger, method: str, path: str, error: RestError, request: object = None) -> None:
    """One event per request answered with ``error`` (the request's fault, not ours: info level),
    while ``request``'s site is within its burst of access lines (``http_access.details_allowed``);
    the method, path and message quote the client, so they are sanitised (``log_text``)."""
    if request is not None and not details_allowed(request):
        return
    logger.info(
        "{method} {path} -> {status} {exception}: {message}",
        method=sanitise(method, 20),
        path=sanitise(path),
        status=error.status,
        exception=error.exception,
        message=sanitise(error.message, 400),
    )
