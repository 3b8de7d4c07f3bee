"""Hadoop's own clients fail over between the RMs that ``client-config`` lists (YARN and WebHDFS HA).

One real Cortex RM (a one-node local cluster) is ``rm2`` of an HA client configuration written by
``client_config.write_client_config``; ``rm1``'s ports refuse connections, as a standby's do (a
standby binds no RM port).  The real YARN CLI (``yarn application -list``: ``ApplicationCLI``) and
FsShell through the logical ``webhdfs://cortex`` URI, run from the jars pyspark ships, must fail
over to rm2 and succeed, authenticating with the user's tokens whose services are the HA ones.  A
second case makes rm2 start answering only seconds after the clients started (an RM taking over):
the clients keep trying with the configured sleeps and find it.  The figures (elapsed time of each
client, and past rm2's start) are printed; the tests assert success, not speed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_rm.client_config import NAMESERVICE, RMAddresses, write_client_config
from cortex_rm.local_cluster import free_ports
from cortex_rm.user_credential import CREDENTIAL_FILE
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND
from cortex_rm.yarn_api.delegation_tokens import read_token_writable
from cortex_rm.yarn_api.writable import read_token_storage
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import LOG4J2_STDERR_PROPERTIES, run_driver

pytestmark = pytest.mark.integration

APPLICATION_CLI = "org.apache.hadoop.yarn.client.cli.ApplicationCLI"
FS_SHELL = "org.apache.hadoop.fs.FsShell"

# WARN to stderr as the other drivers, plus the two clients' failover lines (INFO)
LOG4J2 = LOG4J2_STDERR_PROPERTIES + """\
logger.rmfailover.name = org.apache.hadoop.yarn.client.ConfiguredRMFailoverProxyProvider
logger.rmfailover.level = INFO
logger.webhdfs.name = org.apache.hadoop.hdfs.web.WebHdfsFileSystem
logger.webhdfs.level = INFO
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("rm-failover"), nodes=1) as c:
        yield c


def refused_rm() -> RMAddresses:
    """An RM whose three ports refuse connections (free a moment ago; nothing listens there)."""
    client, scheduler, webapp = free_ports(3)
    return RMAddresses(HostPort("127.0.0.1", client), HostPort("127.0.0.1", scheduler), HostPort("127.0.0.1", webapp))


def jvm_options(tmp_path: Path) -> list[str]:
    config = tmp_path / "log4j2.properties"
    config.write_text(LOG4J2)
    return [f"-Dlog4j2.configurationFile={config}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


def java(tmp_path: Path, conf_dir: Path, main_class: str, *args: str) -> tuple[float, str, str]:
    """Run one of Hadoop's clients with ``conf_dir``; its elapsed seconds, stdout and stderr (it must succeed)."""
    classes = tmp_path / "classes"
    classes.mkdir(exist_ok=True)
    started = time.monotonic()
    result = run_driver(
        main_class, list(args), classes=classes, conf_dir=conf_dir, jvm_options=jvm_options(tmp_path), timeout=180
    )
    elapsed = time.monotonic() - started
    command = f"{main_class} {' '.join(args)}"
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-6000:]}"
    return elapsed, result.stdout, result.stderr


def ha_config(cluster: RunningCluster, directory: Path, rms: list[RMAddresses]) -> Path:
    write_client_config(directory, rms, cluster.credential, None, upload_spark=False, say=lambda _: None)
    return directory


def test_the_yarn_cli_and_fsshell_fail_over_from_a_refusing_rm1_to_rm2(cluster: RunningCluster, tmp_path: Path) -> None:
    """rm1 refuses: ``yarn application -list`` logs its failover to rm2 and lists; FsShell through
    ``webhdfs://cortex`` fails over to rm2's web port and mkdirs, puts, lists and cats a file intact.
    The user's tokens carry the HA services (comma-joined RM addresses; ``ha-webhdfs:cortex``)."""
    rm1 = refused_rm()
    conf = ha_config(cluster, tmp_path / "ha-conf", [rm1, cluster.rm])
    tokens, _ = read_token_storage((conf / CREDENTIAL_FILE).read_bytes())
    services = {t.kind: t.service for t in map(read_token_writable, tokens.values())}
    assert services[RM_DELEGATION_KIND] == f"127.0.0.1:{rm1.client.port},127.0.0.1:{cluster.rm.client.port}"
    assert services[WEBHDFS_DELEGATION_KIND] == f"ha-webhdfs:{NAMESERVICE}"
    one_conf = ha_config(cluster, tmp_path / "one-conf", [cluster.rm])

    baseline, _, _ = java(tmp_path, one_conf, APPLICATION_CLI, "application", "-list")
    elapsed, out, err = java(tmp_path, conf, APPLICATION_CLI, "application", "-list")
    assert "Total number of applications" in out
    assert "Failing over to rm2" in err, err

    data = os.urandom(50_000).hex()  # text: -cat's output is read as such
    (tmp_path / "local.bin").write_text(data)
    home = f"/user/{cluster.credential.user}"
    put_s, _, err = java(tmp_path, conf, FS_SHELL, "-mkdir", "-p", f"webhdfs://{NAMESERVICE}{home}/ha-test")
    assert "Retrying connect to namenode" in err, err  # WebHDFS's failover from rm1 to rm2
    java(tmp_path, conf, FS_SHELL, "-put", "-f", str(tmp_path / "local.bin"), "ha-test/data.bin")
    _, listing, _ = java(tmp_path, conf, FS_SHELL, "-ls", "/")
    assert " /user" in listing, listing
    _, listing, _ = java(tmp_path, conf, FS_SHELL, "-ls", "ha-test")
    assert " ha-test/data.bin" in listing and " 100000 " in listing, listing
    _, cat, _ = java(tmp_path, conf, FS_SHELL, "-cat", f"webhdfs://{NAMESERVICE}{home}/ha-test/data.bin")
    assert cat == data
    print(
        f"\nyarn application -list: {elapsed:.2f} s with rm1 refusing (failover), {baseline:.2f} s with one RM;"
        f" hadoop fs -mkdir through the failover: {put_s:.2f} s"
    )


class LateRM:
    """rm2's port, answering late: until ``delay_s`` it refuses connections (nothing listens) or, with
    ``closing``, accepts and closes each at once; then it forwards each connection to ``target``
    (an RM taking over late, at an address the clients already know)."""

    def __init__(self, target: HostPort, delay_s: float, closing: bool) -> None:
        (self.port,) = free_ports(1)
        self.target = target
        self.answering_at: float | None = None
        self._server: socket.socket | None = None
        self._stopped = threading.Event()
        self._timer = threading.Timer(delay_s, self._answer)
        if closing:
            self._listen()
        self._timer.start()

    def _listen(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _answer(self) -> None:
        self.answering_at = time.monotonic()
        if self._server is None:
            self._listen()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.answering_at is None:
                client.close()
                continue
            upstream = socket.create_connection((self.target.host, self.target.port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while piece := source.recv(65536):
                sink.sendall(piece)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._timer.cancel()
        self._stopped.set()
        if self._server is not None:
            self._server.close()


CLIENTS = {
    "yarn application -list": (APPLICATION_CLI, ("application", "-list")),
    "hadoop fs -ls /": (FS_SHELL, ("-ls", "/")),
}


@pytest.mark.parametrize(
    ("client", "closing"),
    [("yarn application -list", False), ("yarn application -list", True), ("hadoop fs -ls /", True)],
)
def test_clients_keep_failing_over_until_an_rm_answers_late(
    cluster: RunningCluster, tmp_path: Path, client: str, closing: bool
) -> None:
    """No RM answers when the client starts (rm1 refuses; rm2 refuses, or accepts and closes); rm2's
    addresses answer a few seconds later (forwarded to the real RM).  The client keeps failing over
    with the configured sleeps and succeeds once it does; how long after it did is printed.

    (WebHDFS's client is not run against a refusing rm2: Hadoop 3.5's ``WebHdfsFileSystem`` passes
    0 failovers to its retry policy, so a refused connection fails over without any sleep and it
    gives up after ``dfs.http.client.retry.max.attempts`` + 1 tries, in milliseconds.  A closed
    connection is a ``SocketException``, retried with the configured sleeps.)"""
    delay_s = 4.0
    main_class, args = CLIENTS[client]
    ipc, web = LateRM(cluster.rm.client, delay_s, closing), LateRM(cluster.rm.webapp, delay_s, closing)
    try:
        rm2 = RMAddresses(HostPort("127.0.0.1", ipc.port), cluster.rm.scheduler, HostPort("127.0.0.1", web.port))
        conf = ha_config(cluster, tmp_path / "conf", [refused_rm(), rm2])
        started = time.monotonic()
        elapsed, _, _ = java(tmp_path, conf, main_class, *args)
        answering = ipc.answering_at if main_class == APPLICATION_CLI else web.answering_at
        assert answering is not None and started + elapsed > answering, "it succeeded before rm2 answered"
    finally:
        ipc.close()
        web.close()
    how = "closing" if closing else "refusing"
    print(f"\n{client} (rm2 {how} for {delay_s:.0f} s): done {started + elapsed - answering:.2f} s after rm2 answered")


def test_spark_jars_are_uploaded_through_the_rm_that_answers_and_named_by_the_logical_uri(
    cluster: RunningCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With rm1 refusing, ``client-config`` uploads the Spark archive through rm2 and names it
    ``webhdfs://cortex/...`` in ``spark.yarn.archive``; FsShell finds it there through the failover."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the user's archive cache
    spark_home = tmp_path / "spark"
    (spark_home / "jars").mkdir(parents=True)
    (spark_home / "jars" / "a.jar").write_bytes(os.urandom(3000))
    conf = tmp_path / "conf"
    write_client_config(conf, [refused_rm(), cluster.rm], cluster.credential, spark_home, say=lambda _: None)
    [archive] = [line.split()[1] for line in (conf / "spark-defaults.conf").read_text().splitlines()
                 if line.startswith("spark.yarn.archive ")]
    assert archive.startswith(f"webhdfs://{NAMESERVICE}/user/{cluster.credential.user}/.cortex/spark-archives/")
    _, listing, _ = java(tmp_path, conf, FS_SHELL, "-ls", archive)
    assert archive.split(f"webhdfs://{NAMESERVICE}")[1] in listing, listing
