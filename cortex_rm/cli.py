"""The ``cortex-rm`` command line.

* ``cortex-rm node --config FILE``: run one daemon in the foreground.
* ``cortex-rm local-cluster up --nodes N --workdir DIR`` / ``down --workdir DIR``.
* ``cortex-rm client-config --out CONFDIR (--workdir DIR | --rm HOST:PORT)``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from cortex_rm import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cortex-rm", description="Cortex RM: YARN for volunteered machines.")
    parser.add_argument("--version", action="version", version=f"cortex-rm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run one Cortex daemon in the foreground")
    node.add_argument("--config", type=Path, help="TOML configuration file (default: embedded defaults)")

    cluster = sub.add_parser("local-cluster", help="run a cluster of daemons on this machine's loopback")
    csub = cluster.add_subparsers(dest="action", required=True)
    up = csub.add_parser("up", help="start N daemons in the background and wait until they answer")
    up.add_argument("--nodes", type=int, default=3, help="how many daemons (default 3; node1 is also the RM)")
    up.add_argument("--workdir", type=Path, required=True, help="directory for the nodes' state, logs and pid files")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each daemon (default 60)")
    up.add_argument(
        "--no-spark-upload", action="store_true", help="do not upload this machine's Spark jars into the cluster"
    )
    down = csub.add_parser("down", help="stop the daemons of a local cluster")
    down.add_argument("--workdir", type=Path, required=True)

    ring = sub.add_parser("ring", help="show the ring as a node sees it: its neighbours and the members it knows")
    rwhere = ring.add_mutually_exclusive_group()
    rwhere.add_argument(
        "--workdir", type=Path, help="a local cluster's work dir, or a node's state dir (default node: the first)"
    )
    rwhere.add_argument("--address", metavar="HOST:PORT", help="a node's web address (its ring.status_address)")
    ring.add_argument("--all", action="store_true", dest="all_nodes", help="every node of --workdir, one view each")
    ring.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each node (default 5)")
    cc = sub.add_parser("client-config", help="write yarn-site.xml and core-site.xml for Hadoop/Spark clients")
    cc.add_argument("--out", type=Path, required=True, help="directory to write (use it as HADOOP_CONF_DIR)")
    where = cc.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", type=Path, help="a running local cluster's work dir")
    where.add_argument("--rm", metavar="HOST:PORT", help="the RM's client address (other ports: YARN defaults)")
    cc.add_argument(
        "--no-spark-upload",
        action="store_true",
        help="do not upload this machine's Spark jars (nodes then read them from this machine's disk: one machine only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `cortex-rm ... | head` ends quietly
    args = _parser().parse_args(argv)
    if args.command == "node":
        from cortex_rm.config import ConfigError, load_config
        from cortex_rm.node import run_node

        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(f"cortex-rm: {e}", file=sys.stderr)
            return 2
        return run_node(config)
    if args.command == "local-cluster":
        from cortex_rm import local_cluster

        try:
            if args.action == "up":
                local_cluster.up(args.workdir, args.nodes, args.timeout, spark_archive=not args.no_spark_upload)
            else:
                local_cluster.down(args.workdir)
        except local_cluster.LocalClusterError as e:
            print(f"cortex-rm: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "ring":
        from cortex_rm.ring_status import ring_command

        return ring_command(args.workdir, args.address, args.all_nodes, sys.stdout, timeout=args.timeout)
    if args.command == "client-config":
        from cortex_rm import local_cluster
        from cortex_rm.client_config import RMAddresses, installed_spark_home, write_client_config
        from cortex_rm.yarn.addresses import HostPort, MalformedAddress

        try:
            if args.workdir is not None:
                rm = local_cluster.rm_addresses(args.workdir)
            else:
                rm = RMAddresses.from_client_address(HostPort.parse(args.rm))
        except local_cluster.LocalClusterError as e:
            print(f"cortex-rm: {e}", file=sys.stderr)
            return 2
        except MalformedAddress as e:
            print(f"cortex-rm: --rm: {e}", file=sys.stderr)
            print(f"cortex-rm: {e}", file=sys.stderr)
            return 2
        from cortex_rm.spark_archive import ArchiveError

        try:
            written = write_client_config(args.out, rm, installed_spark_home(), upload_spark=not args.no_spark_upload)
        except ArchiveError as e:
            print(f"cortex-rm: uploading Spark's jars failed: {e}", file=sys.stderr)
            print("cortex-rm: check that the cluster is up, or pass --no-spark-upload (single machine only)", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        print(f"use it with: export HADOOP_CONF_DIR={args.out.resolve()} SPARK_CONF_DIR={args.out.resolve()}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
