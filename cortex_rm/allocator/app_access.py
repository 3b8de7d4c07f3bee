"""Who may see and change an application: YARN's VIEW_APP and MODIFY_APP, without Kerberos.

The application's owner, the cluster's admins and the admins of its queue may do
both; so may the users its submission's ACLs name for each (``application_ACLs`` of
the launch context: VIEW_APP, MODIFY_APP; a MODIFY_APP user may also view, as in
YARN); an application's own credential (what its containers hold) may act on that
application only; anyone else, and every caller without a credential, may do
neither.  Submitting needs the queue's ``acl_submit_applications`` (or an ancestor's).  The IPC port and the
REST API ask the same question here, so the answer never depends on the door.
"""

from __future__ import annotations

from collections.abc import Iterable

from cortex_rm.allocator.acls import AccessControlList
from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.errors import AccessDenied, UnknownQueue
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.yarn.delegation import Principal

VIEW_APP = "VIEW_APP"
MODIFY_APP = "MODIFY_APP"


class AppAccess:
    """The application ACL check; ``admins`` hold YARN's admin ACL (every application)."""

    def __init__(self, admins: Iterable[str], queues: QueueTree | None = None) -> None:
        self.admins = frozenset(admins)
        self.queues = queues

    def allows(self, principal: Principal, app: Application, access: str) -> bool:
        user = principal.user
        if user is None:
            return False
        if principal.application is not None:
            return principal.application == str(app.app_id) and user == app.user
        if user == app.user or user in self.admins:
            return True
        granted = {VIEW_APP: (VIEW_APP, MODIFY_APP), MODIFY_APP: (MODIFY_APP,)}[access]
        if any(kind in granted and AccessControlList.parse(text).allows(user) for kind, text in app.acls):
            return True
        return self._queue_admin(app.queue, user)

    def _queue_admin(self, queue_name: str, user: str) -> bool:
        if self.queues is None:
            return False
        try:
            return self.queues.may_administer(self.queues.find(queue_name), user)
        except UnknownQueue:
            return False

    def check(self, principal: Principal, app: Application, access: str) -> None:
        """``AccessDenied`` in YARN's words unless ``principal`` may ``access`` ``app``."""
        if not self.allows(principal, app, access):
            who = principal.user or "anonymous"
            raise AccessDenied(f"User {who} cannot perform operation {access} on {app.app_id}")

    def may_submit(self, principal: Principal, queue_name: str | None = None) -> str:
        """The user a submission runs as: the authenticated caller, if the queue (when named)
        lets her submit; an application's credential may not submit."""
        if principal.user is None:
            raise AccessDenied("submitting an application needs a user's credential")
        if principal.application is not None:
            raise AccessDenied(f"the credential of {principal.application} cannot submit applications")
        if queue_name is not None and self.queues is not None and principal.user not in self.admins:
            try:
                queue = self.queues.find(queue_name or "default")
            except UnknownQueue:
                return principal.user  # the submission fails with its own error
            if not self.queues.may_submit(queue, principal.user):
                raise AccessDenied(f"User {principal.user} cannot submit applications to queue {queue.path}")
        return principal.user
