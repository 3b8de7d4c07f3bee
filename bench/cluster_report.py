"""Issue 9's figures in one run: the file system, the runtime image and Spark, on local clusters.

Runs the three benchmarks of issue 9 one after the other, each on a local cluster of its
own (their progress is shown as it comes), then prints their figures together:

1. ``fs_throughput.py``: WebHDFS write and read of a 1 GiB file beside the local disk's
   own rate (target >= 0.5 x);
2. ``runtime_image.py``: the image's size, and how long each node takes to fetch it from
   the file system and unpack it (``--build`` also times a fresh build with mmdebstrap);
3. ``spark_compare.py``: the same PySpark job, at two sizes, on isolated Cortex nodes
   and on Spark's standalone cluster manager, the first (cold) Cortex job apart from the
   warm ones (target: warm <= 1.1 x standalone).

About 12 minutes on this machine (2 cores).  Run as root (the isolated nodes, the page
cache drop and the image need it):

    .venv/bin/python bench/cluster_report.py [--build] [--runs 3] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def run(title: str, script: str, args: list[str]) -> tuple[int, list[str]]:
    """Run one benchmark, its output shown as it comes and kept; its exit code and lines."""
    print(f"\n=== {title}: bench/{script} {' '.join(args)}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        print(f"  {line}", end="", flush=True)
        lines.append(line.rstrip("\n"))
    code = proc.wait()
    print(f"=== {title}: {'done' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.0f} s",
          flush=True)
    return code, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="also time a fresh build of the runtime image")
    parser.add_argument("--runs", type=int, default=3, help="warm Spark jobs on each cluster manager (default 3)")
    parser.add_argument("--size-mib", type=int, default=1024, help="the file system's test file (default 1024)")
    args = parser.parse_args()

    started = time.monotonic()
    fs_code, fs = run("file system", "fs_throughput.py", ["--size-mib", str(args.size_mib)])
    image_code, image = run("runtime image", "runtime_image.py", ["--nodes", "3", *(["--build"] if args.build else [])])
    spark_code, spark = run("Spark", "spark_compare.py", ["--runs", str(args.runs)])

    print(f"\n# Issue 9's figures ({time.monotonic() - started:.0f} s in all)\n")
    print("## File system (3 nodes on loopback)\n")
    print("\n".join(line for line in fs if line.startswith("|")) if fs_code == 0 else "failed: see above")
    print("\n## Runtime image\n")
    summary = [line for line in image if line.startswith(("build:", "image ", "cluster of ", "  node"))]
    print("\n".join(summary) if image_code == 0 else "failed: see above")
    print("\n## Spark: Cortex (isolated nodes) vs standalone\n")
    summary = spark[next((i for i, line in enumerate(spark) if line.startswith("job:")), 0) :]
    print("\n".join(summary) if spark_code == 0 else "failed: see above")
    return max(fs_code, image_code, spark_code)


if __name__ == "__main__":
    raise SystemExit(main())
