"""A node's ledger mirror over HTTP: ``GET /ws/v1/ledger-mirror``, beside ``/ws/v1/ring`` on the same site.

The document (``accounting/ledger_mirror.LedgerMirror.status_json``)::

    {"ledgerMirror": {
        "size": 1234,                       # entries in the mirror's copy (each checked against a signed head)
        "treeHead": {...} | null,           # the largest RM head the copy holds whole
        "latestRmHead": {...} | null,       # the largest consistent head seen (the copy may still be catching up)
        "rounds": 57, "failedRounds": 1, "lastRoundMs": ..., "lastError": null | "text",
        "entriesFetched": 1234, "entriesRechecked": 4321, "peerHeads": 2,
        "sweepCursor": 512, "sweeps": 3,    # the re-reading sweep's next entry; full passes over the copy
        "forksDetected": 0,                 # distinct forks and rewrites found: anything but 0 is an alarm
        "forks": [{"kind": "fork" | "rewritten" | "inconsistent" | "rolled-back", "reason": ..., "detectedAtMs": ...,
                   "conclusive": true, "treeHead": {...}, "index": 7, "mirroredLeafHash": hex,
                   "servedLeafHash": hex, "evidence": {"earlier": {...}, "later": {...},
                   "consistencyProof": [hex...], "reason": ...}}, ...],   # the first 32, with evidence
        "moreForks": 0}}

A head is ``{"size", "rootHash", "timestampMs", "keyId", "encoded"}`` (``encoded``: the
signed head's bytes in hex, so anyone can check its signature).  503 while the
mirror has not opened its copy; 405 for methods other than GET and HEAD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from twisted.web.resource import Resource
from twisted.web.server import Site

from cortex_rm.yarn_api.json_status import JsonStatusResource

MIRROR_PATH: Final = "/ws/v1/ledger-mirror"


def ledger_mirror_resource(status: Callable[[], dict[str, Any] | None]) -> JsonStatusResource:
    """``/ws/v1/ledger-mirror``: ``status()`` as JSON (``None``: the mirror is not open yet)."""
    return JsonStatusResource(status, MIRROR_PATH, "the ledger mirror has not opened its copy yet")


def mount_beside_ring(sites: Iterable[object], status: Callable[[], dict[str, Any] | None]) -> bool:
    """Serve ``status`` at ``/ws/v1/ledger-mirror`` on every site in ``sites`` that serves ``/ws/v1/ring``;
    whether one did (a node with no web site for the ring has only its log to show the mirror)."""
    mounted = False
    for site in sites:
        if not isinstance(site, Site):
            continue
        ws = site.resource.getStaticEntity(b"ws")
        v1 = ws.getStaticEntity(b"v1") if isinstance(ws, Resource) and not ws.isLeaf else None
        if isinstance(v1, Resource) and not v1.isLeaf and v1.getStaticEntity(b"ring") is not None:
            v1.putChild(b"ledger-mirror", ledger_mirror_resource(status))
            mounted = True
    return mounted
