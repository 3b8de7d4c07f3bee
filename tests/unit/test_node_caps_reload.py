"""A reload of the caps (``NodeCaps.apply``, as SIGHUP runs it) shows the new ones everywhere the
node reports them: the role's section (which the ring's capacity report is made from, gossiped
again at once), ``/ws/v1/node/info`` and the ``/node`` page's facts.  The config file and the node
cgroup are read and written on the node's file threads (a runner the test drives), one step after
the other in the order the changes came."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.container.image_cache import ImageCache
from cortex_rm.container.node_cgroup import limits_of
from cortex_rm.roles.node_caps import NodeCaps
from cortex_rm.roles.ring_records import Republisher
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn_api.nm_rest import node_info_json
from tests.support.limits_runtime import LimitsRuntime


def test_a_reload_shows_the_new_caps_in_the_section_the_node_info_and_the_ring_report() -> None:
    """memory_mb and vcores change in the role's section and its NodeInfo; the capacity report is
    published again at once (not only at the next 30 s), with the new caps."""
    clock = Clock()
    old = NodeManagerSection(memory_mb=2048, vcores=2)
    published: list[tuple[int, int]] = []
    role: Any = SimpleNamespace(
        reactor=clock, data_node=None, status_updater=None, image=None, containers=None, section=old,
        info=NodeInfo("n1", "127.0.0.1", old.memory_mb, old.vcores, 0, "test"),
    )  # fmt: skip
    role.republisher = Republisher(lambda: published.append((role.section.memory_mb, role.section.vcores)), clock)
    role.republisher.start()
    caps = NodeCaps(role, old, None)
    caps.apply(NodeManagerSection(memory_mb=6144, vcores=5, rack="/elsewhere"))
    assert (role.section.memory_mb, role.section.vcores) == (6144, 5)
    assert role.section.rack == old.rack  # (not a live key: waits for a restart)
    info = node_info_json(role.info, 0)["nodeInfo"]
    assert (info["totalPmemAllocatedContainersMB"], info["totalVCoresAllocatedContainers"]) == (6144, 5)
    assert published == [(2048, 2), (6144, 5)]
    role.republisher.stop()


def test_a_hangup_before_the_caps_are_attached_is_logged_and_ignored() -> None:
    """From the ``node`` command's start, SIGHUP no longer ends the process (its default action):
    it is logged as not ready and ignored (a process of its own: the signal is real)."""
    import subprocess
    import sys

    script = (
        "import signal, sys\n"
        "from twisted.logger import globalLogBeginner, textFileLogObserver\n"
        "globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])\n"
        "from cortex_rm.roles.node_caps import hold_hangups\n"
        "hold_hangups()\n"
        "signal.raise_signal(signal.SIGHUP)\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not ready to reload the caps" in done.stdout and "ignored" in done.stdout
    assert done.stdout.rstrip().endswith("still running")


class FileThreads:
    """The node's file threads as a runner whose work runs when the test says (``finish_next``)."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []

    def __call__(self, func: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.queued.append((func, d))
        return d

    def finish_next(self) -> None:
        func, d = self.queued.pop(0)
        defer.maybeDeferred(func).chainDeferred(d)


def _role_with_cgroup(threads: FileThreads, section: NodeManagerSection) -> tuple[Any, LimitsRuntime]:
    runtime = LimitsRuntime()
    containers = SimpleNamespace(runtime=runtime, run=threads)
    role = SimpleNamespace(reactor=Clock(), data_node=None, status_updater=None, image=None, containers=containers,
                           section=section)  # fmt: skip
    return role, runtime


def test_reloads_and_cgroup_writes_run_off_the_reactor_in_the_order_they_came(tmp_path: Path) -> None:
    """Nothing is written on the reactor: each change's limits go to a file thread; a second change
    while the first's write runs waits for it (not first, not lost), and a SIGHUP's reload reads the
    file after both and has its caps written last."""
    config = tmp_path / "cortex.toml"
    config.write_text("[nodemanager]\nmemory_mb = 8192\nvcores = 8\n")
    threads = FileThreads()
    section = NodeManagerSection(memory_mb=2048, vcores=2)
    role, runtime = _role_with_cgroup(threads, section)
    caps = NodeCaps(role, section, None, str(config), run=threads)
    first = caps.apply(NodeManagerSection(memory_mb=4096, vcores=4))
    second = caps.apply(NodeManagerSection(memory_mb=6144, vcores=6))
    reloaded = caps.reload()
    assert runtime.given == [] and len(threads.queued) == 1 and role.section.memory_mb == 6144
    threads.finish_next()
    expected = [limits_of(NodeManagerSection(memory_mb=m, vcores=v)) for m, v in ((4096, 4), (6144, 6), (8192, 8))]
    assert runtime.given == expected[:1] and first.called and not second.called and len(threads.queued) == 1
    threads.finish_next()
    assert runtime.given == expected[:2] and second.called and not reloaded.called
    threads.finish_next()  # the file is read
    assert reloaded.result is True and role.section.memory_mb == 8192 and runtime.given == expected[:2]
    threads.finish_next()
    assert runtime.given == expected and threads.queued == []


def test_a_refused_file_leaves_the_caps_and_the_queue_going(tmp_path: Path) -> None:
    """A file that does not validate is refused on its thread (False, caps unchanged); the changes
    queued after it still take effect."""
    config = tmp_path / "cortex.toml"
    config.write_text("[nodemanager]\nmemory_mb = -5\n")
    threads = FileThreads()
    section = NodeManagerSection(memory_mb=2048, vcores=2)
    role, runtime = _role_with_cgroup(threads, section)
    caps = NodeCaps(role, section, None, str(config), run=threads)
    reloaded = caps.reload()
    later = caps.apply(NodeManagerSection(memory_mb=4096, vcores=4))
    threads.finish_next()
    assert reloaded.result is False and role.section.memory_mb == 4096 and runtime.given == []
    threads.finish_next()
    assert later.called and runtime.given == [limits_of(NodeManagerSection(memory_mb=4096, vcores=4))]


def test_the_image_cache_is_handed_a_snapshot_of_the_images_in_use(tmp_path: Path) -> None:
    """The reactor hands the image cache the images not to evict as a frozen set (the cluster's and
    those of containers not done): the cache's workers never read the containers' table."""
    cluster_image, running, other = "a" * 64, "b" * 64, "c" * 64
    roots = Path("/images/roots")
    in_use = {roots / running}
    cache = ImageCache(tmp_path)
    image = SimpleNamespace(cache=cache, state=SimpleNamespace(root=roots / cluster_image, wanted=cluster_image))
    containers = SimpleNamespace(image_roots_in_use=lambda: in_use)
    role: Any = SimpleNamespace(reactor=Clock(), image=image, containers=containers)
    caps = NodeCaps(role, NodeManagerSection(), None)
    caps.protect_images()
    assert cache.protected == frozenset({cluster_image, running})
    in_use.clear()
    assert cache.protected == frozenset({cluster_image, running})  # (a snapshot: changes on the next call)
    caps.protect_images()
    assert cache.protected == frozenset({cluster_image}) and other not in cache.protected
    image.state = SimpleNamespace(root=roots / cluster_image, wanted=other)  # the cluster names another: fetching it
    caps.protect_images()
    assert cache.protected == frozenset({cluster_image, other})  # (its root, once unpacked, is never evictable)
