"""Localization of LocalResources with real temporary files.

The blocking steps run synchronously (the runner is a plain call), so every test is
deterministic; one test uses a runner that holds fetches back to check that two
containers of one application share one fetch.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from cortex_rm.container.local_resources import (
    LocalizationError,
    LocalResource,
    ResourceType,
    ResourceUrl,
    Visibility,
    check_link_name,
    check_local_resources,
)
from cortex_rm.container.launch import ContainerPaths, container_paths
from cortex_rm.container.localizer import Localizer
from cortex_rm.container.resource_files import LocalFileFetcher, Requester, claim_entry_dir, default_fetchers
from cortex_rm.yarn_api.nm_service import requested_resource
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp


def local_resources_from_proto(entries: Any) -> list[LocalResource]:
    """What the NodeManager makes of a CLC's local_resources: decoded by the wire, checked by the core."""
    return check_local_resources(requested_resource(e) for e in entries)

APP = "application_1700000000000_0001"
USER = "alice"


def run_now(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


def source(tmp: Path, name: str, data: bytes, mode: int = 0o644) -> tuple[Path, int]:
    path = tmp / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path, path.stat().st_mtime_ns // 1_000_000


def resource(link: str, path: Path, ts: int, kind: ResourceType = ResourceType.FILE) -> LocalResource:
    return LocalResource(link, ResourceUrl("file", str(path)), kind, ts)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            t.addfile(info)
    return buf.getvalue()


def paths_of(tmp: Path, container: str, user: str = USER, app: str = APP) -> ContainerPaths:
    """YARN's layout under ``tmp/local`` for one container, its dirs made as the NodeManager makes them."""
    paths = container_paths([tmp / "local"], [tmp / "logs"], user, app, container, 0)
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    return paths


def start(
    loc: Localizer, tmp: Path, resources: list[LocalResource], container: str = "c1", user: str = USER, app: str = APP
) -> tuple[defer.Deferred[None], Path]:
    paths = paths_of(tmp, container, user, app)
    return loc.localize(Requester(container, app, user), paths, resources), paths.work_dir


def localize(
    loc: Localizer, tmp: Path, resources: list[LocalResource], container: str = "c1", user: str = USER, app: str = APP
) -> Path:
    d, work = start(loc, tmp, resources, container, user, app)
    failures: list[Any] = []
    d.addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    return work


def test_file_resource_is_cached_and_linked_by_its_link_name(tmp_path: Path) -> None:
    """FILE: the cached copy holds the bytes and <work_dir>/<link name> points to it."""
    path, ts = source(tmp_path, "pi.py", b"print(1)\n")
    work = localize(Localizer(run_now), tmp_path, [resource("job.py", path, ts)])
    link = work / "job.py"
    assert link.is_symlink()
    assert link.read_bytes() == b"print(1)\n"
    assert paths_of(tmp_path, "c1").application_cache in link.resolve().parents


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("__spark_conf__.zip", zip_bytes({"__spark_conf__.properties": b"a=1", "__hadoop_conf__/core-site.xml": b"<c/>"})),
        ("conf.jar", zip_bytes({"__spark_conf__.properties": b"a=1", "__hadoop_conf__/core-site.xml": b"<c/>"})),
        ("conf.tgz", tar_bytes({"__spark_conf__.properties": b"a=1", "__hadoop_conf__/core-site.xml": b"<c/>"})),
        ("conf.tar.gz", tar_bytes({"__spark_conf__.properties": b"a=1", "__hadoop_conf__/core-site.xml": b"<c/>"})),
        ("conf.tar", tar_bytes({"__spark_conf__.properties": b"a=1", "__hadoop_conf__/core-site.xml": b"<c/>"}, "w")),
    ],
)
def test_archive_is_unpacked_by_suffix_into_a_linked_directory(tmp_path: Path, name: str, payload: bytes) -> None:
    """ARCHIVE: unpacked into a directory; the link name points to it (Spark's __spark_conf__)."""
    path, ts = source(tmp_path, name, payload)
    work = localize(Localizer(run_now), tmp_path, [resource("__spark_conf__", path, ts, ResourceType.ARCHIVE)])
    conf = work / "__spark_conf__"
    assert conf.is_dir()
    assert (conf / "__spark_conf__.properties").read_bytes() == b"a=1"
    assert (conf / "__hadoop_conf__" / "core-site.xml").read_bytes() == b"<c/>"
    assert not list(paths_of(tmp_path, "c1").application_cache.rglob("*.download"))


def test_archive_with_an_unknown_suffix_is_kept_as_a_file(tmp_path: Path) -> None:
    """An ARCHIVE YARN cannot unpack (no known suffix) is linked as the file itself."""
    path, ts = source(tmp_path, "data.bin", b"\x00\x01")
    work = localize(Localizer(run_now), tmp_path, [resource("data", path, ts, ResourceType.ARCHIVE)])
    assert (work / "data").read_bytes() == b"\x00\x01"


def test_changed_source_fails_with_yarns_message(tmp_path: Path) -> None:
    """A source whose mtime differs from the timestamp fails as FSDownload does."""
    path, ts = source(tmp_path, "pyspark.zip", b"zip")
    with pytest.raises(LocalizationError) as info:
        localize(Localizer(run_now), tmp_path, [resource("pyspark.zip", path, ts - 5)])
    assert str(info.value) == f"Resource file:{path} changed on src filesystem (expected {ts - 5}, was {ts})"
    assert not list(paths_of(tmp_path, "c1").application_cache.iterdir())  # the failed entry is cleaned up


def test_missing_source_fails(tmp_path: Path) -> None:
    """A source that does not exist fails with its path in the diagnostics."""
    with pytest.raises(LocalizationError, match="cannot be read"):
        localize(Localizer(run_now), tmp_path, [resource("x", tmp_path / "nope", 0)])


@pytest.mark.parametrize(
    "members",
    [
        {"../evil": b"x"},
        {"/etc/evil": b"x"},
        {"ok/../../evil": b"x"},
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_archive_members_leaving_the_target_are_refused(tmp_path: Path, members: dict[str, bytes], kind: str) -> None:
    """Path traversal in archive member names fails the localization; nothing is written outside."""
    payload = zip_bytes(members) if kind == "zip" else tar_bytes(members)
    path, ts = source(tmp_path, f"a.{kind}", payload)
    with pytest.raises(LocalizationError, match="leaves the target directory"):
        localize(Localizer(run_now), tmp_path, [resource("a", path, ts, ResourceType.ARCHIVE)])
    app_dir = paths_of(tmp_path, "c1").app_dirs[0]
    assert not (app_dir / "evil").exists() and not (tmp_path / "evil").exists()


def test_tar_symlink_out_of_the_target_is_refused(tmp_path: Path) -> None:
    """A tar symlink pointing outside the unpack directory is refused."""
    path, ts = source(tmp_path, "a.tgz", tar_bytes({"f": b"x"}, symlinks={"link": "../../../../etc/passwd"}))
    with pytest.raises(LocalizationError, match="refused"):
        localize(Localizer(run_now), tmp_path, [resource("a", path, ts, ResourceType.ARCHIVE)])


def test_archive_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    """An archive that would unpack beyond max_unpacked_bytes is refused before unpacking."""
    path, ts = source(tmp_path, "big.zip", zip_bytes({"a": b"0" * 1000, "b": b"0" * 1000}))
    with pytest.raises(LocalizationError, match="unpacks to 2000 bytes"):
        localize(Localizer(run_now, max_unpacked_bytes=1500), tmp_path, [resource("a", path, ts, ResourceType.ARCHIVE)])


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", "", "a//b", "./a", "tmp", "container_tokens", "launch_container.sh"])
def test_bad_link_names_are_refused(name: str) -> None:
    """Absolute, traversing, empty or reserved link names are refused before any I/O."""
    with pytest.raises(LocalizationError):
        check_link_name(name)


def test_link_names_may_name_a_subdirectory(tmp_path: Path) -> None:
    """A link name with a directory part (sub/file) creates the directory in the work dir."""
    path, ts = source(tmp_path, "f.txt", b"f")
    work = localize(Localizer(run_now), tmp_path, [resource("sub/f.txt", path, ts)])
    assert (work / "sub" / "f.txt").read_bytes() == b"f"


def test_private_source_files_are_refused(tmp_path: Path) -> None:
    """The NM runs as root: a source its owner keeps private (not o+r) is not handed out."""
    path, ts = source(tmp_path, "secret", b"s", mode=0o600)
    with pytest.raises(LocalizationError, match="not readable by others"):
        localize(Localizer(run_now), tmp_path, [resource("s", path, ts)])


def test_sources_in_the_nodemanagers_own_dirs_are_refused(tmp_path: Path) -> None:
    """A file: URL into a forbidden root (the NM's state dir) is refused."""
    path, ts = source(tmp_path, "identity.pem", b"k")
    loc = Localizer(run_now, default_fetchers([tmp_path / "staging"]))
    with pytest.raises(LocalizationError, match="NodeManager's own directories"):
        localize(loc, tmp_path, [resource("k", path, ts)])


def test_unsupported_scheme_names_the_supported_ones(tmp_path: Path) -> None:
    """A scheme without a fetcher fails, saying which schemes work."""
    r = LocalResource("x", ResourceUrl("webhdfs", "/f", "nn", 9870), ResourceType.FILE, 1)
    with pytest.raises(LocalizationError, match="scheme 'webhdfs' is not supported \\(supported: file\\)"):
        localize(Localizer(run_now), tmp_path, [r])


def test_other_schemes_plug_in_through_the_fetcher_table(tmp_path: Path) -> None:
    """A fetcher registered for a scheme is used for its URLs."""

    class Fake:
        def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
            dest.write_bytes(resource.url.file.encode())

    r = LocalResource("x", ResourceUrl("webhdfs", "/remote/f", "nn", 9870), ResourceType.FILE, 1)
    work = localize(Localizer(run_now, {"webhdfs": Fake()}), tmp_path, [r])
    assert (work / "x").read_bytes() == b"/remote/f"


def test_executors_of_one_application_share_one_fetch(tmp_path: Path) -> None:
    """Two containers asking for pyspark.zip at the same time cause one fetch; a third reuses the cache."""
    held: list[tuple[defer.Deferred[Any], Callable[[], Any]]] = []

    def run_later(fn: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        held.append((d, fn))
        return d

    def release() -> None:
        while held:
            d, fn = held.pop(0)
            d.callback(fn())

    calls: list[str] = []
    fetcher = LocalFileFetcher()

    class Counting:
        def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
            calls.append(str(resource.url))
            fetcher.fetch(resource, dest, requester)

    path, ts = source(tmp_path, "pyspark.zip", b"zip")
    loc = Localizer(run_later, {"file": Counting()})
    works = []
    results: list[Any] = []
    for name in ("c1", "c2"):
        d, work = start(loc, tmp_path, [resource("pyspark.zip", path, ts)], name)
        works.append(work)
        d.addBoth(results.append)
    release()
    assert results == [None, None]
    assert calls == [f"file:{path}"]
    assert (works[0] / "pyspark.zip").resolve() == (works[1] / "pyspark.zip").resolve()
    d, work3 = start(loc, tmp_path, [resource("pyspark.zip", path, ts)], "c3")
    d.addBoth(results.append)
    release()
    assert calls == [f"file:{path}"] and results[-1] is None
    assert loc.cached(APP) == {f"file:{path}": (works[0] / "pyspark.zip").resolve()}


def test_failed_fetch_is_retried_by_the_next_container(tmp_path: Path) -> None:
    """A failure is not cached: once the source is right, the next container localizes it."""
    path, ts = source(tmp_path, "f", b"1")
    loc = Localizer(run_now)
    with pytest.raises(LocalizationError):
        localize(loc, tmp_path, [resource("f", path, ts + 1)])
    os.utime(path, ns=((ts + 1) * 1_000_000, (ts + 1) * 1_000_000))
    work = localize(loc, tmp_path, [resource("f", path, ts + 1)], container="c2")
    assert (work / "f").read_bytes() == b"1"


def test_resources_from_proto() -> None:
    """A CLC's local_resources become LocalResources; missing URL or timestamp, or a duplicate, is refused."""
    clc = yp.ContainerLaunchContextProto()
    e = clc.localResources.add()
    e.key = "__spark_conf__"
    e.value.resource.scheme = "file"
    e.value.resource.port = -1
    e.value.resource.file = "/staging/__spark_conf__.zip"
    e.value.type = yp.ARCHIVE
    e.value.visibility = yp.PRIVATE
    e.value.size = 10
    e.value.timestamp = 1700000000123
    (r,) = local_resources_from_proto(clc.localResources)
    assert r == LocalResource(
        "__spark_conf__",
        ResourceUrl("file", "/staging/__spark_conf__.zip"),
        ResourceType.ARCHIVE,
        1700000000123,
        10,
        Visibility.PRIVATE,
    )
    assert str(r.url) == "file:/staging/__spark_conf__.zip"
    assert str(ResourceUrl("webhdfs", "/f", "nn", 9870)) == "webhdfs://nn:9870/f"
    with pytest.raises(LocalizationError, match="given twice"):
        local_resources_from_proto([e, e])
    e.value.ClearField("timestamp")
    with pytest.raises(LocalizationError, match="no timestamp"):
        local_resources_from_proto([e])
    e.value.ClearField("resource")
    with pytest.raises(LocalizationError, match="no URL"):
        local_resources_from_proto([e])


def shared(link: str, path: Path, ts: int, visibility: Visibility) -> LocalResource:
    return LocalResource(link, ResourceUrl("file", str(path)), ResourceType.FILE, ts, visibility=visibility)


class Recording:
    """A file fetcher that remembers whom each fetch was for."""

    def __init__(self) -> None:
        self.fetches: list[tuple[str, str]] = []
        self.inner = LocalFileFetcher()

    def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
        self.fetches.append((resource.url.file_name, requester.user))
        self.inner.fetch(resource, dest, requester)


def test_each_visibility_has_its_own_cache_shared_as_yarn_shares_it(tmp_path: Path) -> None:
    """PUBLIC: one copy for every user and application of the node; PRIVATE: one per user, shared
    by their applications; APPLICATION: one per application."""
    fetcher = Recording()
    loc = Localizer(run_now, {"file": fetcher})
    pub, pub_ts = source(tmp_path, "spark-libs.zip", b"jars")
    priv, priv_ts = source(tmp_path, "lib.py", b"x = 1\n")
    app, app_ts = source(tmp_path, "conf.txt", b"conf")
    asked = [shared("libs", pub, pub_ts, Visibility.PUBLIC), shared("lib.py", priv, priv_ts, Visibility.PRIVATE),
             shared("conf", app, app_ts, Visibility.APPLICATION)]
    runs = [("c1", "alice", APP), ("c2", "alice", "application_1700000000000_0002"),
            ("c3", "bob", "application_1700000000000_0003")]
    works = {c: localize(loc, tmp_path, asked, c, user, app_id) for c, user, app_id in runs}
    assert sorted(fetcher.fetches) == sorted([
        ("spark-libs.zip", "alice"),  # public: once on the node
        ("lib.py", "alice"), ("lib.py", "bob"),  # private: once per user
        ("conf.txt", "alice"), ("conf.txt", "alice"), ("conf.txt", "bob"),  # application: once per app
    ])
    public = {(w / "libs").resolve() for w in works.values()}
    assert len(public) == 1 and paths_of(tmp_path, "c1").public_cache in next(iter(public)).parents
    assert (works["c1"] / "lib.py").resolve() == (works["c2"] / "lib.py").resolve()
    assert (works["c3"] / "lib.py").resolve().is_relative_to(paths_of(tmp_path, "c3", "bob").private_cache)
    assert (works["c1"] / "conf").resolve() != (works["c2"] / "conf").resolve()
    assert all((w / "libs").read_bytes() == b"jars" for w in works.values())


def test_shared_caches_keep_to_their_target_by_dropping_unused_entries_least_recently_used_first(tmp_path: Path) -> None:
    """Over the target size, entries no running container links to go, the least recently used
    first; an entry a running container uses stays even when the cache is over its target."""
    loc = Localizer(run_now, cache_target_bytes=2500)
    files = {n: source(tmp_path, f"{n}.bin", n.encode() * 1000) for n in "abcd"}

    def use(name: str, container: str) -> Path:
        path, ts = files[name]
        work = localize(loc, tmp_path, [shared(name, path, ts, Visibility.PUBLIC)], container)
        return (work / name).resolve()

    a, b = use("a", "c1"), use("b", "c2")
    loc.release("c1")
    loc.release("c2")
    use("a", "c3")  # a is now more recently used than b
    loc.release("c3")
    c = use("c", "c4")  # 3000 bytes > 2500: b (unused, least recent) goes, a stays
    assert not b.exists() and a.exists() and c.exists()
    assert loc.shared_bytes() == 2000
    d = use("d", "c5")  # c4 still runs: c is kept; a goes
    assert not a.exists() and c.exists() and d.exists()
    use("a", "c6")  # 3000 bytes and every entry in use: nothing can go
    assert loc.shared_bytes() == 3000 and c.exists() and d.exists()
    loc.release("c4")
    assert not c.exists() and loc.shared_bytes() == 2000


def test_a_previous_nodemanagers_shared_cache_is_emptied_before_the_first_fetch(tmp_path: Path) -> None:
    """Leftovers in the public cache (no table knows them) are removed; the directory itself stays."""
    public = paths_of(tmp_path, "c0").public_cache
    (public / "7").mkdir(parents=True)
    (public / "7" / "old.jar").write_bytes(b"old")
    path, ts = source(tmp_path, "new.jar", b"new")
    work = localize(Localizer(run_now), tmp_path, [shared("new.jar", path, ts, Visibility.PUBLIC)])
    assert not (public / "7").exists()
    assert (work / "new.jar").read_bytes() == b"new" and public in (work / "new.jar").resolve().parents


def test_a_restarted_localizer_never_reuses_an_entry_name_a_killed_run_left_in_an_application_cache(
    tmp_path: Path,
) -> None:
    """A killed NodeManager left ``filecache/1`` half-made and ``filecache/2`` complete in a running application's
    cache: a new Localizer's fetches for that application take new numbers (no FileExistsError), link the new
    bytes, and leave the leftovers alone (they go with the application's dirs)."""
    app_cache = paths_of(tmp_path, "c0").application_cache
    (app_cache / "1").mkdir(parents=True)
    (app_cache / "1" / ".conf.zip.download").write_bytes(b"half")
    (app_cache / "2").mkdir()
    (app_cache / "2" / "app.jar").write_bytes(b"old")
    jar, ts = source(tmp_path, "app.jar", b"new jar")
    conf, ts2 = source(tmp_path, "conf.txt", b"new conf")
    loc = Localizer(run_now)
    work = localize(loc, tmp_path, [resource("app.jar", jar, ts), resource("conf.txt", conf, ts2)], container="c1")
    assert (work / "app.jar").read_bytes() == b"new jar"
    assert (work / "conf.txt").read_bytes() == b"new conf"
    used = {(work / "app.jar").resolve().parent.name, (work / "conf.txt").resolve().parent.name}
    assert used == {"3", "4"}
    assert (app_cache / "2" / "app.jar").read_bytes() == b"old"
    assert (app_cache / "1" / ".conf.zip.download").exists()
    # a later fetch of the same run goes on past what it took
    more, ts3 = source(tmp_path, "more.txt", b"more")
    work2 = localize(loc, tmp_path, [resource("more.txt", more, ts3)], container="c2")
    assert (work2 / "more.txt").resolve().parent.name == "5"


def test_an_entry_claim_takes_the_first_number_when_free_else_the_one_past_the_highest_taken(tmp_path: Path) -> None:
    """``claim_entry_dir`` makes the first number when free, else the one past the highest taken (a file or a
    symlink at a name counts as taken and is left alone, not followed)."""
    root = tmp_path / "filecache"
    root.mkdir()
    (root / "2").symlink_to("/etc")
    (root / "9").write_bytes(b"")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        name, entry = claim_entry_dir(fd, root, 1)
        os.close(entry)
        assert name == "1"
        name, entry = claim_entry_dir(fd, root, 2)
        os.close(entry)
        assert name == "10" and (root / "2").is_symlink() and (root / "9").is_file()
    finally:
        os.close(fd)


def test_under_a_disk_cap_writes_evict_unused_entries_and_a_fetch_that_cannot_fit_fails(tmp_path: Path) -> None:
    """With the node's disk cap: a block write that needs room evicts the shared caches' unused
    entries, least recently used first (one in use stays); a resource whose announced size
    cannot be had fails its localization naming the cap; the entries count as the cap's usage."""
    import dataclasses

    from cortex_rm.fs.block_store import BlockStore
    from cortex_rm.fs.disk_cap import DiskCap, DiskOutOfSpace

    loc = Localizer(run_now)
    cap = DiskCap(3500)
    store = BlockStore(tmp_path / "blocks", lambda: 0, disk=cap)
    cap.add_user(loc)
    loc.disk = cap
    files = {n: source(tmp_path, f"{n}.bin", n.encode() * 1000) for n in "abcd"}

    def use(name: str, container: str, size: int = -1) -> Path:
        path, ts = files[name]
        r = dataclasses.replace(shared(name, path, ts, Visibility.PUBLIC), size=size)
        work = localize(loc, tmp_path, [r], container)
        return (work / name).resolve()

    a, b, c = use("a", "c1"), use("b", "c2"), use("c", "c3")
    assert cap.used() == 3000
    loc.release("c2")
    loc.release("c1")
    writer = store.writer("blk_" + "e" * 32, 1000)  # needs 500 more: a, the least recently used, goes
    assert not a.exists() and b.exists() and cap.used() == 3000
    writer.write(b"e" * 1000)
    writer.finish()
    with pytest.raises(DiskOutOfSpace):
        store.writer("blk_" + "f" * 32, 1501)  # even with b gone (c is in use) 1501 do not fit: b stays
    assert b.exists() and c.exists() and cap.used() == 3000
    with pytest.raises(LocalizationError, match="disk_gb"):
        use("d", "c4", size=1501)


def test_a_lower_disk_cap_evicts_no_entry_until_a_write_needs_the_room(tmp_path: Path) -> None:
    """One rule at the cap, the cap's own: what is stored stays even above a lowered cap (the
    localizer's cleanup keeps to its target size alone); a write that needs room evicts it."""
    from cortex_rm.fs.disk_cap import DiskCap

    loc = Localizer(run_now)
    cap = DiskCap(10_000, [loc])
    loc.disk = cap
    path, ts = source(tmp_path, "a.bin", b"a" * 1000)
    a = (localize(loc, tmp_path, [shared("a.bin", path, ts, Visibility.PUBLIC)], "c1") / "a.bin").resolve()
    cap.set_cap(500)
    loc.release("c1")
    assert a.exists() and cap.used() == 1000
    cap.reserve("block x", 100)
    assert not a.exists() and cap.used() == 100


def test_a_fetchs_room_stays_reserved_until_its_entry_counts(tmp_path: Path) -> None:
    """The fetch's reservation is given back on the reactor once its entry is in the table, not when
    the fetch's thread ends: while the result is on its way to the reactor its bytes still count."""
    import dataclasses

    from cortex_rm.fs.disk_cap import DiskCap

    delivered: list[tuple[defer.Deferred[Any], Any]] = []

    def run_here_answer_later(fn: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        delivered.append((d, fn()))
        return d

    def deliver() -> None:
        d, result = delivered.pop(0)
        d.callback(result)

    loc = Localizer(run_here_answer_later)
    cap = DiskCap(10_000, [loc])
    loc.disk = cap
    path, ts = source(tmp_path, "a.bin", b"a" * 1000)
    done, _ = start(loc, tmp_path, [dataclasses.replace(shared("a.bin", path, ts, Visibility.PUBLIC), size=1000)])
    deliver()  # the public cache is clean: the fetch runs (and its answer waits)
    assert cap.used() == 1000
    deliver()  # the entry is in the table
    assert cap.used() == loc.used_bytes() == 1000
    deliver()  # the links
    assert done.called and cap.used() == 1000
