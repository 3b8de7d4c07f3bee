"""Test dirs that unprivileged containers reach: their ancestors searchable by "other".

pytest makes ``/tmp/pytest-of-<user>`` 0700; the containers' root is an unprivileged host
uid that opens every mount source (``lxc_config.check_reachable``), so the tests that start
containers under ``tmp_path`` add ``o+x`` (search, not listing) on the way to it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_reachable(path: Path) -> Path:
    """Make ``path`` (if missing), add o+x to it and each of its ancestors that lacks it; ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
    return path
