"""``client-config``'s check of each RM a node's directory names, before anything is sent to it or written.

For every RM listed, with a fresh random nonce, the client asks the RM's web address for an RM proof
(``yarn/rm_proof.py``: the question carries her WebHDFS token's identifier, never its password) and compares
the answer, in constant time, with the proof computed from her own credential for the addresses the
directory lists.  An RM that does not answer, refuses, or answers another proof is dropped (``Verdict``
says why).  The RMs are asked at once (a thread each, ``MAX_PARALLEL`` at most), every exchange bounded by
the per-read timeout and all of them by the caller's overall ``deadline``, so a hostile entry that trickles
its answer cannot hold up the others' verdicts past it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cortex_rm.client_config import RMAddresses
from cortex_rm.client_http import Broken, Unreachable, exchange
from cortex_rm.yarn.rm_proof import NONCE_HEX, ProofQuery, proof_matches
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto

PROOF_MAX_BYTES = 4096  # {"proof": 64 hex} or a RemoteException
MAX_PARALLEL = 8


@dataclass(frozen=True)
class Verdict:
    """One RM's check: ``failure`` None when its proof matched, else why it is dropped."""

    rm: RMAddresses
    failure: str | None

    @property
    def verified(self) -> bool:
        return self.failure is None


def _printable(text: str, limit: int = 160) -> str:
    """What a (possibly hostile) server said, safe to print: printable ASCII, cut at ``limit``."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def judge(status: int, body: bytes, rm: RMAddresses, nonce: str, password: bytes) -> str | None:
    """Why the answer ``status``/``body`` to the question with ``nonce`` proves nothing about ``rm`` (None: it
    proves that the RM at ``rm.webapp`` holds the key of the token whose password is ``password``)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if status != 200:
        error = document.get("RemoteException") if isinstance(document, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        said = _printable(message) if isinstance(message, str) else "no RemoteException"
        return f"it refused (HTTP {status}): {said}"
    proof = document.get("proof") if isinstance(document, dict) else None
    if not isinstance(proof, str):
        return "its answer holds no proof"
    if not proof_matches(proof, password, nonce, str(rm.webapp), str(rm.client), str(rm.scheduler)):
        return (
            "its proof does not match: it does not hold the key your credential was issued with, or its addresses "
            "are not the ones listed"
        )
    return None


def ask(rm: RMAddresses, token: TokenProto, timeout_s: float, deadline: float) -> Verdict:
    """Ask ``rm`` for its proof with a fresh nonce and ``token``'s identifier (its password stays here)."""
    nonce = secrets.token_hex(NONCE_HEX // 2)
    target = ProofQuery(token.identifier, nonce).target()
    # Host: the address asked, as the directory names it (the RM proves only its own)
    headers = {"Accept": "application/json", "Host": str(rm.webapp), "Connection": "close"}
    try:
        answer = exchange(str(rm.webapp), "GET", target, None, headers, timeout_s, max_bytes=PROOF_MAX_BYTES,
                          deadline=deadline)  # fmt: skip
    except Unreachable as e:
        return Verdict(rm, f"no connection to its web address: {_printable(str(e))}")
    except Broken as e:
        return Verdict(rm, f"no answer from its web address: {_printable(str(e))}")
    return Verdict(rm, judge(answer.status, answer.body, rm, nonce, token.password))


Ask = Callable[[RMAddresses, TokenProto, float, float], Verdict]


def verify(rms: Sequence[RMAddresses], token: TokenProto, timeout_s: float, deadline: float, asker: Ask = ask) -> list[Verdict]:
    """Each of ``rms``' verdict, in their order (module docstring); ``token``: the user's WebHDFS token."""
    if not rms:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(rms)), thread_name_prefix="rm-proof") as pool:
        return list(pool.map(lambda rm: asker(rm, token, timeout_s, deadline), rms))
