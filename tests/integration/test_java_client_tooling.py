"""The test tooling that drives the real Hadoop/Spark clients, proven without a Cortex server.

The RM address points at a loopback port held by a socket that is bound but not listening,
so every connection attempt is refused at once. The client retry settings come from the
conf dir, exactly as they will when ``cortex-rm client-config`` writes it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tests.support.java import YarnClientDriver
from tests.support.spark import application_id_from_output, spark_submit


def write_site_xml(path: Path, properties: dict[str, str]) -> None:
    entries = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in properties.items()
    )
    path.write_text(f'<?xml version="1.0"?>\n<configuration>\n{entries}</configuration>\n')


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port nobody listens on: bound (so no one else takes it) but not listening,
    which makes the kernel refuse every connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def dead_rm_conf(tmp_path: Path, refused_port: int) -> Path:
    """A Hadoop conf dir whose RM addresses are the refused port, with retries cut to ~2 s."""
    conf_dir = tmp_path / "hadoop-conf"
    conf_dir.mkdir()
    write_site_xml(
        conf_dir / "yarn-site.xml",
        {
            "yarn.resourcemanager.address": f"127.0.0.1:{refused_port}",
            "yarn.resourcemanager.scheduler.address": f"127.0.0.1:{refused_port}",
            "yarn.resourcemanager.connect.max-wait.ms": "2000",
            "yarn.resourcemanager.connect.retry-interval.ms": "500",
        },
    )
    write_site_xml(
        conf_dir / "core-site.xml",
        {"fs.defaultFS": "file:///", "ipc.client.connect.max.retries": "0"},
    )
    return conf_dir


@pytest.mark.integration
def test_driver_reports_refused_rm_as_connect_exception_json(dead_rm_conf: Path, refused_port: int) -> None:
    """The driver compiles against pyspark's Hadoop jars, takes the RM address and retry policy
    from the conf dir, and reports the YarnClient's failure as one JSON line with the
    exception's class (exit 3), within the configured ~2 s retry budget."""
    driver = YarnClientDriver(dead_rm_conf)
    started = time.monotonic()
    error = driver.expect_exception("metrics", exception="java.net.ConnectException", timeout=30)
    elapsed = time.monotonic() - started
    assert f":{refused_port}" in error["message"]
    assert any("Connection refused" in cause for cause in error["causes"])
    # Defaults (10 IPC connect retries, 15 min max wait) would take far longer.
    assert elapsed < 20


@pytest.mark.integration
def test_driver_usage_error_is_neither_result_nor_client_exception(dead_rm_conf: Path) -> None:
    """A bad command line exits 2 with a JSON "usage" line before any RPC, and the helper's
    ``run``/``expect_exception`` reject it with an AssertionError showing the driver's output."""
    driver = YarnClientDriver(dead_rm_conf)
    outcome = driver.invoke("no-such-subcommand")
    assert outcome.returncode == YarnClientDriver.EXIT_USAGE
    assert outcome.payload is not None and outcome.payload["exception"] == "usage"
    assert "unknown subcommand no-such-subcommand" in outcome.payload["message"]

    with pytest.raises(AssertionError, match="exit status: 2") as raised:
        driver.run("report", "application_1_0001", "--no-such-option", "x")
    assert "unknown options" in str(raised.value)
    with pytest.raises(AssertionError, match="did not report a client exception"):
        driver.expect_exception("no-such-subcommand")


@pytest.mark.integration
def test_spark_submit_reads_conf_dir_and_fails_fast_without_rm(
    dead_rm_conf: Path, refused_port: int, tmp_path: Path
) -> None:
    """The installed pyspark's spark-submit starts with our environment (SPARK_HOME, JAVA_HOME,
    HADOOP_CONF_DIR, SPARK_CONF_DIR), contacts the RM address from the conf dir and, with no
    RM there, exits non-zero within the conf's retry budget without an application id."""
    app = tmp_path / "noop.py"
    app.write_text("print('never runs: no ResourceManager')\n")
    result = spark_submit(dead_rm_conf, app, deploy_mode="cluster", timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"Connecting to ResourceManager at /127.0.0.1:{refused_port}" in output, output
    assert "java.net.ConnectException" in output, output
    assert application_id_from_output(output) is None


def test_application_id_from_output_finds_first_id() -> None:
    """``application_id_from_output`` returns the first YARN application id in the text
    (four or more sequence digits) and ``None`` when there is none."""
    text = (
        "26/11/24 00:33:28 INFO Client: Submitting application application_1732406400000_0007 to ResourceManager\n"
        "26/11/24 00:33:29 INFO YarnClientImpl: Submitted application application_1732406400000_0007\n"
        "26/11/24 00:33:30 INFO Client: staging dir /home/u/.sparkStaging/application_1732406400000_0008\n"
    )
    assert application_id_from_output(text) == "application_1732406400000_0007"
    assert application_id_from_output("tracking URL: http://rm:8088/proxy/application_1_12345/") == "application_1_12345"
    assert application_id_from_output("container_1732406400000_0007_01_000001 appattempt_1_0001_000001") is None
    assert application_id_from_output("") is None
