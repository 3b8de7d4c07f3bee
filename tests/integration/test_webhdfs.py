"""The file system on a real three-node local cluster, driven by real clients: Hadoop's FsShell
(from the jars pyspark ships) and the PyPI ``hdfs`` package (HdfsCLI), plus raw HTTP for
what no polite client sends (bad input).

Every client acts as a user by her credential, issued by the cluster's admin
(``tests/support/credentials.py``): FsShell with a token file, HdfsCLI's ``TokenClient``
and raw requests with ``delegation=``; ``user.name`` proves nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hdfs import Client
from hdfs.util import HdfsError

from cortex_rm import local_cluster
from cortex_rm.yarn_api.delegation_tokens import fs_identifier_bytes, read_fs_identifier, to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.credentials import conf_dir_for, credential, delegation, hdfs_client, rest_headers, token_file
from tests.support.fsshell import fs_shell
from tests.support.logs_cli import aggregated_logs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("webhdfs"), nodes=3) as c:
        _wait_for_data_nodes(c, 3)
        yield c


def _wait_for_data_nodes(cluster: RunningCluster, count: int, timeout_s: float = 60) -> None:
    """Until a file written with replication ``count`` has ``count`` holders (every DataNode has reported)."""
    client = hdfs_client(cluster, "root")
    deadline = time.monotonic() + timeout_s
    holders: list[str] = []
    while True:
        try:
            client.write("/.probe", data=b"x", overwrite=True, replication=count)
            holders = _block_hosts(cluster, "/.probe")[0]
            client.delete("/.probe")
            if len(holders) == count:
                return
        except (HdfsError, requests.RequestException) as e:
            holders = [str(e)]
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} DataNodes did not report within {timeout_s} s: {holders}")
        time.sleep(0.5)


def _block_hosts(cluster: RunningCluster, path: str) -> list[list[str]]:
    """GETFILEBLOCKLOCATIONS: each block's holders (as Spark sees them for locality)."""
    reply = requests.get(
        f"http://{cluster.rm.webapp}/webhdfs/v1{path}",
        params={"op": "GETFILEBLOCKLOCATIONS", "delegation": delegation(cluster, "root")},
        timeout=30,
    )
    reply.raise_for_status()
    return [b["hosts"] for b in reply.json()["BlockLocations"]["BlockLocation"]]


def _default_fs(cluster: RunningCluster) -> str:
    return f"webhdfs://{cluster.rm.webapp}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _shell(cluster: RunningCluster, *args: str, user: str = "root") -> subprocess.CompletedProcess[str]:
    """``hadoop fs <args>`` authenticated as ``user`` (her token file; also her login name)."""
    return fs_shell(_default_fs(cluster), *args, user=user, token_file=token_file(cluster, user))


def _shell_ok(cluster: RunningCluster, *args: str, user: str = "root") -> str:
    result = _shell(cluster, *args, user=user)
    assert result.returncode == 0, f"hadoop fs {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_fsshell_puts_lists_cats_gets_moves_and_removes_files(cluster: RunningCluster, tmp_path: Path) -> None:
    """hadoop fs -mkdir/-put/-ls/-cat/-get/-mv/-rm round-trips files of 0 bytes, 1 byte and 3 MB unchanged."""
    sizes = {"empty": 0, "one": 1, "three-mb": 3 * 1024 * 1024 + 17}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    _shell_ok(cluster, "-mkdir", "-p", "/fsshell/in")
    _shell_ok(cluster, "-put", *(str(tmp_path / n) for n in sizes), "/fsshell/in/")
    listing = _shell_ok(cluster, "-ls", "/fsshell/in")
    assert "Found 3 items" in listing, listing
    for name, size in sizes.items():
        assert any(line.endswith(f"/fsshell/in/{name}") and f" {size} " in line for line in listing.splitlines()), listing
    (tmp_path / "text").write_text("hello, cortex\n")
    _shell_ok(cluster, "-put", str(tmp_path / "text"), "/fsshell/in/text")
    assert _shell_ok(cluster, "-cat", "/fsshell/in/text") == "hello, cortex\n"
    out = tmp_path / "out"
    out.mkdir()
    _shell_ok(cluster, "-get", "/fsshell/in/three-mb", "/fsshell/in/empty", str(out))
    assert _sha256(out / "three-mb") == _sha256(tmp_path / "three-mb")
    assert (out / "empty").read_bytes() == b""
    _shell_ok(cluster, "-mv", "/fsshell/in", "/fsshell/moved")
    assert "three-mb" in _shell_ok(cluster, "-ls", "/fsshell/moved")
    _shell_ok(cluster, "-rm", "-r", "-skipTrash", "/fsshell")
    missing = _shell(cluster, "-ls", "/fsshell")
    assert missing.returncode != 0 and "No such file or directory" in missing.stderr


def test_hdfscli_round_trips_0_bytes_1_byte_and_200_mb(cluster: RunningCluster, tmp_path: Path) -> None:
    """The PyPI hdfs client writes and reads back files of 0 bytes, 1 byte and 200 MB (several blocks)."""
    admin = hdfs_client(cluster, "root")
    admin.makedirs("/user/alice")
    admin.set_owner("/user/alice", owner="alice")
    client = hdfs_client(cluster, "alice")
    big = tmp_path / "big"
    with big.open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    client.write("/user/alice/empty", data=b"", overwrite=True)
    client.write("/user/alice/one", data=b"!", overwrite=True)
    client.upload("/user/alice/big", str(big), overwrite=True, blocksize=64 * 1024 * 1024)
    with client.read("/user/alice/empty") as r:
        assert r.read() == b""
    with client.read("/user/alice/one") as r:
        assert r.read() == b"!"
    status = client.status("/user/alice/big")
    assert (status["length"], status["type"], status["owner"]) == (200 * 1024 * 1024, "FILE", "alice")
    back = tmp_path / "back"
    client.download("/user/alice/big", str(back))
    assert _sha256(back) == _sha256(big)
    with client.read("/user/alice/big", offset=100 * 1024 * 1024 - 3, length=10) as r:
        with big.open("rb") as f:
            f.seek(100 * 1024 * 1024 - 3)
            assert r.read() == f.read(10)
    checksum = client.checksum("/user/alice/big")
    assert checksum["algorithm"].startswith("MD5-of-") and checksum["length"] == 28


def test_a_listing_of_10000_entries_is_paged_and_complete(cluster: RunningCluster) -> None:
    """10,000 directories list completely through FsShell (LISTSTATUS_BATCH pages of 1,000) and HdfsCLI."""
    session = requests.Session()
    session.params = {"delegation": delegation(cluster, "root")}
    base = f"http://{cluster.rm.webapp}/webhdfs/v1/wide"
    for i in range(10_000):
        reply = session.put(f"{base}/d{i:05d}?op=MKDIRS", timeout=30)
        assert reply.status_code == 200, reply.text
    batch = session.get(f"{base}?op=LISTSTATUS_BATCH", timeout=30).json()["DirectoryListing"]
    assert len(batch["partialListing"]["FileStatuses"]["FileStatus"]) == 1000
    assert batch["remainingEntries"] == 9000
    listing = _shell_ok(cluster, "-ls", "/wide")
    assert "Found 10000 items" in listing
    assert listing.strip().endswith("/wide/d09999")
    assert len(hdfs_client(cluster, "root").list("/wide")) == 10_000


def _raw(cluster: RunningCluster, method: str, target: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(cluster.rm.webapp.host, cluster.rm.webapp.port, timeout=30)
    try:
        connection.request(method, target, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "target", "status", "exception"),
    [
        ("GET", "/webhdfs/v1/?op=NOSUCHOP&AUTH", 400, "IllegalArgumentException"),
        ("GET", "/webhdfs/v1/?AUTH", 400, "IllegalArgumentException"),
        ("GET", "/webhdfs/v1/a/../etc?op=GETFILESTATUS&AUTH", 400, "InvalidPathException"),
        ("GET", "/webhdfs/v1/a//b?op=GETFILESTATUS&AUTH", 400, "InvalidPathException"),
        ("GET", "/webhdfs/v1/a%00b?op=GETFILESTATUS&AUTH", 400, "InvalidPathException"),
        ("GET", "/webhdfs/v1/no/such?op=GETFILESTATUS&AUTH", 404, "FileNotFoundException"),
        ("GET", "/webhdfs/v1/?op=OPEN&offset=-1&AUTH", 400, "IllegalArgumentException"),
        ("GET", "/webhdfs/v1/?op=OPEN&offset=abc&AUTH", 400, "IllegalArgumentException"),
        ("PUT", "/webhdfs/v1/x?op=SETPERMISSION&permission=999&AUTH", 400, "IllegalArgumentException"),
        ("POST", "/webhdfs/v1/x?op=MKDIRS&AUTH", 400, "IllegalArgumentException"),
        ("GET", "/webhdfs/v1/?op=GETFILESTATUS&delegation=not-a-token", 403, "InvalidToken"),
    ],
)
def test_bad_requests_get_webhdfs_errors_without_content_type(
    cluster: RunningCluster, method: str, target: str, status: int, exception: str
) -> None:
    """Unknown ops, bad numbers, path traversal, NUL, a malformed credential: a RemoteException JSON
    (no Content-Type, as the Hadoop client needs) with the Java class the client throws (``AUTH``:
    root's valid ``delegation``); the daemon keeps serving."""
    auth = f"delegation={delegation(cluster, 'root')}"
    code, headers, body = _raw(cluster, method, target.replace("AUTH", auth))
    assert code == status, body
    assert "Content-Type" not in headers
    assert requests.models.complexjson.loads(body)["RemoteException"]["exception"] == exception
    assert _raw(cluster, "GET", f"/webhdfs/v1/?op=GETFILESTATUS&{auth}")[0] == 200


def test_a_write_without_permission_is_refused_and_creates_nothing(cluster: RunningCluster) -> None:
    """bob (with his own credential) may not create files in root's directory: AccessControlException,
    and no file appears."""
    _shell_ok(cluster, "-mkdir", "-p", "/private")
    refused = _shell(cluster, "-touchz", "/private/bob-was-here", user="bob")
    assert refused.returncode != 0
    assert "Permission denied: user=bob, access=WRITE" in refused.stderr
    assert _shell(cluster, "-test", "-e", "/private/bob-was-here").returncode == 1


def _forged(token: TokenProto, owner: str) -> str:
    """``token`` rewritten to claim ``owner``, its password kept (so wrong for the new identifier)."""
    ident = read_fs_identifier(token.identifier)
    claimed = fs_identifier_bytes(dataclasses.replace(ident, owner=owner))
    return to_url_string(TokenProto(identifier=claimed, password=token.password, kind=token.kind, service=token.service))


def test_only_a_users_own_valid_credential_lets_her_act_and_only_on_what_she_may(cluster: RunningCluster) -> None:
    """Without a credential (``user.name=root`` alone, by raw HTTP and by FsShell) WebHDFS answers 403
    AccessControlException and creates nothing; a forged token (bob's, rewritten to claim root: its
    password is wrong) is refused with SecretManager$InvalidToken and creates nothing; bob with his
    real credential reads alice's 755 home but not her 700 directory (AccessControlException)."""
    webhdfs = f"http://{cluster.rm.webapp}/webhdfs/v1"
    for method, path, op in (("PUT", "/nocred", "MKDIRS"), ("PUT", "/nocred-file", "CREATE")):
        refused = requests.request(method, f"{webhdfs}{path}?op={op}&user.name=root", allow_redirects=False, timeout=30)
        assert refused.status_code == 403, refused.text
        error = refused.json()["RemoteException"]
        assert error["exception"] == "AccessControlException" and "credential" in error["message"], error
    anonymous_shell = fs_shell(_default_fs(cluster), "-mkdir", "/nocred-shell", user="root")
    assert anonymous_shell.returncode != 0, anonymous_shell.stdout
    assert "mkdir: WebHDFS needs a user's credential" in anonymous_shell.stderr, anonymous_shell.stderr  # FsShell: the message

    forged = _forged(credential(cluster, "bob").fs, "root")
    reply = requests.put(f"{webhdfs}/forged-root?op=MKDIRS&delegation={forged}", timeout=30)
    assert reply.status_code == 403, reply.text
    error = reply.json()["RemoteException"]
    assert (error["exception"], error["javaClassName"]) == (
        "InvalidToken", "org.apache.hadoop.security.token.SecretManager$InvalidToken",
    )  # fmt: skip
    assert "wrong password" in error["message"], error
    admin = hdfs_client(cluster, "root")
    for path in ("/nocred", "/nocred-file", "/nocred-shell", "/forged-root"):
        assert admin.status(path, strict=False) is None, path

    admin.makedirs("/user/alice", permission="755")
    admin.set_owner("/user/alice", owner="alice")
    alice = hdfs_client(cluster, "alice")
    alice.makedirs("/user/alice/locked", permission="700")
    alice.write("/user/alice/locked/secret.txt", data=b"alice only\n", overwrite=True)
    assert "/user/alice/locked" in _shell_ok(cluster, "-ls", "/user/alice", user="bob")  # bob is authenticated
    for args, access in (("-ls", "/user/alice/locked"), "READ_EXECUTE"), (("-cat", "/user/alice/locked/secret.txt"), "EXECUTE"):
        denied = _shell(cluster, *args, user="bob")
        assert denied.returncode != 0 and "alice only" not in denied.stdout, denied.stdout
        assert f'Permission denied: user=bob, access={access}, inode="/user/alice/locked"' in denied.stderr, denied.stderr
    direct = requests.get(
        f"{webhdfs}/user/alice/locked/secret.txt",
        params={"op": "OPEN", "delegation": delegation(cluster, "bob")},
        allow_redirects=False,
        timeout=30,
    )
    assert direct.status_code == 403 and direct.json()["RemoteException"]["exception"] == "AccessControlException"
    assert _shell_ok(cluster, "-cat", "/user/alice/locked/secret.txt", user="alice") == "alice only\n"
    # the RM logged all of that without any credential in it
    log = cluster.daemon_log()
    for user in ("alice", "bob"):
        assert delegation(cluster, user) not in log
    assert "delegation=<redacted>" in log


def test_forged_and_stale_redirects_are_refused_by_the_node(cluster: RunningCluster) -> None:
    """A node refuses data with no ticket, an altered ticket, or a read ticket used for a write."""
    root = delegation(cluster, "root")
    reply = requests.put(
        f"http://{cluster.rm.webapp}/webhdfs/v1/forged?op=CREATE&delegation={root}", allow_redirects=False, timeout=30
    )
    assert reply.status_code == 307
    location = reply.headers["Location"]
    node, query = location.split("?", 1)
    forged = location.replace("ticket=", "ticket=A", 1)
    for url in (f"{node}?op=CREATE&user.name=root", forged):
        refused = requests.put(url, data=b"data", timeout=30)
        assert refused.status_code == 403, refused.text
        assert refused.json()["RemoteException"]["exception"] == "InvalidToken"
    other_path = location.replace("/webhdfs/v1/forged", "/webhdfs/v1/elsewhere", 1)
    assert requests.put(other_path, data=b"data", timeout=30).status_code == 403
    assert requests.get(
        f"http://{cluster.rm.webapp}/webhdfs/v1/forged?op=GETFILESTATUS&delegation={root}", timeout=30
    ).status_code == 404


def test_a_client_that_disconnects_mid_upload_leaves_no_file(cluster: RunningCluster) -> None:
    """An upload cut off half way (the client closes its socket) makes no file visible."""
    root = delegation(cluster, "root")
    reply = requests.put(
        f"http://{cluster.rm.webapp}/webhdfs/v1/half?op=CREATE&delegation={root}", allow_redirects=False, timeout=30
    )
    location = reply.headers["Location"]
    hostport, _, target = location.removeprefix("http://").partition("/")
    host, port = hostport.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("PUT", "/" + target)
    connection.putheader("Content-Length", str(10 * 1024 * 1024))
    connection.endheaders()
    connection.send(os.urandom(1024 * 1024))
    connection.close()
    time.sleep(1)  # not a race: the file could only appear through a commit, which never comes
    assert requests.get(
        f"http://{cluster.rm.webapp}/webhdfs/v1/half?op=GETFILESTATUS&delegation={root}", timeout=30
    ).status_code == 404


def test_a_killed_replica_holder_does_not_lose_the_file_and_replication_is_restored(tmp_path: Path) -> None:
    """A file with replication 2 on 3 nodes (a cluster of its own: a node dies): SIGKILL the holder
    reads are sent to (not the RM's node).  Once the RM has declared the node LOST (the ring's
    failure detector, or 10 s without heartbeats), reads go to the other holder; a new replica
    appears on the third node within the bound: detection + a report interval (3 s) + the copy."""
    with running_cluster(tmp_path / "cluster", nodes=3) as cluster:
        _wait_for_data_nodes(cluster, 3)
        client = hdfs_client(cluster, "root")
        for attempt in range(30):  # until reads are sent to a holder that is not the RM's node: it dies
            data = os.urandom(5 * 1024 * 1024 + attempt)  # a length of its own: its replicas are found by it
            path = f"/durable-{attempt}"
            client.write(path, data=data, replication=2)
            victim = _node_serving(cluster, path)
            if victim.rm is None:
                break
        assert victim.rm is None, "every write put the first replica on the RM's node"
        holders = [n for n in cluster.nodes if _holds_bytes(n, len(data))]
        assert len(holders) == 2 and victim in holders, [n.name for n in holders]
        os.kill(victim.pid, signal.SIGKILL)
        late = _write_naming_a_dead_node(client, "/written-while-dying", victim, cluster)
        deadline = time.monotonic() + 30
        while _node_state(cluster, victim) == "RUNNING":
            assert time.monotonic() < deadline, f"{victim.name} was still RUNNING 30 s after it died"
            time.sleep(0.5)
        _shell_ok(cluster, "-get", path, str(tmp_path / "durable"))
        assert (tmp_path / "durable").read_bytes() == data
        others = [n for n in cluster.nodes if n is not victim and n not in holders]
        deadline = time.monotonic() + 60
        while not all(_holds_bytes(n, len(data)) for n in others):
            assert time.monotonic() < deadline, "replication was not restored within 60 s"
            time.sleep(0.5)
        with client.read(path) as r:
            assert r.read() == data
        with client.read("/written-while-dying") as r:
            assert r.read() == late


def _write_naming_a_dead_node(
    client: Client, path: str, dead: local_cluster.LocalNode, cluster: RunningCluster
) -> bytes:
    """A file of four 1 MiB blocks written with replication 3 right after ``dead`` died: the
    NameNode needs seconds to notice, so the pipeline (all three nodes) names it; its copies
    fail, the write succeeds and every block has the two live holders.  (A try whose pipeline
    starts at the dead node cannot even begin; it is tried again.)"""
    data = os.urandom(3 * 1024 * 1024 + 7)
    for _ in range(30):
        try:
            client.write(path, data=data, replication=3, blocksize=1024 * 1024, overwrite=True)
            break
        except (HdfsError, requests.ConnectionError):  # the redirect named the dead node
            continue
    else:
        raise AssertionError("30 writes were all sent to the dead node first")
    dead_host = dead.nm_webapp.rsplit(":", 1)[0]
    hosts = _block_hosts(cluster, path)
    assert len(hosts) == 4 and all(len(h) == 2 and dead_host not in h for h in hosts), hosts
    return data


def _node_state(cluster: RunningCluster, node: local_cluster.LocalNode) -> str:
    nodes = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=rest_headers(cluster, "root"), timeout=30)
    nodes = nodes.json()["nodes"]["node"]
    return next((n["state"] for n in nodes if n["nodeHTTPAddress"] == node.nm_webapp), "not listed")


def _node_serving(cluster: RunningCluster, path: str) -> local_cluster.LocalNode:
    """The node the NameNode sends a read of ``path`` to."""
    reply = requests.get(
        f"http://{cluster.rm.webapp}/webhdfs/v1{path}",
        params={"op": "OPEN", "delegation": delegation(cluster, "root")},
        allow_redirects=False,
        timeout=30,
    )
    served = reply.headers["Location"].removeprefix("http://").split("/", 1)[0]
    return next(n for n in cluster.nodes if n.nm_webapp == served)


def _holds_bytes(node: local_cluster.LocalNode, length: int) -> bool:
    root = Path(node.directory) / "dfs-data" / "current"
    return any(p.stat().st_size == length for p in root.rglob("blk_*") if not p.name.endswith(".meta"))


def _replica_files(node: local_cluster.LocalNode, length: int) -> list[Path]:
    root = Path(node.directory) / "dfs-data" / "current"
    return [p for p in root.rglob("blk_*") if not p.name.endswith(".meta") and p.stat().st_size == length]


def _read_through_every_node(cluster: RunningCluster, path: str) -> list[bytes]:
    """The file as each node serves it: the NameNode's OPEN ticket is for the path, not for a node,
    so the same ticket is presented to every node (one of them holds the damaged replica)."""
    reply = requests.get(
        f"http://{cluster.rm.webapp}/webhdfs/v1{path}",
        params={"op": "OPEN", "delegation": delegation(cluster, "root")},
        allow_redirects=False,
        timeout=30,
    )
    assert reply.status_code == 307, reply.text
    location = reply.headers["Location"]
    served = location.removeprefix("http://").split("/", 1)[0]
    return [
        requests.get(location.replace(served, node.nm_webapp, 1), timeout=60).content for node in cluster.nodes
    ]


@pytest.mark.parametrize("damage", ["flip-a-byte", "delete-the-replica"])
def test_a_damaged_replica_is_detected_skipped_and_repaired(cluster: RunningCluster, damage: str) -> None:
    """A replica altered or removed on a holder's disk: every node still serves the right bytes (the
    damage is found by the chunk checksums or the missing file, and the read goes to the other
    holder); the damaged replica is dropped and a good one is made again within 60 s."""
    client = hdfs_client(cluster, "root")
    data = os.urandom(3 * 1024 * 1024 + len(damage))  # a length no other test's file has
    path = f"/damaged-{damage}"
    client.write(path, data=data, overwrite=True, replication=2)
    holders = [n for n in cluster.nodes if _replica_files(n, len(data))]
    assert len(holders) == 2, [n.name for n in holders]
    (victim_file,) = _replica_files(holders[0], len(data))
    if damage == "flip-a-byte":
        with victim_file.open("r+b") as f:
            f.seek(2 * 1024 * 1024 + 11)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        victim_file.unlink()
    served = _read_through_every_node(cluster, path)
    assert [len(s) for s in served] == [len(data)] * len(served)
    assert all(s == data for s in served), [next((i for i, (a, b) in enumerate(zip(s, data)) if a != b), None) for s in served]
    deadline = time.monotonic() + 60
    while True:
        good = [n.name for n in cluster.nodes for p in _replica_files(n, len(data)) if p.read_bytes() == data]
        if len(good) == 2:
            break
        assert time.monotonic() < deadline, f"replication 2 was not restored within 60 s: good replicas on {good}"
        time.sleep(0.5)


# -- localization: the NodeManagers read containers' resources from the file system


def _file(cluster: RunningCluster, user: str, path: str, data: bytes, permission: str = "644") -> dict[str, object]:
    """Write ``path`` as ``user``; its FileStatus (for the resource's size and timestamp)."""
    client = hdfs_client(cluster, user)
    client.write(path, data=data, overwrite=True, permission=permission)
    return client.status(path)


def _resource(cluster: RunningCluster, path: str, status: dict[str, object], visibility: str) -> dict[str, object]:
    return {
        "resource": f"webhdfs://{cluster.rm.webapp}{path}",
        "type": "FILE",
        "visibility": visibility,
        "size": status["length"],
        "timestamp": status["modificationTime"],
    }


def _run_container(cluster: RunningCluster, user: str, resources: dict[str, dict[str, object]]) -> tuple[str, str]:
    """Submit, as ``user`` through the REST API (her credential), an application whose AM container
    prints its localized files; wait for its end.  Its diagnostics and its id."""
    rest = f"http://{cluster.rm.webapp}/ws/v1/cluster/apps"
    headers = rest_headers(cluster, user)
    app_id = requests.post(f"{rest}/new-application", headers=headers, timeout=30).json()["application-id"]
    commands = f"cat {' '.join(resources)} > <LOG_DIR>/stdout"
    submission = {
        "application-id": app_id,
        "application-name": "localize",
        "max-app-attempts": 1,
        "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {
            "local-resources": {"entry": [{"key": k, "value": v} for k, v in resources.items()]},
            "commands": {"command": commands},
        },
    }
    reply = requests.post(rest, json=submission, headers=headers, timeout=30)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 120
    while True:
        app = requests.get(f"{rest}/{app_id}", headers=headers, timeout=30).json()["app"]
        assert app["user"] == user, app
        if app["state"] in ("FINISHED", "FAILED", "KILLED"):
            break
        assert time.monotonic() < deadline, f"{app_id} did not end within 120 s: {app['state']}"
        time.sleep(0.5)
    return app["diagnostics"], app_id


def test_containers_get_public_and_private_files_and_nothing_their_user_may_not_read(cluster: RunningCluster) -> None:
    """A NodeManager localizes webhdfs:// resources as the container's user (its container token
    says who): alice's container gets a world-readable PUBLIC file and her own PRIVATE one; a file
    in root's 700 directory, a file of hers asked as PUBLIC but readable only by her, and a file
    whose timestamp is not the resource's are refused with YARN's and HDFS's messages."""
    admin = hdfs_client(cluster, "root")
    admin.makedirs("/user/alice", permission="755")
    admin.set_owner("/user/alice", owner="alice")
    admin.makedirs("/locked", permission="700")
    public = _file(cluster, "root", "/shared/hello.txt", b"hello from root\n")
    mine = _file(cluster, "alice", "/user/alice/mine.txt", b"alice's own\n", permission="600")
    secret = _file(cluster, "root", "/locked/secret.txt", b"not for alice\n")
    _, app_id = _run_container(cluster, "alice", {
        "hello.txt": _resource(cluster, "/shared/hello.txt", public, "PUBLIC"),
        "mine.txt": _resource(cluster, "/user/alice/mine.txt", mine, "PRIVATE"),
    })
    logs = aggregated_logs(cluster.conf_dir, app_id, contains="alice's own")
    assert re.search(r"LogType:stdout\n.*\nLogLength:28\nLogContents:\nhello from root\nalice's own\n", logs), logs
    refused = {
        "Permission denied: user=alice, access=EXECUTE": _resource(cluster, "/locked/secret.txt", secret, "PRIVATE"),
        "Permission denied: user=public:everyone, access=READ": _resource(cluster, "/user/alice/mine.txt", mine, "PUBLIC"),
        "changed on src filesystem": {**_resource(cluster, "/shared/hello.txt", public, "PRIVATE"), "timestamp": 1},
    }
    for reason, resource in refused.items():
        diagnostics, _ = _run_container(cluster, "alice", {"f": resource})
        assert reason in diagnostics, diagnostics


def test_a_finished_applications_logs_go_into_the_file_system_as_its_owner_and_leave_the_node(
    cluster: RunningCluster,
) -> None:
    """When an application ends, the node that ran its container writes the container's logs in
    YARN's aggregated format to /tmp/logs/<owner>/bucket-logs-tfile/<NNNN>/<app>/<host>_<port>,
    owned by the application's user, `yarn logs` prints them to her (her own client configuration),
    and the node's local copy is gone."""
    note = _file(cluster, "root", "/shared/note.txt", b"aggregated, not lost\n")
    _, app_id = _run_container(cluster, "carol", {"note.txt": _resource(cluster, "/shared/note.txt", note, "PUBLIC")})
    logs = aggregated_logs(conf_dir_for(cluster, "carol"), app_id, contains="aggregated, not lost")
    assert f"Container: container_{app_id.removeprefix('application_')}_01_000001 on " in logs, logs
    admin = hdfs_client(cluster, "root")
    assert admin.status("/tmp/logs")["permission"] == "1777"
    bucket = f"{int(app_id.rsplit('_', 1)[1]) % 10000:04d}"
    app_dir = f"/tmp/logs/carol/bucket-logs-tfile/{bucket}/{app_id}"
    files = admin.list(app_dir, status=True)
    assert len(files) == 1, files
    name, status = files[0]
    assert (status["owner"], status["permission"]) == ("carol", "640"), status
    nodes = requests.get(f"{cluster.rest}/ws/v1/cluster/nodes", headers=rest_headers(cluster, "root"), timeout=10)
    node_ids = [n["id"] for n in nodes.json()["nodes"]["node"]]
    assert name in {node_id.replace(":", "_") for node_id in node_ids}, (name, node_ids)
    deadline = time.monotonic() + 30
    while left := [p for n in cluster.nodes for p in Path(n.directory).glob(f"nm-logs/{app_id}")]:
        assert time.monotonic() < deadline, f"local logs not removed after aggregation: {left}"
        time.sleep(0.5)
