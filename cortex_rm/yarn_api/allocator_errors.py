"""The allocator's refusals as the Java exceptions Hadoop's IPC clients rethrow.

A handler of the RM's protocols acts through the allocator, which refuses in YARN's
terms (``UnknownApplication``, ``InvalidSubmission``...).  ``remote_error`` names
the Java exception a Hadoop client expects for each (``ApplicationNotFoundException``
for an unknown id, and so on); ``translating_allocator_errors`` wraps a handler so
that its refusals, raised or in its Deferred, leave as those ERROR replies.  The REST
API answers the same refusals with HTTP statuses instead (``rest_errors.from_allocator``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from cortex_rm.allocator import errors as alloc
from cortex_rm.allocator.asks import InvalidResourceRequest
from cortex_rm.allocator.containers import InvalidContainerRelease
from cortex_rm.allocator.node_labels import InvalidLabelResourceRequest
from cortex_rm.yarn.errors import IllegalTransition, MalformedId, YarnError
from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import RemoteError

_JAVA_CLASS: dict[type[YarnError], str] = {
    alloc.UnknownApplication: errors.APPLICATION_NOT_FOUND,
    alloc.AccessDenied: errors.ACCESS_CONTROL_EXCEPTION,
    alloc.UnknownAttempt: errors.APPLICATION_ATTEMPT_NOT_FOUND,
    alloc.UnknownContainer: errors.CONTAINER_NOT_FOUND,
    InvalidResourceRequest: errors.INVALID_RESOURCE_REQUEST,
    InvalidLabelResourceRequest: errors.INVALID_LABEL_RESOURCE_REQUEST,
    InvalidContainerRelease: "org.apache.hadoop.yarn.exceptions.InvalidContainerReleaseException",
    alloc.InvalidSubmission: errors.YARN_EXCEPTION,
    alloc.RefusedOperation: errors.YARN_EXCEPTION,
    alloc.UnknownQueue: errors.YARN_EXCEPTION,
    alloc.UnknownNode: errors.YARN_EXCEPTION,
    MalformedId: errors.YARN_EXCEPTION,
}

_Caller = TypeVar("_Caller")
_Request = TypeVar("_Request")
_Result = TypeVar("_Result")


def remote_error(error: YarnError) -> RemoteError:
    """The ERROR reply a Hadoop client turns back into the right Java exception.

    ``IllegalTransition`` is a bug, not a client's mistake: it is re-raised so the
    IPC layer logs it as an internal error.
    """
    if isinstance(error, IllegalTransition):
        raise error
    for cls in type(error).__mro__:
        java = _JAVA_CLASS.get(cls)
        if java is not None:
            return RemoteError(java, str(error))
    return RemoteError(errors.YARN_EXCEPTION, str(error))


def translating_allocator_errors(handler: Callable[[_Caller, _Request], _Result]) -> Callable[[_Caller, _Request], _Result]:
    """Run a handler, turning errors in YARN's terms (raised or in a Deferred) into RemoteErrors.

    Synchronous answers stay synchronous: the IPC layer replies to them without a Deferred.
    """

    def translate(failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, YarnError):
            raise remote_error(error)
        return failure

    def run(call: _Caller, request: _Request) -> _Result:
        try:
            result = handler(call, request)
        except YarnError as error:
            raise remote_error(error) from error
        if isinstance(result, defer.Deferred):
            result.addErrback(translate)
        return result

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
