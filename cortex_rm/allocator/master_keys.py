"""The RM's token master keys, kept in its state store so tokens outlive an RM restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer

from cortex_rm.allocator.state_store import RMStateStore, StoredState
from cortex_rm.yarn.tokens import MasterKey


@dataclass(frozen=True)
class RMKeys:
    """The RM's token master keys: AMRMTokens and ContainerTokens (NMTokens share the latter).

    Created at the RM's first start and kept in its state store, so an AM's token and a
    node's key stay valid across an RM restart (a later issue rolls them).
    """

    amrm: MasterKey
    container: MasterKey
    # signs the file system's tickets (redirects and block tokens); nodes get it over mutual TLS
    file_system: MasterKey
    # signs users' delegation tokens (their credentials); only the RM has it
    delegation: MasterKey

    @classmethod
    def recover(
        cls, store: RMStateStore, random_bytes: Callable[[int], bytes] = os.urandom, stored: StoredState | None = None
    ) -> defer.Deferred[RMKeys]:
        """Fires with the stored keys (from ``stored`` when the caller has loaded the store),
        creating and storing any that are missing."""

        async def run() -> RMKeys:
            if stored is None:
                return await cls.recover(store, random_bytes, await store.load())
            keys = {}
            for number, name in enumerate(("amrm", "container", "file_system", "delegation"), start=1):
                if name in stored.master_keys:
                    key_id, secret = stored.master_keys[name]
                    keys[name] = MasterKey(key_id, secret)
                else:
                    key_id = int.from_bytes(random_bytes(3), "big") * 8 + number  # distinct per name
                    keys[name] = MasterKey(key_id, random_bytes(20))
                    await store.save_master_key(name, key_id, keys[name].secret)
            return cls(keys["amrm"], keys["container"], keys["file_system"], keys["delegation"])

        return defer.ensureDeferred(run())
