"""Hadoop's access control lists (``AccessControlList``), as YARN's queue and application ACLs use them.

An ACL is written ``"user1,user2 group1,group2"``: ``*`` allows everyone, a blank
(or empty) list allows nobody.  Cortex's users are authenticated by their token and
belong to no group but their own name, so a group entry allows the user of that name.
"""

from __future__ import annotations

from dataclasses import dataclass

WILDCARD = "*"


@dataclass(frozen=True)
class AccessControlList:
    users: frozenset[str]
    everyone: bool = False

    @classmethod
    def parse(cls, text: str) -> AccessControlList:
        if text.strip() == WILDCARD:
            return cls(frozenset(), everyone=True)
        parts = text.strip().split(None, 1)
        names: set[str] = set()
        for part in parts:  # users, then groups (a user's only group is her name)
            names.update(n.strip() for n in part.split(",") if n.strip())
        return cls(frozenset(names))

    def allows(self, user: str) -> bool:
        return self.everyone or user in self.users

    def __str__(self) -> str:
        return WILDCARD if self.everyone else ",".join(sorted(self.users)) or " "


NOBODY = AccessControlList(frozenset())
EVERYONE = AccessControlList(frozenset(), everyone=True)
