"""A reload of the caps (``NodeCaps.apply``, as SIGHUP runs it) shows the new ones everywhere the
node reports them: the role's section (which the ring's capacity report is made from, gossiped
again at once), ``/ws/v1/node/info`` and the ``/node`` page's facts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.roles.node_caps import NodeCaps
from cortex_rm.roles.ring_records import Republisher
from cortex_rm.yarn_api.nm_rest import NodeInfo, node_info_json


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
