"""Spark end to end: the same PySpark job on Cortex and on Spark's standalone cluster manager.

Both in client mode on this machine, with the same executor count and sizes:

* Cortex: a local cluster of three nodes (``cortex-rm local-cluster up --isolated``:
  each node in network and mount namespaces of its own; ``--no-isolated`` for nodes on
  loopback), executors in LXC containers rooted in the runtime image,
  ``spark-submit --master yarn``;
* standalone: Spark's own Master and one Worker started with pyspark's
  ``bin/spark-class`` (loopback only), ``spark-submit --master spark://...``.

Each job size (``--lines``: lines of generated text; 200,000 and 10,000,000 unless told)
runs ``--runs`` times after a first one; the wall time of spark-submit is measured.
Cortex's first job is shown apart (cold: every node localizes Spark's archive into its
PUBLIC cache; the runtime image is already unpacked, see ``runtime_image.py``).  Per size
it prints the warm medians, their ratio and their difference: Spark on YARN adds a fixed
start-up (the ApplicationMaster's JVM before any executor, the driver's wait for its
executors) that standalone has not, so the ratio depends on the job's length and the
difference is the overhead in seconds.  Target: Cortex warm <= 1.1 x standalone.

    .venv/bin/python bench/spark_compare.py [--runs 3] [--lines 200000 10000000] [--no-isolated]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cortex_rm import local_cluster  # noqa: E402
from cortex_rm.isolation import IsolatedNetwork  # noqa: E402
from tests.support.java import spark_home  # noqa: E402
from tests.support.spark import spark_submit_command, spark_submit_env  # noqa: E402

JOB = ROOT / "examples" / "wordcount.py"
PARTITIONS = 8
EXECUTORS = {
    "spark.executor.instances": "2",
    "spark.executor.memory": "512m",
    "spark.executor.cores": "1",
    "spark.driver.memory": "512m",
    "spark.ui.enabled": "false",
    "spark.pyspark.python": "/usr/bin/python3",
    "spark.pyspark.driver.python": sys.executable,
}


def job_args(lines: int) -> list[str]:
    return [str(lines), str(PARTITIONS)]


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - start
    if result.returncode != 0 or "WORD alpha" not in result.stdout:
        raise SystemExit(f"job failed ({result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")
    return elapsed


def run_cortex(workdir: Path, runs: int, sizes: list[int], isolated: bool) -> tuple[float, dict[int, list[float]]]:
    """The first (cold) job's time, at the first size, and each size's warm times."""
    local_cluster.up(workdir, 3, say=lambda _: None, isolated=isolated)
    try:
        network = IsolatedNetwork.load(workdir)
        client_ip = network.gateway if network is not None else "127.0.0.1"
        env = spark_submit_env(workdir / "hadoop-conf", {"SPARK_LOCAL_IP": client_ip})
        commands = {n: spark_submit_command(JOB, deploy_mode="client", conf=EXECUTORS, args=job_args(n)) for n in sizes}
        cold = timed(commands[sizes[0]], env)
        return cold, {n: [timed(commands[n], env) for _ in range(runs)] for n in sizes}
    finally:
        local_cluster.down(workdir, say=lambda _: None)


def wait_for_worker(master_web_port: int, timeout: float = 120) -> None:
    """Until the master's status page counts one alive worker."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{master_web_port}/json/", timeout=2) as r:
                if json.load(r).get("aliveworkers", 0) >= 1:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the standalone worker did not register with its master")


def run_standalone(workdir: Path, runs: int, sizes: list[int]) -> dict[int, list[float]]:
    home = spark_home()
    ports = local_cluster.free_ports(3)
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(workdir),
               JAVA_HOME=os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"))
    spark_class = str(home / "bin" / "spark-class")
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(ports[0]),
         "--webui-port", str(ports[1])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"spark://127.0.0.1:{ports[0]}"
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port", str(ports[2]),
         "--cores", "4", "--memory", "4g", url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        conf = {k: v for k, v in EXECUTORS.items() if k != "spark.executor.instances"}
        conf["spark.cores.max"] = EXECUTORS["spark.executor.instances"]  # 2 executors of 1 core
        command = [str(home / "bin" / "spark-submit"), "--master", url]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        wait_for_worker(ports[1])
        timed([*command, str(JOB), *job_args(sizes[0])], env)
        return {n: [timed([*command, str(JOB), *job_args(n)], env) for _ in range(runs)] for n in sizes}
    finally:
        for proc in (worker, master):
            proc.terminate()
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, nargs="+", default=[200_000, 10_000_000], help="job sizes")
    parser.add_argument("--no-isolated", dest="isolated", action="store_false", help="Cortex's nodes on loopback")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cortex-spark-bench-") as tmp:
        (Path(tmp) / "standalone").mkdir()
        standalone = run_standalone(Path(tmp) / "standalone", args.runs, args.lines)
        cold, cortex = run_cortex(Path(tmp) / "cortex", args.runs, args.lines, args.isolated)
    print(f"job: {JOB.name} LINES {PARTITIONS}, 2 executors x 1 core x 512m, client mode, "
          f"{args.runs} runs per size after a first one; Cortex {'isolated' if args.isolated else 'on loopback'}")
    first = statistics.median(standalone[args.lines[0]])
    print(f"cortex first (cold) at {args.lines[0]:,} lines: {cold:.2f} s, {cold / first:.2f} x standalone's median")
    for n in args.lines:
        s, c = statistics.median(standalone[n]), statistics.median(cortex[n])
        print(f"{n:>10,} lines  standalone median {s:7.2f} s (runs {', '.join(f'{x:.2f}' for x in standalone[n])})")
        print(f"{'':>17}cortex     median {c:7.2f} s (runs {', '.join(f'{x:.2f}' for x in cortex[n])})")
        print(f"{'':>17}warm ratio {c / s:.2f} (target <= 1.10), cortex - standalone {c - s:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
