"""The entry node's verdict over its executors' outcomes: first answer, or an absolute majority with dissenters named."""

from __future__ import annotations

import json

from cortex_rm.events.outcomes import FunctionOutcome, OutcomeStatus
from cortex_rm.events.verdicts import NO_MAJORITY, Verdict, canonical_result


def outcome(result: object = None, status: OutcomeStatus = OutcomeStatus.SUCCESS, raw: bytes | None = None) -> FunctionOutcome:
    data = raw if raw is not None else (json.dumps(result).encode() if status is OutcomeStatus.SUCCESS else b"")
    return FunctionOutcome(1, "a-1", status.value, data, "" if status is OutcomeStatus.SUCCESS else "boom", b"", 3, False)


def test_first_takes_the_first_answer_and_ignores_later_ones() -> None:
    """mode first: the first real answer decides at once; a later, different answer changes nothing."""
    v = Verdict("first", (1, 2))
    d = v.add(2, outcome(7))
    assert d is not None and d.winner == 2 and d.outcome is not None and d.outcome.result == b"7"
    assert v.add(1, outcome(8)) is d


def test_first_skips_an_executor_that_cannot_answer() -> None:
    """A BUSY or failed executor is not an answer: the verdict waits for another, and fails only when none is left."""
    v = Verdict("first", (1, 2))
    assert v.add(1, outcome(status=OutcomeStatus.BUSY)) is None
    d = v.fail(2, "unreachable")
    assert d is not None and d.status == OutcomeStatus.INTERNAL_ERROR.value and "unreachable" in d.error
    assert set(d.missing) == {1, 2}


def test_vote_waits_for_every_replica_and_names_the_dissenter() -> None:
    """vote: two of three agree (in any JSON spelling), the third is the dissenter; nothing is decided before all answered."""
    v = Verdict("vote", (1, 2, 3))
    assert v.add(1, outcome(raw=b'{"a": 1, "b": 2}')) is None
    assert v.add(3, outcome({"wrong": True})) is None
    d = v.add(2, outcome(raw=b'{"b":2,"a":1}'))
    assert d is not None and d.status == "success"
    assert set(d.agreed) == {1, 2} and d.dissenters == (3,) and d.missing == ()


def test_vote_with_a_silent_replica_decides_at_the_window() -> None:
    """A replica that never answers is missing; the two that agree are a majority of three once the window closes."""
    v = Verdict("vote", (1, 2, 3))
    v.add(1, outcome(5))
    assert v.add(2, outcome(5)) is None  # replica 3 may still answer
    d = v.close()
    assert d.status == "success" and d.missing == (3,) and d.dissenters == ()


def test_vote_without_an_absolute_majority_is_no_majority() -> None:
    """One of three answering, or a split vote, decides nothing: NO_MAJORITY, with who said what."""
    v = Verdict("vote", (1, 2, 3))
    v.add(1, outcome(1))
    v.add(2, outcome(2))
    d = v.close()
    assert d.status == NO_MAJORITY and d.outcome is None and "did not agree" in d.error
    lone = Verdict("vote", (1, 2, 3))
    lone.add(1, outcome(1))
    assert lone.close().status == NO_MAJORITY


def test_vote_counts_errors_as_answers() -> None:
    """Two replicas whose handler raised outvote one that returned a value: the majority's error is the answer."""
    v = Verdict("vote", (1, 2, 3))
    v.add(1, outcome(status=OutcomeStatus.APPLICATION_ERROR))
    v.add(2, outcome(1))
    d = v.add(3, outcome(status=OutcomeStatus.APPLICATION_ERROR))
    assert d is not None and d.status == "application_error" and d.dissenters == (2,)


def test_a_replaced_executor_is_the_spare_from_then_on() -> None:
    """An executor swapped for a spare: an answer from the old one is ignored, the spare's counts."""
    v = Verdict("first", (1,))
    v.replace_executor(1, 9)
    assert v.add(1, outcome(1)) is None
    d = v.add(9, outcome(2))
    assert d is not None and d.winner == 9


def test_canonical_result_sorts_keys_and_leaves_non_json_alone() -> None:
    assert canonical_result(b'{"b": 1, "a": [1, 2]}') == b'{"a":[1,2],"b":1}'
    assert canonical_result(b"\xff not json") == b"\xff not json"
