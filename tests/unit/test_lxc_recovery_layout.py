"""NodeManager recovery of LXC containers by their cgroup: one under the node's cgroup
(``cortex/n<node>/b<block>/<id>``) has its block and rules taken again; one started before that
layout (``cortex/b<block>/<id>``) is refused, saying so, before anything is asked of the sandbox."""

from __future__ import annotations

import os
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from cortex_rm.container.lxc_recovery import reattach
from cortex_rm.container.runtime import ContainerStartError
from tests.unit.test_nm_recovery import _record

CID = "container_1_0001_01_000002"


class Sandbox:
    """``ContainerSandbox.readmit``: the calls, then the refusal nft gives a cgroup it does not know."""

    def __init__(self) -> None:
        self.readmitted: list[tuple[str, int]] = []

    def readmit(self, application: str, block_number: int, peers: object, slot: object) -> None:
        self.readmitted.append((application, block_number))
        raise ContainerStartError("nft: no such cgroup")


def _runtime() -> Any:
    return SimpleNamespace(sandbox=Sandbox())


def test_a_container_from_before_the_node_cgroup_layout_is_refused_saying_so() -> None:
    """Its init runs (this process stands for it), yet it is not readmitted: the message names the layout."""
    runtime = _runtime()
    record = replace(_record(CID), cgroup_dir=f"cortex/b1/{CID}", pid=os.getpid())
    with pytest.raises(ContainerStartError, match="before the node cgroup layout.*not recovered"):
        reattach(runtime, record)
    assert runtime.sandbox.readmitted == []


def test_a_container_under_the_node_cgroup_has_its_block_taken_again() -> None:
    """The block number is read from ``cortex/n<node>/b<block>/<id>``."""
    runtime = _runtime()
    record = replace(_record(CID), cgroup_dir=f"cortex/n15/b7/{CID}", pid=os.getpid())
    with pytest.raises(ContainerStartError, match="nft"):
        reattach(runtime, record)
    assert runtime.sandbox.readmitted == [("application_1_0001", 7)]
