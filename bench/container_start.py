"""Container start latency with the LXC runtime (issue 3).

Starts ``--starts`` containers one after another with ``LxcRuntime`` (after
``--warmup`` uncounted ones) and prints, for each figure, p50/p90/p99/mean in ms:

* ``prepare``: the synchronous part of ``start()`` (checks, root directory,
  config file, spawning lxc-execute), time the reactor is busy;
* ``started``: from the ``start()`` call to ``started`` firing, the runtime's
  start latency: LXC reports that the container's init runs, with its
  namespaces, mounts and cgroup limits in place;
* ``command``: from the ``start()`` call to the first instruction of the
  command, which is bash printing ``$EPOCHREALTIME`` (a builtin, so no exec)
  into its work dir: what an application sees;
* ``exited``: from the ``start()`` call to ``exited`` (the command ends at once),
  including the stop hook and LXC's cleanup.

Run as root on a host with LXC and cgroup v1::

    .venv/bin/python bench/container_start.py --starts 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cortex_rm.container.lxc_runtime import LxcRuntime  # noqa: E402
from cortex_rm.container.runtime import ContainerSpec  # noqa: E402

MIB = 1024 * 1024


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(name: str, values_ms: list[float]) -> str:
    """One table row: p50, p90, p99, mean, min, max."""
    return "| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} |".format(
        name,
        percentile(values_ms, 50),
        percentile(values_ms, 90),
        percentile(values_ms, 99),
        statistics.fmean(values_ms),
        min(values_ms),
        max(values_ms),
    )


@defer.inlineCallbacks
def one_start(reactor: Any, runtime: LxcRuntime, root: Path, n: int):  # type: ignore[no-untyped-def]
    """Start one container whose command records when it ran; return the four figures in ms."""
    cid = f"container_bench_{os.getpid()}_{n:04d}"
    work, logs = root / "work" / cid, root / "logs" / cid
    work.mkdir(parents=True)
    logs.mkdir(parents=True)
    spec = ContainerSpec(
        container_id=cid,
        work_dir=work,
        log_dir=logs,
        command=["/bin/bash", "-c", 'echo "$EPOCHREALTIME" > ran'],
        env={"PATH": "/usr/bin:/bin"},
        memory_limit_bytes=256 * MIB,
        pids_limit=64,
    )
    wall0, t0 = time.time(), reactor.seconds()
    c = runtime.start(spec)
    prepare = reactor.seconds() - t0
    yield c.started
    started = reactor.seconds() - t0
    result = yield c.exited
    exited = reactor.seconds() - t0
    if result.exit_code != 0:
        raise RuntimeError(f"{cid} exited with {result.exit_code}: {result.diagnostics}")
    command = float((work / "ran").read_text()) - wall0
    return [x * 1000 for x in (prepare, started, command, exited)]


@defer.inlineCallbacks
def run(reactor: Any, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Warm up, then measure ``args.starts`` starts and print the table."""
    root = Path(tempfile.mkdtemp(prefix="cortex-start-bench-", dir=args.dir))
    runtime = LxcRuntime(reactor, root / "runtime")
    figures: list[list[float]] = []
    try:
        for n in range(args.warmup + args.starts):
            values = yield one_start(reactor, runtime, root, n)
            if n >= args.warmup:
                figures.append(values)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(f"{args.starts} starts (after {args.warmup} warm-up), load average {load[0]:.2f} {load[1]:.2f}")
    print("| from start() to | p50 ms | p90 ms | p99 ms | mean ms | min ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for i, name in enumerate(("prepare returns", "**started**", "command runs", "exited")):
        print(summary(name, [f[i] for f in figures]))


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the benchmark on the global reactor (this is an entry point)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=30, help="measured starts (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted starts first (default 2)")
    parser.add_argument("--dir", default="/tmp", help="where the temporary work dirs go (default /tmp)")
    args = parser.parse_args(argv)
    task.react(run, [args])


if __name__ == "__main__":
    main()
