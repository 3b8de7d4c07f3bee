"""The application and application-attempt lifecycles, with YARN's state names.

The application table follows YARN's ``RMAppImpl``: a submission is saved
(NEW_SAVING) before it is SUBMITTED to a queue and ACCEPTED; the AM's registration
makes it RUNNING; every way to end goes through FINAL_SAVING, so the outcome is
stored before clients see it.  KILLING and FINAL_SAVING are internal: reports show
the state the application had before it entered them, as YARN does.
"""

from __future__ import annotations

import enum

from cortex_rm.yarn.transitions import TransitionTable


class AppState(enum.Enum):
    NEW = "NEW"
    NEW_SAVING = "NEW_SAVING"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    RUNNING = "RUNNING"
    FINAL_SAVING = "FINAL_SAVING"
    FINISHING = "FINISHING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLING = "KILLING"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_APP_STATES


TERMINAL_APP_STATES = frozenset({AppState.FINISHED, AppState.FAILED, AppState.KILLED})
# Reported states of applications that wait for their AM (YARN's "pending" in metrics)
PENDING_APP_STATES = frozenset({AppState.NEW, AppState.NEW_SAVING, AppState.SUBMITTED, AppState.ACCEPTED})
HIDDEN_APP_STATES = frozenset({AppState.FINAL_SAVING, AppState.KILLING})


class FinalStatus(enum.Enum):
    """What the application reports as its outcome (``FinalApplicationStatus``)."""

    UNDEFINED = "UNDEFINED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    ENDED = "ENDED"


class AppEvent(enum.Enum):
    START = "START"  # the submission arrived; save it
    APP_NEW_SAVED = "APP_NEW_SAVED"  # the store has it
    APP_ACCEPTED = "APP_ACCEPTED"  # the scheduler took it into its queue
    APP_REJECTED = "APP_REJECTED"  # the scheduler refused it (queue, size)
    ATTEMPT_REGISTERED = "ATTEMPT_REGISTERED"  # the AM registered
    ATTEMPT_UNREGISTERED = "ATTEMPT_UNREGISTERED"  # the AM unregistered with a final status
    ATTEMPT_FAILED = "ATTEMPT_FAILED"  # the AM died; retry or fail
    ATTEMPT_FINISHED = "ATTEMPT_FINISHED"  # the unregistered AM's container ended
    ATTEMPT_KILLED = "ATTEMPT_KILLED"  # the running attempt was killed after a KILL
    KILL = "KILL"  # a client asked to kill it
    APP_UPDATE_SAVED = "APP_UPDATE_SAVED"  # the final state is stored
    MOVE = "MOVE"  # moved to another queue


_A, _E = AppState, AppEvent

APP_TRANSITIONS: TransitionTable[AppState, AppEvent] = TransitionTable(
    "application",
    {
        (_A.NEW, _E.START): _A.NEW_SAVING,
        (_A.NEW, _E.KILL): _A.FINAL_SAVING,
        (_A.NEW_SAVING, _E.APP_NEW_SAVED): _A.SUBMITTED,
        (_A.NEW_SAVING, _E.KILL): _A.FINAL_SAVING,
        (_A.NEW_SAVING, _E.APP_REJECTED): _A.FINAL_SAVING,
        (_A.SUBMITTED, _E.APP_ACCEPTED): _A.ACCEPTED,
        (_A.SUBMITTED, _E.APP_REJECTED): _A.FINAL_SAVING,
        (_A.SUBMITTED, _E.KILL): _A.FINAL_SAVING,
        (_A.SUBMITTED, _E.MOVE): _A.SUBMITTED,
        (_A.ACCEPTED, _E.ATTEMPT_REGISTERED): _A.RUNNING,
        # a failed attempt either starts the next one (stays ACCEPTED) or fails the app
        (_A.ACCEPTED, _E.ATTEMPT_FAILED): (_A.ACCEPTED, _A.FINAL_SAVING),
        (_A.ACCEPTED, _E.KILL): (_A.KILLING, _A.FINAL_SAVING),
        (_A.ACCEPTED, _E.MOVE): _A.ACCEPTED,
        (_A.ACCEPTED, _E.APP_REJECTED): _A.FINAL_SAVING,
        (_A.RUNNING, _E.ATTEMPT_UNREGISTERED): _A.FINAL_SAVING,
        (_A.RUNNING, _E.ATTEMPT_FAILED): (_A.ACCEPTED, _A.FINAL_SAVING),
        (_A.RUNNING, _E.KILL): _A.KILLING,
        (_A.RUNNING, _E.MOVE): _A.RUNNING,
        (_A.KILLING, _E.ATTEMPT_KILLED): _A.FINAL_SAVING,
        (_A.KILLING, _E.ATTEMPT_FAILED): _A.FINAL_SAVING,
        (_A.KILLING, _E.ATTEMPT_UNREGISTERED): _A.FINAL_SAVING,
        (_A.FINAL_SAVING, _E.APP_UPDATE_SAVED): (_A.FINISHING, _A.FAILED, _A.KILLED, _A.FINISHED),
        (_A.FINISHING, _E.ATTEMPT_FINISHED): _A.FINISHED,
        (_A.FINISHING, _E.ATTEMPT_FAILED): _A.FINISHED,
        (_A.FINISHING, _E.KILL): _A.FINISHED,
    },
    ignored=[
        # a repeated kill, or a kill racing the end, changes nothing
        (_A.KILLING, _E.KILL),
        (_A.FINAL_SAVING, _E.KILL),
        # the store confirms a submission after a kill overtook it (as YARN's FINAL_SAVING)
        (_A.FINAL_SAVING, _E.APP_NEW_SAVED),
        # late news about an attempt of an application that is ending or has ended
        (_A.FINAL_SAVING, _E.ATTEMPT_FAILED),
        (_A.FINAL_SAVING, _E.ATTEMPT_FINISHED),
        (_A.FINAL_SAVING, _E.ATTEMPT_KILLED),
        *(
            (state, event)
            for state in (_A.FINISHED, _A.FAILED, _A.KILLED)
            for event in (_E.KILL, _E.ATTEMPT_FAILED, _E.ATTEMPT_FINISHED, _E.ATTEMPT_KILLED)
        ),
    ],
)


class AttemptState(enum.Enum):
    """``YarnApplicationAttemptState``: the life of one AM attempt."""

    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    SCHEDULED = "SCHEDULED"
    ALLOCATED_SAVING = "ALLOCATED_SAVING"
    ALLOCATED = "ALLOCATED"
    LAUNCHED = "LAUNCHED"
    FAILED = "FAILED"
    RUNNING = "RUNNING"
    FINISHING = "FINISHING"
    FINISHED = "FINISHED"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self in (AttemptState.FAILED, AttemptState.FINISHED, AttemptState.KILLED)


class AttemptEvent(enum.Enum):
    START = "START"  # the application created this attempt
    ATTEMPT_ADDED = "ATTEMPT_ADDED"  # the scheduler queued its AM request
    CONTAINER_ALLOCATED = "CONTAINER_ALLOCATED"  # the AM container was placed
    ATTEMPT_NEW_SAVED = "ATTEMPT_NEW_SAVED"  # the allocation is stored
    LAUNCHED = "LAUNCHED"  # the node started the AM container
    REGISTERED = "REGISTERED"  # the AM called registerApplicationMaster
    UNREGISTERED = "UNREGISTERED"  # the AM called finishApplicationMaster
    CONTAINER_FINISHED = "CONTAINER_FINISHED"  # the AM container ended
    EXPIRE = "EXPIRE"  # the AM stopped heartbeating
    KILL = "KILL"  # the application is being killed
    FAIL = "FAIL"  # a client asked to fail this attempt


_T, _V = AttemptState, AttemptEvent
_LIVE = (_T.NEW, _T.SUBMITTED, _T.SCHEDULED, _T.ALLOCATED_SAVING, _T.ALLOCATED, _T.LAUNCHED, _T.RUNNING)

ATTEMPT_TRANSITIONS: TransitionTable[AttemptState, AttemptEvent] = TransitionTable(
    "application attempt",
    {
        (_T.NEW, _V.START): _T.SUBMITTED,
        (_T.SUBMITTED, _V.ATTEMPT_ADDED): _T.SCHEDULED,
        (_T.SCHEDULED, _V.CONTAINER_ALLOCATED): _T.ALLOCATED_SAVING,
        (_T.ALLOCATED_SAVING, _V.ATTEMPT_NEW_SAVED): _T.ALLOCATED,
        (_T.ALLOCATED, _V.LAUNCHED): _T.LAUNCHED,
        (_T.ALLOCATED, _V.REGISTERED): _T.RUNNING,
        (_T.LAUNCHED, _V.REGISTERED): _T.RUNNING,
        (_T.RUNNING, _V.UNREGISTERED): _T.FINISHING,
        (_T.FINISHING, _V.CONTAINER_FINISHED): _T.FINISHED,
        (_T.FINISHING, _V.EXPIRE): _T.FINISHED,
        (_T.ALLOCATED, _V.CONTAINER_FINISHED): _T.FAILED,
        (_T.LAUNCHED, _V.CONTAINER_FINISHED): _T.FAILED,
        (_T.RUNNING, _V.CONTAINER_FINISHED): _T.FAILED,
        (_T.ALLOCATED, _V.EXPIRE): _T.FAILED,
        (_T.LAUNCHED, _V.EXPIRE): _T.FAILED,
        (_T.RUNNING, _V.EXPIRE): _T.FAILED,
        **{(s, _V.KILL): _T.KILLED for s in _LIVE},
        **{(s, _V.FAIL): _T.FAILED for s in _LIVE},
    },
    ignored=[
        (_T.FINISHING, _V.KILL),
        *((s, e) for s in (_T.FAILED, _T.FINISHED, _T.KILLED) for e in (_V.KILL, _V.CONTAINER_FINISHED, _V.EXPIRE, _V.FAIL)),
    ],
)
