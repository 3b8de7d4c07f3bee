"""The uptime ledger over the RM's REST API: ``/ws/v1/cortex/...`` (read by ``cortex-rm payouts`` and mirrors).

Everyone who may read the cluster's info may read these (the ledger is public by
design: anyone can check it).  Errors take the REST layer's ``RemoteException`` form.

``GET /ws/v1/cortex/payouts[?start=MS&end=MS]``: a period's payouts (the current
period without a range)::

    {"payouts": {"start": 1764547200000, "end": 1767225600000,
                 "closed": false,           # true: from the period's signed statement
                 "logSize": 1234,           # the ledger prefix the figures come from
                 "totalUptimeS": 123.4,
                 "node": [{"node": "host:port" | "", "ringId": "<40 hex>",
                           "uptimeS": 86400.0, "share": 0.25, "shareExact": "1/4"}, ...]}}

``GET /ws/v1/cortex/ledger``: the latest signed tree head (hex of its encoding, and
its size, root and timestamp); ``GET /ws/v1/cortex/ledger/entries?start=I&end=J``:
at most ``MAX_ENTRIES`` entries and ``MAX_PAGE_BYTES`` of payloads (kind and base64 payload;
a short page is not the end: ask on from the last index);
``GET /ws/v1/cortex/ledger/consistency?first=M&second=N`` and
``GET /ws/v1/cortex/ledger/proof?index=I&size=N``: RFC 6962 proofs (hex hashes).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet import defer

from cortex_rm.accounting.ledger_errors import BadLedgerRequest
from cortex_rm.accounting.ledger_office import PayoutReport, check_period
from cortex_rm.accounting.ledger_store import StoredEntry
from cortex_rm.accounting.periods import Period
from cortex_rm.accounting.tree_heads import SignedTreeHead, encode_tree_head
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.rest_call import Reply, RestCall

MAX_ENTRIES = 1000
MAX_PAGE_BYTES = 8 * 1024 * 1024  # payload bytes of one page of entries (fewer entries than asked past it)
PAGE_READ = 100  # entries read from the ledger at a time while filling a page
MAX_INDEX = (1 << 63) - 1


class LedgerQueries(Protocol):
    """What the REST API asks of the RM's ledger (``roles/ledger_keeper.LedgerKeeper``)."""

    def payouts(self, period: Period | None) -> defer.Deferred[PayoutReport]: ...
    def tree_head(self) -> defer.Deferred[SignedTreeHead]: ...
    def entries(self, start: int, end: int) -> defer.Deferred[list[StoredEntry]]: ...
    def consistency_proof(self, first: int, second: int) -> defer.Deferred[list[bytes]]: ...
    def inclusion_proof(self, index: int, size: int) -> defer.Deferred[list[bytes]]: ...


def report_json(report: PayoutReport, names: Mapping[int, str]) -> dict[str, Any]:
    """The ``payouts`` document of ``report`` (module doc); ``names``: NodeIds by ring id."""
    total = sum(row.uptime_ms for row in report.rows)
    return {
        "payouts": {
            "start": report.period.start_ms,
            "end": report.period.end_ms,
            "closed": report.closed,
            "logSize": report.log_size,
            "totalUptimeS": total / 1000,
            "node": [
                {
                    "node": names.get(row.ring_id, ""),
                    "ringId": f"{row.ring_id:040x}",
                    "uptimeS": row.uptime_ms / 1000,
                    "share": float(row.share),
                    "shareExact": f"{row.share.numerator}/{row.share.denominator}",
                }
                for row in report.rows
            ],
        }
    }


def tree_head_json(sth: SignedTreeHead) -> dict[str, Any]:
    return {
        "treeHead": {
            "size": sth.size,
            "rootHash": sth.root_hash.hex(),
            "timestampMs": sth.timestamp_ms,
            "keyId": sth.key_id.hex(),
            "encoded": encode_tree_head(sth).hex(),
        }
    }


def ledger_number(name: str, text: str) -> int:
    """The value of the query parameter ``name`` (a time in ms, an index or a size), here and on the
    status pages' earnings: a non-negative integer below 2**63; ``BadLedgerRequest`` otherwise."""
    if not text.isdecimal() or len(text) > 19 or int(text) > MAX_INDEX:
        raise BadLedgerRequest(f"{name}={text[:40]!r} is not a non-negative integer below 2**63")
    return int(text)


def _number(call: RestCall, name: str, required: bool = True) -> int | None:
    values = call.query.get(name)
    if not values:
        if required:
            raise rest_errors.bad_request(f"the query parameter {name} is required")
        return None
    return ledger_number(name, values[-1])  # (a BadLedgerRequest is answered 400: ``answer``)


class LedgerWebServices:
    """Answers ``/ws/v1/cortex/<...>`` (module doc) from ``ledger``; ``names`` gives NodeIds by ring id."""

    def __init__(self, ledger: LedgerQueries, names: Callable[[], Mapping[int, object]]) -> None:
        self.ledger = ledger
        self.names = names

    async def answer(self, call: RestCall, segments: tuple[str, ...]) -> Reply:
        if call.method not in ("GET", "HEAD"):
            raise rest_errors.method_not_allowed(call.method, call.path, ["GET"])
        try:
            return Reply(body=await self._route(call, segments))
        except BadLedgerRequest as e:
            raise rest_errors.bad_request(str(e)) from None
        except NodeRefused as e:  # the ledger is not open yet
            raise rest_errors.retriable(str(e)) from None

    async def _route(self, call: RestCall, segments: tuple[str, ...]) -> dict[str, Any]:
        if segments == ("payouts",):
            period = check_period(_number(call, "start", False), _number(call, "end", False))
            report = await self.ledger.payouts(period)
            return report_json(report, {ring_id: str(node) for ring_id, node in self.names().items()})
        if segments == ("ledger",):
            return tree_head_json(await self.ledger.tree_head())
        if segments == ("ledger", "entries"):
            start, end = _number(call, "start"), _number(call, "end")
            assert start is not None and end is not None
            return {"entries": await self._page(start, min(end, start + MAX_ENTRIES))}
        if segments == ("ledger", "consistency"):
            first, second = _number(call, "first"), _number(call, "second")
            assert first is not None and second is not None
            proof = await self.ledger.consistency_proof(first, second)
            return {"consistency": {"first": first, "second": second, "proof": [h.hex() for h in proof]}}
        if segments == ("ledger", "proof"):
            index, tree = _number(call, "index"), _number(call, "size")
            assert index is not None and tree is not None
            path = await self.ledger.inclusion_proof(index, tree)
            return {"inclusion": {"index": index, "size": tree, "auditPath": [h.hex() for h in path]}}
        raise rest_errors.not_found(f"no resource at {call.path}; see /ws/v1/cortex/payouts and /ws/v1/cortex/ledger")

    async def _page(self, start: int, end: int) -> list[dict[str, Any]]:
        """Entries from ``start``, read a few at a time, until ``end`` or ``MAX_PAGE_BYTES`` of payloads
        (at least one entry): a caller asks on from the last index it got."""
        page: list[dict[str, Any]] = []
        size = 0
        while start < end:
            rows = await self.ledger.entries(start, min(end, start + PAGE_READ))
            if not rows:
                break
            for row in rows:
                size += len(row.payload)
                if page and size > MAX_PAGE_BYTES:
                    return page
                page.append({"index": row.index, "kind": row.kind, "payload": base64.b64encode(row.payload).decode()})
            start = rows[-1].index + 1
        return page
