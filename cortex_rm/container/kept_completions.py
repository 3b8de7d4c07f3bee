"""Completed containers a node keeps after the RM acknowledged them, until the RM says the AM has them.

Why: the RM that acknowledged a completion may die before the ApplicationMaster pulled
it in an allocate response.  The next active RM rebuilds its containers from the
nodes' registrations, so a completion the node already forgot would never reach the
AM.  As YARN's NodeManager (``NodeStatusUpdaterImpl``: completed containers stay in
the NM's context until ``containersToBeRemovedFromNM`` names them), a node keeps each
acknowledged completion here, stops reporting it in heartbeats, lists it again (state
COMPLETE, exit status, diagnostics) when it registers, and forgets it when

* the RM names it for removal (its AM has pulled it, or no AM ever will), or
* its application is cleaned up (``applications_to_cleanup``), or
* the bound is reached: at most ``limit`` are kept, the oldest dropped first and
  counted in ``dropped`` (a warning says how many).

A registration lists at most ``MAX_CONTAINERS`` containers, the node's live ones first
and then the oldest kept ones; those it listed are acknowledged again, so they count
as the newest and those left out come first at the next registration.

A removal can arrive before the node stopped reporting the container (the AM released
it: the RM ended it and told the AM at once, while the node was still stopping it).
Such a name is remembered (``_removable``, bounded alike) and applied when the
completion is acknowledged, as YARN's ``pendingContainersToRemove``; a name the node
does not know at all is ignored.

The list lives in memory only: a NodeManager restart forgets it, with NM recovery too.
YARN stores it in the NM state store; ``nm_recovery.py`` removes a container's record once
it is DONE, so a restarted NodeManager lists no completed container at all (not even one
that was never reported: a gap of NM recovery, not of this list).  The AM of a completion
misses it only if its NodeManager restarted after the acknowledgement and the active RM
failed over before the AM pulled it; storing the list would close that, later.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable

from twisted.logger import Logger

from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationId, ContainerId
from cortex_rm.yarn.resource_tracker import ContainerReport

log = Logger()

#: How many acknowledged completions a node keeps at most (and pending removal names).
MAX_KEPT_COMPLETIONS = 10_000


class KeptCompletions:
    """A node's acknowledged completed containers that the RM has not yet let it forget."""

    def __init__(self, limit: int = MAX_KEPT_COMPLETIONS) -> None:
        if limit < 1:
            raise ValueError(f"the limit of kept completions must be at least 1, not {limit}")
        self.limit = limit
        self._kept: OrderedDict[ContainerId, ContainerReport] = OrderedDict()  # oldest first
        self._removable: OrderedDict[ContainerId, None] = OrderedDict()  # named before acknowledged
        self.dropped = 0  # forgotten because of the bound, since the start

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._kept

    def reports(self) -> tuple[ContainerReport, ...]:
        """The kept completions, oldest first (for a registration)."""
        return tuple(self._kept.values())

    def acknowledged(self, reports: Iterable[ContainerReport]) -> None:
        """The RM recorded these completions: keep them (unless already named for removal)."""
        dropped = 0
        for report in reports:
            cid = report.container_id
            if report.state is not ContainerState.COMPLETE:
                continue
            if cid in self._removable:
                del self._removable[cid]
                self._kept.pop(cid, None)
                continue
            self._kept[cid] = report
            self._kept.move_to_end(cid)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
                dropped += 1
        if dropped:
            self.dropped += dropped
            log.warn(
                "forgot {n} acknowledged completed containers before their ApplicationMaster had them: "
                "more than {limit} kept ({total} so far)",
                n=dropped,
                limit=self.limit,
                total=self.dropped,
            )

    def remove(self, container_ids: Iterable[ContainerId], still_reported: Collection[ContainerId]) -> int:
        """The RM lets the node forget these; ``still_reported``: what the node still reports (live or not
        yet acknowledged), whose names wait for the acknowledgement.  Returns how many were forgotten now."""
        forgotten = 0
        for cid in container_ids:
            if self._kept.pop(cid, None) is not None:
                forgotten += 1
            elif cid in still_reported:
                self._removable[cid] = None
                while len(self._removable) > self.limit:
                    self._removable.popitem(last=False)
        return forgotten

    def applications_cleaned(self, app_ids: Collection[ApplicationId]) -> None:
        """These applications are over on this node: their completions need not be kept."""
        if not app_ids:
            return
        for table in (self._kept, self._removable):
            for cid in [c for c in table if c.attempt_id.app_id in app_ids]:
                del table[cid]

    def clear(self) -> None:
        """The RM will never name any (an older RM): keep nothing."""
        self._kept.clear()
        self._removable.clear()
