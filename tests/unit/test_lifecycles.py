"""The transition tables: declared transitions work, everything else raises, and the
completeness claims the tables' comments make actually hold."""

from __future__ import annotations

import enum
import itertools
from typing import Any

import pytest

from cortex_rm.allocator.app_states import (
    APP_TRANSITIONS,
    ATTEMPT_TRANSITIONS,
    HIDDEN_APP_STATES,
    TERMINAL_APP_STATES,
    AppEvent,
    AppState,
    AttemptEvent,
    AttemptState,
)
from cortex_rm.allocator.nodes import NODE_TRANSITIONS, NodeEvent, NodeState
from cortex_rm.yarn.errors import IllegalTransition
from cortex_rm.yarn.transitions import TransitionTable

TABLES: list[tuple[TransitionTable[Any, Any], type[enum.Enum], type[enum.Enum]]] = [
    (APP_TRANSITIONS, AppState, AppEvent),
    (ATTEMPT_TRANSITIONS, AttemptState, AttemptEvent),
    (NODE_TRANSITIONS, NodeState, NodeEvent),
]


def _declared(table: TransitionTable[Any, Any]) -> dict[tuple[Any, Any], frozenset[Any]]:
    # The table's own declarations: what these tests check against behaviour.
    return table._targets  # noqa: SLF001


def _ignored(table: TransitionTable[Any, Any]) -> frozenset[tuple[Any, Any]]:
    return table._ignored  # noqa: SLF001


def _all_pairs() -> list[Any]:
    return [
        pytest.param(table, state, event, id=f"{table.name}:{state.name}+{event.name}")
        for table, states, events in TABLES
        for state, event in itertools.product(states, events)
    ]


def _declared_pairs() -> list[Any]:
    return [
        pytest.param(table, state, event, targets, id=f"{table.name}:{state.name}+{event.name}")
        for table, _, _ in TABLES
        for (state, event), targets in _declared(table).items()
    ]


# -- the generic table ---------------------------------------------------------------


class Light(enum.Enum):
    OFF = "OFF"
    ON = "ON"
    BROKEN = "BROKEN"


class Press(enum.Enum):
    FLIP = "FLIP"
    HIT = "HIT"


def _light_table() -> TransitionTable[Light, Press]:
    return TransitionTable(
        "light",
        {
            (Light.OFF, Press.FLIP): Light.ON,
            (Light.ON, Press.FLIP): [Light.OFF, Light.BROKEN],
        },
        ignored=[(Light.BROKEN, Press.FLIP)],
    )


def test_single_target_transition_needs_no_target() -> None:
    """A pair with one declared next state returns it without being told."""
    assert _light_table().next_state(Light.OFF, Press.FLIP) is Light.ON


def test_ambiguous_transition_without_target_raises_naming_the_choices() -> None:
    """A pair with several next states refuses to guess and lists the choices."""
    with pytest.raises(IllegalTransition, match="needs a target.*BROKEN, OFF"):
        _light_table().next_state(Light.ON, Press.FLIP)


def test_ambiguous_transition_takes_any_declared_target() -> None:
    """Each declared target of an ambiguous pair is accepted when named."""
    table = _light_table()
    assert table.next_state(Light.ON, Press.FLIP, Light.OFF) is Light.OFF
    assert table.next_state(Light.ON, Press.FLIP, Light.BROKEN) is Light.BROKEN


def test_undeclared_target_raises() -> None:
    """Naming a target the pair does not declare raises, even for a single-target pair."""
    table = _light_table()
    with pytest.raises(IllegalTransition, match="OFF --FLIP--> BROKEN"):
        table.next_state(Light.OFF, Press.FLIP, Light.BROKEN)
    with pytest.raises(IllegalTransition, match="ON --FLIP--> ON"):
        table.next_state(Light.ON, Press.FLIP, Light.ON)


def test_undeclared_pair_raises_naming_table_state_and_event() -> None:
    """An event the state does not declare is a bug and raises with the table's name."""
    with pytest.raises(IllegalTransition, match="light: event HIT is not valid in state OFF"):
        _light_table().next_state(Light.OFF, Press.HIT)


def test_ignored_pair_returns_none_even_with_a_target() -> None:
    """A declared-ignorable pair returns None and is not reported as accepted."""
    table = _light_table()
    assert table.next_state(Light.BROKEN, Press.FLIP) is None
    assert table.next_state(Light.BROKEN, Press.FLIP, Light.ON) is None
    assert not table.accepts(Light.BROKEN, Press.FLIP)
    assert table.accepts(Light.OFF, Press.FLIP)


def test_a_pair_both_handled_and_ignored_is_rejected_at_construction() -> None:
    """A table may not declare the same pair as a transition and as ignorable."""
    with pytest.raises(ValueError, match="both ignored and handled"):
        TransitionTable("bad", {(Light.OFF, Press.FLIP): Light.ON}, ignored=[(Light.OFF, Press.FLIP)])


# -- every pair of every real table --------------------------------------------------


@pytest.mark.parametrize(("table", "state", "event", "targets"), _declared_pairs())
def test_every_declared_transition_works(table, state, event, targets) -> None:  # type: ignore[no-untyped-def]
    """Each declared pair reaches each of its targets; a lone target needs no naming, several do."""
    assert table.accepts(state, event)
    for target in targets:
        assert table.next_state(state, event, target) is target
    if len(targets) == 1:
        assert table.next_state(state, event) is next(iter(targets))
    else:
        with pytest.raises(IllegalTransition, match="needs a target"):
            table.next_state(state, event)


@pytest.mark.parametrize(("table", "state", "event"), _all_pairs())
def test_every_other_pair_is_ignored_or_illegal(table, state, event) -> None:  # type: ignore[no-untyped-def]
    """A pair that is not a transition is either declared ignorable (None) or raises IllegalTransition."""
    if (state, event) in _declared(table):
        return
    if (state, event) in _ignored(table):
        assert table.next_state(state, event) is None
    else:
        with pytest.raises(IllegalTransition):
            table.next_state(state, event)
    assert not table.accepts(state, event)


# -- completeness claims of the application table ------------------------------------


@pytest.mark.parametrize("state", sorted(TERMINAL_APP_STATES, key=lambda s: s.name))
def test_every_ended_application_ignores_kill(state: AppState) -> None:
    """Killing an application that has already ended changes nothing (YARN answers 'kill completed')."""
    assert APP_TRANSITIONS.next_state(state, AppEvent.KILL) is None


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s in sorted(TERMINAL_APP_STATES, key=lambda s: s.name)
        for e in (AppEvent.ATTEMPT_FAILED, AppEvent.ATTEMPT_FINISHED, AppEvent.ATTEMPT_KILLED)
    ],
)
def test_every_ended_application_ignores_late_news_of_its_attempts(state: AppState, event: AppEvent) -> None:
    """An attempt ending after its application ended (however it ended) is ignored, not a crash."""
    assert APP_TRANSITIONS.next_state(state, event) is None


@pytest.mark.parametrize("state", [s for s in AppState if not s.is_terminal])
def test_every_live_application_can_be_killed_or_is_already_ending(state: AppState) -> None:
    """KILL is handled or declared ignorable in every state before the end: a kill never raises."""
    assert APP_TRANSITIONS.accepts(state, AppEvent.KILL) or APP_TRANSITIONS.next_state(state, AppEvent.KILL) is None


def test_no_transition_leaves_an_ended_application() -> None:
    """FINISHED, FAILED and KILLED are final: no event moves an application out of them."""
    for (state, _), _targets in _declared(APP_TRANSITIONS).items():
        assert not state.is_terminal, state


def test_final_saving_ends_in_the_final_states_or_finishing() -> None:
    """Storing the outcome leads to FINISHING or one of the three final states, and nowhere else."""
    assert _declared(APP_TRANSITIONS)[(AppState.FINAL_SAVING, AppEvent.APP_UPDATE_SAVED)] == (
        TERMINAL_APP_STATES | {AppState.FINISHING}
    )


def test_every_way_to_end_goes_through_final_saving() -> None:
    """Only FINAL_SAVING (storing the outcome) and FINISHING (already stored) lead to a final state."""
    for (state, _), targets in _declared(APP_TRANSITIONS).items():
        if targets & TERMINAL_APP_STATES:
            assert state in (AppState.FINAL_SAVING, AppState.FINISHING), state


def test_internal_states_are_neither_terminal_nor_reportable_alone() -> None:
    """KILLING and FINAL_SAVING are the hidden states, and neither is an end state."""
    assert HIDDEN_APP_STATES == {AppState.KILLING, AppState.FINAL_SAVING}
    assert not any(s.is_terminal for s in HIDDEN_APP_STATES)


def test_submission_saved_after_a_kill_is_ignored() -> None:
    """The store confirming the submission after a kill began (FINAL_SAVING) is ignored, as in YARN."""
    assert APP_TRANSITIONS.next_state(AppState.FINAL_SAVING, AppEvent.APP_NEW_SAVED) is None


def _reachable(table: TransitionTable[Any, Any], start: Any) -> set[Any]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (source, _), targets in _declared(table).items():
            if source is state:
                for t in targets - seen:
                    seen.add(t)
                    todo.append(t)
    return seen


def test_every_application_state_is_reachable_from_new() -> None:
    """No application state is dead: each can be reached from NEW through declared transitions."""
    assert _reachable(APP_TRANSITIONS, AppState.NEW) == set(AppState)


def test_application_happy_path_follows_yarn() -> None:
    """NEW → NEW_SAVING → SUBMITTED → ACCEPTED → RUNNING → FINAL_SAVING → FINISHING → FINISHED."""
    steps = [
        (AppEvent.START, None, AppState.NEW_SAVING),
        (AppEvent.APP_NEW_SAVED, None, AppState.SUBMITTED),
        (AppEvent.APP_ACCEPTED, None, AppState.ACCEPTED),
        (AppEvent.ATTEMPT_REGISTERED, None, AppState.RUNNING),
        (AppEvent.ATTEMPT_UNREGISTERED, None, AppState.FINAL_SAVING),
        (AppEvent.APP_UPDATE_SAVED, AppState.FINISHING, AppState.FINISHING),
        (AppEvent.ATTEMPT_FINISHED, None, AppState.FINISHED),
    ]
    state = AppState.NEW
    for event, target, expected in steps:
        state = APP_TRANSITIONS.next_state(state, event, target)
        assert state is expected


# -- completeness claims of the attempt table ----------------------------------------

LIVE_ATTEMPT_STATES = [s for s in AttemptState if not s.is_terminal and s is not AttemptState.FINISHING]


@pytest.mark.parametrize("state", LIVE_ATTEMPT_STATES)
def test_every_live_attempt_can_be_killed_or_failed(state: AttemptState) -> None:
    """Before it finishes, an attempt accepts KILL (→ KILLED) and FAIL (→ FAILED) in every state."""
    assert ATTEMPT_TRANSITIONS.next_state(state, AttemptEvent.KILL) is AttemptState.KILLED
    assert ATTEMPT_TRANSITIONS.next_state(state, AttemptEvent.FAIL) is AttemptState.FAILED


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (s, e)
        for s in (AttemptState.FAILED, AttemptState.FINISHED, AttemptState.KILLED)
        for e in (AttemptEvent.KILL, AttemptEvent.CONTAINER_FINISHED, AttemptEvent.EXPIRE, AttemptEvent.FAIL)
    ],
)
def test_ended_attempts_ignore_late_kills_failures_and_container_ends(
    state: AttemptState, event: AttemptEvent
) -> None:
    """A kill, fail, expiry or container end arriving after the attempt ended changes nothing."""
    assert ATTEMPT_TRANSITIONS.next_state(state, event) is None


def test_no_transition_leaves_an_ended_attempt() -> None:
    """FAILED, FINISHED and KILLED attempts are final."""
    for (state, _), _targets in _declared(ATTEMPT_TRANSITIONS).items():
        assert not state.is_terminal, state


def test_finishing_attempt_ignores_kill_and_finishes_on_container_end() -> None:
    """An attempt whose AM unregistered is not killed any more; its container ending finishes it."""
    assert ATTEMPT_TRANSITIONS.next_state(AttemptState.FINISHING, AttemptEvent.KILL) is None
    assert (
        ATTEMPT_TRANSITIONS.next_state(AttemptState.FINISHING, AttemptEvent.CONTAINER_FINISHED)
        is AttemptState.FINISHED
    )


def test_attempt_happy_path_follows_yarn() -> None:
    """NEW → SUBMITTED → SCHEDULED → ALLOCATED_SAVING → ALLOCATED → LAUNCHED → RUNNING → FINISHING → FINISHED."""
    events = [
        (AttemptEvent.START, AttemptState.SUBMITTED),
        (AttemptEvent.ATTEMPT_ADDED, AttemptState.SCHEDULED),
        (AttemptEvent.CONTAINER_ALLOCATED, AttemptState.ALLOCATED_SAVING),
        (AttemptEvent.ATTEMPT_NEW_SAVED, AttemptState.ALLOCATED),
        (AttemptEvent.LAUNCHED, AttemptState.LAUNCHED),
        (AttemptEvent.REGISTERED, AttemptState.RUNNING),
        (AttemptEvent.UNREGISTERED, AttemptState.FINISHING),
        (AttemptEvent.CONTAINER_FINISHED, AttemptState.FINISHED),
    ]
    state = AttemptState.NEW
    for event, expected in events:
        state = ATTEMPT_TRANSITIONS.next_state(state, event)
        assert state is expected


# -- the node table ------------------------------------------------------------------


def test_repeated_health_reports_and_expiries_are_ignored() -> None:
    """A healthy node reporting healthy, an unhealthy one unhealthy, or a lost one expiring again: no change."""
    assert NODE_TRANSITIONS.next_state(NodeState.RUNNING, NodeEvent.HEALTHY) is None
    assert NODE_TRANSITIONS.next_state(NodeState.UNHEALTHY, NodeEvent.UNHEALTHY) is None
    assert NODE_TRANSITIONS.next_state(NodeState.LOST, NodeEvent.EXPIRE) is None


@pytest.mark.parametrize("state", [NodeState.RUNNING, NodeState.UNHEALTHY, NodeState.LOST, NodeState.SHUTDOWN])
def test_a_node_that_registers_again_is_running(state: NodeState) -> None:
    """Whatever became of a registered node, registering again makes it RUNNING."""
    assert NODE_TRANSITIONS.next_state(state, NodeEvent.RECONNECTED) is NodeState.RUNNING
