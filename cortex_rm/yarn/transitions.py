"""Transition tables for the explicit lifecycles of the cluster model.

A lifecycle is a complete table of ``(state, event) -> allowed next states`` plus
the declared pairs that may be ignored.  Anything else raises ``IllegalTransition``:
an unexpected event is a bug to surface, never a silent no-op.  Where YARN moves
to one of several states on the same event (an attempt failing either retries or
fails the application), the caller names the target and the table checks it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from cortex_rm.yarn.errors import IllegalTransition

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class TransitionTable(Generic[S, E]):
    """The allowed transitions of one lifecycle."""

    def __init__(
        self,
        name: str,
        transitions: Mapping[tuple[S, E], S | Iterable[S]],
        ignored: Iterable[tuple[S, E]] = (),
    ) -> None:
        self.name = name
        self._targets: dict[tuple[S, E], frozenset[S]] = {}
        for key, targets in transitions.items():
            if isinstance(targets, enum.Enum):
                self._targets[key] = frozenset([targets])
            else:
                self._targets[key] = frozenset(targets)
        self._ignored = frozenset(ignored)
        overlap = self._ignored & self._targets.keys()
        if overlap:
            raise ValueError(f"{name}: pairs both ignored and handled: {sorted(map(str, overlap))}")

    def next_state(self, state: S, event: E, target: S | None = None) -> S | None:
        """The state after ``event`` in ``state``; None when the pair is declared ignorable.

        ``target`` picks among several allowed next states and must be given then.
        """
        key = (state, event)
        if key in self._ignored:
            return None
        targets = self._targets.get(key)
        if targets is None:
            raise IllegalTransition(f"{self.name}: event {event.name} is not valid in state {state.name}")
        if target is None:
            if len(targets) != 1:
                names = ", ".join(sorted(t.name for t in targets))
                raise IllegalTransition(f"{self.name}: {state.name} --{event.name}--> needs a target ({names})")
            (only,) = targets
            return only
        if target not in targets:
            raise IllegalTransition(
                f"{self.name}: {state.name} --{event.name}--> {target.name} is not an allowed transition"
            )
        return target

    def accepts(self, state: S, event: E) -> bool:
        """Whether ``event`` does something in ``state`` (neither illegal nor ignored)."""
        return (state, event) in self._targets
