"""Users, as they meet them: credentials from the admin's `cortex-rm user add`, client
configurations from `cortex-rm client-config --credential`, and Hadoop's own YarnClient
(SASL TOKEN on the RM's port) deciding nothing of ours on the client side.

alice submits, lists and kills her own application; bob can neither see nor kill it
(AccessControlException); a client with no credential changes nothing; a revoked
credential stops working at once.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cortex_rm.yarn.delegation import RM_DELEGATION_KIND
from cortex_rm.yarn_api.delegation_tokens import read_token_writable
from cortex_rm.yarn_api.writable import read_token_storage
from tests.support.cluster import RunningCluster, running_cluster
from tests.support.java import YarnClientDriver, compile_driver, quiet_jvm_options, run_driver

pytestmark = pytest.mark.integration

ACCESS_CONTROL = "org.apache.hadoop.security.AccessControlException"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("users"), nodes=1) as c:
        yield c


def cortex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cortex_rm", *args], capture_output=True, text=True, timeout=120)


def client_of(cluster: RunningCluster, user: str, tmp: Path) -> YarnClientDriver:
    """A YarnClient configured as `user` would be: the admin issues her credential, she writes
    her client configuration with it."""
    token = tmp / f"{user}.token"
    added = cortex("user", "add", user, "--out", str(token), "--workdir", str(cluster.workdir))
    assert added.returncode == 0, added.stderr
    assert token.stat().st_mode & 0o777 == 0o600
    conf = tmp / f"{user}-conf"
    written = cortex(
        "client-config", "--out", str(conf), "--workdir", str(cluster.workdir), "--credential", str(token),
        "--no-spark-upload",
    )
    assert written.returncode == 0, written.stderr
    return YarnClientDriver(conf)


def test_users_see_and_kill_only_their_own_applications(cluster: RunningCluster, tmp_path: Path) -> None:
    alice, bob = client_of(cluster, "alice", tmp_path), client_of(cluster, "bob", tmp_path)
    app_id = alice.run("submit", "alices-job", "default", "--am-command", "sleep 600")["applicationId"]
    assert alice.run("report", app_id)["user"] == "alice"
    assert [a["id"] for a in alice.run("list")["applications"]] == [app_id]
    assert "cannot perform operation VIEW_APP" in bob.expect_exception("report", app_id, exception=ACCESS_CONTROL)["message"]
    assert "cannot perform operation MODIFY_APP" in bob.expect_exception("kill", app_id, exception=ACCESS_CONTROL)["message"]
    assert bob.run("list")["applications"] == []
    alice.run("kill", app_id)
    assert alice.run("report", app_id)["state"] == "KILLED"


def test_a_client_without_a_credential_changes_nothing(cluster: RunningCluster, tmp_path: Path) -> None:
    """The same configuration minus the token file: the RM's metrics, and AccessControlException
    (saying what to do) for everything else."""
    anonymous = tmp_path / "anonymous-conf"
    anonymous.mkdir()
    for name in ("yarn-site.xml", "core-site.xml"):
        text = (cluster.conf_dir / name).read_text()
        (anonymous / name).write_text("\n".join(line for line in text.splitlines() if "hadoop.token.files" not in line))
    client = YarnClientDriver(anonymous)
    assert client.run("metrics")["numNodeManagers"] == 1
    for args in (("new-app",), ("list",), ("submit", "sneaky", "default")):
        refused = client.expect_exception(*args, exception=ACCESS_CONTROL)
        assert "cortex-rm user add" in refused["message"]


def test_a_revoked_credential_stops_working_at_once(cluster: RunningCluster, tmp_path: Path) -> None:
    carol = client_of(cluster, "carol", tmp_path)
    assert carol.run("list")["applications"] == []
    revoked = cortex("user", "revoke", "carol", "--workdir", str(cluster.workdir))
    assert revoked.returncode == 0 and "revoked carol: 1 token(s)" in revoked.stdout, revoked.stdout + revoked.stderr
    outcome = carol.invoke("list")
    assert outcome.returncode == YarnClientDriver.EXIT_CLIENT_EXCEPTION, outcome.describe()
    # as Hadoop's RM answers a cancelled token: the SASL TOKEN handshake fails with InvalidToken
    assert json.loads(outcome.stdout)["exception"] == "org.apache.hadoop.security.token.SecretManager$InvalidToken", outcome.describe()


def dtutil(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Hadoop's own ``hadoop dtutil`` (DtUtilShell from pyspark's jars), configured by ``conf``."""
    return run_driver(
        "org.apache.hadoop.security.token.DtUtilShell", list(args), classes=compile_driver("YarnClientDriver"),
        conf_dir=conf, jvm_options=quiet_jvm_options(),
    )


def test_a_user_renews_and_cancels_her_credential_with_hadoop_dtutil(cluster: RunningCluster, tmp_path: Path) -> None:
    """`hadoop dtutil renew` (the RM token's Renewer, over SASL TOKEN as its owner) moves the
    credential's expiry on, as the admin's listing shows; `hadoop dtutil cancel` ends it at once."""
    dave = client_of(cluster, "dave", tmp_path)
    token_file, conf = tmp_path / "dave.token", tmp_path / "dave-conf"
    tokens, _ = read_token_storage(token_file.read_bytes())
    [rm_alias] = [alias for alias, raw in tokens.items() if read_token_writable(raw).kind == RM_DELEGATION_KIND]

    def expiry() -> int:
        listed = requests.get(f"http://{cluster.rm.webapp}/ws/v1/cluster/cortex/users", headers=cluster.rest_headers(), timeout=30)
        return int(next(u for u in listed.json()["users"]["user"] if u["name"] == "dave")["expires_ms"])

    before = expiry()
    renewed = dtutil(conf, "renew", "-alias", rm_alias, str(token_file))
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert expiry() > before
    assert dave.run("list")["applications"] == []
    cancelled = dtutil(conf, "cancel", "-alias", rm_alias, str(token_file))
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    outcome = dave.invoke("list")
    assert outcome.returncode == YarnClientDriver.EXIT_CLIENT_EXCEPTION, outcome.describe()


QUEUES_WITH_ACLS = """
[[scheduler.queue]]
path = "root"
acl_submit_applications = " "
[[scheduler.queue]]
path = "root.default"
capacity = 50
acl_submit_applications = "*"
[[scheduler.queue]]
path = "root.restricted"
capacity = 50
acl_submit_applications = "erin"
"""


def test_a_queue_acl_refuses_a_submission(tmp_path: Path) -> None:
    """`local-cluster up --rm-config` with a queue only erin may submit to: Hadoop's YarnClient
    as frank is refused there (AccessControlException naming the queue) and accepted in the
    open queue; erin's submission to her queue is accepted."""
    with running_cluster(tmp_path / "queues", nodes=1, rm_config=QUEUES_WITH_ACLS) as queues:
        erin, frank = client_of(queues, "erin", tmp_path), client_of(queues, "frank", tmp_path)
        refused = frank.expect_exception("submit", "franks-job", "restricted", exception=ACCESS_CONTROL)
        assert "cannot submit applications to queue root.restricted" in refused["message"]
        assert frank.run("list")["applications"] == []
        franks = frank.run("submit", "franks-job", "default")["applicationId"]
        assert frank.run("report", franks)["queue"] == "default"
        erins = erin.run("submit", "erins-job", "restricted")["applicationId"]
        assert erin.run("report", erins)["queue"] == "restricted"


def container_output(cluster: RunningCluster, app_id: str, marker: str, timeout: float = 180) -> str:
    """The AM container's stdout once it holds ``marker`` (read from node1's NodeManager log dir)."""
    deadline = time.monotonic() + timeout
    found = ""
    while time.monotonic() < deadline:
        for stdout in (cluster.workdir / "node1" / "nm-logs" / app_id).glob("*/stdout"):
            found = stdout.read_text(errors="replace")
            if marker in found:
                return found
        time.sleep(0.5)
    stderr = [p.read_text(errors="replace")[-2000:] for p in (cluster.workdir / "node1" / "nm-logs" / app_id).glob("*/stderr")]
    raise AssertionError(f"no {marker!r} from {app_id}'s AM within {timeout} s; stdout {found!r}, stderr {stderr}")


PROBE = """
import json, os, sys, urllib.request
rm = sys.argv[2]
stamp, number = os.environ["CONTAINER_ID"].split("_")[-4:-2]
own, victim = f"application_{stamp}_{number}", f"application_{stamp}_{int(number) + 1:04d}"
def kill(app, headers):
    request = urllib.request.Request(f"http://{rm}/ws/v1/cluster/apps/{app}/state", data=b'{"state": "KILLED"}',
                                     method="PUT", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return f"unreachable: {e}"
print(json.dumps({"victim": kill(victim, {}), "own": kill(own, {}),
                  "forged": kill(victim, {"Hadoop-YARN-RM-Delegation-Token": "AAAA"})}), flush=True)
print("PROBE DONE", flush=True)
"""


def test_a_container_cannot_kill_applications_without_credentials(cluster: RunningCluster, tmp_path: Path) -> None:
    """An AM container of alice's that sends REST kills with no credential (or a forged one) for
    the next application (submitted right after it; it waits for the queue's AM share) and for
    its own is answered 401 (or cannot reach the RM at all), and both applications live on."""
    alice = client_of(cluster, "alice", tmp_path)
    # the launch script runs the command inside "...", as YARN's does: no quotes or $ in it
    probe = base64.b64encode(PROBE.encode()).decode()
    command = (
        f"python3 -c 'import base64,sys;exec(base64.b64decode(sys.argv[1]))' {probe} {cluster.rm.webapp}"
        " 1><LOG_DIR>/stdout 2><LOG_DIR>/stderr; sleep 600"
    )
    prober = alice.run("submit", "prober", "default", "--am-command", command)["applicationId"]
    victim = alice.run("submit", "victim", "default", "--am-command", "sleep 600")["applicationId"]
    assert int(victim.split("_")[2]) == int(prober.split("_")[2]) + 1
    stdout = container_output(cluster, prober, "PROBE DONE")
    answers = json.loads(stdout.splitlines()[0])
    for name, status in answers.items():
        assert status == 401 or str(status).startswith("unreachable"), (name, answers)
    assert alice.run("report", victim)["state"] in ("ACCEPTED", "RUNNING")
    assert alice.run("report", prober)["state"] in ("ACCEPTED", "RUNNING")
    for app in (victim, prober):
        alice.run("kill", app)
