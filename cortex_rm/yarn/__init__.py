"""The vocabulary every layer of Cortex shares, at the bottom of the package graph.

YARN's records as plain values — identifiers (``ids``), resource vectors
(``resources``), container exit statuses and states (``container_status``), token
keys and identifiers (``tokens``), the NodeManager-ResourceManager conversation
(``resource_tracker``) — and a few general types every core needs: typed network
addresses (``addresses``), explicit lifecycles (``transitions``), the seam for
blocking work (``blocking``), the reactor interfaces each layer takes
(``reactors``) and the base of every error raised in YARN's terms (``errors``).

Nothing here imports another package of Cortex, Twisted's reactor, or a wire
format: the cores (``dht``, ``allocator``, ``container``, ``accounting``) speak
these types, and the wire layers (``yarn_api``, ``internal``) translate them.
"""
