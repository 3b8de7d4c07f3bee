"""Debian's ``chromium``, headless, as a test's browser: the DOM a page shows, and its screenshot.

Each run is a fresh browser with a private profile under the test's tmp dir (``--user-data-dir``),
bounded by a timeout; ``--no-sandbox`` because the tests run as root, where Chromium's sandbox
will not start.  No JavaScript is needed by the pages it opens (``--dump-dom`` waits for the load).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TIMEOUT_S = 90
WINDOW = "1280,1024"


def chromium_binary() -> str:
    """The ``chromium`` on PATH (scripts/install installs Debian's); AssertionError naming the fix if none."""
    found = shutil.which("chromium")
    assert found is not None, "Debian's chromium is not installed: run scripts/install (apt-get install chromium)"
    return found


def _run(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={WINDOW}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def dump_dom(url: str, profile: Path) -> str:
    """The page at ``url`` as Chromium serialises its DOM once loaded."""
    done = _run(profile, "--dump-dom", url)
    assert done.returncode == 0, f"chromium --dump-dom {url} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def screenshot(url: str, png: Path, profile: Path, keep: Path | None = None) -> Path:
    """A PNG of the page at ``url`` in a 1280x1024 window, written to ``png``; with ``keep`` (a directory, e.g.
    pytest's basetemp: a passing test's tmp_path is removed) copied there too, and that copy's path printed (so
    the test's output names it) and returned."""
    done = _run(profile, f"--screenshot={png}", url)
    assert done.returncode == 0 and png.exists(), f"chromium --screenshot {url} failed: {done.stderr[-2000:]}"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), f"{png} is not a PNG"
    if keep is None:
        return png
    kept = keep / png.name
    shutil.copyfile(png, kept)
    print(f"status page screenshot: {png} (copied to {kept})")
    return kept
