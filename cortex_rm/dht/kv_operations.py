"""Operations of the key space in flight: the outcomes a caller receives and the requests behind them.

``KeySpace`` (``key_space.py``) returns ``PutDone`` and ``GetDone`` among its
actions; it tracks each request it sent as a ``PendingRequest`` (answered by the
peer it went to before ``deadline``, or failed by ``expire``), and each owner's
read-miss as a ``Gather`` of its replicas' answers for one or more askers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cortex_rm.dht.envelope import Send
from cortex_rm.dht.kv_messages import Record
from cortex_rm.dht.peer import Peer


@dataclass(frozen=True)
class PutDone:
    """Outcome of ``put``: the stored ``record``, or None and an ``error`` saying why not."""

    op_id: int
    key: str
    record: Record | None
    error: str


@dataclass(frozen=True)
class GetDone:
    """Outcome of ``get``: the ``record`` (None when no one holds it), or an ``error``."""

    op_id: int
    key: str
    record: Record | None
    error: str


Action = Send | PutDone | GetDone

PUT, GET, GATHER = "put", "get", "gather"
"""What a ``PendingRequest`` is for: a caller's put, a caller's get, or an owner's gather."""


@dataclass(frozen=True)
class AnswerTo:
    """Where a get's answer goes: a remote asker's request, or our own caller's op."""

    peer: Peer | None
    request_id: int = 0
    op_id: int = 0


@dataclass
class PendingRequest:
    """A request sent to ``to``: for the caller's op ``op_id`` or the gather ``gather_id``."""

    to: Peer
    deadline: float
    kind: str
    key: str
    op_id: int = 0
    gather_id: int = 0


@dataclass
class Gather:
    """An owner's read-miss: the replicas' answers still ``waiting``, the ``best`` so far, who to tell."""

    key: str
    answer_to: list[AnswerTo]
    best: Record | None
    waiting: set[int] = field(default_factory=set)
