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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from cortex_rm.spark_archive import upload_archive
from cortex_rm.user_credential import CREDENTIAL_FILE, UserCredential, write_private
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


def core_site(rm: RMAddresses, token_file: Path | None = None) -> dict[str, str]:
    # The cluster's own file system, spoken as WebHDFS on the RM's web port: Spark stages
    # there and the nodes localize from there (no file of the client's machine is read).
    site = {"fs.defaultFS": f"webhdfs://{rm.webapp}"}
    if token_file is not None:
        # the user's credential: UserGroupInformation loads these tokens at login
        site["hadoop.token.files"] = str(token_file)
    return site


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
    rm: RMAddresses,
    credential: UserCredential,
    spark_home: Path | None = None,
    *,
    upload_spark: bool = True,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Write the files (after uploading ``spark_home``'s jars as ``credential``'s user, unless
    ``upload_spark`` is False) and return their paths; ``ArchiveError`` if the upload fails."""
    archive_url = None
    if spark_home is not None and upload_spark:
        archive_url = upload_archive(rm.webapp, spark_home, say, delegation=credential.webhdfs_delegation())
    out.mkdir(parents=True, exist_ok=True)
    token_file = out.resolve() / CREDENTIAL_FILE
    write_private(token_file, credential.bound_to(rm.client, rm.webapp))
    written = [token_file]
    for name, text in (
        ("yarn-site.xml", _site_xml(yarn_site(rm), f"Cortex RM at {rm.client}; written by cortex-rm client-config")),
        ("core-site.xml", _site_xml(core_site(rm, token_file), "written by cortex-rm client-config")),
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
