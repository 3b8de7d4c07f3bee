"""`cortex-rm contributor install --root DIR` and `uninstall --root DIR` as real processes, checked with the
real tools: systemd's own `systemd-analyze verify` accepts the unit without a warning, the config loads with
`load_config` and carries the caps, the id range avoids the root's /etc/subuid and /etc/subgid, and uninstall
leaves DIR byte for byte as it was (every path, type, mode and content)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cortex_rm.config import load_config
from cortex_rm.container.id_ranges import DEFAULT_BASE, DEFAULT_COUNT, IdRange, check_against_subordinate_files
from cortex_rm.contributor_files import unit_text
from tests.support.ring_daemons import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: systemd)"),
]

RM_ID = "0123456789abcdef0123456789abcdef01234567"
INSTALL = ["--introducer", "127.0.0.1:7946", "--resource-manager", RM_ID, "--cpus", "2", "--memory-mb", "2048",
           "--disk-gb", "10"]  # fmt: skip


def cortex(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cortex_rm ARGS`` of this checkout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cortex_rm", *args], capture_output=True, text=True, env=env, timeout=60)


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``root``: its type, permission bits and content (a link's target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[str(path.relative_to(root))] = ("link", 0, os.readlink(path).encode())
        elif stat.S_ISDIR(info.st_mode):
            found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode), b"")
        else:
            found[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def verify(unit: Path) -> tuple[int, list[str]]:
    """`systemd-analyze verify`'s exit status for ``unit`` and what it says about it (checked in place, not
    under --root: its ExecStart is this machine's real program, which verify looks for)."""
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]


def test_install_writes_a_unit_systemd_accepts_and_a_config_with_the_caps(tmp_path: Path) -> None:
    """Into an empty root: the unit verifies without a warning, the config loads with the caps, and uninstall
    leaves the root empty again."""
    root = tmp_path / "root"
    root.mkdir()
    done = cortex("contributor", "install", "--root", str(root), *INSTALL)
    assert done.returncode == 0, done.stderr
    unit = root / "etc/systemd/system/cortex-rm.service"
    assert verify(unit) == (0, [])
    config = load_config(root / "etc/cortex-rm/cortex.toml")
    assert (config.nodemanager.vcores, config.nodemanager.memory_mb, config.nodemanager.disk_gb) == (2, 2048, 10)
    assert str(config.ring.introducers[0]) == "127.0.0.1:7946"
    assert "systemctl daemon-reload && systemctl enable --now cortex-rm.service" in done.stdout

    done = cortex("contributor", "uninstall", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert tree(root) == {}


def test_the_verify_check_sees_a_broken_directive(tmp_path: Path) -> None:
    """The check above can fail: a unit with one value systemd cannot parse is reported."""
    unit = tmp_path / "cortex-rm.service"
    unit.write_text(unit_text([sys.executable, "-m", "cortex_rm", "node"]).replace("KillMode=mixed", "KillMode=gently"))
    status, said = verify(unit)
    assert status == 0 and any("kill mode" in line for line in said)


def test_a_program_path_with_a_space_and_a_percent_is_written_as_systemd_reads_it(tmp_path: Path) -> None:
    """ExecStart's quoting and %-escaping are systemd's: verify finds the program at its odd path."""
    odd = tmp_path / "my venv 100%" / "cortex-rm"
    odd.parent.mkdir()
    odd.write_text("#!/bin/sh\n")
    odd.chmod(0o755)
    unit = tmp_path / "cortex-rm.service"
    unit.write_text(unit_text([str(odd), "node"]))
    assert verify(unit) == (0, [])
    odd.unlink()  # and it does look for it there
    status, said = verify(unit)
    assert status != 0 and any(f"{odd} is not executable" in line for line in said)


def test_install_into_a_populated_root_keeps_others_files_and_uninstall_restores_it(tmp_path: Path) -> None:
    """Others' subuid/subgid lines, units and files are left alone; the id range steps past an entry that meets
    the default one; a second install is refused until --force; uninstall restores the root exactly."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")
    (root / "etc/subuid").write_text(f"root:100000:65536\nlxd:{DEFAULT_BASE}:65536\n")
    (root / "etc/subgid").write_text("root:100000:65536\n")
    (root / "etc/subgid").chmod(0o600)
    (root / "var/lib").mkdir(parents=True)
    before = tree(root)

    assert cortex("contributor", "install", "--root", str(root), *INSTALL).returncode == 0
    config = load_config(root / "etc/cortex-rm/cortex.toml")
    ids = IdRange.parse(config.nodemanager.container_id_range)
    assert ids == IdRange(DEFAULT_BASE + DEFAULT_COUNT, DEFAULT_COUNT)
    check_against_subordinate_files(ids, [root / "etc/subuid", root / "etc/subgid"])  # what the NodeManager checks
    installed = tree(root)

    again = cortex("contributor", "install", "--root", str(root), *INSTALL[:4], "--cpus", "1")
    assert again.returncode == 2
    assert "exists" in again.stderr and "--force" in again.stderr
    assert tree(root) == installed

    forced = cortex("contributor", "install", "--root", str(root), *INSTALL[:4], "--cpus", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_config(root / "etc/cortex-rm/cortex.toml").nodemanager.vcores == 1

    done = cortex("contributor", "uninstall", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert tree(root) == before
    nothing = cortex("contributor", "uninstall", "--root", str(root))
    assert nothing.returncode == 2 and "nothing installed" in nothing.stderr
