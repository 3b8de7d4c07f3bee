"""Status page benchmark: every RM status page, timed over HTTP with 1,000 applications in the history.

An in-process ResourceManager (``RMContext`` over an ``ApplicationTable`` on the memory state
store, applications submitted through ``ApplicationTable.submit`` as the REST and IPC doors do),
40 nodes (half static, half volatile), and its real web site (``build_rest_site``: the same
``RestSite`` the daemon listens with) on 127.0.0.1.  ``--apps`` applications are submitted by
10 users; all but the last ``--in-progress`` are killed, so the history holds ended ones and the
RM some in progress.  A client thread (``http.client``, one kept-alive connection) then asks each
page ``--requests`` times, as the cluster's admin (who sees every application: the most work)
with HTTP Basic, and prints each page's p50 / p99 / max latency and its size.

    .venv/bin/python bench/status_page.py [--apps 1000] [--requests 300] [--in-progress 50]

Target (issue 14): every page answers in under 200 ms with 1,000 applications in the history.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, task, threads  # noqa: E402

from cortex_rm.allocator.app_access import AppAccess  # noqa: E402
from cortex_rm.allocator.app_model import SchedulerLimits, Submission  # noqa: E402
from cortex_rm.allocator.app_table import ApplicationTable  # noqa: E402
from cortex_rm.allocator.nodes import NodeTable  # noqa: E402
from cortex_rm.allocator.queues import QueueTree  # noqa: E402
from cortex_rm.allocator.rm_context import RMContext  # noqa: E402
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState  # noqa: E402
from cortex_rm.allocator.user_credentials import UserCredentials  # noqa: E402
from cortex_rm.yarn.ids import NodeId  # noqa: E402
from cortex_rm.yarn.resources import Resource  # noqa: E402
from cortex_rm.yarn.tokens import MasterKey  # noqa: E402
from cortex_rm.yarn_api.delegation_tokens import to_url_string  # noqa: E402
from cortex_rm.yarn_api.rest import build_rest_site  # noqa: E402
from cortex_rm.yarn_api.user_auth import UserAuthenticator  # noqa: E402

ADMIN = "yarn-admin"
USERS = [f"user{i}" for i in range(10)]


async def build(reactor: Any, apps_wanted: int, in_progress: int) -> tuple[Any, str, str]:
    """The RM's site and (admin's Authorization header, an application id) for the client."""
    now_ms = int(reactor.seconds() * 1000)
    store = MemoryStateStore()
    apps = await ApplicationTable.recover(reactor, store, QueueTree(), SchedulerLimits())
    nodes = NodeTable()
    for i in range(40):
        node = nodes.register(NodeId(f"10.0.{i // 200}.{i % 200 + 1}", 45454), f"10.0.0.{i + 1}:8042",
                              Resource(16384, 8), now_ms)  # fmt: skip
        node.labels = frozenset({"static" if i % 2 else "volatile"})
    rm = RMContext(reactor, apps, nodes, now_ms)
    for i in range(apps_wanted):
        user = USERS[i % len(USERS)]
        app_id = await apps.new_application(user)
        await apps.submit(Submission(app_id=app_id, user=user, name=f"job-{i:04d}", app_type="SPARK"))
        if i < apps_wanted - in_progress:
            while not await apps.kill(app_id, "benchmark history"):
                pass
    credentials = UserCredentials(MasterKey(3, b"d" * 20), store, StoredState(), lambda: int(reactor.seconds() * 1000))
    auth = UserAuthenticator(credentials)
    ident = await credentials.issue(ADMIN)
    [(_, rm_token), _] = auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
    header = "Basic " + base64.b64encode(f"{ADMIN}:{to_url_string(rm_token)}".encode()).decode()
    site = build_rest_site(rm, version="bench", auth=auth, access=AppAccess([ADMIN]))
    last = max(rm.apps, key=lambda a: a.app_id.id)
    return site, header, str(last.app_id)


def measure(port: int, header: str, pages: list[str], requests: int) -> dict[str, tuple[list[float], int, int]]:
    """Each page ``requests`` times on one kept-alive connection: latencies (ms), status, body size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    results: dict[str, tuple[list[float], int, int]] = {}
    for path in pages:
        times: list[float] = []
        status = size = 0
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": header})
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            status, size = response.status, len(body)
        results[path] = (times, status, size)
    conn.close()
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def main(reactor: Any, args: argparse.Namespace) -> None:
    site, header, app_id = await build(reactor, args.apps, args.in_progress)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    pages = [
        "/cluster/", "/cluster/login", "/cluster/nodes", "/cluster/apps", f"/cluster/apps?page={args.apps // 50}",
        "/cluster/apps?state=running", "/cluster/apps?state=finished&page=10", f"/cluster/app/{app_id}",
        "/cluster/earnings",
    ]  # fmt: skip
    results = await threads.deferToThread(measure, port.getHost().port, header, pages, args.requests)
    await port.stopListening()
    print(f"{args.apps} applications ({args.in_progress} in progress), 40 nodes, {args.requests} requests a page, "
          f"as the admin (sees every application); thread {threading.active_count()}")  # fmt: skip
    print(f"{'page':45} {'status':>6} {'bytes':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    worst = 0.0
    for path, (times, status, size) in results.items():
        p99 = percentile(times, 99)
        worst = max(worst, p99)
        print(f"{path:45} {status:>6} {size:>7} {statistics.median(times):7.2f} {p99:7.2f} {max(times):7.2f}")
    print(f"worst p99 {worst:.2f} ms (target < 200 ms: {'met' if worst < 200 else 'NOT met'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--in-progress", type=int, default=50)
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
