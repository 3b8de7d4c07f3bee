"""Events end to end over REST on a local 3-node Cortex: warm and cold trigger latency, saturation, and vote's cost.

Starts a local cluster of ``--nodes`` daemons (``cortex_rm.local_cluster``, executors
in LXC sandboxes) in a temporary directory, uploads small Python functions to its
file system over WebHDFS and registers them through the REST API, as a developer does
with her credential, then measures with blocking triggers (``POST
/ws/v1/cortex/events/functions/NAME/trigger``) over kept-alive HTTP connections:

1. **warm**: ``--warm`` triggers one after another of a function that returns its event,
   ``replicas=1``, sent to a node that does not own it (so every trigger crosses the ring
   to the executor and back), after ``WARMUP`` uncounted ones;
2. **vote**: the same with ``replicas=3, mode=vote`` (every node runs it; the entry node waits
   for all three and votes), against (1);
3. **cold**: ``--cold`` distinct functions triggered once each, twice over: the first round
   pays the code's fetch from the file system and a new sandbox; in the second round the
   code is cached but the node keeps at most ``MAX_SANDBOXES`` sandboxes, so each
   trigger evicts an idle one and starts a new sandbox (a cold start without the fetch);
4. **saturation**: ``--clients`` threads trigger three functions owned by different nodes
   through all nodes for ``--seconds``: triggers/s overall and per node (429s are counted
   and retried after Retry-After).

Latencies are the client's: request sent to answer read, in ms; p50/p99 are nearest-rank.
Targets (issue 12): warm p50 <= 10 ms, cold p50 <= 150 ms.

Usage: .venv/bin/python bench/events_bench.py [--nodes 3] [--warm 500] [--cold 30] [--clients 32] [--seconds 20] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from hdfs import TokenClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm import local_cluster  # noqa: E402
from cortex_rm.dht.ring_math import key_id  # noqa: E402
from cortex_rm.events.functions import function_key  # noqa: E402
from cortex_rm.user_credential import load_credential  # noqa: E402
from cortex_rm.events.request_proofs import sign  # noqa: E402
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER  # noqa: E402

EVENTS = "/ws/v1/cortex/events"
WARMUP = 20
MAX_SANDBOXES = 8
ECHO = "def handler(event, context):\n    return event\n"


def say(message: str) -> None:
    print(message, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def row(label: str, values: list[float]) -> str:
    return (f"| {label} | {len(values)} | {percentile(values, 50):.1f} | {percentile(values, 90):.1f} | "
            f"{percentile(values, 99):.1f} | {min(values):.1f} | {max(values):.1f} |")  # fmt: skip


class Bench:
    def __init__(self, workdir: Path, nodes: list[local_cluster.LocalNode]) -> None:
        self.workdir = workdir
        self.nodes = nodes
        credential = load_credential(workdir / local_cluster.USER_TOKEN)
        self.user = credential.user
        self.headers = {REST_TOKEN_HEADER: credential.rest_header()}  # the RM's: it issued the token
        self.token = credential.rm  # a node is sent signed requests, never the token
        rm = nodes[0].rm
        assert rm is not None
        self.rm_web = rm.webapp
        self.fs = TokenClient(f"http://{rm.webapp}", token=credential.webhdfs_delegation())
        self.webs = [json.loads((Path(n.directory) / "ready.json").read_text())["nodemanager.webapp_address"] for n in nodes]
        self.ring = {}
        for web in self.webs:
            view = requests.get(f"http://{web}/ws/v1/ring", timeout=10).json()["ring"]
            self.ring[web] = int(view["node"]["id"], 16)

    def owner(self, name: str) -> str:
        point = key_id(function_key(name))
        ordered = sorted(self.ring.items(), key=lambda item: item[1])
        return next((web for web, rid in ordered if rid >= point), ordered[0][0])

    def register(self, name: str, source: str = ECHO, **fields: Any) -> None:
        path = f"/user/{self.user}/bench/{name}.py"
        self.fs.write(path, data=source.encode(), overwrite=True)
        answer = requests.post(f"http://{self.rm_web}{EVENTS}/functions/{name}", json={"code": {"path": path}, **fields},
                               headers=self.headers, timeout=60)  # fmt: skip
        if answer.status_code != 200:
            raise SystemExit(f"registering {name} failed: {answer.status_code} {answer.text}")

    def trigger(self, session: requests.Session, web: str, name: str, payload: Any) -> tuple[float, requests.Response]:
        started = time.perf_counter()
        target, body = f"{EVENTS}/functions/{name}/trigger", json.dumps(payload).encode()
        proof = sign(self.token.identifier, self.token.password, self.ring[web], "POST", web, target, body,
                     int(time.time() * 1000))  # fmt: skip
        answer = session.post(f"http://{web}{target}", data=body, headers={"Authorization": proof}, timeout=120)
        return (time.perf_counter() - started) * 1000, answer

    def latencies(self, name: str, web: str, count: int) -> list[float]:
        session = requests.Session()
        for i in range(WARMUP):
            self.checked(*self.trigger(session, web, name, i), i)
        times = []
        for i in range(count):
            took, answer = self.trigger(session, web, name, i)
            self.checked(took, answer, i)
            times.append(took)
        return times

    @staticmethod
    def checked(took: float, answer: requests.Response, expected: Any) -> None:
        if answer.status_code != 200 or answer.json()["activation"]["result"] != expected:
            raise SystemExit(f"a trigger failed: {answer.status_code} {answer.text[:400]}")

    def saturate(self, names: list[str], clients: int, seconds: float) -> tuple[int, Counter[str], float]:
        done: Counter[str] = Counter()
        busy = Counter[str]()
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def client(n: int) -> None:
            session = requests.Session()
            i = 0
            while time.monotonic() < stop:
                web, name = self.webs[(n + i) % len(self.webs)], names[(n + i) % len(names)]
                _, answer = self.trigger(session, web, name, i)
                with lock:
                    if answer.status_code == 200:
                        done[web] += 1
                    elif answer.status_code == 429:
                        busy["429"] += 1
                        time.sleep(float(answer.headers.get("Retry-After", "1")))
                    else:
                        busy[str(answer.status_code)] += 1
                i += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done.values()), busy, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running and its directory in place")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="events-bench-"))
    workdir.chmod(0o755)
    config = f"[events]\nmax_sandboxes = {MAX_SANDBOXES}\n"
    say(f"starting a {args.nodes}-node local cluster in {workdir} ...")
    nodes = local_cluster.up(workdir, args.nodes, timeout=120, say=lambda _: None, rm_config=config, node_config=config)
    try:
        bench = Bench(workdir, nodes)
        entry = next(web for web in bench.webs if web != bench.owner("echo"))
        bench.register("echo")
        bench.register("echo3", replicas=3, mode="vote")
        say(f"warm: {args.warm} triggers of echo (replicas 1) through {entry}, which does not own it ...")
        warm = bench.latencies("echo", entry, args.warm)
        say(f"vote: {args.warm} triggers of echo3 (replicas 3, vote) ...")
        vote = bench.latencies("echo3", entry, args.warm)
        say(f"cold: {args.cold} functions, registered, then triggered once each, twice over ...")
        names = [f"cold{i}" for i in range(args.cold)]
        for name in names:
            bench.register(name)
        session = requests.Session()
        first, second = [], []
        for rounds in (first, second):
            for i, name in enumerate(names):
                took, answer = bench.trigger(session, bench.webs[i % len(bench.webs)], name, i)
                bench.checked(took, answer, i)
                rounds.append(took)
        spread: dict[str, str] = {}
        for i in range(200):
            spread.setdefault(bench.owner(f"sat{i}"), f"sat{i}")
            if len(spread) == len(bench.webs):
                break
        for name in spread.values():
            bench.register(name, limits={"maxConcurrency": MAX_SANDBOXES})
        say(f"saturation: {args.clients} clients for {args.seconds:g} s on {sorted(spread.values())} ...")
        total, refused, elapsed = bench.saturate(sorted(spread.values()), args.clients, args.seconds)
        say("")
        say("| triggers | n | p50 ms | p90 ms | p99 ms | min ms | max ms |")
        say("|---|---|---|---|---|---|---|")
        say(row("warm, replicas 1 (target p50 <= 10)", warm))
        say(row("warm, replicas 3, vote", vote))
        say(row("cold: new function (code fetched, new sandbox)", first))
        say(row("cold: code cached, new sandbox (target p50 <= 150)", second))
        say("")
        rate = total / elapsed
        say(f"saturation: {total} triggers answered in {elapsed:.1f} s = {rate:.0f}/s over {len(bench.webs)} nodes "
            f"= {rate / len(bench.webs):.0f}/s per node; refused or failed: {dict(refused) or 'none'}")  # fmt: skip
        say(f"vote's cost: p50 {percentile(vote, 50) / percentile(warm, 50):.2f}x, "
            f"p99 {percentile(vote, 99) / percentile(warm, 99):.2f}x of replicas 1")  # fmt: skip
    finally:
        if not args.keep:
            local_cluster.down(workdir, say=lambda _: None)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
