"""Id range leases for real: flock on lock files held by live processes, dropped when a holder
is killed, local clusters' ranges picked around them, and the tables of gone nodes deleted."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cortex_rm.container.id_ranges import IdRange, IdRangeError, node_id_range
from cortex_rm.container.net_firewall import NftFirewall, inet_tables
from cortex_rm.container.net_policy import Members, PolicySettings, render_table, table_name
from cortex_rm.container.range_leases import RangeLease, is_free, left_behind
from cortex_rm.local_cluster_config import free_range_indices

pytestmark = pytest.mark.integration

FIRST, SECOND = IdRange.parse(node_id_range(1)), IdRange.parse(node_id_range(2))
HOLD = """
import sys
from pathlib import Path
from cortex_rm.container.id_ranges import IdRange
from cortex_rm.container.range_leases import RangeLease
lease = RangeLease.take(IdRange.parse(sys.argv[2]), Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


def hold(directory: Path, ids: IdRange) -> subprocess.Popen[str]:
    """A process that holds ``ids``' lease until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), ids.text()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_range_is_held_by_one_live_process_and_freed_when_it_is_killed(tmp_path: Path) -> None:
    """Another process's lease refuses the same range and one meeting it, naming its pid; a
    SIGKILL frees it; an own lease released frees it too."""
    holder = hold(tmp_path, FIRST)
    try:
        assert not is_free(FIRST, tmp_path)
        with pytest.raises(IdRangeError, match=f"pid {holder.pid}"):
            RangeLease.take(FIRST, tmp_path)
        with pytest.raises(IdRangeError, match="meets"):
            RangeLease.take(IdRange(FIRST.base, FIRST.count * 2), tmp_path)
        assert is_free(SECOND, tmp_path)
        assert all(1 not in free_range_indices(2, tmp_path) for _ in range(300))  # another local cluster keeps clear
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert is_free(FIRST, tmp_path)
    lease = RangeLease.take(FIRST, tmp_path)
    assert not is_free(FIRST, tmp_path) and all(free_range_indices(1, tmp_path) != [1] for _ in range(300))
    lease.release()
    assert is_free(FIRST, tmp_path)


READY = os.geteuid() == 0 and shutil.which("nft") is not None


@pytest.mark.skipif(not READY, reason="needs root and nftables")
def test_a_node_deletes_the_table_a_killed_node_of_a_free_range_left(tmp_path: Path) -> None:
    """In a namespace holding the tables of a killed node (no lease), of a live one (leased), of a
    gone and a running older node (named by their address) and another program's, installing a
    node's table deletes the killed and the gone older node's."""
    ns = f"lease-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    holder = hold(tmp_path, SECOND)
    try:
        mine, gone, live = IdRange.parse(node_id_range(3)), FIRST, SECOND
        script = "".join(
            render_table(PolicySettings(table_name(f"{r.base}_{r.count}"), r, "unified/cortex"), Members()) for r in (gone, live)
        ) + "table inet cortex_someone_else {}\ntable inet cortex_127_0_0_2_45454 {}\n"  # the last: an older node's name
        older_live = socket.create_server(("127.0.0.2", 0))  # an older node still running (the test's namespace)
        older_name = f"cortex_127_0_0_2_{older_live.getsockname()[1]}"
        script += f"table inet {older_name} {{}}\n"
        enter = ["nsenter", f"--net=/run/netns/{ns}"]
        Path("/sys/fs/cgroup/unified/cortex").mkdir(exist_ok=True)  # the tables name it
        subprocess.run([*enter, "nft", "-f", "-"], input=script, text=True, check=True)

        def run(argv: list[str], stdin: str) -> tuple[int, str]:
            done = subprocess.run([*enter, *argv], input=stdin, capture_output=True, text=True)
            return done.returncode, done.stderr

        names = {f"{r.base}_{r.count}": table_name(f"{r.base}_{r.count}") for r in (mine, gone, live)}
        firewall = NftFirewall(
            PolicySettings(names[f"{mine.base}_{mine.count}"], mine, "unified/cortex"), Path("/sys/fs/cgroup"), nft=shutil.which("nft"),
            run=run, stale=lambda t: left_behind(t, tmp_path), tables=lambda: inet_tables("nft", enter),
        )  # fmt: skip
        firewall.install(Members())
        assert firewall.installed, firewall.error
        assert sorted(inet_tables("nft", enter)) == sorted(
            [names[f"{mine.base}_{mine.count}"], names[f"{live.base}_{live.count}"], "cortex_someone_else", older_name]
        )
        older_live.close()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
