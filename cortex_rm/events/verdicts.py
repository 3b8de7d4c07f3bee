"""How an entry node turns its executors' outcomes into one answer: ``first`` or ``vote``.

The entry node sends an activation to the executors it chose (the function's
``replicas``) and feeds each signed outcome it gets back to a ``Verdict``:

* **first**: the first outcome that is the function's own answer
  (``OutcomeStatus.counts_as_answer``: its result, its exception, its timeout...)
  decides; later ones are kept for the record but change nothing.
* **vote**: answers are grouped by what they say -- the status and, for a result,
  its JSON in canonical form (keys sorted, no spaces), so two executors that
  serialised the same value differently still agree -- and the verdict waits for
  every executor or for the window to close (``close``).  The largest group wins
  when it holds more than half of the executors asked (an absolute majority:
  a tie, or a plurality among silent executors, decides nothing); executors in
  other groups are the *dissenters*, and those that never answered are *missing*.
  Once every executor has answered (or cannot), the verdict is decided at once.

A verdict without a winner ends as ``NO_MAJORITY`` (vote) or with the last
executor's own trouble (first: every executor failed to answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cortex_rm.events.outcomes import FunctionOutcome, OutcomeStatus, result_digest

#: An activation's status when the replicas of a ``vote`` function agreed on nothing.
NO_MAJORITY = "no_majority"


def canonical_result(result: bytes) -> bytes:
    """``result`` as canonical JSON (sorted keys, compact); unchanged when it is not JSON."""
    try:
        return json.dumps(json.loads(result), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        return result


def answer_key(outcome: FunctionOutcome) -> tuple[str, str]:
    """What two agreeing answers share: the status, and the canonical result's digest (or the error)."""
    if outcome.outcome_status is OutcomeStatus.SUCCESS:
        return (outcome.status, result_digest(canonical_result(outcome.result)))
    return (outcome.status, "")


@dataclass(frozen=True)
class Decision:
    """The verdict: the winning outcome (None: no winner), who agreed, dissented and never answered."""

    status: str
    outcome: FunctionOutcome | None
    winner: int | None
    agreed: tuple[int, ...]
    dissenters: tuple[int, ...]
    missing: tuple[int, ...]
    error: str = ""


@dataclass
class Verdict:
    """Outcomes of one activation as they arrive (see the module docstring)."""

    mode: str
    executors: tuple[int, ...]
    answers: dict[int, FunctionOutcome] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)  # executors that cannot answer, and why
    decision: Decision | None = None

    def replace_executor(self, old: int, new: int) -> None:
        """``old`` could not take the activation (busy, unreachable): ``new`` is asked instead."""
        self.executors = tuple(new if e == old else e for e in self.executors)

    def add_executor(self, executor: int) -> None:
        """One more executor is asked (a solo run that must be replicated after all)."""
        if executor not in self.executors:
            self.executors = (*self.executors, executor)

    def add(self, executor: int, outcome: FunctionOutcome) -> Decision | None:
        """``executor``'s signed, checked outcome; the decision once there is one."""
        if executor not in self.executors or executor in self.answers or self.decision is not None:
            return self.decision
        if not outcome.outcome_status.counts_as_answer:
            return self.fail(executor, outcome.error or outcome.status)
        self.answers[executor] = outcome
        return self._decide(final=False)

    def fail(self, executor: int, why: str) -> Decision | None:
        """``executor`` will not answer (``why``); the decision, if that settles it."""
        if executor in self.executors and executor not in self.answers and self.decision is None:
            self.failures[executor] = why
            return self._decide(final=False)
        return self.decision

    def close(self) -> Decision:
        """The window has closed: decide with what arrived."""
        decision = self.decision or self._decide(final=True)
        assert decision is not None
        return decision

    # ------------------------------------------------------------ internals

    def _pending(self) -> tuple[int, ...]:
        return tuple(e for e in self.executors if e not in self.answers and e not in self.failures)

    def _decide(self, final: bool) -> Decision | None:
        pending = self._pending()
        if self.mode == "first":
            if self.answers:
                winner = next(iter(self.answers))
                return self._settle(winner, (winner,), (), pending)
            if pending and not final:
                return None
            return self._settle_without(pending)
        groups: dict[tuple[str, str], list[int]] = {}
        for executor, outcome in self.answers.items():
            groups.setdefault(answer_key(outcome), []).append(executor)
        best = max(groups.values(), key=len, default=[])
        majority = len(self.executors) // 2 + 1
        others = [e for group in groups.values() if group is not best for e in group]
        if len(best) >= majority and (final or not pending):
            return self._settle(best[0], tuple(best), tuple(others), pending)
        if pending and not final:
            return None
        if len(best) >= majority:
            return self._settle(best[0], tuple(best), tuple(others), pending)
        if not self.answers:
            return self._settle_without(pending)
        counts = ", ".join(f"{len(g)} said {k[0]}" for k, g in groups.items())
        why = f"the {len(self.executors)} replicas did not agree ({counts}; {len(pending) + len(self.failures)} silent)"
        self.decision = Decision(NO_MAJORITY, None, None, (), tuple(self.answers), pending, why)
        return self.decision

    def _settle(self, winner: int, agreed: tuple[int, ...], dissenters: tuple[int, ...], missing: tuple[int, ...]) -> Decision:
        outcome = self.answers[winner]
        self.decision = Decision(outcome.status, outcome, winner, agreed, dissenters, missing + tuple(self.failures))
        return self.decision

    def _settle_without(self, pending: tuple[int, ...]) -> Decision:
        reasons = "; ".join(f"{e:040x}"[:12] + f": {why}" for e, why in self.failures.items()) or "no executor answered"
        status = OutcomeStatus.TIMEOUT.value if pending else OutcomeStatus.INTERNAL_ERROR.value
        error = f"no executor answered in time ({reasons})" if pending else f"no executor could run it ({reasons})"
        self.decision = Decision(status, None, None, (), (), pending + tuple(self.failures), error)
        return self.decision
