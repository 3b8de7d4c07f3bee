"""Adaptive replication, as BOINC does it: a node that keeps agreeing with its peers is spot-checked, not replicated.

A ``vote`` function with ``replicas > 1`` runs every trigger on each of its
executors (the owner of its key and the next successors) and answers with the
majority.  That costs ``replicas`` times the work.  BOINC's answer
(``adaptive replication``): a host whose results were valid ``N`` times in a row is
*trusted*, and its jobs are sent to it alone but for a random fraction that is still
replicated, so a host that turns bad is caught at the next such check and goes back
to full replication.

Here, at the entry node (which votes, so it sees who agreed):

* ``plan(function, executors)`` says where to send a trigger.  Every executor, unless
  the function votes with ``replicas > 1`` and its first executor (the owner, which
  alone would run it) is trusted for that function; then the owner alone, except a
  ``spot_check_rate`` fraction drawn from the injected random source.
* ``record(function, agreed, dissented)`` after each replicated vote: each node of
  ``agreed`` extends its run of agreements (only when at least two results agreed:
  a result no peer checked proves nothing), each of ``dissented`` starts again
  from zero, untrusted.  The caller counts as dissenting an executor whose result is
  missing (no answer, an error of its own) while the others agree; a run on a
  trusted node alone is never recorded.
* **Per node and function version**, as BOINC keeps it per host and app version:
  trust earned on one function's code says nothing of another's (a node may
  compute one function right and tamper with another, more valuable one), and a
  user cannot make a colluding node trusted everywhere by triggering a cheap
  function of her own many times.  A new version of a function starts from zero.
* **Bounded**: at most ``max_entries`` (node, function) pairs, least recently used
  forgotten first (forgetting only costs replication).  Each entry node keeps its own
  picture from the votes it ran; nothing is shared, so nothing can be forged.

What it does not do: a trusted node that cheats is caught only when a spot check
happens, so a wrong answer is returned with probability ``1 - spot_check_rate`` per
cheating trigger until then (BOINC's trade: the work saved against that risk).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cortex_rm.events.functions import FunctionSpec


@dataclass(frozen=True)
class SpotCheckConfig:
    """How adaptive replication behaves (``enabled`` False: every vote runs on every replica)."""

    enabled: bool = True
    #: Agreements in a row that make a node trusted for a function.
    trust_after: int = 10
    #: The fraction of a trusted node's triggers still sent to every replica.
    spot_check_rate: float = 0.1
    #: (node, function) pairs remembered at most.
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.trust_after, int) or not 1 <= self.trust_after <= 1_000_000:
            raise ValueError(f"trust_after must be from 1 to 1000000 (got {self.trust_after!r})")
        if not isinstance(self.spot_check_rate, (int, float)) or not 0.0 <= self.spot_check_rate <= 1.0:
            raise ValueError(f"spot_check_rate must be from 0 to 1 (got {self.spot_check_rate!r})")
        if not isinstance(self.max_entries, int) or not 1 <= self.max_entries <= 10_000_000:
            raise ValueError(f"max_entries must be from 1 to 10000000 (got {self.max_entries!r})")


@dataclass
class _Streak:
    version: int
    agreed: int = 0


class SpotChecks:
    """The entry node's record of which executors it trusts for which function (module doc)."""

    def __init__(self, config: SpotCheckConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self._streaks: OrderedDict[tuple[int, str], _Streak] = OrderedDict()
        self.solo = 0  # triggers planned on a trusted node alone
        self.spot_checked = 0  # triggers of a trusted node replicated as a spot check

    def __len__(self) -> int:
        return len(self._streaks)

    def adaptive(self, function: FunctionSpec) -> bool:
        """Whether ``function`` is one whose replication may adapt (a replicated vote)."""
        return self.config.enabled and function.mode == "vote" and function.replicas > 1

    def agreements(self, function: FunctionSpec, node: int) -> int:
        """``node``'s agreements in a row for this version of ``function`` (0: unknown)."""
        streak = self._streaks.get((node, function.name))
        return streak.agreed if streak is not None and streak.version == function.version else 0

    def trusted(self, function: FunctionSpec, node: int) -> bool:
        """Whether ``node`` has agreed ``trust_after`` times in a row for this version of ``function``."""
        return self.agreements(function, node) >= self.config.trust_after

    def plan(self, function: FunctionSpec, executors: Sequence[int]) -> list[int]:
        """The executors to send a trigger to: all of them, or the trusted owner alone (module doc)."""
        if len(executors) < 2 or not self.adaptive(function) or not self.trusted(function, executors[0]):
            return list(executors)
        self._streaks.move_to_end((executors[0], function.name))
        if self.rng.random() < self.config.spot_check_rate:
            self.spot_checked += 1
            return list(executors)
        self.solo += 1
        return [executors[0]]

    def record(self, function: FunctionSpec, agreed: Iterable[int], dissented: Iterable[int]) -> None:
        """What a replicated vote showed: who agreed with the majority, who did not (or did not answer)."""
        if not self.adaptive(function):
            return
        agreed, dissented = set(agreed), set(dissented)
        for node in sorted(dissented):
            self._set(function, node, 0)
        if len(agreed) >= 2:
            for node in sorted(agreed - dissented):
                self._set(function, node, min(self.agreements(function, node) + 1, self.config.trust_after))

    def forget(self, node: int) -> None:
        """Drop everything about ``node`` (it left the ring)."""
        for key in [key for key in self._streaks if key[0] == node]:
            del self._streaks[key]

    def _set(self, function: FunctionSpec, node: int, agreed: int) -> None:
        key = (node, function.name)
        held = self._streaks.get(key)
        if held is not None and held.version > function.version:
            return  # a vote of an older version, finished after the new one's first: it says nothing now
        self._streaks[key] = _Streak(function.version, agreed)
        self._streaks.move_to_end(key)
        while len(self._streaks) > self.config.max_entries:
            self._streaks.popitem(last=False)
