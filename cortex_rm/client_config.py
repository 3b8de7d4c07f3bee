"""The Hadoop client configuration that points YARN clients at a Cortex RM.

``cortex-rm client-config`` writes ``yarn-site.xml`` and ``core-site.xml`` into a
directory a client names in ``HADOOP_CONF_DIR``; ``spark-submit --master yarn``
then needs nothing else.  A ``spark-defaults.conf`` is written beside them (used
when ``SPARK_CONF_DIR`` names the same directory) so Spark takes its jars from the
local installation instead of uploading 460 MB on every submit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from cortex_rm.yarn.addresses import HostPort


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
    }


def core_site() -> dict[str, str]:
    # Nodes share the staging directory through the local file system for now;
    # staging without a shared file system comes with nodes on separate hosts.
    return {"fs.defaultFS": "file:///"}


# The Python that containers run PySpark with: they see the host's /usr read-only, and
# PySpark itself travels with each job (pyspark.zip), so Debian's python3 is enough.
CONTAINER_PYTHON = "/usr/bin/python3"


def spark_defaults(spark_home: Path | None) -> str:
    lines = ["# Written by cortex-rm client-config; read by Spark when SPARK_CONF_DIR names this directory."]
    if spark_home is not None:
        lines.append(f"spark.yarn.jars local:{spark_home}/jars/*")
    lines.append(f"spark.pyspark.python {CONTAINER_PYTHON}")
    return "\n".join(lines) + "\n"


def write_client_config(out: Path, rm: RMAddresses, spark_home: Path | None = None) -> list[Path]:
    """Write the files and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("yarn-site.xml", _site_xml(yarn_site(rm), f"Cortex RM at {rm.client}; written by cortex-rm client-config")),
        ("core-site.xml", _site_xml(core_site(), "written by cortex-rm client-config")),
        ("spark-defaults.conf", spark_defaults(spark_home)),
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
