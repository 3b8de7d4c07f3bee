"""The real runtime image, unpacked once per machine, for the tests that run LXC containers.

``test_image_root()`` builds the standard image (``runtime_image.build_image``: a
cache hit by recipe hash under ``~/.cache/cortex-rm/images`` once any build has
made it; on a fresh machine one mmdebstrap build, about a minute) and unpacks it
with an ``ImageCache`` in ``/var/tmp/cortex-rm-test-roots`` (idempotent: about
2 s the first time, a marker check after).  The root is the same directory for
every test and every run, and no test may write into it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cortex_rm.container.image_cache import ImageCache
from cortex_rm.container.runtime_image import ImageRecipe, build_image, default_build_cache

#: Where the tests' ImageCache keeps its roots (``$CORTEX_TEST_ROOTS`` overrides it).
TEST_ROOTS_ENV = "CORTEX_TEST_ROOTS"


def test_roots_dir() -> Path:
    """``$CORTEX_TEST_ROOTS``, else ``/var/tmp/cortex-rm-test-roots``: not under the home
    directory, which is 0700 for root, while unprivileged containers must reach the root."""
    if os.environ.get(TEST_ROOTS_ENV):
        return Path(os.environ[TEST_ROOTS_ENV])
    return Path("/var/tmp/cortex-rm-test-roots")


def _say(line: str) -> None:
    print(f"[runtime image] {line}", flush=True)


@functools.cache
def test_image_root() -> Path:
    """The unpacked root of the standard image (built and unpacked on first use; once per process)."""
    image = build_image(ImageRecipe(), default_build_cache(), _say)
    return ImageCache(test_roots_dir()).unpack(image.path, image.sha256, _say)


test_image_root.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever pytest thinks of its name
test_roots_dir.__test__ = False  # type: ignore[attr-defined]
