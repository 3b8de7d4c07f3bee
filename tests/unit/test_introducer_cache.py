"""The client's cache of learned introducers (``introducer_cache.py``): private, atomic, bounded,
per cluster, and a damaged file is ignored rather than trusted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cortex_rm.introducer_cache import (
    CACHE_FILE, MAX_CLUSTERS, MAX_FILE_BYTES, MAX_INTRODUCERS, ClusterIntroducers, IntroducerCache, learned_from,
)  # fmt: skip


def group(rm: str, *nodes: str, at: int = 1) -> ClusterIntroducers:
    return ClusterIntroducers(rm, nodes, at)


def test_what_is_remembered_is_loaded_back_from_a_private_file(tmp_path: Path) -> None:
    """The file is mode 600 in a directory of mode 700, and holds what was remembered."""
    cache = IntroducerCache(tmp_path / "cache")
    cache.remember(group("rm:8088", "a:8042", "b:8042"))
    assert cache.load() == [group("rm:8088", "a:8042", "b:8042")]
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in cache.path.parent.iterdir()] == [CACHE_FILE]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new contents go to a temporary file renamed over the old one: a write that fails
    before the rename leaves the old file as it was, and no temporary file behind."""
    cache = IntroducerCache(tmp_path)
    cache.remember(group("rm:8088", "a:8042"))
    before = cache.path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        cache.remember(group("rm:8088", "b:8042"))
    assert cache.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CACHE_FILE]


def test_a_cluster_is_replaced_and_the_least_recent_dropped_past_the_bound(tmp_path: Path) -> None:
    """Learning a cluster again replaces its group; past MAX_CLUSTERS the oldest go first."""
    cache = IntroducerCache(tmp_path)
    for i in range(MAX_CLUSTERS + 4):
        cache.remember(group(f"rm{i}:8088", f"n{i}:8042", at=1000 + i))
    cache.remember(group("rm19:8088", "new:8042", at=5000))
    loaded = cache.load()
    assert len(loaded) == MAX_CLUSTERS
    assert loaded[0] == group("rm19:8088", "new:8042", at=5000)
    assert {g.resource_manager for g in loaded} == {f"rm{i}:8088" for i in range(4, MAX_CLUSTERS + 4)}


def test_an_answer_is_bounded_and_its_bad_addresses_dropped() -> None:
    """At most MAX_INTRODUCERS addresses per cluster; what is not host:port (URLs, spaces, no port) is dropped."""
    many = [f"10.0.{i // 256}.{i % 256}:8042" for i in range(MAX_INTRODUCERS * 3)]
    learned = learned_from({"resourceManager": "rm:8088", "introducers": many + ["x"], "fileSystem": "rm:8088"}, 7)
    assert learned is not None and learned.introducers == tuple(many[:MAX_INTRODUCERS]) and learned.updated_ms == 7
    bad = ["http://a:1/", "a b:1", "nohost", "a:99999", "a:1?x", 5, None, "ok:1", "ok:1"]
    learned = learned_from({"resourceManager": "rm:8088", "introducers": bad}, 7)
    assert learned is not None and learned.introducers == ("ok:1",)
    assert learned_from({"introducers": ["a:1"]}, 7) is None  # no RM: nothing to key it by
    assert learned_from(["a:1"], 7) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff garbage", b"[1, 2]", b'{"clusters": 5}', b'{"clusters": [{"resourceManager": 1}]}',
     b'{"clusters": [{"resourceManager": "rm:1", "introducers": "a:1", "updatedMs": 1}]}', b'{"clusters": [',
     json.dumps({"clusters": [{"resourceManager": "rm:1", "introducers": ["a:1"], "updatedMs": 1}],
                 "pad": "x" * MAX_FILE_BYTES}).encode()],
)  # fmt: skip
def test_a_damaged_or_oversized_file_is_ignored_and_replaced(tmp_path: Path, content: bytes) -> None:
    """A file that is not what the cache writes (or is over MAX_FILE_BYTES) reads as empty; the next write replaces it."""
    cache = IntroducerCache(tmp_path)
    cache.path.write_bytes(content)
    assert cache.load() == []
    assert cache.candidates(["a:1"]) == []
    cache.remember(group("rm:8088", "a:8042"))
    assert cache.load() == [group("rm:8088", "a:8042")]


def test_a_damaged_entry_is_skipped_and_the_others_kept(tmp_path: Path) -> None:
    cache = IntroducerCache(tmp_path)
    cache.path.write_text(json.dumps({"clusters": [
        {"resourceManager": "rm:1", "introducers": ["a:1"], "updatedMs": True},
        {"resourceManager": "rm:2", "introducers": ["b:1", "not an address"], "updatedMs": 3},
    ]}))  # fmt: skip
    assert cache.load() == [group("rm:2", "b:1", at=3)]


def test_candidates_come_only_from_the_clusters_the_given_endpoints_belong_to(tmp_path: Path) -> None:
    """A client given one cluster's node is offered that cluster's other nodes and RM, never another cluster's."""
    cache = IntroducerCache(tmp_path)
    cache.remember(group("rm-a:8088", "a1:8042", "a2:8042", at=1))
    cache.remember(group("rm-b:8088", "b1:8042", at=2))
    assert cache.candidates(["a2:8042"]) == ["a1:8042", "rm-a:8088"]
    assert cache.candidates(["rm-b:8088"]) == ["b1:8042"]
    assert cache.candidates(["elsewhere:8042"]) == []
