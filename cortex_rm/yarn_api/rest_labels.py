"""Node labels over REST, as YARN's RMWebServices serves them (read-only: the ledger sets them).

* ``GET /ws/v1/cluster/get-node-labels``: the cluster's labels (``NodeLabelsInfo``);
* ``GET /ws/v1/cluster/get-node-to-labels``: each labelled node's labels (``NodeToLabelsInfo``);
* ``GET /ws/v1/cluster/label-mappings[?labels=static]``: each label's nodes (``LabelsToNodesInfo``);
* ``GET /ws/v1/cluster/nodes/{nodeid}/get-labels``: one node's labels (``NodeLabelsInfo``;
  empty for a node the RM does not know, as YARN).

JSON shapes: these DAOs are not among the ones Hadoop's ``JAXBContextResolver`` writes
in "natural" JSON, so YARN writes them without a root element; JAXB writes a Java
``Map`` as ``{"entry": [{"key": ..., "value": ...}]}``.  As everywhere in this API
(``rest_app_json``), lists are always lists and booleans JSON booleans, even where
Jersey's mapped notation would write a lone element as an object or ``"false"``.
The ``nodeLabels`` of ``/nodes`` entries are in ``rest_cluster_json.node_info``.
"""

from __future__ import annotations

from typing import Any

from cortex_rm.allocator.errors import UnknownNode
from cortex_rm.allocator.node_labels import CLUSTER_NODE_LABELS
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn_api.rest_call import Reply, RestCall
from cortex_rm.yarn_api.rest_errors import bad_request

#: ROUTES entries (path pattern -> {method: operation}) of the label operations.
LABEL_ROUTES: tuple[tuple[tuple[str, ...], dict[str, str]], ...] = (
    (("get-node-labels",), {"GET": "cluster_node_labels"}),
    (("get-node-to-labels",), {"GET": "node_to_labels"}),
    (("label-mappings",), {"GET": "labels_to_nodes"}),
    (("nodes", "*", "get-labels"), {"GET": "labels_on_node"}),
)


def node_label_info(label: str) -> dict[str, Any]:
    """``NodeLabelInfo``: both of the cluster's labels are non-exclusive."""
    return {"name": label, "exclusivity": False}


def node_labels_info(labels: set[str] | frozenset[str]) -> dict[str, Any]:
    """``NodeLabelsInfo``, by name."""
    return {"nodeLabelInfo": [node_label_info(label) for label in sorted(labels)]}


class NodeLabelWebServices:
    """The label operations of ``ClusterWebServices``."""

    rm: RMContext

    def cluster_node_labels(self, call: RestCall) -> Reply:
        return Reply(body=node_labels_info(set(CLUSTER_NODE_LABELS)))

    def node_to_labels(self, call: RestCall) -> Reply:
        entries = [
            {"key": str(node.node_id), "value": node_labels_info(node.labels)}
            for node in sorted(self.rm.nodes, key=lambda n: n.node_id)
            if node.labels
        ]
        return Reply(body={"nodeToLabels": {"entry": entries}})

    def labels_to_nodes(self, call: RestCall) -> Reply:
        """Every label with nodes, or those of ``labels`` (repeated, or comma-separated)."""
        wanted = {item.strip() for value in call.query.get("labels", []) for item in value.split(",") if item.strip()}
        by_label: dict[str, list[str]] = {}
        for node in sorted(self.rm.nodes, key=lambda n: n.node_id):
            for label in node.labels:
                if not wanted or label in wanted:
                    by_label.setdefault(label, []).append(str(node.node_id))
        entries = [
            {"key": node_label_info(label), "value": {"nodes": nodes}} for label, nodes in sorted(by_label.items())
        ]
        return Reply(body={"labelsToNodes": {"entry": entries}})

    def labels_on_node(self, call: RestCall) -> Reply:
        text = call.params[0]
        try:
            node_id = NodeId.parse(text if ":" in text else f"{text}:0")  # YARN's default port: 0
        except MalformedId as e:
            raise bad_request(str(e)) from None
        try:
            labels = self.rm.nodes.get(node_id).labels
        except UnknownNode:
            labels = frozenset()
        return Reply(body=node_labels_info(labels))
