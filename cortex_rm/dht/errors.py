"""The ring's errors: one base, ``RingError``, for everything the ring service reports to its callers.

Cores never raise these: a failed put or lookup is an outcome carrying an error
text (``PutDone.error``...), which the Twisted edge (``ring_service.py``) turns into
a ``RingError`` on the caller's Deferred.
"""

from __future__ import annotations


class RingError(Exception):
    """A ring operation failed; the message is the core's explanation (or the service's)."""


class IntroducerUnreachable(RingError):
    """A configured introducer (``host:port``) could not be reached or did not complete mutual TLS.

    The message names the address and says what to check.
    """
