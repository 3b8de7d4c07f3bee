"""The activation's signatures (``events/activation_signing.py``) and the client's ``verify``:
an activation signed as the gateway and the executors sign passes, and each kind of tampering,
foreign key or broken agreement is refused naming what does not hold."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.client import SignatureError, verify
from cortex_rm.events.activation_signing import (
    ACTIVATION_DOMAIN, ActivationNotVerified, activation_signed_bytes, canonical_json, executor_signed_bytes,
    ring_id_of_spki, verify_activation,
)  # fmt: skip
from cortex_rm.events.outcomes import FunctionOutcome, result_digest, signed_bytes

ECDSA = ec.ECDSA(hashes.SHA256())


class Node:
    """A ring member's key pair, as a node holds it."""

    def __init__(self, curve: ec.EllipticCurve | None = None) -> None:
        self.key = ec.generate_private_key(curve or ec.SECP256R1())
        self.spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.ring_id = ring_id_of_spki(self.spki)

    @property
    def hex(self) -> str:
        return f"{self.ring_id:040x}"

    def sign(self, message: bytes) -> dict[str, str]:
        return {"signerKey": base64.b64encode(self.spki).decode(), "signature": base64.b64encode(self.key.sign(message, ECDSA)).decode()}


def executor_entry(node: Node, activation_id: str, result: bytes, status: str = "success", error: str = "",
                   agreed: bool = True) -> dict[str, Any]:  # fmt: skip
    """An executor's entry, signed over ``outcomes.signed_bytes`` (what a real executor signs)."""
    outcome = FunctionOutcome(1, activation_id, status, result, error, b"logs", 12, False)
    signature = node.sign(signed_bytes(outcome, "hello", 3, node.ring_id))
    return {"node": node.hex, "status": status, "resultSha256": result_digest(result), "durationMs": 12,
            "error": error, "agreed": agreed, **signature}  # fmt: skip


def signed_activation(entry: Node, executors: list[dict[str, Any]], status: str = "success",
                      result: Any = None, dissenters: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    activation: dict[str, Any] = {
        "activationId": "0123456789ab-0011223344556677", "function": "hello", "version": 3, "caller": "alice",
        "status": status, "result": result if result is not None else {"greeting": "hi Ada", "n": [1, 2.5]},
        "error": "", "start": 1_700_000_000_000, "end": 1_700_000_000_015, "durationMs": 15, "coldStart": False,
        "mode": "vote", "replicas": len(executors), "executors": executors, "dissenters": dissenters or [],
        "entryNode": entry.hex,
    }  # fmt: skip
    return resign(activation, entry)


def resign(activation: dict[str, Any], entry: Node) -> dict[str, Any]:
    return {**activation, **entry.sign(activation_signed_bytes(activation))}


@pytest.fixture(scope="module")
def ring() -> list[Node]:
    return [Node() for _ in range(4)]


def three_way(ring: list[Node], wrong: bool = False) -> dict[str, Any]:
    """Node 0 the entry; nodes 1-3 executors, node 3 dissenting when ``wrong``."""
    aid = "0123456789ab-0011223344556677"
    good = b'{"greeting":"hi Ada"}'
    executors = [executor_entry(ring[1], aid, good), executor_entry(ring[2], aid, good)]
    executors.append(executor_entry(ring[3], aid, b'{"greeting":"evil"}' if wrong else good, agreed=not wrong))
    return signed_activation(ring[0], executors, dissenters=[ring[3].hex] if wrong else [])


def members(ring: list[Node]) -> set[str]:
    return {n.hex for n in ring}


def test_an_activation_signed_by_ring_members_verifies(ring: list[Node]) -> None:
    """The entry node's and the three executors' signatures hold, with or without a dissenter."""
    verify(three_way(ring), members(ring))
    verify(three_way(ring, wrong=True), {n.ring_id for n in ring})  # ids as ints too


def test_the_entry_signature_covers_every_field_but_itself(ring: list[Node]) -> None:
    """Changing the result, the caller, a timing or an executor's agreement after signing is caught."""
    for path, value in [("result", {"greeting": "forged"}), ("caller", "mallory"), ("durationMs", 16),
                        ("dissenters", [ring[1].hex])]:  # fmt: skip
        activation = three_way(ring)
        activation[path] = value
        with pytest.raises(SignatureError, match="entry node .*the signature does not match"):
            verify(activation, members(ring))


def test_the_signed_bytes_are_the_domain_and_canonical_json_without_the_signature() -> None:
    """Key order and the signature fields do not change the bytes; the text is compact and sorted."""
    a = {"b": 1, "a": [1, {"y": "é", "x": None}], "signature": "s", "signerKey": "k"}
    b = {"signerKey": "other", "a": [1, {"x": None, "y": "é"}], "b": 1}
    assert activation_signed_bytes(a) == activation_signed_bytes(b)
    assert activation_signed_bytes(a) == ACTIVATION_DOMAIN + b'{"a":[1,{"x":null,"y":"\\u00e9"}],"b":1}'
    assert canonical_json({"z": 1.5, "a": True}) == b'{"a":true,"z":1.5}'


@given(
    aid=st.text(max_size=40), function=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    version=st.integers(1, 1 << 62), executor=st.integers(0, (1 << 160) - 1),
    status=st.sampled_from(["success", "application_error", "timeout"]), result=st.binary(max_size=64), error=st.text(max_size=80),
)  # fmt: skip
def test_executor_bytes_from_the_activation_equal_what_the_executor_signs(
    aid: str, function: str, version: int, executor: int, status: str, result: bytes, error: str
) -> None:
    """``executor_signed_bytes`` (from the digest) is byte for byte ``outcomes.signed_bytes`` (from the result)."""
    outcome = FunctionOutcome(7, aid, status, result, error, b"", 1, True)
    assert executor_signed_bytes(aid, function, version, executor, status, result_digest(result), error) == signed_bytes(
        outcome, function, version, executor
    )


def test_a_tampered_executor_entry_is_refused(ring: list[Node]) -> None:
    """An executor's status, digest or error changed (and the entry node re-signing) breaks its own signature."""
    for name, value in [("status", "application_error"), ("resultSha256", "0" * 64), ("error", "boom")]:
        activation = three_way(ring)
        activation["executors"][2][name] = value
        activation["executors"][2]["agreed"] = False  # keep the agreement rules out of the way
        with pytest.raises(SignatureError, match=f"executor {ring[3].hex}: the signature does not match"):
            verify(resign(activation, ring[0]), members(ring))


def test_signers_must_be_ring_members_and_own_their_ids(ring: list[Node]) -> None:
    """An entry node outside the ring, an executor's key that is not the named node's, or a P-384 key are refused."""
    outsider = Node()
    with pytest.raises(SignatureError, match="is not a member of the ring"):
        verify(three_way([outsider, *ring[1:]]), members(ring))
    activation = three_way(ring)
    activation["executors"][0].update(ring[2].sign(b"anything"))  # node 1's entry with node 2's key
    with pytest.raises(SignatureError, match=f"signerKey is {ring[2].hex}'s, not {ring[1].hex}'s"):
        verify(resign(activation, ring[0]), members(ring))
    p384 = Node(ec.SECP384R1())
    with pytest.raises(SignatureError, match="not a P-256 key"):
        verify(three_way([p384, *ring[1:]]), members(ring) | {p384.hex})


def test_the_agreed_executors_must_back_the_answer(ring: list[Node]) -> None:
    """Agreed executors with another status or another result, a success nobody agreed to, a
    dissenter who agreed, or an executor entry without its error are refused."""
    aid = "0123456789ab-0011223344556677"
    cases = {
        "its status is 'application_error', not 'success'": [executor_entry(ring[1], aid, b"1", status="application_error")],
        "2 different results": [executor_entry(ring[1], aid, b"1"), executor_entry(ring[2], aid, b"2")],
        "no agreed executor": [executor_entry(ring[1], aid, b"1", agreed=False)],
    }
    for message, executors in cases.items():
        with pytest.raises(SignatureError, match=message):
            verify(signed_activation(ring[0], executors), members(ring))
    with pytest.raises(SignatureError, match="is not an executor that disagreed"):
        verify(signed_activation(ring[0], [executor_entry(ring[1], aid, b"1")], dissenters=[ring[1].hex]), members(ring))
    activation = three_way(ring)
    del activation["executors"][0]["error"]
    with pytest.raises(SignatureError, match="no 'error'"):
        verify(resign(activation, ring[0]), members(ring))


def test_a_timeout_with_no_executor_rests_on_the_entry_signature(ring: list[Node]) -> None:
    """The entry node's own verdict (no executor answered in time) verifies with no executor behind it."""
    verify(signed_activation(ring[0], [], status="timeout", result={}), members(ring))


def test_malformed_activations_raise_the_verification_error(ring: list[Node]) -> None:
    """Missing or mistyped fields, bad base64 and non-hex ids raise ActivationNotVerified, nothing else."""
    good = three_way(ring)
    for change in [
        lambda a: a.pop("signature"), lambda a: a.update(signerKey="%%%"), lambda a: a.update(entryNode="xyz"),
        lambda a: a.update(executors="none"), lambda a: a["executors"].append(5), lambda a: a.update(version="3"),
        lambda a: a.update(signerKey=base64.b64encode(b"not der").decode()), lambda a: a.update(dissenters="x"),
    ]:  # fmt: skip
        activation = copy.deepcopy(good)
        change(activation)
        with pytest.raises(ActivationNotVerified):
            verify_activation(activation, members(ring))
