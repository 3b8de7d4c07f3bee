"""The base of every error Cortex raises in YARN's terms, and the two the vocabulary itself raises.

The cores derive their own errors from ``YarnError`` (``allocator.errors``); the wire
layers map each to the exception class or HTTP status their clients expect.  Nothing
here knows about Java class names.
"""


class YarnError(Exception):
    """Base of every error raised on purpose in YARN's terms (a bad id, an unknown app...)."""


class MalformedId(YarnError, ValueError):
    """A string is not a valid YARN identifier."""


class IllegalTransition(YarnError):
    """A lifecycle event that the current state does not accept: a bug, never ignored."""
