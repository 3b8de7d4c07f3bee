"""The ring's proof of work for this node's key, kept beside the key in ``identity/ring-work.json``.

The nonce (``dht/ring_work.py``) is solved once per key and ``[ring] work_bits``, in a
thread at the key's first start (``roles/ring_service.py``), and read on every later
start.  A stored nonce for another key, or for fewer bits than configured now, is not
used: it is solved again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.logger import Logger

from cortex_rm.dht.ring_work import solve_work, work_ok
from cortex_rm.internal.identity import IDENTITY_DIR

log = Logger()

WORK_FILE = "ring-work.json"


def stored_work(state_dir: Path, spki: bytes, bits: int) -> int | None:
    """This key's proof of work for the ring at ``bits``, as stored in ``identity/ring-work.json``; None
    when there is none, or the stored nonce does not solve the puzzle at ``bits`` (another key, or more
    bits configured since)."""
    try:
        stored = json.loads((Path(state_dir) / IDENTITY_DIR / WORK_FILE).read_text())
        nonce = stored["nonce"] if isinstance(stored, dict) else None
        if isinstance(nonce, int) and work_ok(spki, nonce, bits):
            return nonce
    except (OSError, ValueError, KeyError):
        pass
    return None


def solve_and_store_work(state_dir: Path, spki: bytes, bits: int) -> int:
    """Solve this key's puzzle at ``bits`` (~2**bits SHA-256 hashes: ~2 s at the default 22 bits,
    each bit doubles it; it blocks, so run it in a thread) and store the nonce in ``identity/ring-work.json``."""
    nonce = solve_work(spki, bits)
    path = Path(state_dir) / IDENTITY_DIR / WORK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(WORK_FILE + ".partial")
    partial.write_text(json.dumps({"bits": bits, "nonce": nonce}) + "\n")
    os.replace(partial, path)
    log.info("solved the ring's proof of work for this key at {bits} bits (nonce {nonce})", bits=bits, nonce=nonce)
    return nonce
