"""``reap_left_behind`` over a fake process and cgroup layer: what it kills first, and what it deletes.

The left containers' directories (config and ``record.json``, as ``LxcRuntime`` writes them) are real
files; their pids cgroups are directories under a temporary cgroup root whose ``cgroup.procs`` lists
made-up pids, and ``FakeKernel`` is the SIGKILL: it takes a pid out of its cgroup after the number of
SIGKILLs the test gives it (a real LXC reap runs in ``tests/integration/test_nm_leftovers.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from cortex_rm.container.id_ranges import BLOCK, IdRange
from cortex_rm.container.lxc_leftovers import deletable, reap_left_behind, write_record
from cortex_rm.container.runtime import ContainerSpec

IDS = IdRange(base=5 * BLOCK, count=4 * BLOCK)
APPLICATION = "application_1700000000000_0001"


class FakeKernel:
    """The pids cgroups of left containers: SIGKILL takes a pid out of its cgroup after ``survives`` more."""

    def __init__(self, cgroup_root: Path) -> None:
        self.cgroup_root = cgroup_root
        self.cgroup_of: dict[int, str] = {}
        self.survives: dict[int, int] = {}
        #: Per SIGKILL call: the pids signalled and which watched paths existed at that moment.
        self.calls: list[tuple[list[int], dict[Path, bool]]] = []
        self.watched: list[Path] = []

    def add(self, cgroup: str, pid: int, survives: int = 0) -> None:
        self.cgroup_of[pid], self.survives[pid] = cgroup, survives
        self._write(cgroup)

    def _write(self, cgroup: str) -> None:
        """The cgroup's ``cgroup.procs``; none once it is empty (so that, as in cgroupfs, it can be removed)."""
        procs = self.cgroup_root / "pids" / cgroup / "cgroup.procs"
        procs.parent.mkdir(parents=True, exist_ok=True)
        pids = [pid for pid, c in self.cgroup_of.items() if c == cgroup]
        if pids:
            procs.write_text("".join(f"{pid}\n" for pid in pids))
        else:
            procs.unlink(missing_ok=True)

    def kill(self, pids: Iterable[int], sig: int) -> None:
        pids = list(pids)
        self.calls.append((pids, {p: p.exists() for p in self.watched}))
        for pid in pids:
            if self.survives[pid] > 0:
                self.survives[pid] -= 1
            elif pid in self.cgroup_of:
                self._write(self.cgroup_of.pop(pid))


class Node:
    """A runtime base dir, its NodeManager's local dir and a fake cgroup root, under ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path / "lxc"
        self.local = tmp_path / "local"
        self.local.mkdir()
        self.kernel = FakeKernel(tmp_path / "cgroup")

    def left(
        self, number: int, work_dir: Path | None = None, pids: Iterable[tuple[int, int]] = (), app: str = "cortex/b5"
    ) -> Path:
        """A container a killed runtime left (its record names ``work_dir``, made with a file in it unless it
        exists) in application cgroup ``app``; its processes ``pids`` (pid, SIGKILLs it survives); its work dir."""
        cid = f"container_1700000000000_0001_01_{number:06d}"
        work = work_dir if work_dir is not None else self.local / "appcache" / APPLICATION / cid
        if not os.path.lexists(work):
            work.mkdir(parents=True)
            (work / "launch_container.sh").write_text("sleep 1000\n")
        container_dir = self.base / "containers" / cid
        container_dir.mkdir(parents=True)
        cgroup = f"{app}/{cid}"
        (container_dir / "config").write_text(f"lxc.cgroup.dir.container = {cgroup}\n")
        spec = ContainerSpec(
            container_id=cid, work_dir=work, log_dir=self.local / "logs" / cid, command=["/bin/true"], env={},
            memory_limit_bytes=1 << 27, pids_limit=64, application=APPLICATION,
        )  # fmt: skip
        write_record(container_dir, spec, cgroup)
        (self.kernel.cgroup_root / "pids" / cgroup).mkdir(parents=True, exist_ok=True)
        for pid, survives in pids:
            self.kernel.add(cgroup, pid, survives)
        return work

    def reap(self, wait_s: float = 10.0, roots: Iterable[Path] | None = None) -> list[str]:
        roots = [self.local] if roots is None else list(roots)
        return reap_left_behind(self.base, self.kernel.cgroup_root, IDS, roots, wait_s=wait_s, kill=self.kernel.kill)

    def containers(self) -> list[str]:
        return sorted(p.name for p in (self.base / "containers").iterdir())


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The text of every event logged while the test runs."""
    texts: list[str] = []

    def observe(event: LogEvent) -> None:
        texts.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield texts
    globalLogPublisher.removeObserver(observe)


def test_every_left_container_is_killed_before_anything_is_deleted(tmp_path: Path) -> None:
    """Three containers of one application (one uid, which owns the application dir): the first one's
    process survives two SIGKILLs.  Every SIGKILL is sent while all three work dirs still exist (none is
    deleted while another container of the application may run); then all three are removed."""
    node = Node(tmp_path)
    works = [node.left(1, pids=[(101, 2), (102, 0)]), node.left(2, pids=[(201, 0)]), node.left(3, pids=[(301, 0)])]
    node.kernel.watched = works
    reaped = node.reap()
    assert len(reaped) == 3 and node.containers() == []
    assert len(node.kernel.calls) == 3
    assert sorted(node.kernel.calls[0][0]) == [101, 102, 201, 301]  # one round kills every container
    assert [pids for pids, _ in node.kernel.calls[1:]] == [[101], [101]]
    assert all(all(existed.values()) for _, existed in node.kernel.calls)
    assert not any(w.exists() for w in works)
    assert not (node.kernel.cgroup_root / "pids" / "cortex" / "b5").exists()  # theirs and their application's


def test_a_process_that_outlives_the_wait_keeps_every_left_container(tmp_path: Path, warnings: list[str]) -> None:
    """One process never dies: no work dir, container dir or cgroup of any left container is removed (the
    next start tries again), and the warning names the survivor."""
    node = Node(tmp_path)
    works = [node.left(1, pids=[(101, 10**9)]), node.left(2, pids=[(201, 0)])]
    assert node.reap(wait_s=0.05) == []
    assert all(w.exists() for w in works) and len(node.containers()) == 2
    assert all((node.kernel.cgroup_root / "pids" / "cortex" / "b5" / c).is_dir() for c in node.containers())
    assert any("outlived SIGKILL" in t and "101" in t and "nothing removed" in t for t in warnings)


def test_the_node_cgroup_trees_of_the_range_go_after_the_containers_but_a_kept_ones(tmp_path: Path) -> None:
    """A killed node's containers in ``cortex/n5/b5``, an empty ``cortex/n5/b6`` (no container dir names it any
    more) and an empty ``cortex/n7`` (an older node's, inside this range): all gone after the reap, but the
    cgroup of a container NodeManager recovery took back (``keep``), empty or not, stays with its ancestors;
    ``cortex/n9`` (another node's range) and ``cortex`` stay."""
    node = Node(tmp_path)
    node.left(1, pids=[(101, 0)], app="cortex/n5/b5")
    node.left(2, app="cortex/n5/b5")
    kept = node.left(3, app="cortex/n5/b7").name
    pids = node.kernel.cgroup_root / "pids"
    for name in ("cortex/n5/b6", "cortex/n7/b7", "cortex/n9/b9"):
        (pids / name).mkdir(parents=True)
    reaped = reap_left_behind(node.base, node.kernel.cgroup_root, IDS, [node.local], kill=node.kernel.kill, keep=[kept])
    assert len(reaped) == 2
    assert sorted(p.name for p in (pids / "cortex").iterdir()) == ["n5", "n9"]
    assert sorted(p.relative_to(pids / "cortex").as_posix() for p in (pids / "cortex" / "n5").rglob("*")) == [
        "n5/b7", f"n5/b7/{kept}"
    ]
    assert (pids / "cortex" / "n9" / "b9").is_dir()


def test_a_work_dir_outside_the_nodemanagers_dirs_is_not_deleted(tmp_path: Path, warnings: list[str]) -> None:
    """A record whose work dir is outside the NodeManager's dirs (or is one of them, or climbs out with
    ``..``): the directory and its files survive and the refusal is logged; the container itself is reaped."""
    node = Node(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    outside = node.left(1, tmp_path / "elsewhere" / "precious")
    node.left(2, node.local)
    climbing = node.local / "appcache" / ".." / ".." / "elsewhere" / "also-precious"
    climbing_target = tmp_path / "elsewhere" / "also-precious"
    climbing_target.mkdir()
    (node.local / "appcache").mkdir()
    (climbing_target / "data").write_text("keep")
    node.left(3, climbing)
    inside = node.left(4)
    assert len(node.reap()) == 4 and node.containers() == []
    assert (outside / "launch_container.sh").exists() and (climbing_target / "data").exists()
    assert node.local.is_dir() and not inside.exists()
    refused = [t for t in warnings if "not deleted" in t]
    assert len(refused) == 3
    assert any(str(outside) in t for t in refused) and any(str(climbing) in t for t in refused)


def test_a_symlinked_work_dir_is_not_followed(tmp_path: Path, warnings: list[str]) -> None:
    """A work dir that is a symlink (to a directory outside), one under a symlinked directory that leads
    outside, and a symlink inside a work dir: none of their targets loses a file, and the symlinks
    themselves are never deleted through."""
    node = Node(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("keep")
    app = node.local / "appcache" / APPLICATION
    app.mkdir(parents=True)
    (app / "link").symlink_to(victim)  # the work dir itself is a symlink
    node.left(1, app / "link")
    (node.local / "appcache" / "swapped").symlink_to(tmp_path)  # a directory on the path leads outside
    (tmp_path / "victim2").mkdir()
    (tmp_path / "victim2" / "data").write_text("keep")
    node.left(2, node.local / "appcache" / "swapped" / "victim2")
    inside = node.left(3)
    (inside / "escape").symlink_to(victim)  # inside a work dir: the link goes, not what it names
    assert len(node.reap()) == 3
    assert (victim / "data").read_text() == "keep" and (tmp_path / "victim2" / "data").read_text() == "keep"
    assert (app / "link").is_symlink() and not inside.exists()
    assert len([t for t in warnings if "not deleted" in t]) == 2


def test_a_root_given_through_a_symlink_is_compared_by_its_real_path(tmp_path: Path) -> None:
    """The NodeManager's dir named through a symlink (as a configured path may be): a work dir under its
    real path, or under a symlinked directory that stays inside, is deleted."""
    node = Node(tmp_path)
    (tmp_path / "local-link").symlink_to(node.local)
    plain = node.left(1)
    (node.local / "inner").mkdir()
    (node.local / "via").symlink_to(node.local / "inner")
    via = node.left(2, node.local / "via" / "work2")
    assert len(node.reap(roots=[tmp_path / "local-link"])) == 2
    assert not plain.exists() and not via.exists() and (node.local / "via").is_symlink()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("local/a/b", "local/a/b"),
        ("local/a", "local/a"),
        ("local", None),  # a root itself: only what is strictly under one
        ("other/a", None),
        ("local/../other/a", None),
        ("localx/a", None),  # a sibling whose name starts like a root's
        ("link-out/a", None),  # its parent resolves outside
        ("local/link-in/a", "local/inner/a"),  # its parent resolves inside
        ("local/symlink", None),  # the final component is a symlink
    ],
)
def test_deletable(tmp_path: Path, path: str, expected: str | None) -> None:
    """Which paths a reap may delete, given the real root ``local``: the parent resolved, the name not."""
    for d in ("local/inner", "other", "localx"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "link-out").symlink_to(tmp_path / "other")
    (tmp_path / "local" / "link-in").symlink_to(tmp_path / "local" / "inner")
    (tmp_path / "local" / "symlink").symlink_to(tmp_path / "local" / "inner")
    found = deletable(tmp_path / path, [Path(os.path.realpath(tmp_path / "local"))])
    real = Path(os.path.realpath(tmp_path))
    assert found == (None if expected is None else real / expected)
