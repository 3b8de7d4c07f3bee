"""Who may see an application's containers and logs on a node's REST API: holders of a view ticket.

Nodes are other people's machines, so a user's credential must never be sent to one
(whoever runs the node could act as her at the RM until it expires).  Instead she asks
the RM for a *view ticket* (``POST /ws/v1/cluster/cortex/apps/{app}/view-ticket?node=
HOST:PORT`` with her credential; the RM checks VIEW_APP: owner, ACL, queue and cluster
admins) and shows the node that, as ``?ticket=``.  The ticket is signed with the key the
node already checks WebHDFS tickets with (``fs/tickets.py``, op ``VIEWLOGS``), names one
application and one node, and expires within minutes: all a dishonest node can do with it
is read, for a few minutes, logs it holds anyway.

A request without a ticket is 401 (saying how to get one); one that carries the RM's
credential header is refused the same way, naming the danger.  A ticket for another node,
another application, or one forged or expired is 403.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from cortex_rm.fs import tickets
from cortex_rm.fs.errors import InvalidToken
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.rest_errors import forbidden, unauthorized

VIEW_OP: Final = "VIEWLOGS"
#: How long a view ticket lets its holder read an application's containers and logs on its node.
VIEW_TICKET_MS: Final = 5 * 60 * 1000

HOW_TO_VIEW: Final = (
    "a node shows an application's containers and logs to a view ticket from the ResourceManager: "
    "POST /ws/v1/cluster/cortex/apps/{{app}}/view-ticket?node={node} there (with your credential), "
    "then add ?ticket=<it> here"
)
NEVER_YOUR_CREDENTIAL: Final = (
    f"do not send your credential ({REST_TOKEN_HEADER}) to a node: nodes are other people's machines "
    "and could use it as you; "
)


def view_ticket(key: MasterKey, app_id: ApplicationId, user: str, node: str, now_ms: int) -> tuple[str, int]:
    """A ticket letting ``user`` see ``app_id``'s containers and logs on ``node`` (its NodeId), and its expiry."""
    expires = now_ms + VIEW_TICKET_MS
    return tickets.sign(key, VIEW_OP, {"app": str(app_id), "user": user, "node": node}, expires), expires


class ViewTickets:
    """Checks view tickets on one node (``node_id``: its NodeId), with the keys it has from the RM."""

    def __init__(self, node_id: str, keys: Callable[[], Mapping[int, MasterKey]], now_ms: Callable[[], int]) -> None:
        self.node_id = node_id
        self.keys = keys
        self.now_ms = now_ms

    def application(self, ticket: str | None, credential_sent: bool) -> ApplicationId:
        """The application ``ticket`` lets its holder see here (RestError 401/403 otherwise)."""
        if not ticket:
            advice = NEVER_YOUR_CREDENTIAL if credential_sent else ""
            raise unauthorized(advice + HOW_TO_VIEW.format(node=self.node_id))
        try:
            verified = tickets.verify(self.keys(), ticket, VIEW_OP, self.now_ms())
            if verified.text("node") != self.node_id:
                raise InvalidToken(f"the ticket is for node {verified.text('node')}, not {self.node_id}")
            return ApplicationId.parse(verified.text("app"))
        except (InvalidToken, ValueError) as e:
            raise forbidden(f"{e}; {HOW_TO_VIEW.format(node=self.node_id)}") from None
