"""Users' credentials on a test cluster, issued as a user gets hers: by the cluster's admin.

``user.name`` proves nothing to a Cortex cluster, so a test that acts as some user
asks the RM for that user's credential (``cortex_rm.user_credential.request_credential``
with the admin's credential the local cluster's RM wrote) and presents it the way
each client does: WebHDFS's ``delegation=`` (HdfsCLI's ``TokenClient``), the REST
API's ``Hadoop-YARN-RM-Delegation-Token`` header, or a token file named by
``hadoop.token.files`` (Hadoop's Java clients).  Credentials are issued once per
cluster and user.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hdfs import TokenClient

from cortex_rm import local_cluster
from cortex_rm.client_config import write_client_config
from cortex_rm.user_credential import UserCredential, load_credential, request_credential, write_private
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER
from tests.support.cluster import RunningCluster

#: Where the issued credentials are kept, in the cluster's work dir.
CREDENTIALS_DIR = "test-credentials"

# (work dir, the admin's token identifier: one cluster's life, user) -> her credential
_issued: dict[tuple[Path, bytes, str], UserCredential] = {}


def credential(cluster: RunningCluster, user: str) -> UserCredential:
    """``user``'s credential on ``cluster``, issued by its admin (once per cluster and user)."""
    admin = local_cluster.admin_credential(cluster.workdir)
    key = (cluster.workdir.resolve(), admin.rm.identifier, user)
    if key not in _issued:
        path = cluster.workdir / CREDENTIALS_DIR / f"{user}.token"
        write_private(path, request_credential(cluster.rm.webapp, admin, user))
        issued = load_credential(path)
        assert issued.user == user, (issued.user, user)
        _issued[key] = issued
    return _issued[key]


def token_file(cluster: RunningCluster, user: str) -> Path:
    """``user``'s credential as a token file bound to ``cluster``'s addresses (``hadoop.token.files``)."""
    path = cluster.workdir / CREDENTIALS_DIR / f"{user}-bound.token"
    write_private(path, credential(cluster, user).bound_to(cluster.rm.client, cluster.rm.webapp))
    return path


def hdfs_client(cluster: RunningCluster, user: str) -> TokenClient:
    """The PyPI ``hdfs`` client acting as ``user`` (her WebHDFS delegation token on every request)."""
    return TokenClient(f"http://{cluster.rm.webapp}", token=credential(cluster, user).webhdfs_delegation())


def delegation(cluster: RunningCluster, user: str) -> str:
    """``user``'s WebHDFS ``delegation`` parameter, for raw requests."""
    return credential(cluster, user).webhdfs_delegation()


def rest_headers(cluster: RunningCluster, user: str) -> dict[str, str]:
    """The header that makes an RM REST request ``user``'s."""
    return {REST_TOKEN_HEADER: credential(cluster, user).rest_header()}


def conf_dir_for(cluster: RunningCluster, user: str) -> Path:
    """A Hadoop client configuration like ``cluster.conf_dir`` but with ``user``'s credential
    (``client-config`` writes it: ``cortex-user.token`` named by ``core-site.xml``), for Java
    clients acting as ``user``; Spark's settings are ``cluster.conf_dir``'s."""
    directory = cluster.workdir / CREDENTIALS_DIR / f"hadoop-conf-{user}"
    write_client_config(directory, cluster.rm, credential(cluster, user), None, upload_spark=False, say=lambda _: None)
    shutil.copyfile(cluster.conf_dir / "spark-defaults.conf", directory / "spark-defaults.conf")
    return directory
