"""The ApplicationMaster's life drives its attempt and application as YARN's RM does."""

from __future__ import annotations

from cortex_rm.allocator.am_lifecycle import AMLifecycle
from cortex_rm.allocator.app_model import Application, SchedulerLimits
from cortex_rm.allocator.app_states import AppState, AttemptState, FinalStatus
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.yarn.ids import ContainerId
from tests.support.rm_core import RecordingListener, new_table, result_of, submitted


def _setup(limits: SchedulerLimits = SchedulerLimits()) -> tuple[ApplicationTable, AMLifecycle, RecordingListener]:
    listener = RecordingListener()
    table = new_table(limits=limits, listener=listener)
    return table, AMLifecycle(table), listener


def _launch(table: ApplicationTable, am: AMLifecycle, app: Application) -> None:
    attempt = app.current_attempt
    assert attempt is not None
    result_of(am.am_container_allocated(attempt.attempt_id, ContainerId(attempt.attempt_id, 1), "n1:45454", "n1:8042"))
    am.am_container_launched(attempt.attempt_id)


def test_successful_am_runs_unregisters_and_finishes_succeeded() -> None:
    """Allocated -> launched -> registered (RUNNING) -> unregistered (FINISHING) -> container ends (FINISHED)."""
    table, am, listener = _setup()
    app = submitted(table)
    _launch(table, am, app)
    attempt = app.current_attempt
    assert attempt is not None and attempt.state is AttemptState.LAUNCHED
    assert app.reported_state is AppState.ACCEPTED and app.launch_time_ms > 0
    result_of(am.registered(attempt.attempt_id, "n1", 4040, "http://n1:4040"))
    assert app.state is AppState.RUNNING and attempt.state is AttemptState.RUNNING
    assert result_of(am.unregistered(attempt.attempt_id, FinalStatus.SUCCEEDED, "", "")) is True
    assert app.state is AppState.FINISHING and app.final_status is FinalStatus.SUCCEEDED
    result_of(am.am_container_finished(attempt.attempt_id, 0, ""))
    assert app.state is AppState.FINISHED and attempt.state is AttemptState.FINISHED
    assert listener.finished == [str(app.app_id)]
    assert listener.ended == [str(attempt.attempt_id)]


def test_am_exit_without_unregistering_retries_then_fails_the_app() -> None:
    """Each AM exit fails its attempt; the last allowed one fails the application with the exit code."""
    table, am, listener = _setup(SchedulerLimits(max_app_attempts=2))
    app = submitted(table)
    for expected in (AppState.ACCEPTED, AppState.FAILED):
        _launch(table, am, app)
        attempt = app.current_attempt
        assert attempt is not None
        result_of(am.registered(attempt.attempt_id, "n1", 1, ""))
        result_of(am.am_container_finished(attempt.attempt_id, 1, "Exception in thread main"))
        assert attempt.state is AttemptState.FAILED
        assert app.state is expected
    assert len(app.attempts) == 2
    assert app.final_status is FinalStatus.FAILED
    assert "exited with exitCode: 1" in app.diagnostics and "failed 2 times" in app.diagnostics
    assert len(listener.started) == 2 and len(listener.ended) == 2


def test_am_lost_with_its_node_does_not_count_as_a_failure() -> None:
    """Exit status -100 (node lost) starts another attempt without using up max attempts."""
    table, am, _ = _setup(SchedulerLimits(max_app_attempts=1))
    app = submitted(table)
    _launch(table, am, app)
    first = app.current_attempt
    assert first is not None
    result_of(am.am_container_finished(first.attempt_id, -100, "node lost"))
    assert app.state is AppState.ACCEPTED and len(app.attempts) == 2


def test_killing_a_running_app_completes_when_its_am_container_ends() -> None:
    """KILL on RUNNING -> KILLING (attempt killed, containers released); the AM's end -> KILLED."""
    table, am, listener = _setup()
    app = submitted(table)
    _launch(table, am, app)
    attempt = app.current_attempt
    assert attempt is not None
    result_of(am.registered(attempt.attempt_id, "n1", 1, ""))
    assert result_of(table.kill(app.app_id)) is False
    assert app.state is AppState.KILLING and app.reported_state is AppState.RUNNING
    assert listener.ended == [str(attempt.attempt_id)]
    result_of(am.am_container_finished(attempt.attempt_id, 143, "killed"))
    assert app.state is AppState.KILLED and app.final_status is FinalStatus.KILLED
    assert result_of(table.kill(app.app_id)) is True


def test_an_am_that_stops_heartbeating_fails_its_attempt() -> None:
    """AM expiry fails the attempt like an exit does, naming the timeout."""
    table, am, _ = _setup(SchedulerLimits(max_app_attempts=1))
    app = submitted(table)
    _launch(table, am, app)
    attempt = app.current_attempt
    assert attempt is not None
    result_of(am.registered(attempt.attempt_id, "n1", 1, ""))
    result_of(am.expired(attempt.attempt_id, 10_000))
    assert attempt.state is AttemptState.FAILED
    assert app.state is AppState.FAILED and "timed out after 10000 ms" in app.diagnostics


def test_unregistering_twice_is_idempotent() -> None:
    """A second finishApplicationMaster (the client loops until isUnregistered) answers True."""
    table, am, _ = _setup()
    app = submitted(table)
    _launch(table, am, app)
    attempt = app.current_attempt
    assert attempt is not None
    result_of(am.registered(attempt.attempt_id, "n1", 1, ""))
    assert result_of(am.unregistered(attempt.attempt_id, FinalStatus.FAILED, "boom", "")) is True
    assert result_of(am.unregistered(attempt.attempt_id, FinalStatus.FAILED, "boom", "")) is True
    assert app.final_status is FinalStatus.FAILED and app.diagnostics == "boom"


def test_a_finishing_application_is_reported_finished() -> None:
    """Between unregistering and its container's end, clients already see FINISHED (YARN's mapping)."""
    table, am, _ = _setup()
    app = submitted(table)
    _launch(table, am, app)
    attempt = app.current_attempt
    assert attempt is not None
    result_of(am.registered(attempt.attempt_id, "n1", 1, ""))
    result_of(am.unregistered(attempt.attempt_id, FinalStatus.SUCCEEDED, "", ""))
    assert app.state is AppState.FINISHING and app.reported_state is AppState.FINISHED
