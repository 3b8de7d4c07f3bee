"""Cortex's distributed file system, the cluster's ``fs.defaultFS`` (spoken as WebHDFS).

A core: sans-IO decisions and plain data.  The namespace (directories, files,
owners, permissions, times, each file's blocks) is kept by the active RM
(``namespace.py``, persisted by ``namespace_store.py``); file data lives in
replicated, checksummed blocks on the nodes (``block_store.py`` on a node's
disk, ``block_map.py`` on the RM: who holds what, and what to copy or delete).
The wire (``yarn_api/webhdfs/``) maps the errors of ``errors.py`` to WebHDFS's
``RemoteException`` JSON.
"""
