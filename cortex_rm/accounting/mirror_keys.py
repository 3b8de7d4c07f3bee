"""The resource managers' keys a ledger mirror trusts to sign tree heads, learnt from the entries it appends.

The policy (``ledger_mirror``, module doc, step 4, as ``ledger_reading.signer_keys``):
the signer keys of the log's membership entries whose signer is in ``[ring]
resource_managers``, or, with that list empty, the key of the log's first
membership entry (trust on first use).

A round's entries are *pending* until the mirror appends them: their keys may
check the head those entries hash into (``key``), but only ``commit`` (after the
append) makes them trusted, and ``discard`` forgets them, so entries the mirror
then refuses never set a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import key_identity
from cortex_rm.accounting.ledger_reading import MEMBERSHIP
from cortex_rm.accounting.ledger_store import LedgerEntry
from cortex_rm.accounting.membership_log import MalformedMembership, decode_membership, membership_error
from cortex_rm.accounting.tree_heads import key_id_of


class MirrorKeys:
    """Trusted and pending signer keys, by key id (module doc)."""

    def __init__(self, resource_managers: frozenset[int]) -> None:
        self.resource_managers = resource_managers
        self.trusted: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self.pending: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self.first_signer: bytes | None = None  # with no resource_managers listed: the key trusted on first use
        self._pending_first: bytes | None = None

    def load(self, keys: Iterable[bytes]) -> None:
        """Trust the keys ``ledger_reading.signer_keys`` found in the copy (opened again)."""
        for key in keys:
            _add(key, self.trusted)
            if not self.resource_managers and self.first_signer is None:
                self.first_signer = key

    def trusted_key(self, key_id: bytes) -> ec.EllipticCurvePublicKey | None:
        """A ``KeyLookup`` over the trusted keys."""
        return self.trusted.get(key_id)

    def key(self, key_id: bytes) -> ec.EllipticCurvePublicKey | None:
        """A ``KeyLookup`` over the trusted and the pending keys."""
        return self.trusted.get(key_id) or self.pending.get(key_id)

    def learn(self, entries: Sequence[LedgerEntry]) -> None:
        """Make the keys of ``entries``' membership changes that the policy allows pending."""
        for entry in entries:
            if entry.kind != MEMBERSHIP:
                continue
            try:
                change = decode_membership(entry.payload)
            except MalformedMembership:
                continue
            if membership_error(change) is not None:
                continue
            if self.resource_managers:
                if change.signer in self.resource_managers:
                    _add(change.signer_key, self.pending)
            elif self.first_signer is None and self._pending_first is None:
                self._pending_first = change.signer_key
                _add(change.signer_key, self.pending)

    def commit(self) -> None:
        """The pending keys' entries were appended: trust them."""
        self.trusted.update(self.pending)
        if self._pending_first is not None:
            self.first_signer = self._pending_first
        self.discard()

    def discard(self) -> None:
        """Forget the pending keys (their entries were not appended)."""
        self.pending = {}
        self._pending_first = None


def _add(key: bytes, into: dict[bytes, ec.EllipticCurvePublicKey]) -> None:
    try:
        public_key = key_identity(key)[0]
    except ValueError:
        return
    into[key_id_of(public_key)] = public_key
