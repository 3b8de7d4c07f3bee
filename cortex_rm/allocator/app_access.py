"""Who may see and change an application: YARN's VIEW_APP and MODIFY_APP, without Kerberos.

The application's owner and the cluster's admins may do both; an application's own
credential (what its containers hold) may act on that application only; anyone
else, and every caller without a credential, may do neither.  The IPC port and the
REST API ask the same question here, so the answer never depends on the door.
"""

from __future__ import annotations

from collections.abc import Iterable

from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.errors import AccessDenied
from cortex_rm.yarn.delegation import Principal

VIEW_APP = "VIEW_APP"
MODIFY_APP = "MODIFY_APP"


class AppAccess:
    """The application ACL check; ``admins`` hold YARN's admin ACL (every application)."""

    def __init__(self, admins: Iterable[str]) -> None:
        self.admins = frozenset(admins)

    def allows(self, principal: Principal, app: Application, access: str) -> bool:
        if principal.user is None:
            return False
        if principal.application is not None:
            return principal.application == str(app.app_id)
        return principal.user == app.user or principal.user in self.admins

    def check(self, principal: Principal, app: Application, access: str) -> None:
        """``AccessDenied`` in YARN's words unless ``principal`` may ``access`` ``app``."""
        if not self.allows(principal, app, access):
            who = principal.user or "anonymous"
            raise AccessDenied(f"User {who} cannot perform operation {access} on {app.app_id}")

    def may_submit(self, principal: Principal) -> str:
        """The user a submission runs as: the authenticated caller; an application's credential may not submit."""
        if principal.user is None:
            raise AccessDenied("submitting an application needs a user's credential")
        if principal.application is not None:
            raise AccessDenied(f"the credential of {principal.application} cannot submit applications")
        return principal.user
