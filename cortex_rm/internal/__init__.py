"""Internal node-to-node RPC: our Thrift IDL, its generated code, mutual TLS and the NodeTracker wire.

``cortex.thrift`` is the IDL; ``gen/`` is what Debian's ``thrift --gen py:twisted``
makes of it (regenerate with ``python -m cortex_rm.internal.generate``).  The
modules beside it adapt the generated code to Twisted connections and to the
sans-IO cores in ``allocator/`` and ``container/``.
"""
