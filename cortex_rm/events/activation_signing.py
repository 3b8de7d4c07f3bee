"""The bytes an activation's signatures cover, and their check: the entry node's and each executor's.

An activation (the JSON the events REST API answers, ``"activation": A``) carries two
kinds of signature, both ECDSA P-256 with SHA-256 (DER-encoded), each with its
signer's public key as base64 DER ``SubjectPublicKeyInfo``:

* each executor's (``A["executors"][i]``), over what ``events/outcomes.py:
  signed_bytes`` makes of its outcome: the activation id, the function's name and
  version, the executor's ring id, its status, its result's SHA-256 and its error;
  ``executor_signed_bytes`` makes the same bytes from the activation's fields (the
  client has the result's digest, not the executor's raw bytes);
* the entry node's (``A["signerKey"]``, ``A["signature"]``), over
  ``activation_signed_bytes(A)``: ``b"cortex-activation\\x00"`` and the canonical JSON
  of the activation without those two fields (keys sorted, no spaces, json's
  default ASCII escapes).  The gateway signs with this function and the client
  checks with it, so both agree byte for byte.

A signer's ring id is the SHA-1 of its DER key; ``verify_activation`` checks that it
is the node the activation names and one of the ring's members (``GET /ws/v1/ring``),
then the signatures, then that the agreed executors back the answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.events.outcomes import OutcomeStatus, executor_signed_bytes

ACTIVATION_DOMAIN = b"cortex-activation\x00"
#: The fields of an activation that are its entry node's signature, not signed themselves.
SIGNATURE_FIELDS = ("signerKey", "signature")
_ECDSA = ec.ECDSA(hashes.SHA256())


class ActivationNotVerified(ValueError):
    """An activation's signatures or its agreement do not hold; the message says which and why."""


def canonical_json(value: Any) -> bytes:
    """``value`` as the one JSON text both sides sign: keys sorted, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


def activation_signed_bytes(activation: Mapping[str, Any]) -> bytes:
    """What the entry node signs: the domain, then the activation without its signature fields."""
    unsigned = {k: v for k, v in activation.items() if k not in SIGNATURE_FIELDS}
    return ACTIVATION_DOMAIN + canonical_json(unsigned)  # RecursionError: nested deeper than json can write


def ring_id_of_spki(spki: bytes) -> int:
    return int.from_bytes(hashlib.sha1(spki).digest(), "big")


def _ring_id(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 160:
        return value
    if isinstance(value, str) and len(value) == 40:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ActivationNotVerified(f"{what} is not a ring id (40 hex digits): {str(value)[:60]!r}")


def _field(entry: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    value = entry.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ActivationNotVerified(f"{what} has no {kind.__name__} field {name!r}")
    return value


def _b64(entry: Mapping[str, Any], name: str, what: str) -> bytes:
    try:
        return base64.b64decode(_field(entry, name, str, what), validate=True)
    except (binascii.Error, ValueError):
        raise ActivationNotVerified(f"{what}: {name!r} is not base64") from None


def check_signature(
    entry: Mapping[str, Any], signer: int, message: bytes, members: frozenset[int], what: str
) -> None:
    """``entry``'s ``signerKey`` is ``signer``'s (a ring member) and its ``signature`` covers ``message``."""
    spki = _b64(entry, "signerKey", what)
    signature = _b64(entry, "signature", what)
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm):
        raise ActivationNotVerified(f"{what}: signerKey is not a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ActivationNotVerified(f"{what}: signerKey is not a P-256 key")
    key_id = ring_id_of_spki(spki)
    if key_id != signer:
        raise ActivationNotVerified(f"{what}: signerKey is {key_id:040x}'s, not {signer:040x}'s")
    if signer not in members:
        raise ActivationNotVerified(f"{what}: {signer:040x} is not a member of the ring")
    try:
        key.verify(signature, message, _ECDSA)
    except InvalidSignature:
        raise ActivationNotVerified(f"{what}: the signature does not match") from None


def verify_activation(activation: Mapping[str, Any], ring_members: Iterable[int | str]) -> None:
    """Check ``activation`` (see the module doc); ``ActivationNotVerified`` saying what does not hold.

    Beyond the signatures: every executor marked ``agreed`` reports the activation's
    own status and the same result digest, a ``success`` has at least one, and every
    node named in ``dissenters`` is an executor that did not agree.  (A ``timeout`` or
    ``internal_error`` may have no executor behind it: the entry node's signature
    vouches for those alone.)
    """
    members = frozenset(_ring_id(m, "a ring member") for m in ring_members)
    activation_id = _field(activation, "activationId", str, "the activation")
    function = _field(activation, "function", str, "the activation")
    version = _field(activation, "version", int, "the activation")
    status = _field(activation, "status", str, "the activation")
    entry = _ring_id(activation.get("entryNode"), "the activation's entryNode")
    try:
        signed = activation_signed_bytes(activation)
    except (RecursionError, ValueError) as e:
        raise ActivationNotVerified(f"the activation cannot be written as canonical JSON: {e}") from None
    check_signature(activation, entry, signed, members, f"entry node {entry:040x}")
    executors = activation.get("executors")
    if not isinstance(executors, list):
        raise ActivationNotVerified("the activation has no list 'executors'")
    agreed_digests: set[str] = set()
    disagreed: set[int] = set()
    for index, executor in enumerate(executors):
        if not isinstance(executor, dict):
            raise ActivationNotVerified(f"executors[{index}] is not an object")
        node = _ring_id(executor.get("node"), f"executors[{index}].node")
        what = f"executor {node:040x}"
        their_status = _field(executor, "status", str, what)
        digest = _field(executor, "resultSha256", str, what)
        if "error" not in executor:
            raise ActivationNotVerified(f"{what}: no 'error' (its signature covers it; the entry node must pass it on)")
        error = _field(executor, "error", str, what)
        signed = executor_signed_bytes(activation_id, function, version, node, their_status, digest, error)
        check_signature(executor, node, signed, members, what)
        if _field(executor, "agreed", bool, what):
            if their_status != status:
                raise ActivationNotVerified(f"{what} agreed, but its status is {their_status!r}, not {status!r}")
            agreed_digests.add(digest)
        else:
            disagreed.add(node)
    if len(agreed_digests) > 1:
        raise ActivationNotVerified(f"the agreed executors report {len(agreed_digests)} different results")
    if status == OutcomeStatus.SUCCESS.value and not agreed_digests:
        raise ActivationNotVerified("a successful activation with no agreed executor behind it")
    dissenters = activation.get("dissenters", [])
    if not isinstance(dissenters, list):
        raise ActivationNotVerified("the activation's 'dissenters' is not a list")
    for dissenter in dissenters:
        if _ring_id(dissenter, "a dissenter") not in disagreed:
            raise ActivationNotVerified(f"dissenter {dissenter} is not an executor that disagreed")
