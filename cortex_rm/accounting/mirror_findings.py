"""What a ledger mirror found wrong with the log it copies: forks and rewrites, with their evidence, bounded.

A *finding* is one way the RM's ledger was caught showing two histories:

* ``fork``: two signed tree heads that no consistency proof reconciles (from the RM
  itself, or a head another mirror gossiped); ``evidence`` holds both heads and the
  proof (``tree_heads.ForkEvidence``).  Two heads of one size with different roots
  are *conclusive*: they convict the signer with nothing else.
* ``rewritten``: an entry the mirror already holds (under a signed head) that the RM
  now serves with other bytes: a row edited in the RM's database.  The RM's stored
  subtree hashes still agree with its old heads, so only re-reading the entries
  shows it; ``index`` names the entry and the two leaf hashes are kept.
* ``inconsistent``: entries the RM serves that do not hash to the head it signed
  for them (a row edited before the mirror copied it).
* ``rolled-back``: a validly signed head of a tree smaller than one the RM signed
  before (the log lost entries).  ``evidence`` holds the larger head as ``earlier``
  and the smaller as ``later`` (the order they were signed in; no proof).  It is
  *conclusive* when one key signed both and the smaller head's timestamp is the
  later one: the signer went back on its own word.  An older head served again (a
  replay) is reported, not conclusive.

``MirrorFindings`` keeps the first ``MAX_FINDINGS`` distinct findings (the same one
seen again each round is counted, not kept twice) and counts the rest, so a log
that keeps lying cannot fill the mirror's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cortex_rm.accounting.tree_heads import ForkEvidence, SignedTreeHead, encode_tree_head

MAX_FINDINGS = 32

FORK = "fork"
REWRITTEN = "rewritten"
INCONSISTENT = "inconsistent"
ROLLED_BACK = "rolled-back"


@dataclass(frozen=True)
class Finding:
    """One detected fork or rewrite (see the module doc)."""

    kind: str  # FORK, REWRITTEN, INCONSISTENT or ROLLED_BACK
    reason: str
    detected_at_ms: int
    head: SignedTreeHead | None = None  # the signed head the mirror holds the log under
    evidence: ForkEvidence | None = None  # FORK: the two heads and the proof; ROLLED_BACK: the two heads
    index: int | None = None  # REWRITTEN: the entry
    mirrored_leaf: bytes = b""  # REWRITTEN: its leaf hash in the mirror's copy
    served_leaf: bytes = b""  # REWRITTEN: the leaf hash of what the RM serves now

    def identity(self) -> tuple[object, ...]:
        """What makes two findings the same one (seen again in a later round)."""
        if self.evidence is not None:
            e = self.evidence
            return (self.kind, e.earlier.size, e.earlier.root_hash, e.later.size, e.later.root_hash)
        return (self.kind, self.index, self.served_leaf, self.reason)

    def conclusive(self) -> bool:
        """Whether the finding convicts the RM by signed data alone (a mirror's copy counts as signed:
        every entry of it was checked against a head the RM signed)."""
        if self.kind in (FORK, ROLLED_BACK):
            return self.evidence is not None and self.evidence.conclusive
        return self.head is not None

    def describe(self) -> str:
        """One line for the log."""
        where = f" entry {self.index}" if self.index is not None else ""
        heads = (
            f" ({self.evidence.earlier.describe()} vs {self.evidence.later.describe()})" if self.evidence is not None else ""
        )
        return f"{self.kind}{where}: {self.reason}{heads}"

    def to_json(self) -> dict[str, Any]:
        """The finding in the mirror's REST document (hex hashes, heads by their fields and encoding)."""
        document: dict[str, Any] = {
            "kind": self.kind,
            "reason": self.reason,
            "detectedAtMs": self.detected_at_ms,
            "conclusive": self.conclusive(),
            "treeHead": head_json(self.head),
        }
        if self.index is not None:
            document.update(index=self.index, mirroredLeafHash=self.mirrored_leaf.hex(), servedLeafHash=self.served_leaf.hex())
        if self.evidence is not None:
            document["evidence"] = {
                "earlier": head_json(self.evidence.earlier),
                "later": head_json(self.evidence.later),
                "consistencyProof": [h.hex() for h in self.evidence.proof],
                "reason": self.evidence.reason,
            }
        return document


def head_json(sth: SignedTreeHead | None) -> dict[str, Any] | None:
    """A signed head as JSON (``encoded``: the hex of ``encode_tree_head``, which anyone can re-check)."""
    if sth is None:
        return None
    return {
        "size": sth.size,
        "rootHash": sth.root_hash.hex(),
        "timestampMs": sth.timestamp_ms,
        "keyId": sth.key_id.hex(),
        "encoded": encode_tree_head(sth).hex(),
    }


class MirrorFindings:
    """Distinct findings, the first ``limit`` kept (module doc)."""

    def __init__(self, limit: int = MAX_FINDINGS) -> None:
        self.limit = limit
        self.kept: list[Finding] = []
        self.count = 0  # distinct findings, kept or not
        self.repeats = 0  # findings seen again in later rounds
        self._seen: set[tuple[object, ...]] = set()

    def add(self, finding: Finding) -> bool:
        """Record ``finding``; whether it is new (then the caller reports it loudly)."""
        key = finding.identity()
        if key in self._seen:
            self.repeats += 1
            return False
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(finding)
            self._seen.add(key)
        elif len(self._seen) < 64 * self.limit:  # remember more than we keep, so repeats stay repeats
            self._seen.add(key)
        return True

    @property
    def more(self) -> int:
        """Distinct findings counted but not kept."""
        return self.count - len(self.kept)
