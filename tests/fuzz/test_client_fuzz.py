"""Fuzzing what the events client reads from servers and from its own disk.

* ``error_from_response`` over mutated refusals and failed activations, any status:
  a ``CortexError`` with a bounded message, never another exception.
* ``IntroducerCache.load`` over mutated cache files: groups within the bounds, or none.
* ``verify_activation`` over mutated (signed) activations: it passes only an activation
  whose signed fields are unchanged, and otherwise raises ``ActivationNotVerified``, nothing else.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.client_errors import MAX_MESSAGE_CHARS, CortexError, error_from_response
from cortex_rm.events.activation_signing import (
    ActivationNotVerified, activation_signed_bytes, ring_id_of_spki, verify_activation,
)  # fmt: skip
from cortex_rm.events.outcomes import FunctionOutcome, result_digest, signed_bytes
from cortex_rm.introducer_cache import MAX_CLUSTERS, MAX_INTRODUCERS, ClusterIntroducers, IntroducerCache
from tests.fuzz.fuzzing import fuzz_settings, mutated

REFUSALS = [
    json.dumps({"RemoteException": {"exception": "NotFoundException", "message": "function f not found",
                                    "javaClassName": "org.apache.hadoop.yarn.webapp.NotFoundException"}}).encode(),
    json.dumps({"activation": {"activationId": "a-1", "function": "f", "status": "timeout", "error": "ran 2 s"}}).encode(),
    b"<html>bad gateway</html>",
]  # fmt: skip


@fuzz_settings(300)
@given(st.integers(300, 599), mutated(st.sampled_from(REFUSALS)), st.text(max_size=12))
def test_any_refusal_becomes_a_bounded_cortex_error(status: int, body: bytes, retry_after: str) -> None:
    error = error_from_response(status, {"retry-after": retry_after}, body, "trigger f")
    assert isinstance(error, CortexError) and error.status == status
    assert len(str(error)) <= MAX_MESSAGE_CHARS + 250


_CACHE = IntroducerCache(Path("/nonexistent"))
VALID_FILE = json.dumps({"clusters": [
    {"resourceManager": "rm:8088", "introducers": ["a:8042", "b:8042"], "updatedMs": 5},
    {"resourceManager": "10.0.0.1:8088", "introducers": ["10.0.0.2:8042"], "updatedMs": 9},
]}).encode()  # fmt: skip


@fuzz_settings(300)
@given(mutated(st.just(VALID_FILE), max_mutations=6))
def test_a_damaged_cache_file_loads_as_bounded_groups_or_none(tmp_path_factory: Any, data: bytes) -> None:
    cache = IntroducerCache(tmp_path_factory.mktemp("cache"))
    cache.path.write_bytes(data)
    groups = cache.load()
    assert len(groups) <= MAX_CLUSTERS
    for group in groups:
        assert isinstance(group, ClusterIntroducers) and len(group.introducers) <= MAX_INTRODUCERS
    cache.candidates(["a:8042"])


def _key() -> tuple[ec.EllipticCurvePrivateKey, bytes, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, spki, ring_id_of_spki(spki)


def _signed(key: ec.EllipticCurvePrivateKey, spki: bytes, message: bytes) -> dict[str, str]:
    return {"signerKey": base64.b64encode(spki).decode(),
            "signature": base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()}  # fmt: skip


ENTRY, EXECUTOR = _key(), _key()
MEMBERS = {ENTRY[2], EXECUTOR[2]}
_OUTCOME = FunctionOutcome(1, "abc-1", "success", b"42", "", b"", 3, False)
_ACTIVATION: dict[str, Any] = {
    "activationId": "abc-1", "function": "f", "version": 2, "caller": "alice", "status": "success", "result": 42,
    "error": "", "mode": "first", "replicas": 1, "entryNode": f"{ENTRY[2]:040x}", "dissenters": [],
    "executors": [{"node": f"{EXECUTOR[2]:040x}", "status": "success", "resultSha256": result_digest(b"42"),
                   "error": "", "agreed": True, **_signed(EXECUTOR[0], EXECUTOR[1], signed_bytes(_OUTCOME, "f", 2, EXECUTOR[2]))}],
}  # fmt: skip
SIGNED = {**_ACTIVATION, **_signed(ENTRY[0], ENTRY[1], activation_signed_bytes(_ACTIVATION))}
SIGNED_BYTES = json.dumps(SIGNED).encode()


@fuzz_settings(300)
@given(mutated(st.just(SIGNED_BYTES), max_mutations=3))
def test_a_mutated_activation_verifies_only_if_nothing_signed_changed(data: bytes) -> None:
    try:
        activation = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(activation, dict):
        return
    try:
        verify_activation(activation, MEMBERS)
    except ActivationNotVerified:
        return
    assert activation_signed_bytes(activation) == activation_signed_bytes(SIGNED)
    assert activation["executors"][0]["resultSha256"] == result_digest(b"42")
