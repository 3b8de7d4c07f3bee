"""A container's state and exit status as YARN reports them to ApplicationMasters and clients.

One definition for every layer: the RM's scheduler, the NodeManager's containers,
the NodeTracker conversation and the wire codecs all use these.
"""

from __future__ import annotations

import enum
from typing import Final


class ContainerExitStatus:
    """YARN's ``ContainerExitStatus`` constants (the exit statuses that are not a process's own).

    A process that ran reports its own exit code instead (0, or e.g. 143 after SIGTERM).
    """

    SUCCESS: Final = 0
    INVALID: Final = -1000  # not exited yet, or failed before it could run
    ABORTED: Final = -100  # released or lost; Spark does not count it against the application
    DISKS_FAILED: Final = -101
    PREEMPTED: Final = -102
    KILLED_EXCEEDED_VMEM: Final = -103
    KILLED_EXCEEDED_PMEM: Final = -104
    KILLED_BY_APPMASTER: Final = -105
    KILLED_BY_RESOURCEMANAGER: Final = -106
    KILLED_AFTER_APP_COMPLETION: Final = -107

    #: AM exit statuses that do not count against an application's max attempts, as in YARN
    #: (``shouldCountTowardsMaxAttemptRetry``): the framework took the container away.
    NOT_COUNTED_AGAINST_ATTEMPTS: Final = frozenset({ABORTED, DISKS_FAILED, PREEMPTED, KILLED_BY_RESOURCEMANAGER})

    #: AM exit statuses that do not put the AM's node on the application's AM blacklist, as
    #: YARN's ``shouldCountTowardsNodeBlacklisting``: the framework's doing (killed, lost,
    #: preempted), a node already unhealthy (disks), the AM's own memory use, or success.
    #: Everything else counts, INVALID too (a launch that failed; YARN-4284).
    NOT_COUNTED_FOR_AM_BLACKLIST: Final = frozenset(
        {
            SUCCESS, ABORTED, DISKS_FAILED, PREEMPTED, KILLED_EXCEEDED_VMEM, KILLED_EXCEEDED_PMEM,
            KILLED_BY_APPMASTER, KILLED_BY_RESOURCEMANAGER, KILLED_AFTER_APP_COMPLETION,
        }
    )


class ContainerState(enum.Enum):
    """A container as a node reports it (YARN's ``ContainerState``)."""

    NEW = "NEW"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
