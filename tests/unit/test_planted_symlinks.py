"""A container that plants symlinks (or swaps dirs) where the root NodeManager works gets nothing.

The "container" here is the test process planting entries in tmp dirs; entries a container
would own are chowned to ``CONTAINER_UID`` (the tests run as root, like the NodeManager).
Each test checks that nothing outside is written, read or chowned and that the step is
refused with an error naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortex_rm.container import container_files
from cortex_rm.container.launch import ContainerPaths, container_paths
from cortex_rm.container.local_resources import LocalResource, ResourceType, ResourceUrl
from cortex_rm.container.lxc_sandbox import give_to
from cortex_rm.container.pinned_dirs import PlantedPathError
from cortex_rm.container.resource_files import Requester, default_fetchers, fetch_into_cache, link_into
from cortex_rm.container.runtime import ContainerSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowning as a container would needs root")

CONTAINER_UID = 100000
APP = "application_1_0001"
CID = "container_1_0001_01_000002"


def layout(tmp_path: Path) -> tuple[ContainerPaths, Path]:
    """The container's paths under ``tmp_path``, its app dir made and given to the container
    (as ``give_to`` does), and an ``outside`` dir standing for /etc."""
    paths = container_paths([tmp_path / "local"], [tmp_path / "logs"], "alice", APP, CID, 0)
    app_dir = paths.work_dir.parent
    app_dir.mkdir(parents=True)
    os.chown(app_dir, CONTAINER_UID, CONTAINER_UID)
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "shadow").write_text("root:secret\n")
    return paths, outside


def untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["shadow"]
    assert (outside / "shadow").read_text() == "root:secret\n"
    assert outside.stat().st_uid == 0 and (outside / "shadow").stat().st_uid == 0


def spec(paths: ContainerPaths) -> ContainerSpec:
    return ContainerSpec(
        container_id=CID, work_dir=paths.work_dir, log_dir=paths.log_dir, command=["true"], env={},
        memory_limit_bytes=1 << 30, pids_limit=10, own_dirs=paths.app_dirs, application=APP,
    )


def test_a_symlink_at_the_work_dir_path_refuses_the_start(tmp_path: Path) -> None:
    """The AM's container planted ``<app>/<next container id>`` -> /etc: nothing is made or written there."""
    paths, outside = layout(tmp_path)
    paths.work_dir.symlink_to(outside)
    with pytest.raises(PlantedPathError, match=f"{paths.work_dir} exists already.*refused"):
        container_files.prepare_container(paths, b"tokens")
    untouched(outside)


def test_a_container_made_work_dir_with_planted_files_refuses_the_start(tmp_path: Path) -> None:
    """A work dir the container made, holding ``container_tokens``/``launch_container.sh`` symlinks, is refused."""
    paths, outside = layout(tmp_path)
    paths.work_dir.mkdir()
    (paths.work_dir / "container_tokens").symlink_to(outside / "shadow")
    (paths.work_dir / "launch_container.sh").symlink_to(outside / "zz.sh")
    os.chown(paths.work_dir, CONTAINER_UID, CONTAINER_UID)
    with pytest.raises(PlantedPathError, match="exists already"):
        container_files.prepare_container(paths, b"tokens")
    untouched(outside)


def test_the_tokens_and_script_are_written_in_a_fresh_work_dir(tmp_path: Path) -> None:
    """Nothing planted: the files are written as before (the control case)."""
    paths, _ = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    container_files.write_launch_script(paths, "echo hi\n")
    assert (paths.work_dir / "container_tokens").read_bytes() == b"tokens"
    assert (paths.work_dir / "launch_container.sh").read_text() == "echo hi\n"
    assert (paths.work_dir / "tmp").is_dir() and paths.log_dir.is_dir()


@pytest.mark.parametrize("replacement", ["symlink", "container_dir"])
def test_a_work_dir_swapped_after_it_was_made_is_refused(tmp_path: Path, replacement: str) -> None:
    """Between prepare and the next steps the container renames the work dir away and puts a
    symlink to /etc (or its own dir holding a symlink) there: the script and the links are
    refused, the chown too (of a symlink) or kept to the dir itself (of the container's own
    dir), and nothing outside is touched."""
    paths, outside = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    paths.work_dir.rename(paths.work_dir.parent / "moved")
    if replacement == "symlink":
        paths.work_dir.symlink_to(outside)
    else:
        paths.work_dir.mkdir()
        (paths.work_dir / "launch_container.sh").symlink_to(outside / "zz.sh")
        os.chown(paths.work_dir, CONTAINER_UID, CONTAINER_UID)
    with pytest.raises(PlantedPathError, match=f"{paths.work_dir} is"):
        container_files.write_launch_script(paths, "echo owned\n")
    with pytest.raises(PlantedPathError, match=f"{paths.work_dir} is"):
        link_into(paths.work_dir, [("passwd", tmp_path / "evil")])
    if replacement == "symlink":
        with pytest.raises(PlantedPathError, match=f"{paths.work_dir} is"):
            give_to(spec(paths), CONTAINER_UID)
    else:  # the application's own dir: it may have it, but nothing it holds is chowned or followed
        give_to(spec(paths), CONTAINER_UID)
    untouched(outside)


def test_give_to_chowns_without_following_symlinks(tmp_path: Path) -> None:
    """``give_to`` chowns the dirs and the work dir's entries, never what a symlink among them names."""
    paths, outside = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    link_into(paths.work_dir, [("conf", outside)])
    give_to(spec(paths), CONTAINER_UID)
    for path in (paths.work_dir, paths.work_dir / "container_tokens", paths.work_dir / "tmp", paths.log_dir):
        assert path.stat().st_uid == CONTAINER_UID
    assert os.lstat(paths.work_dir / "conf").st_uid == CONTAINER_UID
    untouched(outside)


def test_give_to_refuses_a_symlink_on_the_way_to_a_dir(tmp_path: Path) -> None:
    """An own dir reached through a symlink (swapped in after ``check_spec_paths``) is not chowned."""
    paths, outside = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    staging = tmp_path / "shared" / APP
    (tmp_path / "shared").mkdir()
    staging.symlink_to(outside)
    s = spec(paths)
    s = ContainerSpec(**{**s.__dict__, "own_dirs": (*paths.app_dirs, staging)})
    with pytest.raises(PlantedPathError, match=f"{staging} is a symlink"):
        give_to(s, CONTAINER_UID)
    untouched(outside)


def test_a_log_made_a_symlink_or_fifo_is_not_read_into_the_diagnostics(tmp_path: Path) -> None:
    """The container makes ``stderr`` a symlink to a host secret and ``stdout`` a FIFO: the
    failure diagnostics hold neither the secret nor hang."""
    paths, outside = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    (paths.log_dir / "stderr").symlink_to(outside / "shadow")
    os.mkfifo(paths.log_dir / "stdout")
    (paths.log_dir / "prelaunch.err").write_text("real error\n")
    text = container_files.failure_diagnostics(paths.log_dir, 1)
    assert "secret" not in text and "real error" in text


def test_an_application_cache_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    """The container replaces ``<app>/filecache`` with a symlink to /etc: the fetch is refused
    and writes nothing there."""
    paths, outside = layout(tmp_path)
    source = tmp_path / "src" / "payload"
    source.parent.mkdir()
    source.write_text("x")
    ts = source.stat().st_mtime_ns // 1_000_000
    paths.application_cache.symlink_to(outside)
    r = LocalResource("payload", ResourceUrl("file", str(source)), ResourceType.FILE, ts)
    with pytest.raises(PlantedPathError, match="filecache is a symlink"):
        fetch_into_cache(r, paths.application_cache / "0", default_fetchers(), 1 << 20, Requester(CID, APP, "alice"))
    untouched(outside)


def test_an_application_cache_fetch_lands_in_the_pinned_dir(tmp_path: Path) -> None:
    """Nothing planted: the resource is fetched to ``<filecache>/<n>/<name>`` (the control case)."""
    paths, _ = layout(tmp_path)
    source = tmp_path / "src" / "payload"
    source.parent.mkdir()
    source.write_text("x")
    os.chmod(source, 0o644)
    r = LocalResource("payload", ResourceUrl("file", str(source)), ResourceType.FILE, source.stat().st_mtime_ns // 1_000_000)
    got = fetch_into_cache(r, paths.application_cache / "0", default_fetchers(), 1 << 20, Requester(CID, APP, "alice"))
    assert got == paths.application_cache / "0" / "payload" and got.read_text() == "x"


def test_deleting_the_application_dirs_does_not_follow_planted_symlinks(tmp_path: Path) -> None:
    """The app dir holds a symlink to /etc made by a container: deleting the app dir leaves /etc whole."""
    paths, outside = layout(tmp_path)
    (paths.work_dir.parent / "blockmgr-1").mkdir()
    (paths.work_dir.parent / "blockmgr-1" / "etc").symlink_to(outside)
    (paths.work_dir.parent / "shadow").symlink_to(outside / "shadow")
    assert container_files.delete_application_dirs([tmp_path / "local"], APP) == [paths.work_dir.parent]
    assert not paths.work_dir.parent.exists()
    untouched(outside)


def test_a_work_dir_given_before_is_given_again_without_its_entries(tmp_path: Path) -> None:
    """The id runs again in a work dir the application owns already: the dir passes, but none of
    its entries (which the container may have made, say a hard link to a root file) is chowned."""
    paths, _ = layout(tmp_path)
    container_files.prepare_container(paths, b"tokens")
    give_to(spec(paths), CONTAINER_UID)
    planted = paths.work_dir / "hardlinked"
    planted.write_text("root's")
    give_to(spec(paths), CONTAINER_UID)
    assert planted.stat().st_uid == 0 and paths.work_dir.stat().st_uid == CONTAINER_UID
