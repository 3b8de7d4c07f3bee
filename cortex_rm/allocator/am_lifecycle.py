"""What the ApplicationMaster's life does to its attempt and application.

The events come from three places: the scheduler (the AM container was allocated),
the nodes (it was launched, it exited) and the AM itself over
ApplicationMasterProtocol (registered, unregistered, stopped heartbeating).  Each
drives the attempt's and the application's lifecycles as YARN's RMAppAttemptImpl
and RMAppImpl do:

* registered: attempt RUNNING, application RUNNING;
* unregistered with a final status: the outcome is stored (FINAL_SAVING), then the
  application is FINISHING until the AM container ends, then FINISHED;
* the AM container ends without unregistering, or the AM stops heartbeating: the
  attempt FAILED; the next attempt starts unless the application used its max
  attempts (then it FAILED with the AM's exit in its diagnostics); exits caused by
  the framework (node lost, preempted) do not count against the limit;
* the AM container of a killed application ends: the kill completes (KILLED).
"""

from __future__ import annotations

from twisted.internet import defer

from cortex_rm.allocator.app_model import Application, Attempt
from cortex_rm.allocator.app_states import AppEvent, AppState, AttemptEvent, AttemptState, FinalStatus
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.errors import RefusedOperation
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId


class AMLifecycle:
    """Applies AM events to the application table."""

    def __init__(self, table: ApplicationTable) -> None:
        self.table = table

    def _live(self, attempt_id: ApplicationAttemptId) -> tuple[Application, Attempt]:
        app, attempt = self.table.get_attempt(attempt_id)
        if attempt is not app.current_attempt:
            raise RefusedOperation(f"{attempt_id} is not the current attempt of {app.app_id}")
        return app, attempt

    def am_container_allocated(
        self, attempt_id: ApplicationAttemptId, container_id: ContainerId, node: str, node_http: str
    ) -> defer.Deferred[None]:
        """The scheduler placed the AM container; stored before it is launched."""
        app, attempt = self._live(attempt_id)
        self.table.attempt_event(attempt, AttemptEvent.CONTAINER_ALLOCATED)
        attempt.am_container_id = container_id
        attempt.am_node, attempt.am_node_http = node, node_http
        app.diagnostics = f"AM container {container_id} allocated on {node}; launching it."
        d = self.table.save(app)
        d.addCallback(lambda _: self.table.attempt_event(attempt, AttemptEvent.ATTEMPT_NEW_SAVED))
        return d

    def am_container_launched(self, attempt_id: ApplicationAttemptId) -> None:
        """The node started the AM container."""
        app, attempt = self._live(attempt_id)
        self.table.attempt_event(attempt, AttemptEvent.LAUNCHED)
        app.launch_time_ms = self.table.now_ms()
        app.diagnostics = f"AM container is launched on {attempt.am_node}, waiting for the AM to register."

    def registered(self, attempt_id: ApplicationAttemptId, host: str, rpc_port: int, tracking_url: str) -> defer.Deferred[None]:
        """registerApplicationMaster: attempt and application RUNNING."""
        app, attempt = self._live(attempt_id)
        self.table.attempt_event(attempt, AttemptEvent.REGISTERED)
        attempt.host, attempt.rpc_port, attempt.tracking_url = host or "N/A", rpc_port, tracking_url
        if app.state is AppState.ACCEPTED:
            self.table.transition(app, AppEvent.ATTEMPT_REGISTERED)
        app.diagnostics = ""
        return self.table.save(app)

    def unregistered(
        self, attempt_id: ApplicationAttemptId, final_status: FinalStatus, diagnostics: str, tracking_url: str
    ) -> defer.Deferred[bool]:
        """finishApplicationMaster: store the outcome; fires True once stored (isUnregistered)."""
        app, attempt = self._live(attempt_id)
        if attempt.state is AttemptState.FINISHING:
            return defer.succeed(app.state in (AppState.FINISHING, AppState.FINISHED))
        self.table.attempt_event(attempt, AttemptEvent.UNREGISTERED)
        attempt.final_status = final_status
        attempt.diagnostics = diagnostics
        if tracking_url:
            attempt.tracking_url = tracking_url
        if app.state is AppState.KILLING:
            return defer.succeed(True)  # the kill decides the outcome
        self.table.transition(app, AppEvent.ATTEMPT_UNREGISTERED)
        status = final_status if final_status is not FinalStatus.UNDEFINED else FinalStatus.SUCCEEDED
        app.progress = 1.0
        return self.table.final_save(app, AppState.FINISHING, status, diagnostics).addCallback(lambda _: True)

    def am_container_finished(self, attempt_id: ApplicationAttemptId, exit_status: int, diagnostics: str) -> defer.Deferred[None]:
        """The AM container ended (exited, was killed, or its node was lost)."""
        app, attempt = self.table.get_attempt(attempt_id)
        attempt.exit_status = exit_status
        if not attempt.finish_time_ms:
            attempt.finish_time_ms = self.table.now_ms()
        if attempt.state is AttemptState.FINISHING:
            self.table.attempt_event(attempt, AttemptEvent.CONTAINER_FINISHED)
            self.table.listener.attempt_ended(app, attempt)
            if app.state is AppState.FINISHING:
                if app.final_status is FinalStatus.FAILED and exit_status != 0 and diagnostics:
                    # what the AM said, then what its container left behind (its stderr's tail)
                    app.diagnostics = (
                        f"{app.diagnostics}\nAM Container for {attempt_id} exited with exitCode: {exit_status}."
                        f" {diagnostics}".strip()
                    )
                return self.table.reach_final(app, AppState.FINISHED)
            return defer.succeed(None)
        if app.state is AppState.KILLING:
            self.table.transition(app, AppEvent.ATTEMPT_KILLED)
            return self.table.final_save(app, AppState.KILLED, FinalStatus.KILLED, app.diagnostics)
        if attempt.state.is_terminal or attempt is not app.current_attempt:
            return defer.succeed(None)  # late news of an attempt that already ended
        self.table.attempt_event(attempt, AttemptEvent.CONTAINER_FINISHED)
        attempt.diagnostics = (
            f"AM Container for {attempt_id} exited with exitCode: {exit_status}. {diagnostics}".strip()
        )
        return self.table.attempt_failed(app, attempt)

    def expired(
        self, attempt_id: ApplicationAttemptId, expiry_ms: int, lost_status: int | None = None
    ) -> defer.Deferred[None]:
        """The AM stopped heartbeating for ``expiry_ms``.  ``lost_status``: the AM container's exit
        status when it is known lost with its node (ABORTED: not counted against the application)."""
        app, attempt = self.table.get_attempt(attempt_id)
        if attempt.state.is_terminal or attempt is not app.current_attempt:
            return defer.succeed(None)
        if attempt.state is AttemptState.FINISHING:
            return self.am_container_finished(attempt_id, 0, "")
        self.table.attempt_event(attempt, AttemptEvent.EXPIRE)
        attempt.finish_time_ms = self.table.now_ms()
        attempt.diagnostics = f"ApplicationMaster for attempt {attempt_id} timed out after {expiry_ms} ms"
        if lost_status is not None:
            attempt.exit_status = lost_status
            attempt.diagnostics += ": its node did not come back after the ResourceManager restarted"
        if app.state is AppState.KILLING:
            self.table.listener.attempt_ended(app, attempt)
            self.table.transition(app, AppEvent.ATTEMPT_KILLED)
            return self.table.final_save(app, AppState.KILLED, FinalStatus.KILLED, app.diagnostics)
        return self.table.attempt_failed(app, attempt)
