"""The RM's ledger documents as a mirror parses them: pages of big entries, and the page bound.

``ledger_store.MAX_PAYLOAD_BYTES`` is raised to 4 MiB for big membership snapshots
and payout statements, and ``ledger_rest`` bounds an entries page to about 8 MiB of
payload; these tests set the entry bound to 4 MiB (as the RM runs it) and check that
a full page parses and that a larger body is refused before it is parsed.
"""

from __future__ import annotations

import base64
import json

import pytest

from cortex_rm.accounting import ledger_store
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.yarn_api import ledger_documents as documents
from cortex_rm.yarn_api.ledger_documents import MalformedLedgerDocument, parse_entries

MIB = 1024 * 1024


def page(start: int, payloads: list[bytes]) -> bytes:
    """An entries page as ``ledger_rest`` writes it."""
    rows = [{"index": start + i, "kind": "payout.statement", "payload": base64.b64encode(p).decode()} for i, p in enumerate(payloads)]
    return json.dumps({"entries": rows}).encode()


def test_a_page_of_4_mib_entries_up_to_the_rms_page_bound_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two entries of 4 MiB (the RM's page bound of 8 MiB of payload) fit the body bound and parse."""
    monkeypatch.setattr(ledger_store, "MAX_PAYLOAD_BYTES", 4 * MIB)
    payloads = [bytes([1]) * (4 * MIB), bytes([2]) * (4 * MIB)]
    body = page(10, payloads)
    assert len(body) <= documents.MAX_ENTRIES_BODY
    entries = parse_entries(body, 10, 266)  # fewer than asked: the RM cut the page by bytes
    assert entries == [LedgerEntry("payout.statement", p) for p in payloads]


def test_an_entry_over_the_store_s_bound_and_a_body_over_the_page_bound_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry bound is the store's; a body over ``MAX_ENTRIES_BODY`` (12 MiB) is refused unread."""
    monkeypatch.setattr(ledger_store, "MAX_PAYLOAD_BYTES", 4 * MIB)
    with pytest.raises(MalformedLedgerDocument, match="entry 0"):
        parse_entries(page(0, [b"x" * (4 * MIB + 1)]), 0, 1)
    assert documents.MAX_ENTRIES_BODY == 12 * MIB
    with pytest.raises(MalformedLedgerDocument, match="at most"):
        parse_entries(page(0, [b"x" * (3 * MIB)] * 3), 0, 3)  # 12 MiB of base64: more than a page
