"""A witness's reports: what this node saw of its ring neighbours, signed and handed to the RM's ledger.

Every ``interval_s`` (the ring's attestation interval), at a random phase so the
ring's members do not all report at once, ``UptimeReports`` takes the attestations
due from the ring member (``RingService.take_attestations``), signs them with the
node key in batches (``accounting/attestations.py``) and sends them over the
tracker connection (``submitAttestations``).  Nothing here is on the probe path.

* **Unsent batches wait** (the RM unreachable, or this node not registered yet),
  at most ``MAX_PENDING``; beyond that the oldest are dropped, counted and logged:
  the subject's other witnesses saw the same time.  At a clean stop the witness is
  flushed, sent once more, and what is still unsent is written to
  ``<state_dir>/attestations/pending.bin``, read back and sent after the restart.
* **Receipts are kept.**  The RM answers each batch with its index in the ledger
  and an inclusion proof in a signed tree head.  The proof is checked against the
  head's root, and the head's signature against the key the RM showed on the
  tracker connection (the key this node pinned); then the batch, the proof and the head
  go to ``<state_dir>/attestations/receipts.jsonl``: the witness's own evidence
  that its attestations are in the log, which any mirror's tree head can be
  checked against.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from cortex_rm.accounting.attestations import (
    Attestation,
    MalformedAttestations,
    SignedAttestations,
    decode_attestations,
    sign_attestations,
)
from cortex_rm.accounting.ledger_office import MAX_BATCHES_PER_CALL, Receipts
from cortex_rm.accounting.ledger_reading import attestation_entry
from cortex_rm.accounting.merkle import verify_inclusion
from cortex_rm.accounting.tree_heads import KeyLookup, encode_tree_head, keys_by_id, signature_error
from cortex_rm.accounting.uptime_witness import batches
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.internal.tls import PeerCertificateMissing
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused

log = Logger()

MAX_PENDING = 256  # batches waiting for the RM (a few days of one witness's reports)
REPORTS_DIR = "attestations"
PENDING_FILE = "pending.bin"
RECEIPTS_FILE = "receipts.jsonl"
_LENGTH = struct.Struct(">I")


class UptimeReports:
    """Signs and sends this witness's attestations, keeps the receipts (module doc)."""

    def __init__(
        self,
        take: Callable[[bool], list[Attestation]],
        key: ec.EllipticCurvePrivateKey,
        node_id: NodeId,
        client: Callable[[], TrackerClient | None],
        reactor: IReactorTime,
        state_dir: Path,
        run_blocking: Runner,
        *,
        interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.take, self.key, self.node_id, self.client = take, key, node_id, client
        self.reactor = reactor
        self.dir = Path(state_dir) / REPORTS_DIR
        self._run = run_blocking
        self.interval_s = interval_s
        self._rng = rng or random.Random()
        self.pending: list[SignedAttestations] = []
        self._sending = False
        self._loop: task.LoopingCall | None = None
        self._first: IDelayedCall | None = None
        self.sent = 0  # batches the ledger took
        self.dropped = 0  # batches dropped unsent (over MAX_PENDING)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Read what a previous run left unsent; the first report comes at a random phase of the interval."""
        self.pending = await self._run(self._read_pending)
        if self.pending:
            log.info("{count} attestation batches from before the restart wait for the RM", count=len(self.pending))
        self._first = self.reactor.callLater(self._rng.random() * self.interval_s, self._begin)

    def _begin(self) -> None:
        self._first = None
        self._loop = task.LoopingCall(self.report)
        self._loop.clock = self.reactor
        self._loop.start(self.interval_s, now=True)

    async def stop(self) -> None:
        """Flush the witness, send once more, keep on disk what is still unsent."""
        if self._first is not None and self._first.active():
            self._first.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._collect(flush=True)
        await self.send()
        pending = list(self.pending)
        await self._run(lambda: self._write_pending(pending))

    # ------------------------------------------------------------ reporting

    def report(self) -> defer.Deferred[None]:
        """Take what is due, sign it, send everything waiting (a failure is logged: the next report tries again)."""
        self._collect(flush=False)
        d = defer.ensureDeferred(self.send())
        return d.addErrback(lambda f: log.failure("sending this witness's attestations failed", f))

    def _collect(self, flush: bool) -> None:
        try:
            due = self.take(flush)
        except Exception:
            log.failure("could not take the ring member's attestations")
            return
        for batch in batches(due):
            self.pending.append(sign_attestations(self.key, batch))
        excess = len(self.pending) - MAX_PENDING
        if excess > 0:
            del self.pending[:excess]
            self.dropped += excess
            log.warn("{count} attestation batches dropped unsent: the RM has not taken any for a long time", count=excess)

    async def send(self) -> None:
        """Send the waiting batches, 16 at a time, while the RM takes them."""
        if self._sending:
            return
        self._sending = True
        try:
            while self.pending:
                client = self.client()
                if client is None:
                    return  # not registered with an RM now: next time
                chunk = self.pending[:MAX_BATCHES_PER_CALL]
                try:
                    receipts = await client.submit_attestations(self.node_id, chunk)
                except NodeRefused as e:
                    log.warn("the RM refused {count} attestation batches: {error}; retrying at the next report", count=len(chunk), error=e)
                    return
                except TrackerUnavailable as e:
                    log.info("attestation batches wait: {error}", error=e)
                    return
                del self.pending[: len(chunk)]
                self.sent += len(chunk)
                lines = self._receipt_lines(chunk, receipts, _rm_keys(client))
                await self._run(lambda: self._append_receipts(lines))
        finally:
            self._sending = False

    def _receipt_lines(self, chunk: Sequence[SignedAttestations], receipts: Receipts, rm_keys: KeyLookup) -> list[str]:
        """The receipts as JSON lines, each checked (a bad one is logged, and kept marked unproven)."""
        head = receipts.tree_head
        signed_by_rm = signature_error(head, rm_keys) is None
        lines = []
        for batch, receipt in zip(chunk, receipts.receipts):
            leaf = attestation_entry(batch).leaf_hash()
            proven = signed_by_rm and verify_inclusion(receipt.index, head.size, leaf, receipt.audit_path, head.root_hash)
            if not proven:
                log.warn("the RM's receipt for an attestation batch does not prove it is in the ledger (index {index})", index=receipt.index)
            lines.append(json.dumps({
                "index": receipt.index,
                "proven": proven,
                "auditPath": [h.hex() for h in receipt.audit_path],
                "treeHead": encode_tree_head(head).hex(),
                "batch": batch.encode().hex(),
            }))  # fmt: skip
        if len(receipts.receipts) != len(chunk):
            log.warn("the RM answered {got} receipts for {sent} batches", got=len(receipts.receipts), sent=len(chunk))
        return lines

    # ------------------------------------------------------------ files (on the blocking runner)


    def _append_receipts(self, lines: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / RECEIPTS_FILE).open("a") as out:
            out.writelines(line + "\n" for line in lines)

    def _write_pending(self, pending: list[SignedAttestations]) -> None:
        path = self.dir / PENDING_FILE
        if not pending:
            path.unlink(missing_ok=True)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        data = b"".join(_LENGTH.pack(len(e)) + e for e in (batch.encode() for batch in pending))
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)

    def _read_pending(self) -> list[SignedAttestations]:
        path = self.dir / PENDING_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        found: list[SignedAttestations] = []
        at = 0
        while at + _LENGTH.size <= len(data) and len(found) < MAX_PENDING:
            (length,) = _LENGTH.unpack_from(data, at)
            at += _LENGTH.size
            try:
                found.append(decode_attestations(data[at : at + length]))
            except MalformedAttestations:
                log.warn("{path} is damaged after {count} batches; the rest is dropped", path=str(path), count=len(found))
                break
            at += length
        path.unlink(missing_ok=True)
        return found


def _rm_keys(client: TrackerClient) -> KeyLookup:
    """The key the RM showed on ``client``'s connection, as a tree head's signer (nothing when it is gone)."""
    try:
        key = client.peer_key()
    except PeerCertificateMissing:
        return lambda key_id: None
    return keys_by_id([key]) if isinstance(key, ec.EllipticCurvePublicKey) else (lambda key_id: None)
