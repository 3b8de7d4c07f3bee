"""The queue tree of the capacity scheduler.

Queues form a tree under ``root``; applications go to leaves only.  Each queue has
a guaranteed share of its parent (``capacity``, percent, siblings summing to 100)
and a ceiling (``maximum_capacity``, percent of the parent).  A client may name a
leaf by its short name (``default``), as YARN's CapacityScheduler allows, or by its
full path (``root.default``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from cortex_rm.allocator.acls import EVERYONE, NOBODY, AccessControlList
from cortex_rm.allocator.errors import InvalidSubmission, UnknownQueue


class QueueState(enum.Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class QueueSpec:
    """One queue as configured; ``children`` empty means a leaf."""

    name: str
    capacity: float = 100.0
    maximum_capacity: float = 100.0
    state: QueueState = QueueState.RUNNING
    children: tuple[QueueSpec, ...] = ()
    # YARN's acl_submit_applications / acl_administer_queue; None: unset (others: nobody, so
    # only what the parents allow; root: everyone may submit, nobody administers — YARN's root
    # default "*" would make every user an admin of every application on an open network)
    submit_acl: AccessControlList | None = None
    admin_acl: AccessControlList | None = None


DEFAULT_QUEUES = QueueSpec("root", children=(QueueSpec("default"),))


@dataclass
class Queue:
    """A queue of the tree with its derived absolute shares."""

    path: str
    spec: QueueSpec
    parent: Queue | None
    children: list[Queue] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def absolute_capacity(self) -> float:
        """Guaranteed fraction (0..1) of the whole cluster."""
        share = self.spec.capacity / 100.0
        return share if self.parent is None else share * self.parent.absolute_capacity

    @property
    def absolute_maximum_capacity(self) -> float:
        """Ceiling as a fraction (0..1) of the whole cluster."""
        share = self.spec.maximum_capacity / 100.0
        return share if self.parent is None else share * self.parent.absolute_maximum_capacity

    @property
    def is_running(self) -> bool:
        """A queue accepts work only if it and all its ancestors are RUNNING."""
        if self.spec.state is not QueueState.RUNNING:
            return False
        return self.parent is None or self.parent.is_running


class QueueTree:
    """All queues, addressable by full path and (for unique leaves) by short name."""

    def __init__(self, root: QueueSpec = DEFAULT_QUEUES) -> None:
        if root.name != "root":
            raise ValueError(f"the top queue must be named 'root', not {root.name!r}")
        self._by_path: dict[str, Queue] = {}
        self._leaves_by_name: dict[str, list[Queue]] = {}
        self.root = self._build(root, None, "root")

    def _build(self, spec: QueueSpec, parent: Queue | None, path: str) -> Queue:
        if not spec.name or "." in spec.name:
            raise ValueError(f"queue {path}: a queue name must be non-empty and contain no '.', not {spec.name!r}")
        if parent is None and (spec.capacity != 100 or spec.maximum_capacity != 100):
            raise ValueError(f"queue {path}: the root queue always has the whole cluster (capacity 100)")
        if not 0 <= spec.capacity <= 100 or not spec.capacity <= spec.maximum_capacity <= 100:
            raise ValueError(
                f"queue {path}: need 0 <= capacity <= maximum_capacity <= 100, "
                f"got capacity={spec.capacity} maximum_capacity={spec.maximum_capacity}"
            )
        queue = Queue(path, spec, parent)
        self._by_path[path] = queue
        names = [c.name for c in spec.children]
        if len(set(names)) != len(names):
            raise ValueError(f"queue {path}: two children share a name: {names}")
        if spec.children:
            total = sum(c.capacity for c in spec.children)
            if abs(total - 100.0) > 1e-6:
                raise ValueError(f"queue {path}: children's capacities must sum to 100, not {total:g}")
        for child in spec.children:
            queue.children.append(self._build(child, queue, f"{path}.{child.name}"))
        if not spec.children:
            self._leaves_by_name.setdefault(spec.name, []).append(queue)
        return queue

    def __iter__(self) -> Iterator[Queue]:
        return iter(self._by_path.values())

    def find(self, name: str) -> Queue:
        """The queue at a full path, or the leaf with that short name (or the root)."""
        queue = self._by_path.get(name)
        if queue is not None:
            return queue
        leaves = self._leaves_by_name.get(name, [])
        if len(leaves) == 1:
            return leaves[0]
        if len(leaves) > 1:
            paths = ", ".join(q.path for q in leaves)
            raise UnknownQueue(f"queue name {name!r} is ambiguous ({paths}); use the full path")
        parent = self._by_path.get(f"root.{name}")
        if parent is not None:
            return parent
        raise UnknownQueue(f"queue {name!r} does not exist; queues: {', '.join(self._by_path)}")

    def may_submit(self, queue: Queue, user: str) -> bool:
        """YARN's rule: a user may submit to a queue that allows it, or whose ancestor does."""
        return any(_acl(q, "submit_acl").allows(user) for q in _path_to_root(queue))

    def may_administer(self, queue: Queue, user: str) -> bool:
        """Whether ``user`` administers ``queue`` (or one of its ancestors): she may then see
        and change its applications."""
        return any(_acl(q, "admin_acl").allows(user) for q in _path_to_root(queue))

    def display_name(self, queue: Queue) -> str:
        """The name reports show: the short name when it is unambiguous, else the full path."""
        return queue.name if len(self._leaves_by_name.get(queue.name, [])) == 1 else queue.path

    def leaf_for_submission(self, name: str) -> Queue:
        """The leaf a new application goes to, or InvalidSubmission saying why not."""
        try:
            queue = self.find(name or "default")
        except UnknownQueue as e:
            raise InvalidSubmission(f"Application submitted to a non-existent queue: {e}") from None
        if not queue.is_leaf:
            raise InvalidSubmission(
                f"queue {queue.path} is a parent queue; submit to one of its leaves: "
                + ", ".join(c.path for c in queue.children)
            )
        if not queue.is_running:
            raise InvalidSubmission(f"queue {queue.path} is STOPPED and accepts no new applications")
        return queue


def _path_to_root(queue: Queue) -> Iterator[Queue]:
    q: Queue | None = queue
    while q is not None:
        yield q
        q = q.parent


def _acl(queue: Queue, name: str) -> AccessControlList:
    acl: AccessControlList | None = getattr(queue.spec, name)
    if acl is not None:
        return acl
    return EVERYONE if queue.parent is None and name == "submit_acl" else NOBODY
