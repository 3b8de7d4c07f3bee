"""Where YARN keeps aggregated container logs, as Hadoop 3.5's readers (``yarn logs``) look.

``yarn.nodemanager.remote-app-log-dir`` (default ``/tmp/logs``) holds, for each
application, one file per node that ran its containers:
``<root>/<owner>/bucket-<suffix>/<NNNN>/<application id>/<host>_<port>``, where the
suffix of the TFile format is ``logs-tfile`` (``remote-app-log-dir-suffix`` plus the
format's name) and ``NNNN`` is the application's sequence number modulo 10,000,
zero-padded to four digits (so no directory holds too many applications).
"""

from __future__ import annotations

from cortex_rm.yarn.ids import ApplicationId, NodeId

DEFAULT_REMOTE_APP_LOG_DIR = "/tmp/logs"  # yarn.nodemanager.remote-app-log-dir
TFILE_SUFFIX = "logs-tfile"  # yarn.nodemanager.remote-app-log-dir-suffix ("logs") + "-tfile"
#: The directory under a user's that holds the buckets of application dirs.
LOG_SUFFIX = f"bucket-{TFILE_SUFFIX}"


def remote_app_log_dir(root: str, owner: str, app_id: ApplicationId, suffix: str = TFILE_SUFFIX) -> str:
    """The application's directory of aggregated logs."""
    return f"{root.rstrip('/')}/{owner}/bucket-{suffix}/{app_id.id % 10000:04d}/{app_id}"  # LOG_SUFFIX by default


def remote_node_log_file(root: str, owner: str, app_id: ApplicationId, node_id: NodeId) -> str:
    """The file one node writes for the application: its NodeId with ``:`` as ``_``."""
    return f"{remote_app_log_dir(root, owner, app_id)}/{str(node_id).replace(':', '_')}"
