"""The caps the contributor set in ``[nodemanager]``, applied to a running NodeManager.

* memory and CPU: the node cgroup above every container (``container/node_cgroup.py``), written by
  the LXC runtime;
* disk: one ``DiskCap`` (``fs/disk_cap.py``) whose users are the DataNode's block store (it owns
  the cap), the runtime image cache (evictable: its roots but the cluster's image and those of
  running containers) and the localizer's shared caches.

``NodeCaps.attach`` wires them once the role has started (``node.py``).
"""

from __future__ import annotations

from collections.abc import Collection

from twisted.logger import Logger

from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.fs.disk_cap import GB, DiskCap
from cortex_rm.roles.node_manager import NodeManagerRole

log = Logger()


class NodeCaps:
    """The caps of one running NodeManager (see the module docstring)."""

    def __init__(self, role: NodeManagerRole, section: NodeManagerSection, disk: DiskCap | None) -> None:
        self.role = role
        self.section = section
        #: The node's disk cap (None without a DataNode: then nothing on disk is Cortex's to cap).
        self.disk = disk

    @classmethod
    def attach(cls, role: NodeManagerRole, section: NodeManagerSection) -> NodeCaps:
        """Make the disk cap's users known to it and set it to ``section.disk_gb``."""
        disk = role.data_node.store.disk if role.data_node is not None else None
        caps = cls(role, section, disk)
        if disk is None:
            return caps
        disk.set_cap(round(section.disk_gb * GB))
        if role.image is not None:
            role.image.cache.disk = disk
            role.image.cache.protected = caps._protected_images
            disk.add_user(role.image.cache)
        if role.containers is not None:
            role.containers.localizer.disk = disk
            disk.add_user(role.containers.localizer)
        if section.disk_gb:
            log.info("disk cap: {gb} GB for block replicas, runtime images and localized resources", gb=section.disk_gb)
        return caps

    def _protected_images(self) -> Collection[str]:
        """The runtime images not to evict: the one the cluster names and those running containers use."""
        image = self.role.image
        names = {root.name for root in self.role.containers.image_roots_in_use()} if self.role.containers else set()
        if image is not None and image.state.root is not None:
            names.add(image.state.root.name)
        return names
