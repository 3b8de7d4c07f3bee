"""The container sandbox for real: unprivileged LXC containers, the seccomp profile and the
nft network policy, in network namespaces this test makes.

``sandbox_probe.py`` runs in a fresh network namespace (its own loopback, with a member at
127.0.0.2 and a non-member service at 127.0.0.5, and a veth to a second namespace holding a
private address with a listener): app A's container listens on the member address; app B's
container probes a member's service, a member's control port, the non-member loopback
service, the private address, app A's socket and app C's driver's block manager; a second
container of app A probes A's socket; a container of app C, whose client-mode driver runs on
this host (127.0.0.7), reaches the driver's named port and its block manager.  Every container
also writes a file, reads a host-root-only file and tries unshare.

``sandbox_cross_probe.py`` runs in two namespaces, two nodes: see the second test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

READY = os.geteuid() == 0 and shutil.which("lxc-execute") is not None and shutil.which("nft") is not None
PRIVATE, PEER = "10.77.0.2", "10.77.0.1"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.mark.skipif(not READY, reason="needs root, lxc and nftables")
def test_containers_reach_members_only_and_not_another_applications_sockets(tmp_path: Path, runtime_image_root: Path) -> None:
    """From inside a container: the member's service is reached; its control port, the host's
    non-member loopback service, a private address and another application's socket are
    refused; the same application's socket is reached; root inside is not root outside; a
    denied syscall fails."""
    tag = uuid.uuid4().hex[:6]
    node, lan = f"sbx-{tag}", f"sbx-{tag}-lan"
    sh("ip", "netns", "add", node)
    sh("ip", "netns", "add", lan)
    lan_listener = None
    try:
        sh("ip", "-n", node, "link", "set", "lo", "up")
        sh("ip", "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", lan)
        sh("ip", "-n", node, "addr", "add", f"{PEER}/24", "dev", "eth0")
        sh("ip", "-n", lan, "addr", "add", f"{PRIVATE}/24", "dev", "eth0")
        for ns in (node, lan):
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        listener = f"import socket,time;s=socket.socket();s.bind(('{PRIVATE}',47001));s.listen(8);time.sleep(120)"
        lan_listener = subprocess.Popen(["nsenter", f"--net=/run/netns/{lan}", sys.executable, "-c", listener])
        probe = Path(__file__).with_name("sandbox_probe.py")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node}", sys.executable, str(probe), str(tmp_path), str(runtime_image_root), PRIVATE],
            capture_output=True, text=True, timeout=240, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if lan_listener is not None:
            lan_listener.kill()
            lan_listener.wait()
        for ns in (node, lan):
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    other = report["other_app"]
    assert "127.0.0.2:47001 reached" in other  # a member's service
    assert "127.0.0.2:47002 refused" in other  # a member's control port
    assert "127.0.0.5:47001 refused" in other  # the host's loopback service that is no member
    assert f"{PRIVATE}:47001 refused" in other  # a private address that is no member
    assert "127.0.0.2:47003 refused" in other  # another application's container on this node
    assert "127.0.0.2:47003 reached" in report["same_app"]  # its own application's container
    # another application choosing a source port of A's slot, to A's wildcard socket by the member's
    # address, by 127.0.0.1 and by a non-member loopback address: refused all the same
    assert [line.split()[1] for line in other.splitlines() if ":47003/" in line] == ["refused"] * 3, other
    assert "127.0.0.7:47011 refused" in other  # another application's driver on this host
    # its own client-mode driver on this host: the port its command names, and its block manager's
    assert "127.0.0.7:47010 reached" in report["driven_app"] and "127.0.0.7:47011 reached" in report["driven_app"]
    assert report["file_owner"] == report["app_b_root"] != 0  # root inside is the block's uid outside
    assert "Permission denied" in other and "host root only" not in other  # a host-root-only file
    assert "unshare=1" in other  # seccomp: unshare is denied


NODE_A, NODE_B = "10.78.0.1", "10.78.0.2"


@pytest.mark.skipif(not READY, reason="needs root, lxc and nftables")
def test_across_nodes_a_container_is_reached_only_by_its_own_applications_containers(tmp_path: Path, runtime_image_root: Path) -> None:
    """Two nodes in two network namespaces, each under its own table: on node B a container of
    application A listens on B's address.  From node A, a container of A reaches it; a container
    of B (also when it binds a source port of A's slot), a container of an application without
    a slot, and the node's own process are refused."""
    tag = uuid.uuid4().hex[:6]
    prober, listener = f"sbx-{tag}-a", f"sbx-{tag}-b"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    probe = Path(__file__).with_name("sandbox_cross_probe.py")
    for ns in (prober, listener):
        sh("ip", "netns", "add", ns)
    runs: list[subprocess.Popen[str]] = []
    try:
        sh("ip", "-n", prober, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", listener)
        for ns, address in ((prober, NODE_A), (listener, NODE_B)):
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", prober, "addr", "add", "10.78.0.9/24", "dev", "eth0")  # a non-member on the prober's side
        for role, ns, own, other in (("listener", listener, NODE_B, NODE_A), ("prober", prober, NODE_A, NODE_B)):
            argv = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, str(probe), role, str(tmp_path), str(runtime_image_root), own, other]
            runs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outputs = [run.communicate(timeout=300) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
        for ns in (prober, listener):
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    report = json.loads(outputs[1][0].strip().splitlines()[-1])
    target = f"{NODE_B}:47003"
    assert f"{target} reached" in report["same_app"]
    assert f"{target} refused" in report["other_app"]
    assert f"{target}/" in report["other_app"] and "reached" not in report["other_app"]  # a source port it bound in A's slot
    assert f"{target} refused" in report["no_slot"]
    assert report["node_process"].startswith("refused")
    assert report["outsider_in_slot"].startswith("refused")  # a non-member choosing a source port of A's slot
