"""YARN's identifiers and their string forms.

The string forms are what users, logs and REST clients see, and what Hadoop's
``ApplicationId.fromString`` / ``ContainerId.fromString`` parse, so they follow
Hadoop's formatting exactly:

* ``application_<clusterTimestamp>_<id, at least 4 digits>``
* ``appattempt_<clusterTimestamp>_<app id, 4+ digits>_<attempt id, 6+ digits>``
* ``container_[e<epoch, 2+ digits>_]<clusterTimestamp>_<app id, 4+>_<attempt id, 2+>_<sequence, 6+>``
  where the 64-bit container id keeps the epoch above bit 40 and the sequence below.
* a node is ``host:port``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cortex_rm.yarn.errors import MalformedId

CONTAINER_EPOCH_SHIFT = 40
CONTAINER_SEQUENCE_MASK = (1 << CONTAINER_EPOCH_SHIFT) - 1

_APP_RE = re.compile(r"^application_(\d{1,19})_(\d{1,10})$")
_ATTEMPT_RE = re.compile(r"^appattempt_(\d{1,19})_(\d{1,10})_(\d{1,10})$")
_CONTAINER_RE = re.compile(r"^container_(?:e(\d{1,7})_)?(\d{1,19})_(\d{1,10})_(\d{1,10})_(\d{1,13})$")


@dataclass(frozen=True, order=True)
class ApplicationId:
    """An application: the RM's cluster timestamp plus a sequence number."""

    cluster_timestamp: int
    id: int

    def __str__(self) -> str:
        return f"application_{self.cluster_timestamp}_{self.id:04d}"

    @classmethod
    def parse(cls, text: str) -> ApplicationId:
        m = _APP_RE.match(text)
        if m is None:
            raise MalformedId(f"invalid ApplicationId: {text!r} (expected application_<timestamp>_<id>)")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, order=True)
class ApplicationAttemptId:
    """The n-th attempt (1-based) to run an application's ApplicationMaster."""

    app_id: ApplicationId
    attempt_id: int

    def __str__(self) -> str:
        a = self.app_id
        return f"appattempt_{a.cluster_timestamp}_{a.id:04d}_{self.attempt_id:06d}"

    @classmethod
    def parse(cls, text: str) -> ApplicationAttemptId:
        m = _ATTEMPT_RE.match(text)
        if m is None:
            raise MalformedId(f"invalid ApplicationAttemptId: {text!r}")
        return cls(ApplicationId(int(m.group(1)), int(m.group(2))), int(m.group(3)))


@dataclass(frozen=True, order=True)
class ContainerId:
    """A container of an attempt; ``id`` is the 64-bit value (epoch << 40 | sequence)."""

    attempt_id: ApplicationAttemptId
    id: int

    @property
    def epoch(self) -> int:
        return self.id >> CONTAINER_EPOCH_SHIFT

    @property
    def sequence(self) -> int:
        return self.id & CONTAINER_SEQUENCE_MASK

    def __str__(self) -> str:
        app = self.attempt_id.app_id
        epoch = f"e{self.epoch:02d}_" if self.epoch else ""
        return (
            f"container_{epoch}{app.cluster_timestamp}_{app.id:04d}"
            f"_{self.attempt_id.attempt_id:02d}_{self.sequence:06d}"
        )

    @classmethod
    def parse(cls, text: str) -> ContainerId:
        m = _CONTAINER_RE.match(text)
        if m is None:
            raise MalformedId(f"invalid ContainerId: {text!r}")
        epoch, sequence = int(m.group(1) or 0), int(m.group(5))
        if sequence > CONTAINER_SEQUENCE_MASK:
            raise MalformedId(f"invalid ContainerId: {text!r} (sequence wider than {CONTAINER_EPOCH_SHIFT} bits)")
        app = ApplicationId(int(m.group(2)), int(m.group(3)))
        attempt = ApplicationAttemptId(app, int(m.group(4)))
        return cls(attempt, (epoch << CONTAINER_EPOCH_SHIFT) | sequence)


@dataclass(frozen=True, order=True)
class NodeId:
    """A NodeManager's RPC address; its string form is YARN's ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> NodeId:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdecimal():
            raise MalformedId(f"invalid NodeId: {text!r} (expected host:port)")
        return cls(host, int(port))
