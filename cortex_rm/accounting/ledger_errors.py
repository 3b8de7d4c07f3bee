"""The errors of the ledger (``merkle*``, ``tree_heads``, ``ledger_store``, ``ledger``)."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises."""


class MalformedTreeHead(LedgerError):
    """Bytes that are not a signed tree head (wrong length, version, field), from the wire or a database."""


class LedgerConflict(LedgerError):
    """A write that does not follow the log as stored: appended at a size it no longer has, or a root that disagrees."""


class BadLedgerRequest(LedgerError):
    """A request outside the log: a leaf or size beyond it, an entry that is not well formed."""
