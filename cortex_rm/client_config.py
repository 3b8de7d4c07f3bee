"""The Hadoop client configuration that points YARN clients at a Cortex RM.

``cortex-rm client-config`` writes ``yarn-site.xml`` and ``core-site.xml`` into a
directory a client names in ``HADOOP_CONF_DIR``; ``spark-submit --master yarn``
then needs nothing else.  ``fs.defaultFS`` is the cluster's file system
(``webhdfs://<RM web address>``).  A ``spark-defaults.conf`` is written beside
them (used when ``SPARK_CONF_DIR`` names the same directory): its
``spark.yarn.archive`` names the client's Spark jars, uploaded once into the
file system (``spark_archive.py``), instead of 460 MB on every submit.  The user's
credential (``user_credential.py``) is kept beside them as ``cortex-user.token``,
named by ``hadoop.token.files``, so every Hadoop client authenticates with it.

With several RM-eligible nodes (``local-cluster up --rm-standbys``, or ``--rm`` naming
several), the files are YARN's and WebHDFS's HA forms: the RMs are ``rm1, rm2, ...``
(``yarn.resourcemanager.ha.rm-ids``, in the order given: the preferred first), and
the file system is the logical nameservice ``webhdfs://cortex`` whose namenodes are
the RMs' web addresses.  Hadoop's clients then try them in turn until one answers
(a standby binds no RM port: its connection is refused).  Each token's service is
then what Hadoop's HA clients select by: the comma-joined ``ip:port`` of every RM's
client address for the RM token (``ClientRMProxy.getRMDelegationTokenService``;
``RMDelegationTokenSelector`` matches a connection's ``ip:port`` contained in it),
and ``ha-webhdfs:cortex`` for the file system token
(``HAUtilClient.buildTokenServiceForLogicalUri``).  With one RM the files are
exactly the plain form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from cortex_rm.spark_archive import upload_archive
from cortex_rm.user_credential import CREDENTIAL_FILE, UserCredential, token_service, write_private
from cortex_rm.webhdfs_client import first_answering
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.log_aggregation import DEFAULT_REMOTE_APP_LOG_DIR


@dataclass(frozen=True)
class RMAddresses:
    """Where a client finds the ResourceManager."""

    client: HostPort  # ApplicationClientProtocol
    scheduler: HostPort  # ApplicationMasterProtocol
    webapp: HostPort  # the REST API

    @classmethod
    def from_client_address(cls, address: HostPort) -> RMAddresses:
        """Only ``--rm HOST:PORT`` given: the other ports are YARN's defaults on that host."""
        return cls(address, address.with_port(8030), address.with_port(8088))

    def to_json(self) -> dict[str, str]:
        return {"client": str(self.client), "scheduler": str(self.scheduler), "webapp": str(self.webapp)}

    @classmethod
    def from_json(cls, entry: dict[str, str]) -> RMAddresses:
        """The addresses ``to_json`` wrote; MalformedAddress if one is not host:port."""
        return cls(HostPort.parse(entry["client"]), HostPort.parse(entry["scheduler"]), HostPort.parse(entry["webapp"]))


def _site_xml(properties: dict[str, str], comment: str) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<!-- {escape(comment)} -->", "<configuration>"]
    for name, value in properties.items():
        lines.append(f"  <property><name>{escape(name)}</name><value>{escape(value)}</value></property>")
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


def yarn_site(rm: RMAddresses) -> dict[str, str]:
    return {
        "yarn.resourcemanager.hostname": rm.client.host,
        "yarn.resourcemanager.address": str(rm.client),
        "yarn.resourcemanager.scheduler.address": str(rm.scheduler),
        "yarn.resourcemanager.webapp.address": str(rm.webapp),
        **_YARN_COMMON,
    }


_YARN_COMMON = {
    # Fail within a minute, not YARN's 15, when the cluster is down: the client
    # retries every second meanwhile and logs each retry.
    "yarn.resourcemanager.connect.max-wait.ms": "60000",
    "yarn.resourcemanager.connect.retry-interval.ms": "1000",
    "yarn.timeline-service.enabled": "false",
    # Nodes aggregate finished applications' logs into the file system, where
    # `yarn logs -applicationId` reads them (YARN's defaults for the place and format).
    "yarn.log-aggregation-enable": "true",
    "yarn.nodemanager.remote-app-log-dir": DEFAULT_REMOTE_APP_LOG_DIR,
}

#: The logical name of the cluster's file system with several RMs (``webhdfs://cortex``).
NAMESERVICE = "cortex"

# How HA clients move between the RMs (RetryPolicies.failoverOnNetworkException): the first
# failover is at once, the k-th after min(base * 2**k, max) ms times a jitter in [0.5, 1.5).
# YARN's sleeps default to 30 s (yarn.resourcemanager.connect.retry-interval.ms), so a client
# that found no active RM would look again only half a minute later; with 500/2000 it finds a
# new active within ~2 s (3 s at worst) of its taking over, well inside the ~10 s a failover
# may take.  30 failovers (~1 minute of 2 s sleeps) bound a client when no RM is up at all, as
# connect.max-wait.ms does for one RM.  WebHDFS's own failover (dfs.http.client.failover.*,
# defaults 500/15000 ms, 15 attempts) gets the same bounds.
FAILOVER_SLEEP_BASE_MS = 500
FAILOVER_SLEEP_MAX_MS = 2000
FAILOVER_MAX_ATTEMPTS = 30


def rm_ids(count: int) -> list[str]:
    """The HA ids of ``count`` RMs, in the order given: ``rm1, rm2, ...``."""
    return [f"rm{k}" for k in range(1, count + 1)]


def yarn_site_ha(rms: Sequence[RMAddresses]) -> dict[str, str]:
    """yarn-site.xml for several RMs: YARN's HA client settings (``ConfiguredRMFailoverProxyProvider``)."""
    ids = rm_ids(len(rms))
    site = {"yarn.resourcemanager.ha.enabled": "true", "yarn.resourcemanager.ha.rm-ids": ",".join(ids)}
    for rm_id, rm in zip(ids, rms):
        site[f"yarn.resourcemanager.hostname.{rm_id}"] = rm.client.host
        site[f"yarn.resourcemanager.address.{rm_id}"] = str(rm.client)
        site[f"yarn.resourcemanager.scheduler.address.{rm_id}"] = str(rm.scheduler)
        site[f"yarn.resourcemanager.webapp.address.{rm_id}"] = str(rm.webapp)
    site["yarn.client.failover-sleep-base-ms"] = str(FAILOVER_SLEEP_BASE_MS)
    site["yarn.client.failover-sleep-max-ms"] = str(FAILOVER_SLEEP_MAX_MS)
    site["yarn.client.failover-max-attempts"] = str(FAILOVER_MAX_ATTEMPTS)
    return {**site, **_YARN_COMMON}


def core_site(rm: RMAddresses, token_file: Path | None = None) -> dict[str, str]:
    # The cluster's own file system, spoken as WebHDFS on the RM's web port: Spark stages
    # there and the nodes localize from there (no file of the client's machine is read).
    site = {"fs.defaultFS": f"webhdfs://{rm.webapp}"}
    if token_file is not None:
        # the user's credential: UserGroupInformation loads these tokens at login
        site["hadoop.token.files"] = str(token_file)
    return site


def core_site_ha(rms: Sequence[RMAddresses], token_file: Path | None = None) -> dict[str, str]:
    """core-site.xml for several RMs: the file system is the nameservice ``cortex`` whose namenodes
    are the RMs' web ports (WebHDFS's HA form; core-site.xml, which every client reads, holds it)."""
    ids = rm_ids(len(rms))
    site = {
        "fs.defaultFS": f"webhdfs://{NAMESERVICE}",
        "dfs.nameservices": NAMESERVICE,
        f"dfs.ha.namenodes.{NAMESERVICE}": ",".join(ids),
        **{f"dfs.namenode.http-address.{NAMESERVICE}.{rm_id}": str(rm.webapp) for rm_id, rm in zip(ids, rms)},
        # WebHDFS fails over between the namenodes only when a proxy provider is named (any: it
        # uses none; HAUtilClient.isClientFailoverConfigured); this is HDFS's usual one
        f"dfs.client.failover.proxy.provider.{NAMESERVICE}": HDFS_FAILOVER_PROVIDER,
        "dfs.http.client.failover.sleep.base.millis": str(FAILOVER_SLEEP_BASE_MS),
        "dfs.http.client.failover.sleep.max.millis": str(FAILOVER_SLEEP_MAX_MS),
        "dfs.http.client.failover.max.attempts": str(FAILOVER_MAX_ATTEMPTS),
    }
    if token_file is not None:
        site["hadoop.token.files"] = str(token_file)
    return site


HDFS_FAILOVER_PROVIDER = "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider"


def rm_token_service(rms: Sequence[RMAddresses]) -> str:
    """The RM delegation token's service: one RM's ``ip:port``, or every RM's, comma-joined (HA)."""
    return ",".join(token_service(rm.client) for rm in rms)


def fs_token_service(rms: Sequence[RMAddresses]) -> str:
    """The file system token's service: the one RM's web ``ip:port``, or ``ha-webhdfs:cortex`` (HA)."""
    return token_service(rms[0].webapp) if len(rms) == 1 else f"ha-webhdfs:{NAMESERVICE}"


# The Python that containers run PySpark with: they see the host's /usr read-only, and
# PySpark itself travels with each job (pyspark.zip), so Debian's python3 is enough.
CONTAINER_PYTHON = "/usr/bin/python3"


def spark_defaults(archive_url: str | None, spark_home: Path | None) -> str:
    """``spark.yarn.archive`` names the uploaded jars; without one (``--no-spark-upload``), the
    jars of ``spark_home`` are named as node-local paths, which works only on this machine."""
    lines = ["# Written by cortex-rm client-config; read by Spark when SPARK_CONF_DIR names this directory."]
    if archive_url is not None:
        lines.append(f"spark.yarn.archive {archive_url}")
    elif spark_home is not None:
        lines.append("# single machine only: the nodes read Spark's jars from this machine's disk")
        lines.append(f"spark.yarn.jars local:{spark_home}/jars/*")
    lines.append(f"spark.pyspark.python {CONTAINER_PYTHON}")
    return "\n".join(lines) + "\n"


def write_client_config(
    out: Path,
    rm: RMAddresses | Sequence[RMAddresses],
    credential: UserCredential,
    spark_home: Path | None = None,
    *,
    upload_spark: bool = True,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Write the files for ``rm`` (one RM, or several: HA) (after uploading ``spark_home``'s jars as
    ``credential``'s user through the first RM that answers, unless ``upload_spark`` is False) and
    return their paths; ``ArchiveError`` if the upload fails."""
    rms = [rm] if isinstance(rm, RMAddresses) else list(rm)
    if not rms:
        raise ValueError("no ResourceManager to configure")
    archive_url = None
    if spark_home is not None and upload_spark:
        delegation = credential.webhdfs_delegation()
        webapp = rms[0].webapp if len(rms) == 1 else first_answering([r.webapp for r in rms], delegation)
        authority = str(webapp) if len(rms) == 1 else NAMESERVICE
        archive_url = upload_archive(webapp, spark_home, say, delegation=delegation, authority=authority)
    out.mkdir(parents=True, exist_ok=True)
    token_file = out.resolve() / CREDENTIAL_FILE
    write_private(token_file, credential.bound_to_services(rm_token_service(rms), fs_token_service(rms)))
    written = [token_file]
    if len(rms) == 1:
        yarn = _site_xml(yarn_site(rms[0]), f"Cortex RM at {rms[0].client}; written by cortex-rm client-config")
        core = _site_xml(core_site(rms[0], token_file), "written by cortex-rm client-config")
    else:
        listed = ", ".join(str(r.client) for r in rms)
        yarn = _site_xml(yarn_site_ha(rms), f"Cortex RMs at {listed} (HA); written by cortex-rm client-config")
        core = _site_xml(core_site_ha(rms, token_file), "written by cortex-rm client-config")
    for name, text in (
        ("yarn-site.xml", yarn),
        ("core-site.xml", core),
        ("spark-defaults.conf", spark_defaults(archive_url, spark_home)),
    ):
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def installed_spark_home() -> Path | None:
    """The pyspark installation beside Cortex, if any (its jars can then stay local)."""
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).resolve().parent
