"""The real runtime image, built with mmdebstrap from Debian's mirrors (SLOW: ~1 min and ~100 MB of
downloads the first time on a machine; then seconds, from the build cache).

It builds into the default build cache (``~/.cache/cortex-rm/images``, or ``$CORTEX_IMAGE_CACHE``),
the one ``cortex-rm image build`` uses, so CI's later steps and the demo reuse the image this test
built.  It unpacks the image as a node would and checks what containers will see: Debian 12's Java
17 and Python 3 inside, nothing of the host.  The figures (build time, sizes, unpack time) are
printed (``pytest -s`` shows them).  Needs root and mmdebstrap/zstd (``scripts/install``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cortex_rm.container.image_cache import ImageCache
from cortex_rm.container.runtime_image import (
    ImageRecipe,
    build_image,
    default_build_cache,
    sha256_of_file,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("mmdebstrap", "zstd", "unshare", "chroot")),
        reason="building the image needs root, mmdebstrap and zstd: run scripts/install as root",
    ),
]

RECIPE = ImageRecipe()


def run_inside(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted into ``root``, with a /proc of its own (Java finds its libraries through
    /proc/self/exe) in a private mount namespace that ends with it; a bare environment."""
    command = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root / 'proc'}", "chroot", str(root), *argv]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False
    )


def test_the_image_is_built_once_and_holds_java_17_and_python_3_and_nothing_of_the_host(tmp_path: Path) -> None:
    """Built (or found in the build cache) and verified; unpacked, its root has JAVA_HOME's java and
    the Python PySpark runs, both of which run there; Debian 12's os-release; none of the host's own
    files (its LXC configuration and tools, which the image's packages do not bring; its hostname);
    a second build comes from the cache."""
    cache = default_build_cache()
    started = time.monotonic()
    image = build_image(RECIPE, cache, print)
    build_s = time.monotonic() - started
    assert image.path == cache / "images" / f"{image.sha256}.tar.zst" and sha256_of_file(image.path) == image.sha256

    started = time.monotonic()
    root = ImageCache(tmp_path / "node").unpack(image.path, image.sha256, print)
    unpack_s = time.monotonic() - started
    print(
        f"\nruntime image {image.sha256}\n  {image.path}\n"
        f"  compressed {image.size / 1e6:.1f} MB, uncompressed tar {(image.uncompressed_size or 0) / 1e6:.1f} MB\n"
        f"  build: {image.build_seconds:.1f} s when it was built ({build_s:.1f} s this call); unpack {unpack_s:.1f} s"
    )

    java = root / RECIPE.java_home.lstrip("/") / "bin" / "java"
    assert java.is_file() and os.access(java, os.X_OK)
    assert (root / RECIPE.python.lstrip("/")).exists()
    assert 'VERSION_ID="12"' in (root / "etc/os-release").read_text()
    for host_only in (Path("/etc/lxc"), Path("/usr/bin/lxc-execute"), Path("/usr/bin/mmdebstrap")):
        assert host_only.exists() and not (root / host_only.relative_to("/")).exists(), host_only
    assert (root / "etc/hostname").read_text() == "localhost\n" and (root / "etc/resolv.conf").read_text() == ""

    version = run_inside(root, RECIPE.java_home + "/bin/java", "-version")
    assert version.returncode == 0 and 'version "17.' in version.stderr, version.stderr
    python = run_inside(root, RECIPE.python, "-c", "import sys, ssl, socket; print(sys.version_info[:2])")
    assert python.returncode == 0 and python.stdout.strip() == "(3, 11)", python.stderr

    again = build_image(RECIPE, cache, print)
    assert again == image
