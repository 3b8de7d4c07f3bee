"""The application table: ids, submission, kill, move, priority, attempts, queries and
recovery after a restart — all on a ``Clock`` and a memory or SQLite store, no reactor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.app_ids import ID_BLOCK, PENDING_PER_USER, PENDING_TTL_MS
from cortex_rm.allocator.app_model import Application, SchedulerLimits, Submission
from cortex_rm.allocator.app_queries import ApplicationFilter
from cortex_rm.allocator.app_states import AppState, AttemptState, FinalStatus
from cortex_rm.allocator.app_table import ACCEPTED_DIAGNOSTICS, ApplicationTable
from cortex_rm.allocator.errors import AccessDenied, InvalidSubmission, RefusedOperation, UnknownApplication, UnknownAttempt
from cortex_rm.allocator.queues import QueueSpec, QueueState, QueueTree
from cortex_rm.allocator.state_store import MemoryStateStore, RMStateStore, SqlStateStore, synchronous_runner
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId
from cortex_rm.yarn.resources import Resource
from tests.support.rm_core import ManualRunner, result_of

T0 = 1_700_000_000.0  # seconds: the clock's time at first start
T0_MS = int(T0 * 1000)


# -- harness -------------------------------------------------------------------------


def new_clock() -> Clock:
    clock = Clock()
    clock.advance(T0)
    return clock


class CountingStore(MemoryStateStore):
    """A memory store that remembers the state of every application document written."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_states: list[str] = []

    def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred:
        self.saved_states.append(document["state"])
        return super().save_application(document, context)


TWO_LEAVES = QueueSpec("root", children=(QueueSpec("default", capacity=50), QueueSpec("batch", capacity=50)))


def recover(
    clock: Clock,
    store: RMStateStore,
    queues: QueueSpec = TWO_LEAVES,
    limits: SchedulerLimits = SchedulerLimits(),
) -> ApplicationTable:
    return result_of(ApplicationTable.recover(clock, store, QueueTree(queues), limits))


def new_table(
    queues: QueueSpec = TWO_LEAVES, limits: SchedulerLimits = SchedulerLimits(), store: RMStateStore | None = None
) -> ApplicationTable:
    return recover(new_clock(), store if store is not None else MemoryStateStore(), queues, limits)


def submit(table: ApplicationTable, user: str = "alice", **fields: Any) -> Application:
    app_id = result_of(table.new_application(user))
    return result_of(table.submit(Submission(app_id=app_id, user=user, **fields)))


def sql_store(path: Path, runner: Any = synchronous_runner) -> SqlStateStore:
    return SqlStateStore(f"sqlite:///{path / 'rm-state.sqlite'}", runner)


def slow_table(tmp_path: Path, limits: SchedulerLimits = SchedulerLimits()) -> tuple[ApplicationTable, ManualRunner]:
    """A table over a SQLite store whose writes complete only when the test says so."""
    runner = ManualRunner()
    d = ApplicationTable.recover(new_clock(), sql_store(tmp_path, runner), QueueTree(TWO_LEAVES), limits)
    runner.drain()
    return result_of(d), runner


def new_app_id(table: ApplicationTable, runner: ManualRunner) -> ApplicationId:
    d = table.new_application("alice")
    runner.drain()
    return result_of(d)


# -- cluster timestamp and ids -------------------------------------------------------


def test_first_start_takes_the_clock_time_as_cluster_timestamp() -> None:
    """With an empty store, the cluster timestamp is the clock's time in ms, and it is stored."""
    store = MemoryStateStore()
    table = recover(new_clock(), store)
    assert table.cluster_timestamp == T0_MS
    assert store.state.cluster_timestamp == T0_MS


def test_later_start_keeps_the_first_cluster_timestamp() -> None:
    """A restart later in time keeps the stored cluster timestamp, so old ids stay valid."""
    store = MemoryStateStore()
    recover(new_clock(), store)
    later = new_clock()
    later.advance(3600)
    assert recover(later, store).cluster_timestamp == T0_MS


def test_ids_are_numbered_from_one_under_the_cluster_timestamp() -> None:
    """getNewApplication hands out application_<cluster timestamp>_0001, _0002, ..."""
    table = new_table()
    ids = [result_of(table.new_application("alice")) for _ in range(3)]
    assert ids == [ApplicationId(T0_MS, n) for n in (1, 2, 3)]


def test_ids_are_reserved_from_the_store_a_block_at_a_time() -> None:
    """The first id reserves a block in the store; the id after the block reserves the next one."""
    store = MemoryStateStore()
    table = recover(new_clock(), store)
    result_of(table.new_application("alice"))
    assert store.state.app_id_high_water == ID_BLOCK
    for n in range(ID_BLOCK - 1):
        result_of(table.new_application(f"user{n % 3}"))
    assert store.state.app_id_high_water == ID_BLOCK
    assert result_of(table.new_application("bob")).id == ID_BLOCK + 1
    assert store.state.app_id_high_water == 2 * ID_BLOCK


def test_ids_continue_after_recovery_without_reuse() -> None:
    """After a restart the next id comes after the last reserved block: no id is handed out twice."""
    store = MemoryStateStore()
    before = recover(new_clock(), store)
    first = [result_of(before.new_application("alice")) for _ in range(3)]
    after = recover(new_clock(), store)
    second = [result_of(after.new_application("alice")) for _ in range(3)]
    assert second == [ApplicationId(T0_MS, ID_BLOCK + n) for n in (1, 2, 3)]
    assert not set(first) & set(second)


def test_a_failed_block_reservation_fails_the_waiting_calls_and_the_next_call_retries() -> None:
    """If the high-water write fails, every getNewApplication waiting on it fails with the store's
    error (none is handed an unstored id, none waits for ever); the next call reserves again."""

    class FailingOnce(MemoryStateStore):
        failures = 1

        def save_app_id_high_water(self, high_water: int) -> defer.Deferred[None]:
            if self.failures:
                self.failures -= 1
                return defer.fail(OSError("disk full"))
            return super().save_app_id_high_water(high_water)

    store = FailingOnce()
    table = recover(new_clock(), store)
    with pytest.raises(OSError, match="disk full"):
        result_of(table.new_application("alice"))
    assert store.state.app_id_high_water == 0
    assert result_of(table.new_application("alice")) == ApplicationId(T0_MS, 1)
    assert store.state.app_id_high_water == ID_BLOCK


def test_id_is_not_handed_out_before_its_block_is_stored(tmp_path: Path) -> None:
    """getNewApplication waits for the reservation to be stored before answering."""
    table, runner = slow_table(tmp_path)
    d = table.new_application("alice")
    assert not d.called
    runner.drain()
    assert result_of(d) == ApplicationId(table.cluster_timestamp, 1)


def test_an_id_is_submitted_only_by_the_user_it_was_issued_to() -> None:
    """Nobody can take another user's id: bob's submission of alice's id is AccessDenied and
    changes nothing; alice then submits it."""
    table = new_table()
    app_id = result_of(table.new_application("alice"))
    with pytest.raises(AccessDenied, match="issued to another user"):
        result_of(table.submit(Submission(app_id=app_id, user="bob")))
    assert list(table) == []
    assert result_of(table.submit(Submission(app_id=app_id, user="alice"))).user == "alice"
    assert table.ids.pending_for("alice") == 0


def test_one_user_holds_at_most_so_many_unsubmitted_ids_and_they_lapse() -> None:
    """Asking for ids in a loop stops at PENDING_PER_USER (others are not affected); a
    submission frees one; ids left unsubmitted lapse after PENDING_TTL_MS and can no longer
    be submitted."""
    clock = new_clock()
    table = recover(clock, MemoryStateStore())
    ids = [result_of(table.new_application("mallory")) for _ in range(PENDING_PER_USER)]
    with pytest.raises(RefusedOperation, match=f"holds {PENDING_PER_USER} application ids not yet submitted"):
        result_of(table.new_application("mallory"))
    alice_id = result_of(table.new_application("alice"))
    result_of(table.submit(Submission(app_id=ids[0], user="mallory")))
    assert table.ids.pending_for("mallory") == PENDING_PER_USER - 1
    result_of(table.new_application("mallory"))
    clock.advance(PENDING_TTL_MS / 1000 + 1)
    assert table.ids.pending_for("mallory") == 0
    with pytest.raises(InvalidSubmission, match="lapsed"):
        result_of(table.submit(Submission(app_id=alice_id, user="alice")))
    assert [result_of(table.new_application("mallory")) for _ in range(3)]


def test_ids_issued_before_a_restart_may_be_submitted_by_a_user_until_they_lapse() -> None:
    """The askers of ids issued before the RM restarted are not recorded: those ids stay
    submittable for PENDING_TTL_MS after the restart, then lapse."""
    store = MemoryStateStore()
    before = recover(new_clock(), store)
    app_id, late_id = result_of(before.new_application("alice")), result_of(before.new_application("alice"))
    clock = new_clock()
    after = recover(clock, store)
    assert result_of(after.submit(Submission(app_id=app_id, user="alice"))).state is AppState.ACCEPTED
    clock.advance(PENDING_TTL_MS / 1000)
    with pytest.raises(InvalidSubmission, match="lapsed"):
        result_of(after.submit(Submission(app_id=late_id, user="alice")))


# -- submission ----------------------------------------------------------------------


def test_submission_is_accepted_with_a_scheduled_first_attempt() -> None:
    """A valid submission ends ACCEPTED in its queue, with attempt 1 SCHEDULED and YARN's diagnostics."""
    store = CountingStore()
    table = new_table(store=store)
    app = submit(table, name="wordcount", queue="batch", app_type="MAPREDUCE", tags=frozenset({"Nightly"}))
    assert app.state is AppState.ACCEPTED and app.reported_state is AppState.ACCEPTED
    assert (app.name, app.queue, app.app_type, app.tags) == ("wordcount", "batch", "MAPREDUCE", {"nightly"})
    assert app.diagnostics == ACCEPTED_DIAGNOSTICS
    assert app.final_status is FinalStatus.UNDEFINED
    assert (app.submit_time_ms, app.start_time_ms, app.finish_time_ms) == (T0_MS, T0_MS, 0)
    (attempt,) = app.attempts
    assert attempt.attempt_id == ApplicationAttemptId(app.app_id, 1)
    assert attempt.state is AttemptState.SCHEDULED
    assert store.saved_states == ["NEW_SAVING", "ACCEPTED"]
    assert table.get(app.app_id) is app


def test_queue_given_by_full_path_is_reported_by_short_name() -> None:
    """Submitting to ``root.batch`` puts the app in the leaf shown as ``batch``; no queue means default."""
    table = new_table()
    assert submit(table, queue="root.batch").queue == "batch"
    assert submit(table, queue="").queue == "default"


def test_nothing_is_reported_submitted_before_it_is_stored(tmp_path: Path) -> None:
    """With a slow store the app shows NEW_SAVING until its submission is written, and only then moves on."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    d = table.submit(Submission(app_id=app_id, user="alice"))
    app = table.get(app_id)
    assert app.reported_state is AppState.NEW_SAVING
    assert not app.attempts
    assert not d.called
    runner.run_next()  # the NEW_SAVING write completes
    assert app.reported_state is AppState.ACCEPTED
    assert not d.called  # the ACCEPTED record is still being written
    runner.drain()
    assert result_of(d) is app


def test_duplicate_submission_changes_nothing() -> None:
    """Resubmitting a known id (a client retrying) returns the same application and writes nothing."""
    store = CountingStore()
    table = new_table(store=store)
    app = submit(table)
    writes = list(store.saved_states)
    again = result_of(table.submit(Submission(app_id=app.app_id, user="mallory", queue="batch")))
    assert again is app
    assert (app.user, app.queue, len(app.attempts)) == ("alice", "default", 1)
    assert store.saved_states == writes


@pytest.mark.parametrize(
    "app_id",
    [
        ApplicationId(T0_MS - 1, 1),  # another RM's timestamp
        ApplicationId(T0_MS, 0),
        ApplicationId(T0_MS, 2),  # not handed out yet
    ],
)
def test_id_not_issued_by_this_rm_is_refused(app_id: ApplicationId) -> None:
    """A submission under an id this RM never handed out is refused and leaves no trace."""
    table = new_table()
    result_of(table.new_application("alice"))
    with pytest.raises(InvalidSubmission, match="not issued by this ResourceManager"):
        result_of(table.submit(Submission(app_id=app_id, user="alice")))
    assert table.matching() == []


def test_negative_priority_is_refused() -> None:
    """A submission with a negative priority is invalid."""
    table = new_table()
    app_id = result_of(table.new_application("alice"))
    with pytest.raises(InvalidSubmission, match="negative"):
        result_of(table.submit(Submission(app_id=app_id, user="alice", priority=-1)))


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        ({"queue": "nope"}, "non-existent queue"),
        ({"queue": "root"}, "is a parent queue"),
        ({"queue": "stopped"}, "is STOPPED"),
        ({"am_resource": Resource(16384, 1)}, "maximum allocation"),
        ({"am_resource": Resource(1024, 8)}, "maximum allocation"),
    ],
)
def test_submission_that_can_never_run_fails_naming_the_cause(fields: dict[str, Any], cause: str) -> None:
    """Unknown, parent or stopped queue, or an AM bigger than any container: FAILED, with diagnostics saying why."""
    queues = QueueSpec(
        "root",
        children=(QueueSpec("default", capacity=50), QueueSpec("stopped", capacity=50, state=QueueState.STOPPED)),
    )
    store = CountingStore()
    table = new_table(queues=queues, store=store)
    app = submit(table, **fields)
    assert app.state is AppState.FAILED and app.reported_state is AppState.FAILED
    assert app.final_status is FinalStatus.FAILED
    assert cause in app.diagnostics
    assert app.finish_time_ms == T0_MS
    assert app.attempts == []
    assert store.saved_states == ["NEW_SAVING", "FINAL_SAVING", "FAILED"]


def test_rejected_submission_reports_its_state_before_the_end_while_saving(tmp_path: Path) -> None:
    """While a rejection is being stored, clients see SUBMITTED, never the internal FINAL_SAVING."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    table.submit(Submission(app_id=app_id, user="alice", queue="nope"))
    runner.run_next()  # NEW_SAVING stored; the rejection is being stored
    app = table.get(app_id)
    assert app.state is AppState.FINAL_SAVING
    assert app.reported_state is AppState.SUBMITTED
    runner.drain()
    assert app.reported_state is AppState.FAILED


@pytest.mark.parametrize(("asked", "limit", "granted"), [(0, 2, 2), (1, 2, 1), (2, 2, 2), (5, 2, 2), (-1, 3, 3)])
def test_max_attempts_defaults_to_and_is_capped_by_the_cluster_limit(asked: int, limit: int, granted: int) -> None:
    """maxAppAttempts unset or above yarn.resourcemanager.am.max-attempts becomes the cluster limit."""
    table = new_table(limits=SchedulerLimits(max_app_attempts=limit))
    assert submit(table, max_attempts=asked).max_attempts == granted


@pytest.mark.parametrize(("asked", "cluster_max", "granted"), [(5, 0, 0), (5, 3, 3), (2, 3, 2), (0, 3, 0)])
def test_priority_is_capped_by_the_cluster_maximum(asked: int, cluster_max: int, granted: int) -> None:
    """An application's priority never exceeds yarn.cluster.max-application-priority."""
    table = new_table(limits=SchedulerLimits(max_priority=cluster_max))
    assert submit(table, priority=asked).priority == granted


# -- kill ----------------------------------------------------------------------------


def test_kill_answers_false_then_true_and_ends_killed() -> None:
    """forceKill starts the kill (False); once KILLED a repeated kill answers True. Attempt and status say KILLED."""
    clock = new_clock()
    table = recover(clock, MemoryStateStore())
    app = submit(table)
    clock.advance(5)
    assert result_of(table.kill(app.app_id)) is False
    assert app.state is AppState.KILLED
    assert app.final_status is FinalStatus.KILLED
    assert app.diagnostics == "Application killed by user."
    assert app.finish_time_ms == T0_MS + 5000
    assert app.attempts[0].state is AttemptState.KILLED
    assert app.attempts[0].finish_time_ms == T0_MS + 5000
    assert result_of(table.kill(app.app_id)) is True


def test_kill_keeps_the_callers_diagnostics() -> None:
    """The diagnostics given with the kill are the application's diagnostics."""
    table = new_table()
    app = submit(table)
    result_of(table.kill(app.app_id, "killed by bob"))
    assert app.diagnostics == "killed by bob"


def test_kill_of_an_ended_application_is_complete_at_once() -> None:
    """Killing a FAILED application answers True and leaves it FAILED."""
    table = new_table()
    app = submit(table, queue="nope")
    assert result_of(table.kill(app.app_id)) is True
    assert (app.state, app.final_status) == (AppState.FAILED, FinalStatus.FAILED)


def test_kill_of_an_unknown_application_raises() -> None:
    """Killing an id the RM does not know raises UnknownApplication with YARN's message."""
    table = new_table()
    with pytest.raises(UnknownApplication, match="doesn't exist in RM"):
        table.kill(ApplicationId(T0_MS, 42))


def test_application_being_killed_reports_its_previous_state_until_stored(tmp_path: Path) -> None:
    """While the kill is being stored the app shows ACCEPTED; kills meanwhile answer False; then KILLED."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    table.submit(Submission(app_id=app_id, user="alice"))
    runner.drain()
    app = table.get(app_id)
    first = table.kill(app_id)
    assert app.state is AppState.FINAL_SAVING
    assert app.reported_state is AppState.ACCEPTED
    assert not first.called
    assert result_of(table.kill(app_id)) is False
    assert table.matching(ApplicationFilter(states=frozenset({AppState.ACCEPTED}))) == [app]
    runner.drain()
    assert result_of(first) is False
    assert app.reported_state is AppState.KILLED
    assert result_of(table.kill(app_id)) is True


def test_kill_while_the_submission_is_being_saved_ends_killed(tmp_path: Path) -> None:
    """A kill that overtakes the submission's first write wins: the app ends KILLED and submit still succeeds."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    submitted = table.submit(Submission(app_id=app_id, user="alice"))
    killed = table.kill(app_id)
    app = table.get(app_id)
    assert app.reported_state is AppState.NEW_SAVING
    runner.drain()
    assert result_of(submitted) is app
    assert result_of(killed) is False
    assert (app.state, app.final_status, app.attempts) == (AppState.KILLED, FinalStatus.KILLED, [])
    assert result_of(table.kill(app_id)) is True


def test_reported_state_hides_killing_and_final_saving() -> None:
    """The internal KILLING and FINAL_SAVING show as the state the application had before them."""
    app = Application(
        app_id=ApplicationId(1, 1),
        user="u",
        name="n",
        queue="default",
        app_type="YARN",
        tags=frozenset(),
        priority=0,
        am_resource=Resource(1024, 1),
        max_attempts=2,
        unmanaged_am=False,
        context=b"",
        submit_time_ms=0,
    )
    for hidden in (AppState.KILLING, AppState.FINAL_SAVING):
        app.state, app.state_before = hidden, AppState.RUNNING
        assert app.reported_state is AppState.RUNNING
    app.state, app.state_before = AppState.KILLED, None
    assert app.reported_state is AppState.KILLED


# -- move and priority ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["batch", "root.batch"])
def test_move_to_another_leaf(target: str) -> None:
    """An accepted application moves to a leaf named either way; the change is stored."""
    store = CountingStore()
    table = new_table(store=store)
    app = submit(table)
    result_of(table.move(app.app_id, target))
    assert app.queue == "batch"
    assert app.state is AppState.ACCEPTED
    assert store.saved_states[-1] == "ACCEPTED"
    assert result_of(store.load()).applications[0][0]["queue"] == "batch"


@pytest.mark.parametrize(("target", "message"), [("root", "parent queue"), ("nope", "non-existent")])
def test_move_to_a_parent_or_unknown_queue_is_refused(target: str, message: str) -> None:
    """Moving to a queue that cannot take applications is refused; the app stays where it was."""
    table = new_table()
    app = submit(table)
    with pytest.raises(RefusedOperation, match=message):
        table.move(app.app_id, target)
    assert app.queue == "default"


def test_move_after_the_end_is_refused() -> None:
    """A killed application cannot be moved, as YARN says."""
    table = new_table()
    app = submit(table)
    result_of(table.kill(app.app_id))
    with pytest.raises(RefusedOperation, match="App in KILLED state cannot be moved"):
        table.move(app.app_id, "batch")


def test_update_priority_is_capped_and_stored() -> None:
    """updateApplicationPriority answers the priority in effect: capped by the cluster max, not below 0."""
    store = CountingStore()
    table = new_table(limits=SchedulerLimits(max_priority=5), store=store)
    app = submit(table)
    assert result_of(table.update_priority(app.app_id, 3)) == 3
    assert result_of(store.load()).applications[0][0]["priority"] == 3
    assert result_of(table.update_priority(app.app_id, 9)) == 5
    assert result_of(table.update_priority(app.app_id, -4)) == 0


def test_update_priority_after_the_end_is_refused() -> None:
    """An ended application's priority cannot change."""
    table = new_table(limits=SchedulerLimits(max_priority=5))
    app = submit(table)
    result_of(table.kill(app.app_id))
    with pytest.raises(RefusedOperation, match="KILLED"):
        table.update_priority(app.app_id, 1)


# -- attempts ------------------------------------------------------------------------


def test_failed_attempt_starts_the_next_then_fails_the_app_at_max_attempts() -> None:
    """Attempt 1 failing starts attempt 2; attempt 2 failing (max 2) fails the application, saying why."""
    clock = new_clock()
    table = recover(clock, MemoryStateStore(), limits=SchedulerLimits(max_app_attempts=2))
    app = submit(table)
    first = app.attempts[0].attempt_id
    clock.advance(1)
    result_of(table.fail_attempt(first, "AM crashed"))
    assert app.state is AppState.ACCEPTED
    assert [a.state for a in app.attempts] == [AttemptState.FAILED, AttemptState.SCHEDULED]
    assert (app.attempts[0].diagnostics, app.attempts[0].finish_time_ms) == ("AM crashed", T0_MS + 1000)
    second = app.attempts[1].attempt_id
    assert second == ApplicationAttemptId(app.app_id, 2)
    result_of(table.fail_attempt(second))
    assert (app.state, app.final_status) == (AppState.FAILED, FinalStatus.FAILED)
    assert "failed 2 times" in app.diagnostics and str(second) in app.diagnostics
    assert app.attempts[1].diagnostics == "Attempt failed by user command."


def test_single_attempt_application_fails_with_its_first_attempt() -> None:
    """maxAppAttempts 1: the first failed attempt fails the application."""
    table = new_table()
    app = submit(table, max_attempts=1)
    result_of(table.fail_attempt(app.attempts[0].attempt_id))
    assert app.state is AppState.FAILED
    assert len(app.attempts) == 1


def test_failing_the_last_attempt_reports_accepted_while_saving(tmp_path: Path) -> None:
    """While the failure of the last attempt is stored, clients see ACCEPTED, not FINAL_SAVING."""
    table, runner = slow_table(tmp_path, SchedulerLimits(max_app_attempts=1))
    app_id = new_app_id(table, runner)
    table.submit(Submission(app_id=app_id, user="alice"))
    runner.drain()
    app = table.get(app_id)
    table.fail_attempt(app.attempts[0].attempt_id)
    assert app.state is AppState.FINAL_SAVING
    assert app.reported_state is AppState.ACCEPTED
    runner.drain()
    assert app.reported_state is AppState.FAILED


def test_only_the_live_attempt_can_be_failed() -> None:
    """Failing an earlier attempt, an unknown attempt or an ended app's attempt is refused."""
    table = new_table()
    app = submit(table)
    first = app.attempts[0].attempt_id
    result_of(table.fail_attempt(first))
    with pytest.raises(RefusedOperation, match="not the live attempt"):
        table.fail_attempt(first)
    with pytest.raises(UnknownAttempt, match="doesn't exist in RM"):
        table.fail_attempt(ApplicationAttemptId(app.app_id, 7))
    result_of(table.kill(app.app_id))
    with pytest.raises(RefusedOperation):
        table.fail_attempt(app.attempts[1].attempt_id)


def test_get_attempt_finds_each_attempt() -> None:
    """get_attempt returns the application and the attempt with that id."""
    table = new_table()
    app = submit(table)
    attempt_id = app.attempts[0].attempt_id
    assert table.get_attempt(attempt_id) == (app, app.attempts[0])
    with pytest.raises(UnknownApplication):
        table.get_attempt(ApplicationAttemptId(ApplicationId(T0_MS, 99), 1))


# -- queries -------------------------------------------------------------------------


def _populated() -> tuple[ApplicationTable, Clock, dict[str, Application]]:
    """Four applications at one-second steps: two accepted, one killed, one failed."""
    clock = new_clock()
    table = recover(clock, MemoryStateStore())
    apps = {}
    apps["spark"] = submit(table, user="alice", name="etl", app_type="SPARK", tags=frozenset({"Nightly", "prod"}))
    clock.advance(1)
    apps["mr"] = submit(table, user="bob", name="wordcount", app_type="MAPREDUCE", queue="batch")
    clock.advance(1)
    apps["killed"] = submit(table, user="alice", name="etl", app_type="SPARK", tags=frozenset({"adhoc"}))
    clock.advance(1)
    result_of(table.kill(apps["killed"].app_id))
    clock.advance(1)
    apps["failed"] = submit(table, user="carol", queue="nope")
    return table, clock, apps


def _names(table: ApplicationTable, **fields: Any) -> list[str]:
    found = table.matching(ApplicationFilter(**fields))
    return [app.user + ":" + app.name + ":" + app.reported_state.value for app in found]


def test_list_without_filter_returns_all_in_id_order() -> None:
    """The default filter matches every application, ordered by id."""
    table, _, apps = _populated()
    assert table.matching() == [apps[k] for k in ("spark", "mr", "killed", "failed")]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"types": frozenset({"spark"})}, ["spark", "killed"]),
        ({"types": frozenset({"MapReduce", "YARN"})}, ["mr", "failed"]),
        ({"states": frozenset({AppState.ACCEPTED})}, ["spark", "mr"]),
        ({"states": frozenset({AppState.KILLED, AppState.FAILED})}, ["killed", "failed"]),
        ({"users": frozenset({"alice"})}, ["spark", "killed"]),
        ({"users": frozenset({"Alice"})}, []),
        ({"queues": frozenset({"batch"})}, ["mr"]),
        ({"queues": frozenset({"root.batch"})}, ["mr"]),
        ({"queues": frozenset({"root.default", "nope"})}, ["spark", "killed", "failed"]),
        ({"tags": frozenset({"NIGHTLY"})}, ["spark"]),
        ({"tags": frozenset({"adhoc", "prod"})}, ["spark", "killed"]),
        ({"final_statuses": frozenset({FinalStatus.UNDEFINED})}, ["spark", "mr"]),
        ({"final_statuses": frozenset({FinalStatus.KILLED})}, ["killed"]),
        ({"name": "etl"}, ["spark", "killed"]),
        ({"name": "ETL"}, []),
        ({"started_begin": T0_MS + 1000}, ["mr", "killed", "failed"]),
        ({"started_end": T0_MS + 1000}, ["spark", "mr"]),
        ({"started_begin": T0_MS + 1000, "started_end": T0_MS + 2000}, ["mr", "killed"]),
        ({"finished_begin": T0_MS + 1}, ["killed", "failed"]),
        ({"finished_begin": T0_MS + 3000, "finished_end": T0_MS + 3000}, ["killed"]),
        ({"limit": 2}, ["spark", "mr"]),
        ({"limit": 1, "users": frozenset({"carol"})}, ["failed"]),
        ({"types": frozenset({"SPARK"}), "states": frozenset({AppState.ACCEPTED})}, ["spark"]),
    ],
)
def test_list_filters_by_every_field(fields: dict[str, Any], expected: list[str]) -> None:
    """Each filter field narrows the list; types and tags ignore case, queues take short names or full paths."""
    table, _, apps = _populated()
    assert table.matching(ApplicationFilter(**fields)) == [apps[k] for k in expected]


def test_queue_filter_tells_ambiguous_leaves_apart_by_full_path() -> None:
    """Two leaves named ``x``: a full path selects one, and apps are listed under their full path."""
    queues = QueueSpec(
        "root",
        children=(
            QueueSpec("a", capacity=50, children=(QueueSpec("x"),)),
            QueueSpec("b", capacity=50, children=(QueueSpec("x"),)),
        ),
    )
    table = new_table(queues=queues)
    in_a = submit(table, queue="root.a.x")
    in_b = submit(table, queue="root.b.x")
    assert (in_a.queue, in_b.queue) == ("root.a.x", "root.b.x")
    assert table.matching(ApplicationFilter(queues=frozenset({"root.b.x"}))) == [in_b]


def test_counts_follow_reported_states() -> None:
    """Counts as YARN's QueueMetrics: completed means FINISHED; failed and killed are counted apart."""
    table, _, _ = _populated()
    counts = table.counts()
    assert (counts.submitted, counts.completed, counts.pending, counts.running) == (4, 0, 2, 0)
    assert (counts.failed, counts.killed) == (1, 1)


def test_in_queue_lists_the_live_applications_of_a_leaf() -> None:
    """A leaf's applications are those in it that have not ended."""
    table, _, apps = _populated()
    assert table.in_queue(table.queues.find("default")) == [apps["spark"]]
    assert table.in_queue(table.queues.find("batch")) == [apps["mr"]]


# -- restart recovery ----------------------------------------------------------------


def test_recovery_brings_back_every_application_in_its_state(tmp_path: Path) -> None:
    """After a restart on the same SQLite file, ended apps keep their outcome and accepted ones go on with the
    attempt they had (work-preserving: no new attempt)."""
    clock = new_clock()
    table = recover(clock, sql_store(tmp_path))
    accepted = submit(table, name="keep-going", tags=frozenset({"t"}), context=b"\x00ctx")
    killed = submit(table)
    result_of(table.kill(killed.app_id, "killed by bob"))
    failed = submit(table, queue="nope")
    clock.advance(60)

    again = recover(clock, sql_store(tmp_path))
    assert [a.app_id for a in again.matching()] == [accepted.app_id, killed.app_id, failed.app_id]
    k = again.get(killed.app_id)
    assert (k.state, k.final_status, k.diagnostics, k.finish_time_ms) == (
        AppState.KILLED,
        FinalStatus.KILLED,
        "killed by bob",
        T0_MS,
    )
    f = again.get(failed.app_id)
    assert (f.state, f.final_status, f.diagnostics) == (AppState.FAILED, FinalStatus.FAILED, failed.diagnostics)
    a = again.get(accepted.app_id)
    assert (a.state, a.name, a.tags, a.context, a.submit_time_ms) == (
        AppState.ACCEPTED,
        "keep-going",
        {"t"},
        b"\x00ctx",
        T0_MS,
    )
    assert [(x.state, x.start_time_ms) for x in a.attempts] == [(AttemptState.SCHEDULED, T0_MS)]
    # a second restart recovers it the same way
    third = recover(clock, sql_store(tmp_path))
    assert [x.state for x in third.get(accepted.app_id).attempts] == [AttemptState.SCHEDULED]


def test_an_rm_restart_costs_no_attempt(tmp_path: Path) -> None:
    """An RM restart is not the AM's failure: after one, the app still gets all its attempts."""
    limits = SchedulerLimits(max_app_attempts=2)
    clock = new_clock()
    table = recover(clock, sql_store(tmp_path), limits=limits)
    app_id = submit(table).app_id
    again = recover(clock, sql_store(tmp_path), limits=limits)
    app = again.get(app_id)
    result_of(again.fail_attempt(app.current_attempt.attempt_id))  # type: ignore[union-attr]
    assert app.state is AppState.ACCEPTED
    result_of(again.fail_attempt(app.current_attempt.attempt_id))  # type: ignore[union-attr]
    assert app.state is AppState.FAILED
    assert "failed 2 times" in app.diagnostics


def test_application_whose_kill_was_being_stored_recovers_killed(tmp_path: Path) -> None:
    """An app stored in FINAL_SAVING towards KILLED (the RM died before the last write) comes back KILLED."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    table.submit(Submission(app_id=app_id, user="alice"))
    runner.drain()
    table.kill(app_id, "killed by bob")
    runner.run_next()  # FINAL_SAVING (target KILLED) is stored; the RM dies before the KILLED write
    assert runner.pending
    table.store.close()

    again = recover(new_clock(), sql_store(tmp_path))
    app = again.get(app_id)
    assert (app.state, app.final_status, app.diagnostics) == (AppState.KILLED, FinalStatus.KILLED, "killed by bob")
    assert (app.state_before, app.target_state) == (None, None)
    assert app.finish_time_ms == T0_MS
    stored = result_of(sql_store(tmp_path).load()).applications
    assert stored[0][0]["state"] == "KILLED"


def test_application_stored_while_new_saving_is_accepted_on_recovery(tmp_path: Path) -> None:
    """A submission stored just before the RM died (NEW_SAVING) is accepted by the restarted RM."""
    table, runner = slow_table(tmp_path)
    app_id = new_app_id(table, runner)
    table.submit(Submission(app_id=app_id, user="alice", queue="batch"))
    runner.run_next()  # NEW_SAVING stored; the ACCEPTED write never happens
    table.store.close()

    app = recover(new_clock(), sql_store(tmp_path)).get(app_id)
    assert (app.state, app.queue) == (AppState.ACCEPTED, "batch")
    assert [a.state for a in app.attempts] == [AttemptState.SCHEDULED]


def test_application_whose_am_had_unregistered_recovers_finished() -> None:
    """An app stored FINISHING (its AM unregistered) is FINISHED after a restart."""
    store = MemoryStateStore()
    table = recover(new_clock(), store)
    app = submit(table)
    document = app.to_document()
    document.update(state="FINISHING", final_status="SUCCEEDED", finish_time_ms=T0_MS + 7)
    result_of(store.save_application(document, app.context))

    again = recover(new_clock(), store).get(app.app_id)
    assert (again.state, again.final_status, again.finish_time_ms) == (
        AppState.FINISHED,
        FinalStatus.SUCCEEDED,
        T0_MS + 7,
    )


def test_recovered_application_whose_queue_is_gone_fails() -> None:
    """An accepted app whose queue was removed from the configuration fails on restart, naming the queue."""
    store = MemoryStateStore()
    table = recover(new_clock(), store)
    app_id = submit(table, queue="batch").app_id
    only_default = QueueSpec("root", children=(QueueSpec("default"),))
    app = recover(new_clock(), store, queues=only_default).get(app_id)
    assert (app.state, app.final_status) == (AppState.FAILED, FinalStatus.FAILED)
    assert "batch" in app.diagnostics


def test_concurrent_new_applications_across_a_slow_block_reservation_never_exceed_the_stored_mark() -> None:
    """Many getNewApplication calls while the high-water write is pending get distinct ids, all stored."""
    runner = ManualRunner()
    store = SqlStateStore(f"sqlite:///{Path(__import__('tempfile').mkdtemp()) / 's.sqlite'}", runner)
    recovering = ApplicationTable.recover(new_clock(), store, QueueTree(), SchedulerLimits())
    while runner.pending:
        runner.run_next()
    table = result_of(recovering)
    pending = [table.new_application(f"user{i % 3}") for i in range(ID_BLOCK + 50)]
    while runner.pending:
        runner.run_next()
    ids = [result_of(d).id for d in pending]
    assert sorted(ids) == list(range(1, ID_BLOCK + 51))
    loading = store.load()
    runner.run_next()
    assert result_of(loading).app_id_high_water >= max(ids)


@pytest.mark.expect_logged_errors('could not store application .*OSError: disk full')
def test_a_submission_the_store_could_not_save_is_forgotten_so_a_retry_works() -> None:
    """If the NEW_SAVING write fails, the app is not kept half-made; resubmitting the id works."""

    class FlakyStore(MemoryStateStore):
        fail_next = True

        def save_application(self, document: dict[str, Any], context: bytes) -> defer.Deferred:
            if self.fail_next:
                self.fail_next = False
                return defer.fail(OSError("disk full"))
            return super().save_application(document, context)

    store = FlakyStore()
    table = result_of(ApplicationTable.recover(new_clock(), store, QueueTree(), SchedulerLimits()))
    app_id = result_of(table.new_application("alice"))
    with pytest.raises(OSError):
        result_of(table.submit(Submission(app_id, "alice")))
    with pytest.raises(UnknownApplication):
        table.get(app_id)
    assert result_of(table.submit(Submission(app_id, "alice"))).state is AppState.ACCEPTED


def test_only_the_newest_completed_applications_are_kept_in_memory_and_in_the_store() -> None:
    """Beyond max_completed_applications, the oldest-finished applications are forgotten, also after a restart."""
    store = MemoryStateStore()
    limits = SchedulerLimits(max_completed_applications=2)
    clock = new_clock()
    table = result_of(ApplicationTable.recover(clock, store, QueueTree(), limits))
    ids = []
    for _ in range(4):
        app_id = result_of(table.new_application("alice"))
        result_of(table.submit(Submission(app_id, "alice")))
        clock.advance(1)
        result_of(table.kill(app_id))
        ids.append(app_id)
    live_id = result_of(table.new_application("alice"))
    result_of(table.submit(Submission(live_id, "alice")))
    assert [a.app_id for a in table.matching()] == [ids[2], ids[3], live_id]
    with pytest.raises(UnknownApplication):
        table.get(ids[0])
    again = result_of(ApplicationTable.recover(clock, store, QueueTree(), limits))
    assert [a.app_id for a in again.matching()] == [ids[2], ids[3], live_id]
