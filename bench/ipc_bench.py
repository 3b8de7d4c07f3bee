"""IPC benchmark: small ApplicationClientProtocol calls against a real Cortex RM.

Starts one ``cortex-rm node`` (RM role only, SQLite state store) pinned to CPU 0,
submits one application through the REST API, then loads the RM's client port with
``getApplicationReport`` for it, authenticated with the admin's token (SASL TOKEN, as a
user's client), from worker processes pinned to CPU 1 (the load
generator is ``bench/ipc_load.py``: Hadoop's wire, pipelined calls on many
connections).  Prints calls/s and latency percentiles for two shapes of load:

* throughput: many connections, several calls in flight on each (as many JVMs
  polling reports at once);
* latency: a few connections, one call in flight each.

    .venv/bin/python bench/ipc_bench.py [--seconds 10]

Targets (issue 2): >= 20,000 calls/s on one core, p50 < 0.5 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipc_load import run_load  # noqa: E402

from cortex_rm.local_cluster import free_ports  # noqa: E402
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys  # noqa: E402

ACP = "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB"


def start_rm(workdir: Path, server_cpu: int | None) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    client, sched, web, tracker, nm_web = free_ports(5)
    config = workdir / "cortex.toml"
    config.write_text(
        f'[node]\nname = "bench"\nstate_dir = "{workdir}"\n'
        f'[resourcemanager]\naddress = "127.0.0.1:{client}"\nscheduler_address = "127.0.0.1:{sched}"\n'
        f'webapp_address = "127.0.0.1:{web}"\ntracker_address = "127.0.0.1:{tracker}"\n'
        f'[nodemanager]\nenabled = false\nwebapp_address = "127.0.0.1:{nm_web}"\n'
    )
    command = [sys.executable, "-m", "cortex_rm", "node", "--config", str(config)]
    if server_cpu is not None:
        command = ["taskset", "-c", str(server_cpu), *command]
    log = open(workdir / "daemon.out", "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    ready = workdir / "ready.json"
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the RM did not start; see {workdir / 'daemon.out'}")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())


def admin_token(workdir: Path) -> tuple[bytes, bytes]:
    """(identifier, password) of the RM admin's RM delegation token: calls made with it are
    authenticated (SASL TOKEN), as a user's are; an anonymous caller may read no report."""
    from cortex_rm.user_credential import load_credential

    rm = load_credential(workdir / "admin.token").rm
    return rm.identifier, rm.password


def submit_one(web: str, workdir: Path) -> str:
    """Submit one application over REST as the RM's admin (its credential in ``workdir``)."""
    from cortex_rm.user_credential import load_credential
    from cortex_rm.yarn.delegation import REST_TOKEN_HEADER

    headers = {REST_TOKEN_HEADER: load_credential(workdir / "admin.token").rest_header()}
    new = requests.post(f"http://{web}/ws/v1/cluster/apps/new-application", headers=headers, timeout=10).json()
    app_id = new["application-id"]
    body = {
        "application-id": app_id,
        "application-name": "bench",
        "application-type": "BENCH",
        "am-container-spec": {"commands": {"command": "sleep 1"}},
        "resource": {"memory": 1024, "vCores": 1},
    }
    r = requests.post(f"http://{web}/ws/v1/cluster/apps", json=body, headers=headers, timeout=10)
    r.raise_for_status()
    return app_id


def report_request(app_id: str) -> bytes:
    _, ts, seq = app_id.split("_")
    request = ys.GetApplicationReportRequestProto()
    request.application_id.cluster_timestamp = int(ts)
    request.application_id.id = int(seq)
    return request.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load shape")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = (cpus[0], set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    with tempfile.TemporaryDirectory(prefix="cortex-ipc-bench-") as tmp:
        proc, addresses = start_rm(Path(tmp), server_cpu)
        try:
            app_id = submit_one(addresses["resourcemanager.webapp_address"], Path(tmp))
            request = report_request(app_id)
            token = admin_token(Path(tmp))
            host, port = addresses["resourcemanager.address"].rsplit(":", 1)
            os.sched_setaffinity(0, client_cpus)  # workers inherit it
            shapes = [
                ("saturated", dict(connections=64, processes=1, depth=8)),
                ("many-conns", dict(connections=64, processes=1, depth=1)),
                ("pipelined", dict(connections=4, processes=1, depth=4)),
                ("pipelined-8", dict(connections=8, processes=1, depth=2)),
                ("light", dict(connections=4, processes=1, depth=1)),
            ]
            print(f"RM pinned to CPU {server_cpu}, load generator on CPU(s) {sorted(client_cpus)}; "
                  f"getApplicationReport({app_id}), {args.seconds:g} s per shape")
            print(f"{'shape':<12} {'conns':>5} {'depth':>5} {'calls/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6}")
            for name, shape in shapes:
                run_load(host, int(port), ACP, "getApplicationReport", request, seconds=1.0, token=token, **shape)  # warm-up
                r = run_load(
                    host, int(port), ACP, "getApplicationReport", request, seconds=args.seconds, token=token, **shape
                )
                print(
                    f"{name:<12} {shape['connections']:>5} {shape['depth']:>5} {r['calls_per_second']:>9.0f} "
                    f"{r['p50_ms']:>7.3f} {r['p90_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['errors']:>6}"
                )
                if r["first_error"]:
                    print(f"  first error: {r['first_error']}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
