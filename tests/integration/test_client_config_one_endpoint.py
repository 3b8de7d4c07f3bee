"""One endpoint: a user who knows only one node's address reaches the cluster (``client-config --rm``).

A real local cluster of three daemons: node1 the active RM, node2 a standby RM (``--rm-standbys 1``),
node3 a plain NodeManager.  ``cortex-rm client-config --rm <node3's web address>`` (the command as a
user runs it) asks node3 for its RM directory and writes YARN's HA configuration with an rm-id for each
eligible RM, in the configured order, and says which is active; the real YARN CLI (``ApplicationCLI``:
``yarn application -list``) from pyspark's jars then lists the cluster's applications with it.  Given the
active RM's client (IPC) address instead, the command writes the plain one-RM configuration as before
(the IPC port answers its HTTP probe as Hadoop's does); given a port where nothing listens, likewise,
saying so.

Each RM a directory names must prove it holds the key of the user's credential first (``rm_proof``): the
standby from its copy of the stores as well as the active.  A hostile directory (a small HTTP server of the
test's on loopback) that lists itself as the first RM, marked active, beside the two real ones, and relays
every proof question it gets to the real active, is dropped: the real RMs are written and the Spark upload
goes through them, and no request the hostile server gets carries the credential's password.  A directory
naming only itself is refused with nothing written.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from cortex_rm.local_cluster import USER_TOKEN, free_ports
from cortex_rm.roles.rm_directory import DIRECTORY_PATH
from cortex_rm.user_credential import load_credential
from cortex_rm.yarn.rm_proof import PROOF_PATH
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import LOG4J2_STDERR_PROPERTIES, run_driver
from tests.support.ring_daemons import REPO, wait_for

pytestmark = pytest.mark.integration

APPLICATION_CLI = "org.apache.hadoop.yarn.client.cli.ApplicationCLI"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("one-endpoint"), nodes=3, rm_standbys=1) as c:
        yield c


def directory_of(address: str) -> dict[str, Any] | None:
    """The node's RM directory (as served), None while it has none."""
    try:
        with urllib.request.urlopen(f"http://{address}{DIRECTORY_PATH}", timeout=2) as response:
            section = json.loads(response.read())["resourceManagers"]
            return section if isinstance(section, dict) else None
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def both_rms_listed(address: str) -> bool:
    section = directory_of(address)
    return section is not None and len(section["rm"]) == 2 and section["active"] is not None


def client_config(
    cluster: RunningCluster, out: Path, rm: str, spark_home: Path | None = None, cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``cortex-rm client-config`` as a user runs it, with the user's credential and no Spark upload (or the
    upload of the jars of a fake pyspark ``spark_home``, packed into ``cache``)."""
    upload = [] if spark_home is not None else ["--no-spark-upload"]
    path = str(REPO) if spark_home is None else f"{spark_home.parent}{os.pathsep}{REPO}"
    caches = {} if cache is None else {"XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "cortex_rm", "client-config", "--out", str(out), "--rm", rm,
         "--credential", str(cluster.workdir / USER_TOKEN), *upload],
        capture_output=True, text=True, timeout=120, cwd=out.parent,
        env={**os.environ, "PYTHONPATH": path, **caches},
    )  # fmt: skip


def properties(path: Path) -> dict[str, str]:
    root = ElementTree.parse(path).getroot()
    return {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}


def test_a_plain_nodes_web_address_is_enough_for_the_yarn_cli(cluster: RunningCluster, tmp_path: Path) -> None:
    """``--rm <node3's web address>``: both eligible RMs are written as rm1 (node1, active) and rm2
    (node2, standby), and ``yarn application -list`` works with that configuration."""
    node1, node2, node3 = cluster.nodes
    assert node1.rm is not None and node2.rm is not None and node3.rm is None
    wait_for(lambda: both_rms_listed(node3.nm_webapp), "node3's directory to list both RMs and the active", 60, 0.5)
    out = tmp_path / "conf"
    result = client_config(cluster, out, node3.nm_webapp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{node3.nm_webapp} is a Cortex node; it knows 2 ResourceManagers:" in result.stdout
    assert f"rm1  client {node1.rm.client}  web {node1.rm.webapp}  (active" in result.stdout
    assert f"rm2  client {node2.rm.client}  web {node2.rm.webapp}  (standby" in result.stdout
    for k, rm in ((1, node1.rm), (2, node2.rm)):  # the active and the standby proved they hold the key
        assert f"rm{k}  web {rm.webapp}: verified" in result.stdout, result.stdout
    yarn = properties(out / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2"
    assert yarn["yarn.resourcemanager.address.rm1"] == str(node1.rm.client)
    assert yarn["yarn.resourcemanager.address.rm2"] == str(node2.rm.client)
    assert yarn["yarn.resourcemanager.scheduler.address.rm2"] == str(node2.rm.scheduler)
    assert properties(out / "core-site.xml")["dfs.namenode.http-address.cortex.rm2"] == str(node2.rm.webapp)

    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(LOG4J2_STDERR_PROPERTIES)
    (tmp_path / "classes").mkdir()
    listed = run_driver(
        APPLICATION_CLI, ["application", "-list"], classes=tmp_path / "classes", conf_dir=out, timeout=180,
        jvm_options=[f"-Dlog4j2.configurationFile={log4j}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"],
    )  # fmt: skip
    assert listed.returncode == 0, f"{listed.stdout}\n{listed.stderr[-6000:]}"
    assert "Total number of applications" in listed.stdout, listed.stdout


def test_an_rms_client_address_or_a_silent_port_is_taken_as_an_rm_as_before(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """The active RM's IPC port answers the probe as Hadoop IPC: the plain one-RM configuration for it.  A
    port where nothing listens (a standby's, say) is an RM's client address too, and the command says so."""
    rm = cluster.nodes[0].rm
    assert rm is not None
    result = client_config(cluster, tmp_path / "ipc", str(rm.client))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Cortex node" not in result.stdout
    yarn = properties(tmp_path / "ipc" / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.address"] == str(rm.client)
    assert not any(".ha." in key for key in yarn)

    (silent,) = free_ports(1)
    result = client_config(cluster, tmp_path / "silent", f"127.0.0.1:{silent}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{silent}: no connection: " in result.stdout
    assert "taken as a ResourceManager's client address" in result.stdout
    assert properties(tmp_path / "silent" / "yarn-site.xml")["yarn.resourcemanager.address"] == f"127.0.0.1:{silent}"


def test_the_rms_own_web_port_is_refused_saying_what_to_give(cluster: RunningCluster, tmp_path: Path) -> None:
    """The RM's web port serves no directory (only the nodes' own sites do): exit 1, nothing written, and the
    message names both addresses a user may give."""
    rm = cluster.nodes[0].rm
    assert rm is not None
    result = client_config(cluster, tmp_path / "web", str(rm.webapp))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "answered neither as a Cortex node's web port nor as a ResourceManager's client port" in result.stderr
    assert "status_address" in result.stderr
    assert not (tmp_path / "web").exists()


class HostileNode:
    """A node that lies: its directory lists itself first (as the active) and then the real RMs; it relays every
    RM proof question to the real active (which proves its own address, not this one's); it answers WebHDFS as if
    it were a NameNode.  Every request it gets is kept (request line, headers, body)."""

    def __init__(self, real: list[dict[str, Any]], active_web: str, only_itself: bool = False) -> None:
        self.requests: list[bytes] = []
        self.relayed: list[int] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hostile.record(self)
                if self.path == DIRECTORY_PATH:
                    self.answer(200, json.dumps(hostile.directory()).encode())
                elif self.path.startswith(PROOF_PATH + "?"):
                    self.answer(*hostile.relay(self.path))
                elif self.path.startswith("/webhdfs/v1/"):
                    self.answer(200, b'{"Path": "/user/victim"}')
                else:
                    self.answer(404, b"{}")

            def do_PUT(self) -> None:
                hostile.record(self)
                self.answer(200, b'{"boolean": true}')

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.real, self.active_web, self.only_itself = real, active_web, only_itself
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(min(length, 1 << 20)) if length else b""
        self.requests.append(handler.requestline.encode("latin-1") + b"\r\n" + bytes(handler.headers) + body)

    def directory(self) -> dict[str, Any]:
        me = {"ringId": "e" * 40, "address": self.address, "schedulerAddress": self.address,
              "webappAddress": self.address, "trackerAddress": self.address, "active": True}  # fmt: skip
        others = [] if self.only_itself else [{**entry, "active": False} for entry in self.real]
        return {"resourceManagers": {"active": "e" * 40, "rm": [me, *others]}}

    def relay(self, target: str) -> tuple[int, bytes]:
        """The question, asked of the real active RM at its own address (its proof: for that address)."""
        host, port = self.active_web.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            status, body = response.status, response.read()
        finally:
            connection.close()
        self.relayed.append(status)
        return status, body

    def __enter__(self) -> HostileNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_a_hostile_directory_is_dropped_and_never_gets_the_credential(cluster: RunningCluster, tmp_path: Path) -> None:
    """The hostile node's directory names itself first (active) and both real RMs: its entry fails its proof (the
    real active's proof, relayed, is for the real address), so the configuration names the real RMs only, the
    Spark upload goes through the real active, and nothing the hostile node received carries the password."""
    node1, node2, node3 = cluster.nodes
    assert node1.rm is not None and node2.rm is not None
    wait_for(lambda: both_rms_listed(node3.nm_webapp), "node3's directory to list both RMs and the active", 60, 0.5)
    real = directory_of(node3.nm_webapp)
    assert real is not None
    spark_home = tmp_path / "fake" / "pyspark"  # a pyspark whose jars are one small file: a real upload, quickly
    (spark_home / "jars").mkdir(parents=True)
    (spark_home / "__init__.py").write_text("")
    (spark_home / "jars" / "tiny.jar").write_bytes(b"PK" + os.urandom(4000))
    fs = load_credential(cluster.workdir / USER_TOKEN).fs
    with HostileNode(real["rm"], str(node1.rm.webapp)) as hostile:
        out = tmp_path / "conf"
        result = client_config(cluster, out, hostile.address, spark_home=spark_home, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rm1  web {hostile.address}: NOT verified, dropped (nothing is sent to it): its proof does not match" in (
        result.stdout
    ), result.stdout
    assert f"rm2  web {node1.rm.webapp}: verified" in result.stdout
    assert f"rm3  web {node2.rm.webapp}: verified" in result.stdout
    assert hostile.relayed == [200]  # the relay got a real proof: for the real address, so worthless here
    yarn, core = properties(out / "yarn-site.xml"), properties(out / "core-site.xml")
    assert yarn["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2"
    assert [yarn["yarn.resourcemanager.address.rm1"], yarn["yarn.resourcemanager.address.rm2"]] == [
        str(node1.rm.client), str(node2.rm.client),
    ]  # fmt: skip
    assert hostile.address not in (out / "yarn-site.xml").read_text() + (out / "core-site.xml").read_text()
    assert core["dfs.namenode.http-address.cortex.rm1"] == str(node1.rm.webapp)
    assert "spark.yarn.archive webhdfs://cortex/" in (out / "spark-defaults.conf").read_text()
    paths = [request.split(b" ", 2)[1].split(b"?", 1)[0] for request in hostile.requests]
    assert paths == [DIRECTORY_PATH.encode(), PROOF_PATH.encode()], hostile.requests
    secrets = (fs.password, fs.password.hex().encode(), to_url_string(fs).encode())
    assert not [request for request in hostile.requests if any(secret in request for secret in secrets)]


def test_a_directory_that_names_only_itself_is_refused_with_nothing_written(cluster: RunningCluster, tmp_path: Path) -> None:
    rm = cluster.nodes[0].rm
    assert rm is not None
    with HostileNode([], str(rm.webapp), only_itself=True) as hostile:
        result = client_config(cluster, tmp_path / "conf", hostile.address)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "none of the ResourceManagers the node at" in result.stderr and "nothing was sent to them or written" in result.stderr
    assert not (tmp_path / "conf").exists()
