"""``client_errors.error_from_response``: YARN's ``RemoteException`` answers and failed activations
become the ``CortexError`` subclass their status stands for, with the server's message."""

from __future__ import annotations

import json

import pytest

from cortex_rm.client_errors import (
    AccessDenied, ActivationFailed, BadRequest, CortexError, NotFound, ServerError, TooManyRequests, error_from_response,
)  # fmt: skip


def remote(exception: str, message: str, java: str = "") -> bytes:
    return json.dumps({"RemoteException": {"exception": exception, "message": message, "javaClassName": java}}).encode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (401, AccessDenied), (403, AccessDenied), (404, NotFound), (500, ServerError), (503, ServerError)],
)
def test_a_remote_exception_becomes_the_error_of_its_status(status: int, kind: type[CortexError]) -> None:
    """The class follows the status; the message is the server's, with the call, exception and status."""
    body = remote("NotFoundException", "function hello not found", "org.apache.hadoop.yarn.webapp.NotFoundException")
    error = error_from_response(status, {}, body, "trigger hello")
    assert type(error) is kind
    assert str(error) == f"trigger hello: function hello not found (NotFoundException, HTTP {status})"
    assert (error.status, error.exception, error.java_class) == (
        status, "NotFoundException", "org.apache.hadoop.yarn.webapp.NotFoundException"
    )  # fmt: skip


def test_too_many_requests_carries_retry_after() -> None:
    """429's ``Retry-After`` in seconds is kept; a date or nonsense is None."""
    body = remote("RetriableException", "every replica of hello is busy")
    error = error_from_response(429, {"retry-after": "2"}, body, "trigger hello")
    assert isinstance(error, TooManyRequests) and error.retry_after == 2.0 and "every replica" in str(error)
    for header in ("Wed, 21 Oct 2015 07:28:00 GMT", "-1", "", "inf"):
        error = error_from_response(429, {"retry-after": header}, body, "x")
        assert isinstance(error, TooManyRequests) and error.retry_after is None


@pytest.mark.parametrize("status", [502, 504])
def test_a_failed_activation_carries_the_activation(status: int) -> None:
    """502 and 504 answer the activation: the error holds it, its status and its error message."""
    activation = {"activationId": "abc-1", "function": "hello", "status": "application_error",
                  "error": "ZeroDivisionError: division by zero (line 3 of hello.py)", "result": None}  # fmt: skip
    error = error_from_response(status, {}, json.dumps({"activation": activation}).encode(), "trigger hello")
    assert isinstance(error, ActivationFailed)
    assert (error.activation, error.activation_status, error.activation_id, error.status) == (
        activation, "application_error", "abc-1", status
    )  # fmt: skip
    assert str(error) == "hello (abc-1) ended application_error: ZeroDivisionError: division by zero (line 3 of hello.py)"


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>proxy error</html>", b"\xff\xfe", b"[1]", b'{"RemoteException": 5}', b'{"RemoteException": {}}',
     b'{"activation": "x"}', b"x" * 10_000],
)  # fmt: skip
def test_an_answer_that_is_no_remote_exception_still_gives_a_bounded_message(body: bytes) -> None:
    """Bodies that are not YARN's form give a ServerError quoting at most 300 bytes of them."""
    error = error_from_response(500, {}, body, "list functions")
    assert type(error) is ServerError and error.status == 500
    assert str(error).startswith("list functions: ") and str(error).endswith("(HTTP 500)") and len(str(error)) < 400
