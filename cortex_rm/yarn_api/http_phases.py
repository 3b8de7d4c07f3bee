"""The phases of one connection of a ``LimitedSite`` (``http_limits``) and what moves it between them.

Each phase has its own clock (or none): the channel arms the clock of the phase it enters.
The table is complete: an event a phase does not list is a bug (``IllegalTransition``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from cortex_rm.yarn.errors import IllegalTransition

if TYPE_CHECKING:
    from cortex_rm.yarn_api.http_limits import HttpLimits


class Phase(enum.Enum):
    """Where a connection is, and so which clock runs on it."""

    HEAD = "head"  # its request line and headers are arriving: header_timeout_s
    BODY = "body"  # its request's body is arriving: the pace check every body_window_s
    BODY_PAUSED = "body paused"  # the site stopped reading a streamed body (its sink lags): paused_body_timeout_s
    HANDLING = "handling"  # the site is answering: no clock (stalled_response_timeout_s if its client reads nothing)
    IDLE = "idle"  # kept alive between requests: idle_timeout_s
    REFUSED = "refused"  # answered with a refusal: the client's bytes are dropped for linger_s


class Event(enum.Enum):
    """What moves a connection from one phase to the next."""

    BODY_FOLLOWS = "the head is complete and a body follows"
    PAUSE = "the sink of a streamed body cannot take more for now"
    RESUME = "the sink of a streamed body takes more again"
    REQUEST_COMPLETE = "the request is complete (its head, and its body if any)"
    ANSWERED = "the answer is sent and the connection is kept alive"
    NEXT_REQUEST = "the first bytes of the next request arrive"
    REFUSE = "a limit is broken, or a streamed body's sink refuses it: the connection is refused"


# In REFUSED every input is ignored (the channel drops it before it becomes an event).  A body
# can end while paused: the bytes of one read that were already in hand complete it.
TRANSITIONS: Final[Mapping[tuple[Phase, Event], Phase]] = {
    (Phase.HEAD, Event.BODY_FOLLOWS): Phase.BODY,
    (Phase.HEAD, Event.REQUEST_COMPLETE): Phase.HANDLING,
    (Phase.HEAD, Event.REFUSE): Phase.REFUSED,
    (Phase.BODY, Event.PAUSE): Phase.BODY_PAUSED,
    (Phase.BODY, Event.REQUEST_COMPLETE): Phase.HANDLING,
    (Phase.BODY, Event.REFUSE): Phase.REFUSED,
    (Phase.BODY_PAUSED, Event.RESUME): Phase.BODY,
    (Phase.BODY_PAUSED, Event.REQUEST_COMPLETE): Phase.HANDLING,
    (Phase.BODY_PAUSED, Event.REFUSE): Phase.REFUSED,
    (Phase.HANDLING, Event.ANSWERED): Phase.IDLE,
    (Phase.IDLE, Event.NEXT_REQUEST): Phase.HEAD,
}


def next_phase(phase: Phase, event: Event) -> Phase:
    """The phase ``event`` moves a connection in ``phase`` to; ``IllegalTransition`` if it may not happen there."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise IllegalTransition(f"HTTP connection: {event.name} cannot happen in {phase.name}") from None


def body_window_need(limits: HttpLimits, declared: int | None, received: int) -> int:
    """The bytes a body must bring in the window that starts now: the pace's share of the window,
    or all that is left of a declared length if that is less."""
    pace = int(limits.min_body_bytes_per_s * limits.body_window_s)
    return pace if declared is None else max(0, min(pace, declared - received))
