"""Node labels, the YARN way: every node is ``static`` or ``volatile``.

The witnesses' ledger classes each node by its attested uptime (``accounting``);
the RM shows the class as a YARN node label, so Hadoop's own tools list it
(``yarn node -list -showDetails``, ``yarn cluster --list-node-labels``) and a
job can ask for it (``spark.yarn.executor.nodeLabelExpression=static``).

YARN's semantics, as the capacity scheduler has them for *non-exclusive*
partitions (``isExclusive=false``), which both labels are:

* a node carries at most one label (its partition); here each carries exactly one;
* a request whose label expression names a label is placed only on nodes with
  that label; a request with no label (``""``) may use any node;
* a label expression is one label name: ``&&`` is refused, so is a label on a
  request for a host or rack (only the ``"*"`` request carries it), and so is a
  name the cluster does not have -- with YARN's own messages
  (``SchedulerUtils.validateResourceRequest``), as ``InvalidLabelResourceRequest``.

Every queue may use every label (``accessibleNodeLabels = "*"``), so a request is
never refused for its queue.  Which ring members are static is decided elsewhere;
``label_of`` only maps a member's ring id to its label.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Set
from dataclasses import replace
from typing import Final

from cortex_rm.allocator.asks import ANY, InvalidResourceRequest, ResourceAsk

STATIC: Final = "static"
VOLATILE: Final = "volatile"
NO_LABEL: Final = ""  # YARN's default partition: no label expression
#: The cluster's node labels, all non-exclusive (a request without a label may use them).
CLUSTER_NODE_LABELS: Final = (STATIC, VOLATILE)
#: What every queue may use: any label (YARN's ``RMNodeLabelsManager.ANY``).
ANY_LABEL: Final = "*"


class InvalidLabelResourceRequest(InvalidResourceRequest):
    """A label expression YARN refuses (``InvalidLabelResourceRequestException``)."""


class AMNodeClass(enum.Enum):
    """Where ApplicationMasters go (``[resourcemanager] am_node_class``).

    ``STATIC``: on a static node; on a volatile one only when no schedulable static
    node could ever hold the AM (none at all, or none large enough), so a fresh
    cluster of volatile nodes still runs applications.  ``ANY``: a static node if
    one has room now, else any node at once.
    """

    STATIC = "static"
    ANY = "any"


def label_of(ring_id: int | None, static_ring_ids: Set[int]) -> str:
    """The label of a node whose ring member is ``ring_id``: static if the ledger says so,
    volatile otherwise (a member the ledger does not know, or no ring id at all)."""
    return STATIC if ring_id is not None and ring_id in static_ring_ids else VOLATILE


def check_label_expression(expression: str, resource_name: str = ANY, queue: str = "default") -> str:
    """The label ``expression`` asks for (``NO_LABEL`` for none), or ``InvalidLabelResourceRequest``
    with YARN's message.  ``resource_name``: the request's place ("*", a host or a rack)."""
    label = expression.strip()
    if not label:
        return NO_LABEL
    if resource_name != ANY:
        raise InvalidLabelResourceRequest(
            f"Invalid resource request, queue={queue} specified node label expression in a "
            f"resource request has resource name = {resource_name}"
        )
    if "&&" in label:
        raise InvalidLabelResourceRequest(
            f"Invalid resource request, queue={queue} specified more than one node label "
            f"in a node label expression, node label expression = {label}"
        )
    if label not in CLUSTER_NODE_LABELS:
        raise InvalidLabelResourceRequest(f"Invalid label resource request, cluster do not contain , label= {label}")
    return label


def labelled_asks(asks: Iterable[ResourceAsk], app_label: str, queue: str) -> list[ResourceAsk]:
    """``asks`` with their labels checked; a ``"*"`` ask that sent none gets the application's
    (YARN's ``DefaultAMSProcessor``).  ``InvalidLabelResourceRequest`` before anything is used."""
    checked = []
    for ask in asks:
        sent = ask.node_label
        if sent is None and ask.resource_name == ANY:
            sent = app_label
        label = check_label_expression(sent or "", ask.resource_name, queue)
        checked.append(ask if label == ask.node_label else replace(ask, node_label=label))
    return checked
