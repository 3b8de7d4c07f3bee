"""The errors of ``cortex_rm.client``: one base, ``CortexError``, and one subclass per kind of refusal.

The events REST API answers a refusal in YARN's form (``yarn_api/rest_errors.py``)::

    {"RemoteException": {"exception": "NotFoundException", "message": "...", "javaClassName": "..."}}

``error_from_response`` turns such an answer into the subclass its HTTP status
stands for, carrying the server's message, the exception's names and the status.
A failed activation (502, 504) answers ``{"activation": A}`` instead: that becomes
``ActivationFailed`` with the activation, its status and its error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_MESSAGE_CHARS = 2000


class CortexError(Exception):
    """A call failed.  ``status``: the HTTP status (0: no answer); ``exception``, ``java_class``:
    the server's ``RemoteException`` names when it sent one."""

    def __init__(self, message: str, status: int = 0, exception: str = "", java_class: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exception = exception
        self.java_class = java_class


class CortexConnectionError(CortexError):
    """No endpoint answered; the message lists the ones tried and what to do."""


class BadRequest(CortexError):
    """400: a field of the call is wrong (the message names it), or the code file is missing."""


class AccessDenied(CortexError):
    """401 or 403: no valid credential, or the function is another user's and grants the caller nothing."""


class NotFound(CortexError):
    """404: no such function or activation (an activation is kept for a while, then forgotten)."""


class TooManyRequests(CortexError):
    """429: every replica of the function is busy; ``retry_after``: the seconds the server suggests (or None)."""

    def __init__(
        self, message: str, retry_after: float | None, status: int = 429, exception: str = "", java_class: str = ""
    ) -> None:
        super().__init__(message, status, exception, java_class)
        self.retry_after = retry_after


class ServerError(CortexError):
    """Any other refusal (5xx, or an answer that is not what the API promises)."""


class ActivationFailed(CortexError):
    """The function ran (or was meant to) and did not succeed: ``activation`` is its JSON,
    ``activation_status`` its status (``application_error``, ``timeout``...), ``error`` its error."""

    def __init__(self, message: str, activation: Mapping[str, Any], status: int = 0) -> None:
        super().__init__(message, status)
        self.activation = dict(activation)
        self.activation_status = str(activation.get("status", ""))
        self.error = str(activation.get("error", ""))

    @property
    def activation_id(self) -> str:
        return str(self.activation.get("activationId", ""))


class ActivationPending(CortexError):
    """``Activation.result(timeout)`` ran out of time while the activation was still running."""

    def __init__(self, message: str, activation_id: str) -> None:
        super().__init__(message)
        self.activation_id = activation_id


class SignatureError(CortexError):
    """``verify``: an activation's signatures or its agreement do not hold (the message says which)."""


def activation_failed(activation: Mapping[str, Any], http_status: int = 0) -> ActivationFailed:
    """The error of an activation that ended without success."""
    name = activation.get("function", "?")
    status = activation.get("status", "?")
    error = str(activation.get("error", "")).strip() or "(no error message)"
    ident = activation.get("activationId", "?")
    return ActivationFailed(f"{name} ({ident}) ended {status}: {error}"[:MAX_MESSAGE_CHARS], activation, http_status)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (its HTTP-date form is not used by Cortex: None)."""
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, what: str) -> CortexError:
    """The error an answer with ``status`` >= 300 stands for (``headers``' names in lower case);
    ``what``: the call, to begin the message (e.g. ``trigger hello``)."""
    try:
        document = json.loads(body) if body else None
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("activation"), dict):
        return activation_failed(document["activation"], status)
    remote = document.get("RemoteException") if isinstance(document, dict) else None
    exception = java_class = ""
    if isinstance(remote, dict):
        exception = str(remote.get("exception") or "")[:200]
        java_class = str(remote.get("javaClassName") or "")[:300]
        detail = str(remote.get("message") or exception or "(no message)")
    else:
        detail = body[:300].decode("utf-8", "replace").strip() or "(empty answer)"
    named = f" ({exception}, HTTP {status})" if exception else f" (HTTP {status})"
    message = f"{what}: {detail}"[:MAX_MESSAGE_CHARS] + named
    kind: type[CortexError]
    if status == 429:
        return TooManyRequests(message, retry_after(headers), status, exception, java_class)
    if status == 400:
        kind = BadRequest
    elif status in (401, 403):
        kind = AccessDenied
    elif status == 404:
        kind = NotFound
    else:
        kind = ServerError
    return kind(message, status, exception, java_class)
