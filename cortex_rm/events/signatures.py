"""Signing and checking what the events say: executors' outcomes, entry nodes' activations, RMs' registrations
and the RM's caller assertions (``caller_assertions.py``).

Every signature is ECDSA P-256 over SHA-256, DER-encoded, by a node's ring key (the
key whose DER SubjectPublicKeyInfo hashes, with SHA-1, to the node's ring id), as the
ring signs its rumours and records.  ``Verifier`` keeps the public keys it loaded
and the last verdicts it reached (a registration is checked once per version, not
once per trigger), both bounded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.ring_trust import key_id, record_message
from cortex_rm.events import caller_assertions
from cortex_rm.events.caller_assertions import CallerAssertion
from cortex_rm.events.functions import FunctionSpec, InvalidFunction, function_key
from cortex_rm.events.outcomes import FunctionOutcome, signed_bytes

MAX_CACHED = 4096


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def spki_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Verifier:
    """Checks signatures (see the module docstring)."""

    def __init__(self, max_cached: int = MAX_CACHED) -> None:
        self.max_cached = max_cached
        self._keys: OrderedDict[bytes, ec.EllipticCurvePublicKey | None] = OrderedDict()
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()

    def verify(self, spki: bytes, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the key ``spki``'s over ``message``."""
        if not signature or len(signature) > 160 or not spki or len(spki) > 512:
            return False
        digest = hashlib.sha256(len(spki).to_bytes(2, "big") + spki + signature + message).digest()
        known = self._verdicts.get(digest)
        if known is not None:
            self._verdicts.move_to_end(digest)
            return known
        public_key = self._key(spki)
        good = False
        if public_key is not None:
            try:
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                good = True
            except InvalidSignature:
                good = False
        self._verdicts[digest] = good
        if len(self._verdicts) > self.max_cached:
            self._verdicts.popitem(last=False)
        return good

    def registration(self, record: Record, resource_managers: frozenset[int]) -> FunctionSpec:
        """The function ``record`` registers, if an RM wrote and signed it; InvalidFunction saying why not."""
        if record.writer not in resource_managers:
            raise InvalidFunction(f"the registration of {record.key[:60]!r} was not written by a ResourceManager")
        if key_id(record.signer_key) != record.writer or not self.verify(
            record.signer_key, record_message(record.key, record.value, record.version), record.signature
        ):
            raise InvalidFunction(f"the registration of {record.key[:60]!r} is not signed by its writer")
        spec = FunctionSpec.decode(record.value)
        if function_key(spec.name) != record.key:
            raise InvalidFunction(f"the record {record.key[:60]!r} registers another function ({spec.name})")
        return spec

    def outcome_error(self, outcome: FunctionOutcome, sender: int, function: str, version: int) -> str | None:
        """Why ``outcome`` is not ``sender``'s signed word on the activation (None: it is)."""
        if key_id(outcome.signer_key) != sender:
            return "its signer key is not the sender's"
        if not self.verify(outcome.signer_key, signed_bytes(outcome, function, version, sender), outcome.signature):
            return "its signature does not match"
        return None

    def caller_error(
        self, assertion: CallerAssertion, sender: int, resource_managers: frozenset[int], now_ms: int
    ) -> str | None:
        """Why ``assertion`` is not an RM's valid word on a caller whose trigger ``sender`` carries (None: it is).

        The signature check is cached with the others (the entry node reuses an assertion for a minute)."""
        if key_id(assertion.signer_key) not in resource_managers:
            return "it is not signed by a ResourceManager"
        if assertion.audience != sender:
            return "it was issued to another entry node"
        late = caller_assertions.time_error(assertion, now_ms)
        if late is not None:
            return late
        if not self.verify(assertion.signer_key, caller_assertions.signed_bytes(assertion), assertion.signature):
            return "its signature does not match"
        return None

    def _key(self, spki: bytes) -> ec.EllipticCurvePublicKey | None:
        if spki in self._keys:
            self._keys.move_to_end(spki)
            return self._keys[spki]
        try:
            loaded = serialization.load_der_public_key(spki)
            key = loaded if isinstance(loaded, ec.EllipticCurvePublicKey) else None
        except (ValueError, TypeError):
            key = None
        self._keys[spki] = key
        if len(self._keys) > self.max_cached:
            self._keys.popitem(last=False)
        return key
