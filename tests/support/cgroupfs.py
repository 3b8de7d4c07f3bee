"""A directory tree under ``tmp_path`` standing in for /sys/fs/cgroup, with the kernel's rule for removal.

Each cgroup is a directory holding control files, as in cgroupfs (``cgroup.procs`` listing its
processes, and one more control file).  cgroupfs removes a cgroup with ``rmdir`` although those files
are in it, but only when no process is in it and it has no child cgroup (else EBUSY); a plain
directory with files cannot be removed that way, so ``FakeCgroupFs.rmdir`` is that rule, for the code
under test to be given in place of ``os.rmdir``.  The real cgroupfs is in
``tests/integration/test_nm_leftovers.py``.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

#: Hierarchies as on a cgroup v1 host with cgroup2 at ``unified``.
HIERARCHIES = ("memory", "cpu", "pids", "systemd", "unified")


class FakeCgroupFs:
    """The cgroup root ``root``: ``make`` a cgroup (with its ancestors) in hierarchies, ``rmdir`` one."""

    def __init__(self, root: Path, hierarchies: Iterable[str] = HIERARCHIES) -> None:
        self.root = root
        self.hierarchies = list(hierarchies)
        for name in self.hierarchies:
            self._cgroup(root / name)
        #: Every cgroup ``rmdir`` was asked to remove, in order.
        self.asked: list[Path] = []

    @staticmethod
    def _cgroup(path: Path, pids: Iterable[int] = ()) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        (path / "notify_on_release").write_text("0\n")

    def make(self, name: str, pids: Iterable[int] = (), hierarchies: Iterable[str] | None = None) -> None:
        """Cgroup ``name`` (and each ancestor) in ``hierarchies`` (all by default), ``pids`` in it."""
        for hierarchy in self.hierarchies if hierarchies is None else hierarchies:
            parts = name.split("/")
            for depth in range(1, len(parts)):
                if not (self.root / hierarchy / "/".join(parts[:depth])).exists():
                    self._cgroup(self.root / hierarchy / "/".join(parts[:depth]))
            self._cgroup(self.root / hierarchy / name, pids)

    def exists(self, name: str) -> list[str]:
        """The hierarchies cgroup ``name`` is in."""
        return [h for h in self.hierarchies if (self.root / h / name).is_dir()]

    def rmdir(self, path: Path) -> None:
        """cgroupfs's rmdir: EBUSY while a process or a child cgroup is in it, else it goes with its files."""
        self.asked.append(Path(path))
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "no such cgroup", str(path))
        entries = list(Path(path).iterdir())
        if any(e.is_dir() for e in entries) or (Path(path) / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "cgroup busy", str(path))
        shutil.rmtree(path)
