"""A short-lived ring member for tests: join through an introducer, put or get records, leave.

    python -m tests.support.ring_client --introducer 127.0.0.1:7946 --state-dir DIR \\
        put KEY VALUE [KEY VALUE ...]
    python -m tests.support.ring_client --introducer 127.0.0.1:7946 --state-dir DIR get KEY [KEY ...]

``put`` prints ``KEY version`` per record; ``get`` prints ``KEY VALUE`` (``KEY -`` for
none).  It is a real member (its own identity under DIR, mutual TLS, SWIM): it
joins, waits until its successor and predecessor answer, does its operations, and
leaves gracefully (handing on the records it owns).  Exit status 1 when an
operation failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from cortex_rm.dht.join_lifecycle import RingState
from cortex_rm.dht.ring_config import RingConfig
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.ring_service import RingService
from tests.support.ring_daemons import TEST_KEY_BITS, TEST_WORK_BITS


async def _settled(reactor: Any, ring: RingService, timeout: float) -> None:
    """Joined, with a predecessor (so puts to keys we own are not refused)."""
    await ring.joined()
    waited = 0.0
    while waited < timeout:
        view = ring.view()
        if view.state is RingState.MEMBER and view.predecessor is not None and view.successors:
            return
        await task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1
    raise TimeoutError("the ring client did not settle on the ring")


async def _main(reactor: Any, args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ring = RingService(
        NodeIdentity.load_or_create(state_dir, key_bits=TEST_KEY_BITS),
        RingConfig(work_bits=TEST_WORK_BITS, key_bits=TEST_KEY_BITS),  # the daemons' (tests.support.ring_daemons)
        reactor,
        state_dir,
        listen_host=args.host,
        advertise_host=args.host,
        port=0,
        introducers=[args.introducer],
    )
    await ring.start()
    status = 0
    try:
        await _settled(reactor, ring, args.timeout)
        if args.command == "put":
            pairs = list(zip(args.items[::2], args.items[1::2], strict=True))
            for key, value in pairs:
                record = await _retry(reactor, lambda k=key, v=value: ring.put(k, v.encode()))
                print(key, record.version, flush=True)
        else:
            for key in args.items:
                got = await _retry(reactor, lambda k=key: ring.get(k))
                print(key, got.value.decode() if got is not None else "-", flush=True)
    except Exception as e:
        print(f"ring_client: {e}", file=sys.stderr)
        status = 1
    finally:
        await ring.stop(graceful=True)
    return status


async def _retry(reactor: Any, operation: Any, attempts: int = 5) -> Any:
    for attempt in range(attempts):
        try:
            return await operation()
        except Exception:
            if attempt == attempts - 1:
                raise
            await task.deferLater(reactor, 0.5, lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--introducer", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("command", choices=["put", "get"])
    parser.add_argument("items", nargs="+")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(_main(reactor, args)).addCallback(_exit))


def _exit(status: int) -> None:
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
