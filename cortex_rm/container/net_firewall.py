"""The IO half of the network policy: ``nft -f -`` with the scripts of ``net_policy.py``.

One ``NftFirewall`` per NodeManager.  ``install`` replaces the node's table (at
start), ``update_members`` replaces its member sets (when the ring, the capacity
reports or the RM's record change), the ``application_*`` calls add and remove
one application's elements (the runtime calls them before a first container
starts and when the application is cleaned up), ``remove`` drops the table (at
stop).  Each call is one ``nft`` transaction of a few elements (milliseconds).
On a node of ``local-cluster --isolated`` the daemon runs in the node's network
namespace, so its table is that namespace's.

Without ``nft`` (or when a script is refused) no container starts: the runtime's
calls raise ``ContainerStartError`` saying what to install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from twisted.logger import Logger

from cortex_rm.container.id_ranges import IdBlock
from cortex_rm.container.net_policy import (
    Endpoint,
    Members,
    PolicySettings,
    mark_of,
    render_application_added,
    render_application_removed,
    render_members,
    render_nat,
    render_peers_added,
    render_table,
    render_table_removed,
)
from cortex_rm.container.runtime import ContainerStartError

log = Logger()

NftRun = Callable[[list[str], str], tuple[int, str]]
"""``run(argv, stdin) -> (exit code, stderr)``."""


def run_process(argv: list[str], script: str) -> tuple[int, str]:
    """Run ``argv`` with ``script`` on its stdin (the default ``NftRun``)."""
    done = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    return done.returncode, done.stderr.strip()


def inet_tables(nft: str, enter: Sequence[str] = ()) -> list[str]:
    """The names of the ``inet`` tables of this network namespace ([] when nft cannot say);
    ``enter``: a command prefix that runs nft elsewhere (``nsenter --net=...``)."""
    done = subprocess.run([*enter, nft, "-j", "list", "tables", "inet"], capture_output=True, text=True, check=False)
    try:
        listed = json.loads(done.stdout)["nftables"] if done.returncode == 0 else []
    except (ValueError, KeyError, TypeError):
        return []
    return [str(item["table"]["name"]) for item in listed if isinstance(item, dict) and isinstance(item.get("table"), dict)]


class NftFirewall:
    """A node's table, kept as ``net_policy`` says (see the module docstring)."""

    def __init__(
        self,
        settings: PolicySettings,
        cgroup_root: Path,
        *,
        nft: str | None = None,
        run: NftRun = run_process,
        stale: Callable[[str], bool] = lambda table: False,
        tables: Callable[[], list[str]] | None = None,
    ) -> None:
        """``stale(name)``: whether another table of this namespace was left by a node that is gone
        (``install`` deletes those first; ``tables`` lists them, by default with ``nft``)."""
        self.settings = settings
        self.stale = stale
        self.cgroup_root = cgroup_root
        self.nft = nft if nft is not None else shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
        self._run = run
        self._tables = tables
        self.members = Members()
        self.installed = False
        self.error: str | None = None
        self._peers: dict[int, frozenset[Endpoint]] = {}
        self._cgroups: dict[int, str] = {}  # each admitted application's cgroup (its driver hosts reach only it)
        self._slots: dict[int, int] = {}  # the mark of each admitted application that holds a slot, and its slot

    def install(self, members: Members) -> None:
        """Replace the node's table; on failure remember why (every container start then says it)."""
        if self.nft is None:
            self.error = "nft is missing: install nftables (scripts/install does); containers need it for their network policy"
            log.error("{error}", error=self.error)
            return
        cortex = self.cgroup_root / self.settings.cgroup_parent
        try:
            cortex.mkdir(parents=True, exist_ok=True)  # named by the rules: must exist when they load
        except OSError as e:
            self.error = f"cannot make the containers' cgroup {cortex}: {e}"
            log.error("{error}", error=self.error)
            return
        listed = self._tables() if self._tables is not None else inet_tables(self.nft)
        left = [t for t in listed if t != self.settings.table and self.stale(t)]
        try:
            self._apply("".join(render_table_removed(t) for t in left) + render_table(self.settings, members))
        except ContainerStartError as e:
            self.error = str(e)
            log.error("{error}", error=self.error)
            return
        self.members, self.installed, self.error = members, True, None
        self._peers.clear()
        self._cgroups.clear()
        self._slots.clear()
        log.info("container network policy: table inet {table} installed", table=self.settings.table)
        if left:
            log.info("container network policy: deleted {tables}, left by nodes that are gone", tables=left)

    def update_members(self, members: Members) -> None:
        """New member sets (nothing happens when they did not change)."""
        if not self.installed or members == self.members:
            return
        try:
            self._apply(render_members(self.settings.table, members))
        except ContainerStartError as e:
            log.warn("container network policy: members not updated: {error}", error=str(e))
            return
        self.members = members
        log.info(
            "container network policy: {count} member addresses, {services} service endpoints",
            count=len(members.addresses),
            services=len(members.services),
        )

    def application_added(self, block: IdBlock, cgroup: str, peers: frozenset[Endpoint], slot: int | None) -> None:
        self._ready()
        slots = dict(self._slots)
        if slot is not None:
            slots[mark_of(block)] = slot
        table = self.settings.table
        self._apply(render_application_added(table, block, cgroup, peers, slot) + render_nat(table, slots))
        self._peers[block.root] = peers
        self._cgroups[block.root] = cgroup
        self._slots = slots

    def peers_added(self, block: IdBlock, peers: frozenset[Endpoint]) -> None:
        self._ready()
        known = self._peers.get(block.root, frozenset())
        new = peers - known
        if new:
            self._apply(render_peers_added(self.settings.table, block, self._cgroups[block.root], new))
            self._peers[block.root] = known | new

    def application_removed(self, block: IdBlock, cgroup: str) -> None:
        peers = self._peers.pop(block.root, frozenset())
        self._cgroups.pop(block.root, None)
        slot = self._slots.pop(mark_of(block), None)
        if not self.installed:
            return
        table = self.settings.table
        self._apply(render_application_removed(table, block, cgroup, peers, slot) + render_nat(table, self._slots))

    def remove(self) -> None:
        """Drop the node's table (at stop)."""
        if self.nft is None or not self.installed:
            return
        self.installed = False
        try:
            self._apply(render_table_removed(self.settings.table))
        except ContainerStartError as e:
            log.warn("container network policy: {error}", error=str(e))

    def _ready(self) -> None:
        if not self.installed:
            raise ContainerStartError(self.error or "the container network policy is not installed (the NodeManager is stopping)")

    def _apply(self, script: str) -> None:
        assert self.nft is not None
        code, err = self._run([self.nft, "-f", "-"], script)
        if code != 0:
            raise ContainerStartError(f"nft refused the container network policy ({err}); containers cannot start")
