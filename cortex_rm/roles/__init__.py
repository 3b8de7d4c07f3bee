"""The roles a Cortex daemon plays, each built from the cores and the wire it needs.

* ``ring_service.RingService``: this node's ring member (Chord, SWIM, the key space)
  over the internal Thrift wire;
* ``resource_manager.ResourceManagerRole``: YARN's ResourceManager — state store,
  application table, scheduler, NodeTracker — with its IPC, REST and tracker
  ports, publishing itself in the ring;
* ``node_manager.NodeManagerRole``: YARN's NodeManager — containers, its IPC and
  web ports — reporting to the RM (``status_updater_service``) and gossiping its
  capacity on the ring.

Each role takes everything it uses through its constructor (its configuration
section, the reactor, the ring, the TLS identity, a ``Listen`` callable) and
starts its cores itself; ``cortex_rm/node.py`` only decides which roles run and
in what order.
"""
