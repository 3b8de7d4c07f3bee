"""The bodies a DataNode stores, and how many it takes at once: in all, and from one user.

Each body a node stores (a client's CREATE or APPEND, a replica PUT of a write pipeline) holds
one of the node's worker threads (``WORKER_THREADS``, 8) while it arrives, so the node takes
only so many at once (:class:`UploadSlots`); one more is answered as Hadoop answers a busy
server, 503 ``RetriableException``, from the request's head, before a byte of its body is
read, and the client tries again.  Clients' uploads leave threads for reads and for the
pipelines' block PUTs, which have slots of their own (an upload waiting on another node's PUT
never waits for itself).  One user may hold only part of the clients' slots
(``CLIENT_UPLOADS_PER_USER``), so a user who starts many uploads cannot keep everyone else's
out: the user is the one the NameNode signed into the write ticket, verified on the head.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cortex_rm.fs.errors import FsError
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_streams import BodyControl
from cortex_rm.yarn_api.log_text import sanitise
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.webhdfs.block_work import DataNodeContext
from cortex_rm.yarn_api.webhdfs.body_pipe import BodyPipe
from cortex_rm.yarn_api.webhdfs.namenode_resource import Reply, as_deferred

log = Logger()

CLIENT_UPLOADS: Final = 4
"""Clients' uploads (CREATE, APPEND) one node stores at once."""
CLIENT_UPLOADS_PER_USER: Final = CLIENT_UPLOADS // 2
"""Of those, one user's at most: another user's upload still finds a slot."""
BLOCK_PUTS: Final = 3
"""Replicas other nodes' write pipelines push here at once (any user's: each is a client's upload elsewhere)."""


def rest_error(error: FsError) -> RestError:
    """``error`` in the form the web site refuses a request with (the same RemoteException JSON)."""
    return RestError(error.http_status, (error.simple_name, error.java_class), str(error))


class UploadSlots:
    """How many bodies of one kind a node stores at once, ``limit`` in all and ``per_user`` for
    one user; more are answered 503 ``RetriableException``, to be retried.

    A slot is held until its upload's work ends: at once when the body is cut off while its
    worker reads it; if every worker was busy, when one gets to it (it then ends at once)."""

    def __init__(self, limit: int, per_user: int | None = None) -> None:
        per_user = limit if per_user is None else per_user
        if not 1 <= per_user <= limit:
            raise ValueError(f"need 1 <= per_user <= limit, not {per_user}, {limit}")
        self.limit = limit
        self.per_user = per_user
        self.taken = 0
        self._by_user: Counter[str] = Counter()

    def held_by(self, user: str) -> int:
        """The slots ``user``'s uploads hold now."""
        return self._by_user[user]

    def take(self, user: str) -> None:
        """A slot for an upload of ``user``'s, or ``RestError`` 503 (RetriableException) if none is left."""
        if self._by_user[user] >= self.per_user:
            raise rest_errors.retriable(
                f"user {sanitise(user, 100)} is storing {self._by_user[user]} uploads on this node, the most one "
                "user may at once; try again shortly"
            )
        if self.taken >= self.limit:
            raise rest_errors.retriable(
                f"this node is storing {self.taken} uploads, its most at once; try again shortly"
            )
        self.taken += 1
        self._by_user[user] += 1

    def give(self, user: str) -> None:
        """The upload of ``user``'s that held a slot has ended."""
        self.taken -= 1
        self._by_user[user] -= 1
        if self._by_user[user] <= 0:
            del self._by_user[user]


class Upload:
    """The body of a CREATE, APPEND or block PUT, stored by a worker as it arrives (a ``BodyStream``).

    It holds one of ``slots`` for ``user`` (taken here: 503 if none is left) until ``store`` ends.
    ``store`` runs on a worker from the start, reading the body from ``pipe``; its ``Reply`` (or
    error) is the request's answer once the body is complete.  If it fails before that, the
    request is refused at once with its error (the rest of the body is not read)."""

    def __init__(
        self, ctx: DataNodeContext, control: BodyControl, store: Callable[[BodyPipe], defer.Deferred[Reply]],
        slots: UploadSlots, user: str,
    ) -> None:
        slots.take(user)
        self.pipe = BodyPipe(control, ctx.reactor.callFromThread)
        self._control = control

        def ended(result: Reply | Failure) -> Reply | Failure:
            slots.give(user)
            return result

        self._reply: defer.Deferred[Reply] = as_deferred(lambda: store(self.pipe))
        self._reply.addBoth(ended)
        self._reply.addErrback(self._failed_early)

    @property
    def max_bytes(self) -> int:
        return self.pipe.max_bytes

    def data(self, piece: bytes) -> None:
        self.pipe.data(piece)

    def end(self) -> None:
        self.pipe.end()

    def lost(self, reason: Failure) -> None:
        self.pipe.lost(reason)

    def reply(self) -> defer.Deferred[Reply]:
        """The answer, once the body is complete and stored (called once, when the request is rendered)."""
        return self._reply

    def _failed_early(self, failure: Failure) -> Failure | Reply:
        self.pipe.close()
        if self.pipe.ended:
            return failure  # the request is being rendered: it answers the error
        if failure.check(ConnectionError):
            log.info("an upload was cut off: {error}", error=failure.getErrorMessage())
        elif failure.check(FsError):
            self._control.refuse(rest_error(failure.value))  # type: ignore[arg-type]
        else:
            log.failure("storing an upload failed", failure)
            self._control.refuse(rest_error(FsError("storing the upload failed; the node's log says why")))
        return Reply(500)  # (never sent: the connection is refused or gone)
