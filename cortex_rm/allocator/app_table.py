"""The ResourceManager's applications: ids, submission, lifecycle, queries, kill.

This is the decision core behind ApplicationClientProtocol and the REST API: it
never touches a socket.  Every state change that clients must not lose goes
through the state store first (NEW_SAVING, FINAL_SAVING), exactly where YARN's
RMAppImpl saves, so a restarted RM reports every application it ever accepted.

Ids come from ``app_ids.ApplicationIds`` (a cluster timestamp kept forever, ids
reserved from the store in blocks); the filters and counts clients ask for are in
``app_queries.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.allocator.app_ids import ApplicationIds, load_stored_state
from cortex_rm.allocator.app_listener import AppListener, NoListener
from cortex_rm.allocator.app_model import Application, Attempt, SchedulerLimits, Submission
from cortex_rm.allocator.app_queries import AppCounts, ApplicationFilter
from cortex_rm.allocator.app_states import (
    APP_TRANSITIONS,
    ATTEMPT_TRANSITIONS,
    HIDDEN_APP_STATES,
    AppEvent,
    AppState,
    AttemptEvent,
    AttemptState,
    FinalStatus,
)
from cortex_rm.allocator.errors import (
    InvalidSubmission,
    RefusedOperation,
    UnknownApplication,
    UnknownAttempt,
)
from cortex_rm.allocator.queues import Queue, QueueTree
from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.yarn.app_network import PORT_SLOTS, PORT_SLOTS_PER_USER, free_slot
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId

log = Logger()

ACCEPTED_DIAGNOSTICS = "Application is added to the scheduler and is waiting for its ApplicationMaster container."


class ApplicationTable:
    """All applications of this RM, with their lifecycles and persistence."""

    def __init__(
        self,
        clock: IReactorTime,
        store: RMStateStore,
        queues: QueueTree,
        limits: SchedulerLimits,
        cluster_timestamp: int,
        app_id_high_water: int = 0,
        listener: AppListener | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.queues = queues
        self.limits = limits
        self.cluster_timestamp = cluster_timestamp
        self.ids = ApplicationIds(store, cluster_timestamp, app_id_high_water, clock)
        self._apps: dict[ApplicationId, Application] = {}
        self.listener: AppListener = listener if listener is not None else NoListener()
        self._completed: deque[ApplicationId] = deque()  # ended applications, oldest first

    @classmethod
    def recover(
        cls,
        clock: IReactorTime,
        store: RMStateStore,
        queues: QueueTree,
        limits: SchedulerLimits,
        listener: AppListener | None = None,
    ) -> defer.Deferred[ApplicationTable]:
        """Load the stored state (choosing the cluster timestamp at first start) and resume.

        Applications that had not ended go on with their attempt (``resume``); FINISHING
        ones are done (their AM had unregistered).
        """
        async def recover() -> ApplicationTable:
            stored = await load_stored_state(clock, store)
            return await cls.from_stored(clock, store, queues, limits, stored, listener).resume(stored)

        return defer.ensureDeferred(recover())

    @classmethod
    def from_stored(
        cls,
        clock: IReactorTime,
        store: RMStateStore,
        queues: QueueTree,
        limits: SchedulerLimits,
        stored: StoredState,
        listener: AppListener | None = None,
    ) -> ApplicationTable:
        """A table over what ``load_stored_state`` read; ``resume`` then finishes the recovery."""
        assert stored.cluster_timestamp is not None, "load_stored_state chooses the cluster timestamp"
        return cls(clock, store, queues, limits, stored.cluster_timestamp, stored.app_id_high_water, listener)

    def resume(self, stored: StoredState) -> defer.Deferred[ApplicationTable]:
        """Take in the stored applications: remember the ended ones, go on with the others
        (YARN's work-preserving recovery, see ``_resume``).

        Fires with this table once every resumed application was accepted (or rejected).
        """
        return defer.ensureDeferred(self._resume_all(stored))

    async def _resume_all(self, stored: StoredState) -> ApplicationTable:
        resumed = []
        ended = []
        for document, context in stored.applications:
            app = Application.from_document(document, context)
            self._apps[app.app_id] = app
            if app.state.is_terminal:
                ended.append(app)
            else:
                resumed.append(app)
        for app in sorted(ended, key=lambda a: (a.finish_time_ms, a.app_id)):
            await self._remember_completed(app)
        for app in resumed:
            await self._resume(app)
        log.info(
            "recovered {count} applications ({resumed} resumed); cluster timestamp {timestamp}",
            count=len(self._apps),
            resumed=len(resumed),
            timestamp=self.cluster_timestamp,
        )
        return self

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- ids ---------------------------------------------------------------------------

    def new_application(self, user: str) -> defer.Deferred[ApplicationId]:
        """A fresh application id for ``user`` (getNewApplication); fires with the ApplicationId."""
        return self.ids.new(user)

    # -- queries -----------------------------------------------------------------------

    def get(self, app_id: ApplicationId) -> Application:
        app = self._apps.get(app_id)
        if app is None:
            raise UnknownApplication(f"Application with id '{app_id}' doesn't exist in RM.")
        return app

    def get_attempt(self, attempt_id: ApplicationAttemptId) -> tuple[Application, Attempt]:
        app = self.get(attempt_id.app_id)
        attempt = app.attempt(attempt_id)
        if attempt is None:
            raise UnknownAttempt(f"ApplicationAttempt with id '{attempt_id}' doesn't exist in RM.")
        return app, attempt

    def matching(self, flt: ApplicationFilter = ApplicationFilter()) -> list[Application]:
        return flt.select(self._apps.values())

    def __iter__(self) -> Iterator[Application]:
        return iter(self._apps.values())

    def in_queue(self, queue: Queue) -> list[Application]:
        """The live applications of a leaf queue."""
        name = self.queues.display_name(queue)
        return [a for a in self._apps.values() if a.queue == name and not a.state.is_terminal]

    def counts(self) -> AppCounts:
        return AppCounts.of(self._apps.values())

    # -- submission --------------------------------------------------------------------

    def submit(self, submission: Submission) -> defer.Deferred[Application]:
        """Take a submission through NEW_SAVING and SUBMITTED to ACCEPTED (or FAILED).

        A repeated submission of a known id is accepted and changes nothing, as YARN's
        ClientRMService does for clients that resubmit after a lost reply.
        """
        return defer.ensureDeferred(self._submit(submission))

    async def _submit(self, submission: Submission) -> Application:
        app_id = submission.app_id
        if app_id in self._apps:
            return self._apps[app_id]
        self.ids.check_submitter(app_id, submission.user)
        app = Application.from_submission(submission, self.limits, self.now_ms())
        self._apps[app_id] = app
        self.transition(app, AppEvent.START)
        try:
            await self.save(app)
        except Exception:
            del self._apps[app_id]  # not stored: as if never submitted, so the client may retry
            raise
        self.ids.submitted(app_id)
        self.transition(app, AppEvent.APP_NEW_SAVED)
        if app.state is not AppState.SUBMITTED:
            return app  # killed while its submission was being stored
        await self._accept_or_reject(app)
        return app

    def _accept_or_reject(self, app: Application) -> defer.Deferred[None]:
        try:
            queue = self.queues.leaf_for_submission(app.queue)
            if not app.am_resource.fits_in(self.limits.maximum_allocation):
                raise InvalidSubmission(
                    f"Invalid resource request: the AM asks for {app.am_resource}, more than the "
                    f"maximum allocation {self.limits.maximum_allocation} of any container"
                )
            if app.port_slot is None:
                app.port_slot = self._free_port_slot(app)
        except InvalidSubmission as e:
            self.transition(app, AppEvent.APP_REJECTED)
            return self.final_save(app, AppState.FAILED, FinalStatus.FAILED, str(e))
        app.queue = self.queues.display_name(queue)
        self.transition(app, AppEvent.APP_ACCEPTED)
        app.diagnostics = ACCEPTED_DIAGNOSTICS
        self.start_attempt(app)
        return self.save(app)

    def _free_port_slot(self, app: Application) -> int:
        """A slot of source ports no other live application holds (yarn/app_network.py)."""
        live = [a for a in self._apps.values() if a is not app and a.port_slot is not None and not a.state.is_terminal]
        if sum(1 for a in live if a.user == app.user) >= PORT_SLOTS_PER_USER:
            raise InvalidSubmission(
                f"Maximum application limit of user {app.user} reached: {PORT_SLOTS_PER_USER} of their applications are"
                " running or waiting to run, the most one user may hold of the cluster's"
                f" {PORT_SLOTS}; submit again when one of them has ended"
            )
        slot = free_slot(app.app_id.id, {a.port_slot for a in live if a.port_slot is not None})
        if slot is None:
            raise InvalidSubmission(
                f"Maximum system application limit reached: {PORT_SLOTS} applications are running or"
                " waiting to run, the most the cluster's network policy can tell apart; submit again"
                " when one of them has ended"
            )
        return slot

    def start_attempt(self, app: Application) -> Attempt:
        attempt = Attempt(ApplicationAttemptId(app.app_id, len(app.attempts) + 1), start_time_ms=self.now_ms())
        app.attempts.append(attempt)
        self.attempt_event(attempt, AttemptEvent.START)
        self.attempt_event(attempt, AttemptEvent.ATTEMPT_ADDED)
        self.listener.attempt_started(app, attempt)
        return attempt

    def _resume(self, app: Application) -> defer.Deferred[None]:
        """After a restart: finish what was in flight, or go on with the live attempt, as YARN's
        work-preserving recovery does (nothing is stored: a second restart recovers the same way).

        * Not yet accepted (no attempt): accepted now.
        * Its attempt waited for an AM container: the same attempt waits again.
        * Its AM container had been placed: the attempt is LAUNCHED and the application
          ACCEPTED (YARN's recovered states) until the AM registers again; its AMRMToken
          still works (the master keys are stored), the listener waits for it and for the
          nodes' reports of its containers.
        """
        if app.state is AppState.FINISHING:
            return self.reach_final(app, AppState.FINISHED)
        if app.state is AppState.FINAL_SAVING and app.target_state is not None:
            return self.reach_final(app, app.target_state)
        attempt = app.current_attempt
        if attempt is not None and not attempt.state.is_terminal and not self._can_go_on(app):
            self.attempt_event(attempt, AttemptEvent.KILL)  # its application is rejected below, saying why
            attempt.finish_time_ms = self.now_ms()
        if attempt is None or attempt.state.is_terminal:
            app.state, app.state_before, app.target_state = AppState.SUBMITTED, None, None
            return self._accept_or_reject(app)
        app.state, app.state_before, app.target_state = AppState.ACCEPTED, None, None
        if attempt.am_container_id is None and not app.unmanaged_am:
            attempt.state = AttemptState.SCHEDULED
            self.listener.attempt_started(app, attempt)
        else:
            attempt.state = AttemptState.LAUNCHED
            app.diagnostics = f"The ResourceManager restarted: waiting for the AM of {attempt.attempt_id} to register."
            self.listener.attempt_recovered(app, attempt)
        log.info("{app_id} recovered with {attempt} {state}", app_id=str(app.app_id), attempt=str(attempt.attempt_id),
                 state=attempt.state.value)  # fmt: skip
        return defer.succeed(None)

    def _can_go_on(self, app: Application) -> bool:
        """Whether a recovered application may keep its attempt: its queue is still there, and it has (or
        gets now) a slot of source ports (an RM from before slots stored none)."""
        try:
            self.queues.leaf_for_submission(app.queue)
            if app.port_slot is None:
                app.port_slot = self._free_port_slot(app)
        except InvalidSubmission:
            return False
        return True

    # -- kill, move, priority ----------------------------------------------------------

    def kill(self, app_id: ApplicationId, diagnostics: str = "") -> defer.Deferred[bool]:
        """forceKillApplication: fires True once the application is in a final state.

        The first call starts the kill and fires False; the client polls until True, as
        YARN's ``is_kill_completed`` works.
        """
        app = self.get(app_id)
        if app.state.is_terminal:
            return defer.succeed(True)
        if not APP_TRANSITIONS.accepts(app.state, AppEvent.KILL):
            return defer.succeed(False)  # already being killed or finally saved
        message = diagnostics or "Application killed by user."
        target = AppState.FINAL_SAVING
        if app.state is AppState.RUNNING:
            target = AppState.KILLING
        self.transition(app, AppEvent.KILL, target)
        for attempt in app.attempts:
            if attempt.state.is_terminal:
                continue
            self.attempt_event(attempt, AttemptEvent.KILL)
            attempt.finish_time_ms = self.now_ms()
            self.listener.attempt_ended(app, attempt)
        if target is AppState.KILLING:
            # The AM container is being stopped; its end completes the kill.
            app.diagnostics = message
            return defer.succeed(False)
        return self.final_save(app, AppState.KILLED, FinalStatus.KILLED, message).addCallback(lambda _: False)

    def move(self, app_id: ApplicationId, queue_name: str) -> defer.Deferred[None]:
        """moveApplicationAcrossQueues: only while the application has not ended."""
        app = self.get(app_id)
        if not APP_TRANSITIONS.accepts(app.state, AppEvent.MOVE):
            raise RefusedOperation(f"App in {app.reported_state.value} state cannot be moved.")
        try:
            queue = self.queues.leaf_for_submission(queue_name)
        except InvalidSubmission as e:
            raise RefusedOperation(str(e)) from None
        self.transition(app, AppEvent.MOVE)
        app.queue = self.queues.display_name(queue)
        return self.save(app)

    def update_priority(self, app_id: ApplicationId, priority: int) -> defer.Deferred[int]:
        """updateApplicationPriority: fires with the priority in effect (capped by the cluster max)."""
        app = self.get(app_id)
        if app.state.is_terminal or app.state in (AppState.FINAL_SAVING, AppState.FINISHING, AppState.KILLING):
            raise RefusedOperation(
                f"Application in {app.reported_state.value} state cannot update its priority."
            )
        app.priority = max(0, min(priority, self.limits.max_priority))
        return self.save(app).addCallback(lambda _: app.priority)

    def fail_attempt(self, attempt_id: ApplicationAttemptId, diagnostics: str = "") -> defer.Deferred[None]:
        """failApplicationAttempt: fail the current attempt; start another or fail the app."""
        app, attempt = self.get_attempt(attempt_id)
        if attempt is not app.current_attempt or attempt.state.is_terminal or app.state.is_terminal:
            raise RefusedOperation(f"Attempt {attempt_id} is not the live attempt of {app.app_id}.")
        self.attempt_event(attempt, AttemptEvent.FAIL)
        attempt.finish_time_ms = self.now_ms()
        attempt.diagnostics = diagnostics or "Attempt failed by user command."
        return self.attempt_failed(app, attempt)

    def attempt_failed(self, app: Application, attempt: Attempt) -> defer.Deferred[None]:
        """``attempt`` has just FAILED: start the next one, or fail the application."""
        self.listener.attempt_ended(app, attempt)
        failures = app.counted_failures
        if failures < app.max_attempts and app.state is not AppState.KILLING:
            self.transition(app, AppEvent.ATTEMPT_FAILED, AppState.ACCEPTED)
            self.start_attempt(app)
            return self.save(app)
        self.transition(app, AppEvent.ATTEMPT_FAILED, AppState.FINAL_SAVING)
        message = (
            f"Application {app.app_id} failed {failures} times (global limit ="
            f" {self.limits.max_app_attempts}; local limit = {app.max_attempts}) due to"
            f" {attempt.attempt_id} ending: {attempt.diagnostics}"
        )
        return self.final_save(app, AppState.FAILED, FinalStatus.FAILED, message)

    # -- lifecycle plumbing ------------------------------------------------------------

    def final_save(
        self, app: Application, target: AppState, final_status: FinalStatus, diagnostics: str
    ) -> defer.Deferred[None]:
        """Store the outcome of an app that has just entered FINAL_SAVING, then move to ``target``."""
        app.target_state = target
        app.final_status = final_status
        app.diagnostics = diagnostics
        app.finish_time_ms = self.now_ms()
        d = self.save(app)
        d.addCallback(lambda _: self.reach_final(app, target))
        return d

    def reach_final(self, app: Application, target: AppState) -> defer.Deferred[None]:
        """FINAL_SAVING's write is done (or a FINISHING AM's container ended): enter ``target``."""
        event = AppEvent.APP_UPDATE_SAVED if app.state is AppState.FINAL_SAVING else AppEvent.ATTEMPT_FINISHED
        self.transition(app, event, target)
        app.state_before = app.target_state = None
        if not app.finish_time_ms:
            app.finish_time_ms = self.now_ms()
        d = self.save(app)
        if app.state.is_terminal:
            self.listener.app_finished(app)
            d.addCallback(lambda _: self._remember_completed(app))
        return d

    def _remember_completed(self, app: Application) -> defer.Deferred[None]:
        """Keep ``app`` among the completed; forget the oldest beyond the limit (store too)."""
        self._completed.append(app.app_id)
        removals = []
        while len(self._completed) > self.limits.max_completed_applications:
            oldest = self._completed.popleft()
            if self._apps.pop(oldest, None) is not None:
                removals.append(self.store.remove_application(str(oldest)))
        if not removals:
            return defer.succeed(None)
        return defer.gatherResults(removals, consumeErrors=True).addCallback(lambda _: None)

    def transition(self, app: Application, event: AppEvent, target: AppState | None = None) -> None:
        new = APP_TRANSITIONS.next_state(app.state, event, target)
        if new is None:
            return
        self._log_transition(app, app.state, new, event)
        if new in HIDDEN_APP_STATES and app.state not in HIDDEN_APP_STATES:
            app.state_before = app.state  # what reports show while KILLING / FINAL_SAVING
        app.state = new

    def attempt_event(self, attempt: Attempt, event: AttemptEvent) -> None:
        new = ATTEMPT_TRANSITIONS.next_state(attempt.state, event)
        if new is not None:
            attempt.state = new

    def _log_transition(self, app: Application, old: AppState, new: AppState, event: AppEvent) -> None:
        log.info(
            "{app_id} State change from {old} to {new} on event = {event}",
            app_id=str(app.app_id),
            old=old.value,
            new=new.value,
            event=event.value,
        )

    def save(self, app: Application) -> defer.Deferred[None]:
        d = self.store.save_application(app.to_document(), app.context)
        d.addErrback(self._save_failed, app)
        return d

    def _save_failed(self, failure: Failure, app: Application) -> Failure:
        log.failure("could not store application {app_id}", failure, app_id=str(app.app_id))
        return failure

