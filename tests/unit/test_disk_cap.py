"""The disk cap: accounting across its users, least-recently-used eviction, then refusal; and the
block store and the runtime image cache as its users (files in a temporary directory).  Eviction
deletes outside the cap's lock: the threads here show that ``used``/``room`` (the reactor's) and
other writes go on while a victim's files are being deleted."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cortex_rm.container import image_cache
from cortex_rm.container.image_cache import EXPANSION, ImageCache
from cortex_rm.container.runtime_image import ImageError
from cortex_rm.fs.block_store import GROW_BYTES, BlockStore
from cortex_rm.fs.disk_cap import GB, Deletion, DiskCap, DiskOutOfSpace, Evictable

#: How long a test waits for another thread before it fails (only a broken cap waits at all).
PATIENCE_S = 10.0


@dataclass
class Cache:
    """A user whose entries (key -> (size, last used)) are all evictable but those ``in_use``; a
    claimed entry leaves ``entries`` at once and joins ``evicted`` when its deletion runs, which
    first waits for ``hold[key]`` when there is one."""

    disk_name: str
    entries: dict[str, tuple[int, float]] = field(default_factory=dict)
    in_use: set[str] = field(default_factory=set)
    evicted: list[str] = field(default_factory=list)
    hold: dict[str, threading.Event] = field(default_factory=dict)
    deleting: threading.Event = field(default_factory=threading.Event)

    def used_bytes(self) -> int:
        return sum(size for size, _ in self.entries.values())

    def evictable(self) -> list[Evictable]:
        return [Evictable(k, s, t) for k, (s, t) in self.entries.items() if k not in self.in_use]

    def claim(self, key: str) -> Deletion | None:
        if key in self.in_use or key not in self.entries:
            return None
        del self.entries[key]

        def delete() -> None:
            if key in self.hold:
                self.deleting.set()
                assert self.hold[key].wait(PATIENCE_S)
            self.evicted.append(key)

        return delete


@dataclass
class Fixed:
    """A user that holds ``size`` bytes and gives none up (block replicas)."""

    size: int
    disk_name: str = "block replicas"

    def used_bytes(self) -> int:
        return self.size

    def evictable(self) -> list[Evictable]:
        return []

    def claim(self, key: str) -> Deletion | None:
        return None


def test_without_a_cap_nothing_is_evicted_or_refused_and_usage_is_counted() -> None:
    """Cap 0: any write is reserved, nothing evicted; room() says there is no cap."""
    images = Cache("runtime images", {"a": (500, 1.0)})
    cap = DiskCap(0, [Fixed(10**12), images])
    reservation = cap.reserve("block x", 10**12)
    assert cap.used() == 2 * 10**12 + 500 and cap.room() is None and images.evicted == []
    reservation.settle()
    assert cap.used() == 10**12 + 500


def test_a_write_that_fits_evicts_nothing_and_its_reservation_counts_until_settled() -> None:
    """Two writes in flight cannot both take the last room: the second is refused."""
    cap = DiskCap(1000, [Fixed(600)])
    first = cap.reserve("block a", 300)
    assert cap.room() == 100
    with pytest.raises(DiskOutOfSpace):
        cap.reserve("block b", 300)
    first.settle()
    cap.reserve("block b", 300)


def test_eviction_is_least_recently_used_first_across_users_and_stops_when_it_fits() -> None:
    """Over the cap: the oldest unused entries of all users go, in order, only as many as needed."""
    images = Cache("runtime images", {"img-old": (200, 1.0), "img-new": (200, 9.0)})
    localized = Cache("localized resources", {"jar-mid": (100, 5.0), "jar-used": (300, 0.5)}, in_use={"jar-used"})
    cap = DiskCap(1000, [Fixed(150), images, localized])  # 950 used
    cap.reserve("block a", 300)  # needs 250: img-old (200) then jar-mid (100)
    assert images.evicted == ["img-old"] and localized.evicted == ["jar-mid"]
    assert "img-new" in images.entries and "jar-used" in localized.entries


@pytest.mark.expect_logged_errors("disk cap: claiming localized resources jar-mid failed")
def test_a_user_whose_claim_fails_is_skipped_and_what_was_claimed_before_is_still_deleted() -> None:
    """A user's claim raises (its bug) after another user's entry was claimed: that entry is still
    deleted (it left every count when claimed), the write takes the next entry, and it fits."""

    class Broken(Cache):
        def claim(self, key: str) -> Deletion | None:
            raise OSError("the cache's table is broken")

    images = Cache("runtime images", {"img-old": (200, 1.0), "img-new": (200, 9.0)})
    broken = Broken("localized resources", {"jar-mid": (100, 5.0)})
    cap = DiskCap(1000, [Fixed(400), images, broken])  # 900 used
    cap.reserve("block a", 450).settle()  # needs 350: img-old, jar-mid fails, img-new
    assert images.evicted == ["img-old", "img-new"] and not images.entries and cap.used() == 500


def test_when_eviction_cannot_make_room_the_write_is_refused_naming_the_cap_and_nothing_is_evicted() -> None:
    """Evicting all that can go would not do: refuse at once with Hadoop's DiskOutOfSpaceException
    naming disk_gb, and keep every cache (a write that cannot fit must not flush them)."""
    images = Cache("runtime images", {"img": (100, 1.0)})
    cap = DiskCap(2 * GB, [Fixed(2 * GB - 150), images])
    with pytest.raises(DiskOutOfSpace) as refused:
        cap.reserve("block blk_1", 400)
    assert images.evicted == [] and "img" in images.entries
    message = str(refused.value)
    assert "block blk_1" in message and "disk_gb = 2" in message and "block replicas" in message
    assert refused.value.simple_name == "DiskChecker$DiskOutOfSpaceException".rsplit("$", 1)[-1]
    assert refused.value.java_class == "org.apache.hadoop.util.DiskChecker$DiskOutOfSpaceException"


def test_a_write_too_big_for_everything_evictable_leaves_every_users_cache_alone() -> None:
    """A declared size no eviction can make room for (a client's huge Content-Length) evicts
    nothing from any user; a write that fits after eviction still evicts least recently used."""
    images = Cache("runtime images", {"img-a": (300, 1.0), "img-b": (300, 2.0)})
    localized = Cache("localized resources", {"jar": (200, 1.5)})
    cap = DiskCap(1000, [Fixed(100), images, localized])  # 900 used, 800 evictable
    with pytest.raises(DiskOutOfSpace):
        cap.reserve("block blk_huge", 10**17)
    with pytest.raises(DiskOutOfSpace):
        cap.reserve("block blk_big", 901)  # needs 801 > 800
    assert images.evicted == [] and localized.evicted == [] and cap.used() == 900
    cap.reserve("block blk_fits", 900)  # needs 800: all go
    assert images.evicted == ["img-a", "img-b"] and localized.evicted == ["jar"]


def test_a_lower_cap_holds_new_writes_and_keeps_what_is_stored() -> None:
    """set_cap below what is held: nothing stored goes unless a write needs room."""
    images = Cache("runtime images", {"img": (400, 1.0)})
    cap = DiskCap(10_000, [Fixed(500), images])
    cap.set_cap(600)
    assert images.evicted == [] and cap.room() == 0
    with pytest.raises(DiskOutOfSpace):
        cap.reserve("block a", 500)  # 900 + 500 - 400 evictable > 600
    assert images.evicted == []
    cap.reserve("block a", 100)  # 900 + 100 - 400 <= 600: the image goes
    assert images.evicted == ["img"]


def test_a_block_write_is_refused_before_its_file_exists_and_a_growing_one_midway(tmp_path: Path) -> None:
    """The store reserves what a writer announces (refused: no file made); a block that grows
    past its reservation reserves more as it goes, and is refused there; abort and finish give
    the reservation back, and a finished block counts as the store's."""
    cap = DiskCap(3 * GROW_BYTES)
    store = BlockStore(tmp_path, lambda: 0, disk=cap)
    with pytest.raises(DiskOutOfSpace):
        store.writer("blk_" + "1" * 32, 4 * GROW_BYTES)
    assert list((tmp_path / "tmp").iterdir()) == []
    writer = store.writer("blk_" + "2" * 32, 100)
    writer.write(b"x" * 100)
    block = writer.finish()
    assert cap.used() == store.used_bytes() == block.length == 100
    growing = store.writer("blk_" + "3" * 32)
    growing.write(b"y" * GROW_BYTES)
    growing.write(b"y" * GROW_BYTES)
    with pytest.raises(DiskOutOfSpace):
        growing.write(b"y" * GROW_BYTES)
    growing.abort()
    assert cap.used() == 100
    assert store.free_bytes() == 3 * GROW_BYTES - 100  # what the NameNode is told: the cap's room
    assert store.delete(block.block_id) and cap.used() == 0


def _image(cache: ImageCache, sha: str, size: int, mtime: float) -> None:
    root = cache.roots / sha
    root.mkdir(parents=True)
    (root / "blob").write_bytes(b"z" * size)
    marker = cache.roots / f"{sha}.complete"
    marker.write_text(json.dumps({"sha256": sha, "bytes": size}))
    os.utime(marker, (mtime, mtime))


def test_the_image_cache_evicts_its_least_recently_used_unprotected_root(tmp_path: Path) -> None:
    """Roots count by their marker's size; the oldest unprotected goes first; a protected
    (the cluster's, or a running container's) root is never evicted."""
    cache = ImageCache(tmp_path)
    old, mid, current = "a" * 64, "b" * 64, "c" * 64
    _image(cache, old, 300, 1000.0)
    _image(cache, mid, 300, 2000.0)
    _image(cache, current, 300, 500.0)
    cache.protected = frozenset({current})
    cache.scan()
    cap = DiskCap(1000, [cache])
    assert cap.used() == 900
    cap.reserve("unpacking another image", 300)
    assert cache.path_of(old) is None and cache.path_of(mid) is not None and cache.path_of(current) is not None
    with pytest.raises(DiskOutOfSpace):
        cap.reserve("block blk_x", 800)  # even without mid, current 300 + unpack 300 + 800 > 1000: none goes
    assert cache.path_of(mid) is not None and cache.path_of(current) is not None
    cap.reserve("block blk_y", 400)  # without mid it fits
    assert cache.path_of(mid) is None and cache.path_of(current) is not None


def test_an_unpack_that_cannot_fit_is_refused_naming_the_cap(tmp_path: Path) -> None:
    """An unpack reserves EXPANSION times its archive first: no room (nothing evictable) -> ImageError."""
    cache = ImageCache(tmp_path / "images")
    archive = tmp_path / "image.tar.zst"
    archive.write_bytes(b"a" * 1000)
    cache.disk = DiskCap(EXPANSION * 1000 - 1, [Fixed(0), cache])
    with pytest.raises(ImageError, match="disk_gb"):
        cache.unpack(archive, "d" * 64)
    assert cache.disk.used() == 0 and list(cache.roots.iterdir()) == []


def test_runtime_images_and_localized_resources_share_one_least_recently_used_order(tmp_path: Path) -> None:
    """The localizer stamps its entries with wall-clock seconds, as image markers' mtimes are: an
    image last used before a localized resource goes first, one used after it goes after it."""
    from tests.unit.test_localizer import localize, run_now, shared, source

    from cortex_rm.container.local_resources import Visibility
    from cortex_rm.container.localizer import Localizer

    now = [2000.0]
    loc = Localizer(run_now, clock=lambda: now[0])
    images = ImageCache(tmp_path / "images")
    _image(images, "a" * 64, 300, 1000.0)  # used before the jar
    _image(images, "b" * 64, 300, 3000.0)  # used after it
    images.scan()
    cap = DiskCap(10_000, [images, loc])
    loc.disk = cap
    path, ts = source(tmp_path, "job.jar", b"j" * 300)
    jar = (localize(loc, tmp_path, [shared("job.jar", path, ts, Visibility.PUBLIC)], "c1") / "job.jar").resolve()
    loc.release("c1")
    assert cap.used() == 900
    cap.set_cap(900)
    cap.reserve("block 1", 300)  # the oldest: image a (1000 s)
    assert images.path_of("a" * 64) is None and jar.exists()
    cap.reserve("block 2", 300)  # then the jar (2000 s), before image b (3000 s)
    assert not jar.exists() and images.path_of("b" * 64) is not None


class InThread:
    """``work`` run on a thread of its own; ``result`` waits for it (failing the test, not hanging)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self._outcome: list[Any] = []

        def go() -> None:
            try:
                self._outcome.append(work())
            except BaseException as e:  # noqa: BLE001 - handed to the test by ``result``
                self._outcome.append(e)
            finally:
                self.done.set()

        threading.Thread(target=go, daemon=True).start()

    def result(self) -> Any:
        assert self.done.wait(PATIENCE_S), "still waiting: it is blocked"
        if isinstance(self._outcome[0], BaseException):
            raise self._outcome[0]
        return self._outcome[0]


def test_while_a_victim_is_deleted_used_room_and_other_writes_do_not_wait_for_it() -> None:
    """A write that evicts deletes its victim after the cap's lock is released: meanwhile ``used``
    and ``room`` answer (the victim counts no more, the write's room is reserved), and a second
    write that needs room claims the next victim, never the one being deleted."""
    release = threading.Event()
    images = Cache("runtime images", {"img-old": (300, 1.0), "img-new": (300, 2.0)}, hold={"img-old": release})
    cap = DiskCap(1000, [Fixed(400), images])  # full
    first = InThread(lambda: cap.reserve("block a", 300))
    try:
        assert images.deleting.wait(PATIENCE_S)  # img-old claimed, its deletion under way
        assert InThread(lambda: (cap.used(), cap.room())).result() == (400 + 300 + 300, 0)
        InThread(lambda: cap.reserve("block b", 300)).result()
        assert images.evicted == ["img-new"] and not first.done.is_set()
    finally:
        release.set()
    first.result()
    assert images.evicted == ["img-new", "img-old"] and cap.used() == 400 + 300 + 300


@pytest.fixture
def slow_rmtree(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """``shutil.rmtree`` that says it started (first event) and waits for the second before deleting."""
    started, release = threading.Event(), threading.Event()
    rmtree = shutil.rmtree

    def held(path: Any, *args: Any, **kwargs: Any) -> None:
        started.set()
        assert release.wait(PATIENCE_S)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(image_cache.shutil, "rmtree", held)
    yield started, release
    release.set()


def test_the_reactors_questions_do_not_wait_for_an_evicted_image_roots_deletion(
    tmp_path: Path, slow_rmtree: tuple[threading.Event, threading.Event]
) -> None:
    """An evicted image root (hundreds of MB of files) is removed after the cap's lock is released:
    while its rmtree runs, ``used`` and ``room`` (the block report's free space, on the reactor)
    answer at once, and the root is no longer handed out."""
    started, release = slow_rmtree
    cache = ImageCache(tmp_path)
    old, new = "a" * 64, "b" * 64
    _image(cache, old, 300, 1000.0)
    _image(cache, new, 300, 2000.0)
    cache.scan()
    cap = DiskCap(700, [Fixed(100), cache])
    writer = InThread(lambda: cap.reserve("block x", 200))  # 700 + 200 > 700: the old root goes
    assert started.wait(PATIENCE_S)
    assert InThread(lambda: (cap.used(), cap.room())).result() == (100 + 300 + 200, 100)
    assert cache.path_of(old) is None and (cache.roots / old).exists()
    release.set()
    writer.result()
    assert not (cache.roots / old).exists() and cache.path_of(new) is not None


def test_the_image_caches_usage_is_a_running_total_kept_without_reading_the_disk(tmp_path: Path) -> None:
    """``scan`` learns the roots a previous run left (a root without its marker is not one); from
    then on ``used_bytes`` and ``evictable`` answer from memory (the directory moved away unseen),
    and an eviction (at its claim, before its files go) and a prune take roots out of the total."""
    cache = ImageCache(tmp_path)
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    _image(cache, a, 300, 1000.0)
    _image(cache, b, 200, 2000.0)
    (cache.roots / c).mkdir()
    assert cache.used_bytes() == 0  # (not scanned yet)
    cache.scan()
    assert cache.used_bytes() == 500
    delete = cache.claim(a)
    assert delete is not None and cache.used_bytes() == 200 and (cache.roots / a).exists()
    assert [e.key for e in cache.evictable()] == [b] and cache.claim(a) is None
    delete()
    assert not (cache.roots / a).exists() and not (cache.roots / f"{a}.complete").exists()
    cache.roots.rename(tmp_path / "elsewhere")
    assert cache.used_bytes() == 200 and [(e.key, e.size, e.last_used) for e in cache.evictable()] == [(b, 200, 2000.0)]
    (tmp_path / "elsewhere").rename(cache.roots)
    assert cache.prune(keep=()) == [b, c] and cache.used_bytes() == 0


def test_an_image_unpacked_again_before_its_eviction_ran_counts_and_stays(tmp_path: Path) -> None:
    """An unpack adds its root to the total; a root claimed for eviction is not handed out, and when
    it is unpacked again before its deletion has run, it counts again and the late deletion keeps it."""
    from tests.unit.test_runtime_image import make_archive

    from cortex_rm.container.runtime_image import sha256_of_file

    archive = make_archive(tmp_path / "image.tar.zst", {"etc/hostname": b"h" * 5000})
    sha = sha256_of_file(archive)
    cache = ImageCache(tmp_path / "images")
    cache.unpack(archive, sha)
    size = cache.used_bytes()
    assert size >= 5000
    assert cache.claim(sha) is None and cache.evictable() == []  # new: protected until the reactor's next snapshot
    cache.protected = frozenset()  # (that snapshot, which does not name it)
    late = cache.claim(sha)
    assert late is not None and cache.used_bytes() == 0 and cache.path_of(sha) is None
    cache.unpack(archive, sha)
    assert cache.used_bytes() == size and sha in cache.protected
    late()
    assert cache.path_of(sha) is not None and cache.used_bytes() == size
