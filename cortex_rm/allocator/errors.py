"""Errors of the RM's decision layer.

Each names what went wrong in YARN's terms; the wire layers (IPC, REST) map them
to the exception class or HTTP status their clients expect.  Nothing here knows
about Java class names.
"""

from cortex_rm.yarn.errors import YarnError


class AllocatorError(YarnError):
    """Base of every error the allocator raises on purpose."""


class UnknownApplication(AllocatorError):
    """No application with that id is known to this RM."""


class UnknownAttempt(AllocatorError):
    """No application attempt with that id is known."""


class UnknownContainer(AllocatorError):
    """No container with that id is known."""


class UnknownNode(AllocatorError):
    """No node with that id has registered."""


class UnknownQueue(AllocatorError):
    """No queue of that name exists."""


class InvalidSubmission(AllocatorError):
    """A submission or request that can never be accepted (bad queue, too big, reused id)."""


class RefusedOperation(AllocatorError):
    """An operation that is valid in general but refused in the application's current state."""


class AccessDenied(AllocatorError):
    """The caller may not do this (no credential, or not her application): AccessControlException / 403."""
