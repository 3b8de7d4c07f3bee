"""What a node does about the runtime image the RM names, decided on a fake clock against a
fake tracker boundary (the file system's reads are proven by the cluster tests): it is ready
when the RM names none or the named one is unpacked; otherwise it says what it waits for, and
it keeps what it had when the RM cannot be asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.container.image_cache import ImageCache
from cortex_rm.container.runtime_image import sha256_of_file
from cortex_rm.internal.block_codec import RuntimeImageSource
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.roles.runtime_image_fetcher import RuntimeImageFetcher
from tests.unit.test_runtime_image import make_archive


class FakeDataNode:
    """The tracker boundary: what openRuntimeImage answers next."""

    def __init__(self) -> None:
        self.answer: RuntimeImageSource | Exception = TrackerUnavailable("not connected")

    def open_runtime_image(self) -> defer.Deferred[RuntimeImageSource]:
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


def run_now(work: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(work)


@pytest.fixture
def node() -> FakeDataNode:
    return FakeDataNode()


@pytest.fixture
def fetcher(node: FakeDataNode, tmp_path: Path) -> RuntimeImageFetcher:
    return RuntimeImageFetcher(node, tmp_path / "images", run_now, Clock())  # type: ignore[arg-type]


def test_before_the_rm_answers_the_node_is_not_ready_and_says_why(fetcher: RuntimeImageFetcher) -> None:
    fetcher.check()
    assert not fetcher.state.ready and fetcher.root() is None
    assert "cannot ask the ResourceManager for its runtime image: not connected" in fetcher.state.doing


def test_a_cluster_without_an_image_is_ready_with_no_root(fetcher: RuntimeImageFetcher, node: FakeDataNode) -> None:
    node.answer = RuntimeImageSource("", None)
    fetcher.check()
    assert fetcher.state.ready and fetcher.root() is None


def test_an_image_not_uploaded_yet_is_waited_for_naming_the_push(fetcher: RuntimeImageFetcher, node: FakeDataNode) -> None:
    node.answer = RuntimeImageSource("ab" * 32, None)
    fetcher.check()
    assert not fetcher.state.ready
    assert fetcher.state.doing == f"waiting for runtime image {'ab' * 32} to be uploaded to the file system (cortex-rm image push)"


def test_an_image_unpacked_before_is_used_without_fetching_and_others_are_pruned(
    fetcher: RuntimeImageFetcher, node: FakeDataNode, tmp_path: Path
) -> None:
    """After a restart the node's unpacked root is reused at once; roots of images no longer
    named are removed; losing the RM afterwards keeps the root."""
    cache = ImageCache(tmp_path / "images")
    roots = {}
    for name in ("old", "new"):
        archive = make_archive(tmp_path / f"{name}.tar.zst", {"./usr/bin/tool": name.encode(), "./etc/os-release": b"x"})
        digest = sha256_of_file(archive)
        roots[name] = (digest, cache.unpack(archive, digest))
    node.answer = RuntimeImageSource(roots["new"][0], None)  # no source: nothing would be fetched
    fetcher.check()
    assert fetcher.state.ready and fetcher.root() == roots["new"][1]
    assert cache.path_of(roots["old"][0]) is None
    node.answer = TrackerUnavailable("the RM went away")
    fetcher.check()
    assert fetcher.root() == roots["new"][1] and fetcher.state.ready


def test_concurrent_checks_run_one_at_a_time(fetcher: RuntimeImageFetcher, node: FakeDataNode) -> None:
    """A check asked while one runs waits for it instead of starting a second download."""
    pending: defer.Deferred[RuntimeImageSource] = defer.Deferred()
    calls = []

    def slow() -> defer.Deferred[RuntimeImageSource]:
        calls.append(1)
        return pending

    node.open_runtime_image = slow  # type: ignore[method-assign]
    first, second = fetcher.check(), fetcher.check()
    assert calls == [1] and not second.called
    pending.callback(RuntimeImageSource("", None))
    assert first.called and second.called and fetcher.state.ready


def test_a_new_image_keeps_the_old_root_serving_until_it_is_here_and_a_root_in_use_is_kept(
    node: FakeDataNode, tmp_path: Path
) -> None:
    """The RM names another image: containers go on starting in the old root (the node stays
    healthy) while the new one is not uploaded; once the new one is here, the old root stays
    as long as a running container uses it."""
    cache = ImageCache(tmp_path / "images")
    archives = {}
    for name in ("old", "new"):
        archive = make_archive(tmp_path / f"{name}.tar.zst", {"./usr/bin/tool": name.encode(), "./etc/os-release": b"x"})
        archives[name] = sha256_of_file(archive)
    old_root = cache.unpack(tmp_path / "old.tar.zst", archives["old"])
    in_use = {old_root}
    fetcher = RuntimeImageFetcher(node, tmp_path / "images", run_now, Clock(), lambda: set(in_use))  # type: ignore[arg-type]
    node.answer = RuntimeImageSource(archives["old"], None)
    fetcher.check()
    node.answer = RuntimeImageSource(archives["new"], None)  # named, not uploaded yet
    fetcher.check()
    assert fetcher.root() == old_root and fetcher.state.ready and "cortex-rm image push" in fetcher.state.doing
    new_root = cache.unpack(tmp_path / "new.tar.zst", archives["new"])  # as if fetched
    fetcher.check()
    assert fetcher.root() == new_root and cache.path_of(archives["old"]) == old_root  # still used
    in_use.clear()
    node.answer = RuntimeImageSource(archives["new"], None)
    fetcher.state = fetcher.state.__class__(archives["new"], None, "")  # a restart: the check prunes again
    fetcher.check()
    assert cache.path_of(archives["old"]) is None


def test_an_archive_larger_than_any_image_is_not_fetched(fetcher: RuntimeImageFetcher, node: FakeDataNode) -> None:
    from cortex_rm.internal.block_codec import LocalizationSource
    from cortex_rm.roles.runtime_image_fetcher import MAX_ARCHIVE_BYTES

    node.answer = RuntimeImageSource("cd" * 32, LocalizationSource(MAX_ARCHIVE_BYTES + 1, 1, "ticket"))
    fetcher.check()
    assert not fetcher.state.ready and "more than any image" in fetcher.state.doing


def elf_header(machine: int) -> bytes:
    """The first bytes of a 64-bit little-endian ELF program for ``machine`` (e_machine)."""
    return b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44)


@pytest.mark.parametrize(("machine", "ready"), [(0x3E, True), (0xB7, False)], ids=["x86_64", "aarch64"])
def test_an_image_for_another_machine_is_refused_saying_what_to_build(
    node: FakeDataNode, tmp_path: Path, machine: int, ready: bool
) -> None:
    """An x86_64 node named an aarch64 image stays unready (taking no containers) and says why;
    the same image for its own machine is used."""
    fetcher = RuntimeImageFetcher(node, tmp_path / "images", run_now, Clock(), host_machine="x86_64")  # type: ignore[arg-type]
    archive = make_archive(tmp_path / "image.tar.zst", {"./usr/bin/dpkg": elf_header(machine), "./etc/os-release": b"x"})
    digest = sha256_of_file(archive)
    root = ImageCache(tmp_path / "images").unpack(archive, digest)
    node.answer = RuntimeImageSource(digest, None)
    fetcher.check()
    assert fetcher.state.ready is ready
    if ready:
        assert fetcher.root() == root
    else:
        assert fetcher.root() is None
        assert f"runtime image {digest[:12]} is for aarch64 machines and this node is x86_64" in fetcher.state.doing
        assert "build and push an image for x86_64" in fetcher.state.doing
