"""The runtime image: how long it takes to build, how big it is, and how long a node takes to
fetch it from the file system and unpack it.

1. ``--build``: builds the image of the default recipe with mmdebstrap into a fresh cache
   (as root; packages come from Debian's mirrors), timed, with the archive's size and its
   uncompressed size.  Without ``--build`` the cached image is used (``cortex-rm image build``).
2. Starts a local cluster of ``--nodes`` daemons (``cortex_rm.local_cluster.up``, which
   uploads the image and waits until every node has it), and prints what each node logged:
   the archive fetched from the file system (MB, seconds) and unpacked (seconds), and the
   time from ``image push`` returning to the last node being ready.

Usage: .venv/bin/python bench/runtime_image.py [--build] [--nodes 3]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm import local_cluster  # noqa: E402
from cortex_rm.container.runtime_image import ImageRecipe, build_image, default_build_cache  # noqa: E402

FETCHED = re.compile(
    r"runtime image (?P<sha>[0-9a-f]{64}) fetched \((?P<mb>\d+) MB in (?P<fetch>[\d.]+) s\) "
    r"and unpacked in (?P<unpack>[\d.]+) s"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="build the image anew into a fresh cache and time it")
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cortex-image-bench-") as tmp:
        if args.build:
            started = time.monotonic()
            image = build_image(ImageRecipe(), Path(tmp) / "build-cache", lambda line: print(f"  {line}"))
            print(f"build: {time.monotonic() - started:.1f} s (mmdebstrap, then zstd -{ImageRecipe().zstd_level})")
        else:
            image = build_image(ImageRecipe(), default_build_cache(), lambda _: None)
        unpacked = f"{image.uncompressed_size / 1e6:.1f} MB" if image.uncompressed_size else "unknown"
        print(f"image {image.sha256}: archive {image.size / 1e6:.1f} MB, uncompressed {unpacked}")

        workdir = Path(tmp) / "cluster"
        lines: list[tuple[float, str]] = []

        def say(line: str) -> None:
            lines.append((time.monotonic(), line))

        started = time.monotonic()
        local_cluster.up(workdir, args.nodes, timeout=120, say=say, spark_archive=False)
        ready = time.monotonic()
        try:
            pushed = next((t for t, line in lines if line.startswith("waiting for") and "fetch and unpack" in line), started)
            print(f"cluster of {args.nodes} up in {ready - started:.1f} s; push done -> every node ready: {ready - pushed:.1f} s")
            for node in sorted(workdir.glob("node*")):
                log = (node / "logs" / "daemon.out").read_text(errors="replace")
                found = FETCHED.search(log)
                if found is None:
                    print(f"  {node.name}: no fetch logged (it had the image already?)")
                    continue
                print(
                    f"  {node.name}: fetched {found['mb']} MB in {found['fetch']} s, unpacked in {found['unpack']} s"
                )
        finally:
            local_cluster.down(workdir, say=lambda _: None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
