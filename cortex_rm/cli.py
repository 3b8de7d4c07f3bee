"""The ``cortex-rm`` command line.

* ``cortex-rm node --config FILE``: run one daemon in the foreground.
* ``cortex-rm node leave (--config FILE | --workdir DIR [--node NAME])``: the daemon leaves gracefully
  (``node_leave_cli.py``).
* ``cortex-rm local-cluster up --nodes N --workdir DIR [--rm-standbys N]`` / ``down --workdir DIR``.
* ``cortex-rm client-config --out CONFDIR (--workdir DIR | --rm HOST:PORT[,HOST:PORT...] --credential FILE)``:
  ``--rm`` is any node's web address (its directory names every RM) or RMs' client addresses.
* ``cortex-rm user (add NAME --out FILE | revoke NAME) (--workdir DIR | --rm-web HOST:PORT --admin-credential FILE)``.
* ``cortex-rm image build [--cache DIR] [--print-path | --json]``: build the containers' runtime image.
* ``cortex-rm image push (--workdir DIR | --rm-web HOST:PORT) [--archive PATH]``: upload it for the nodes.
* ``cortex-rm payouts (--workdir DIR | --rm-web HOST:PORT) [--start MS --end MS] [--json]``: uptime and shares.
* ``cortex-rm ledger verify (--workdir DIR | --config FILE) [--url URL]``: audit the uptime ledger.
* ``cortex-rm event (register|trigger|result|list|get|delete|logs) ...``: serverless functions (``event_cli.py``).
* ``cortex-rm contributor install --introducer HOST:PORT --resource-manager RING_ID [--cpus N] [--memory-mb M]
  [--disk-gb G] [--root DIR]`` / ``uninstall [--root DIR]``: this machine as a systemd service (``contributor.py``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from cortex_rm import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cortex-rm", description="Cortex RM: YARN for volunteered machines.")
    parser.add_argument("--version", action="version", version=f"cortex-rm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run one Cortex daemon in the foreground (or: node leave)")
    node.add_argument("action", nargs="?", choices=("run", "leave"), default="run",
                      help="run (the default), or leave: ask the running daemon to leave gracefully and wait")  # fmt: skip
    node.add_argument("--config", type=Path, help="TOML configuration file (default: embedded defaults)")
    node.add_argument("--workdir", type=Path, help="leave: a node's state dir, or a local cluster's work dir with --node")
    node.add_argument("--node", help="leave: the local cluster's node (node1, node2, ...)")
    node.add_argument("--timeout", type=float, default=600.0, help="leave: give up waiting after this many seconds")

    cluster = sub.add_parser("local-cluster", help="run a cluster of daemons on this machine's loopback")
    csub = cluster.add_subparsers(dest="action", required=True)
    up = csub.add_parser("up", help="start N daemons in the background and wait until they answer")
    up.add_argument("--nodes", type=int, default=3, help="how many daemons (default 3; node1 is also the RM)")
    up.add_argument("--workdir", type=Path, required=True, help="directory for the nodes' state, logs and pid files")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each daemon (default 60)")
    up.add_argument(
        "--no-spark-upload", action="store_true", help="do not upload this machine's Spark jars into the cluster"
    )
    up.add_argument(
        "--isolated",
        action="store_true",
        help="each node in its own network namespace (on a bridge this makes) and mount namespace (its own /tmp, "
        "/root, /home and state dir): nodes share no files and no loopback",
    )
    up.add_argument(
        "--rm-config",
        type=Path,
        metavar="FILE",
        help="TOML tables to add to the ResourceManager's configuration, e.g. [[scheduler.queue]] entries with ACLs",
    )
    up.add_argument(
        "--rm-standbys", type=int, default=0, metavar="N",
        help="make nodes 2..N+1 RM-eligible too: standby ResourceManagers, each with its own ports (default 0)",
    )
    up.add_argument(
        "--nm-recovery", action="store_true",
        help="NodeManager recovery on every node ([nodemanager] recovery = true): containers outlive a killed "
        "daemon and its restart takes them back",
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
    where.add_argument(
        "--rm", metavar="HOST:PORT", action="append",
        help="any node's web address (client-config asks it where every RM is), or the RM's client address "
        "(other ports: YARN defaults); several RMs (HA): comma-separated or repeated, the preferred first",
    )
    cc.add_argument(
        "--no-spark-upload",
        action="store_true",
        help="do not upload this machine's Spark jars (nodes then read them from this machine's disk: one machine only)",
    )
    cc.add_argument(
        "--credential", type=Path, metavar="FILE",
        help="your credential (from the cluster's admin: `cortex-rm user add`); default with --workdir: DIR/user.token",
    )

    user = sub.add_parser("user", help="issue and revoke users' credentials (the cluster's admin)")
    usub = user.add_subparsers(dest="user_command", required=True)
    add = usub.add_parser("add", help="issue a credential for a user (a Hadoop token file)")
    add.add_argument("name")
    add.add_argument("--out", type=Path, required=True, help="the file to write (mode 600); give it to the user")
    revoke = usub.add_parser("revoke", help="revoke every credential of a user, at once")
    revoke.add_argument("name")
    user_show = usub.add_parser("show", help="print whose a credential is, until when, and its tokens for curl and hdfs")
    user_show.add_argument("credential", type=Path)
    for p in (add, revoke):
        rm_where = p.add_mutually_exclusive_group(required=True)
        rm_where.add_argument("--workdir", type=Path, help="a running local cluster's work dir (its admin credential)")
        rm_where.add_argument("--rm-web", help="the ResourceManager's web address HOST:PORT")
        p.add_argument(
            "--admin-credential", type=Path, metavar="FILE",
            help="the admin's credential: <state_dir>/admin.token on the RM's machine (needed with --rm-web)",
        )

    image = sub.add_parser("image", help="the runtime image that every container runs in")
    isub = image.add_subparsers(dest="action", required=True)
    build = isub.add_parser(
        "build", help="build the image with mmdebstrap (as root; once per recipe) and print its SHA-256, path and size"
    )
    build.add_argument(
        "--cache",
        type=Path,
        help="build cache directory (default: $CORTEX_IMAGE_CACHE, else ~/.cache/cortex-rm/images)",
    )
    show = build.add_mutually_exclusive_group()
    show.add_argument("--print-path", action="store_true", help="print only the archive's path")
    show.add_argument("--json", action="store_true", help="print the image's sha256, path and sizes as JSON")
    push = isub.add_parser("push", help="upload an image into the cluster's file system, where the nodes fetch it")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--workdir", type=Path, help="a running local cluster's work dir")
    target.add_argument("--rm-web", help="the ResourceManager's web address HOST:PORT (WebHDFS)")
    push.add_argument("--archive", type=Path, help="the image's archive (default: the one `image build` made)")
    push.add_argument(
        "--credential", type=Path, metavar="FILE",
        help="the admin's credential (<state_dir>/admin.token of the RM; default with --workdir: the local cluster's)",
    )
    push.add_argument("--cache", type=Path, help="build cache directory, to find the default archive")
    _ledger_parsers(sub)
    _contributor_parsers(sub)
    from cortex_rm.event_cli import add_event_parsers

    add_event_parsers(sub)
    return parser


def _ledger_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    payouts = sub.add_parser("payouts", help="each node's witnessed uptime and share in a pay period")
    rm_web = payouts.add_mutually_exclusive_group(required=True)
    rm_web.add_argument("--workdir", type=Path, help="a running local cluster's work dir")
    rm_web.add_argument("--rm-web", help="the ResourceManager's web address HOST:PORT")
    payouts.add_argument("--start", type=int, metavar="MS", help="the period's start, ms since the epoch (with --end)")
    payouts.add_argument("--end", type=int, metavar="MS", help="the period's end (default: the current pay period)")
    payouts.add_argument("--json", action="store_true", help="a JSON list of {node, ring_id, uptime_s, share}")
    ledger = sub.add_parser("ledger", help="the uptime ledger the RM keeps")
    lsub = ledger.add_subparsers(dest="action", required=True)
    verify = lsub.add_parser("verify", help="check every hash, signature and closed period of the ledger's database")
    config = verify.add_mutually_exclusive_group(required=True)
    config.add_argument("--workdir", type=Path, help="a local cluster's work dir (its RM's configuration)")
    config.add_argument("--config", type=Path, help="the RM node's configuration file")
    verify.add_argument("--url", help="the ledger's SQLAlchemy URL (default: the configuration's [accounting] ledger_url)")


def _contributor_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contributor = sub.add_parser("contributor", help="contribute this machine: install or remove the node's service")
    csub = contributor.add_subparsers(dest="action", required=True)
    install = csub.add_parser(
        "install", help="write /etc/cortex-rm/cortex.toml and the systemd unit cortex-rm.service; start it under systemd"
    )
    install.add_argument("--introducer", required=True, metavar="HOST:PORT", help="a cluster member's ring address")
    install.add_argument(
        "--resource-manager", required=True, action="append", metavar="RING_ID",
        help="ring id of a node that may run the RM (40 hex digits: [ring] resource_managers of any member's config); "
        "comma-separated or repeated",
    )
    install.add_argument("--host", help="the address other members reach this machine at (default: its address "
                         "towards the introducer)")
    install.add_argument("--cpus", type=int, metavar="N", help="CPUs offered to containers (default: all)")
    install.add_argument("--memory-mb", type=int, metavar="M", help="memory offered, MB (default: half the machine's)")
    install.add_argument("--disk-gb", type=int, default=0, metavar="G",
                         help="disk offered for blocks, images and cached files, GB (default 0: no cap)")
    install.add_argument("--force", action="store_true", help="overwrite an existing config and unit (uninstall then removes them)")
    uninstall = csub.add_parser("uninstall", help="stop the service and remove what install wrote (the state dir stays)")
    for p in (install, uninstall):
        p.add_argument("--root", type=Path, metavar="DIR", help="write under DIR instead of / (tests, packagers); "
                       "nothing is started or stopped")


def _image_command(args: argparse.Namespace) -> int:
    """``image build``: progress on stderr, the result on stdout (so ``$(cortex-rm image build --print-path)`` works)."""
    import json

    from cortex_rm.container.runtime_image import ImageError, ImageRecipe, build_image, default_build_cache

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.action == "push":
        return _image_push(args, say)
    try:
        image = build_image(ImageRecipe(), args.cache or default_build_cache(), say)
    except ImageError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
    if args.print_path:
        print(image.path)
    elif args.json:
        print(json.dumps(image.describe(), indent=2))
    else:
        unpacked = f", {image.uncompressed_size / 1e6:.0f} MB unpacked" if image.uncompressed_size else ""
        print(f"sha256 {image.sha256}\npath   {image.path}\nsize   {image.size / 1e6:.0f} MB{unpacked}")
    return 0


def _image_push(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from cortex_rm import local_cluster
    from cortex_rm.container.runtime_image import ImageRecipe, default_build_cache, recorded_image
    from cortex_rm.image_push import push_image
    from cortex_rm.user_credential import CredentialError, load_credential
    from cortex_rm.webhdfs_client import WebHdfsError
    from cortex_rm.yarn.addresses import HostPort, MalformedAddress

    sha256 = None
    archive = args.archive
    if archive is None:
        built = recorded_image(args.cache or default_build_cache(), ImageRecipe().recipe_hash())
        if built is None:
            print("cortex-rm: no image built yet: run `cortex-rm image build` first, or name one with --archive", file=sys.stderr)
            return 2
        archive, sha256 = built.path, built.sha256
    try:
        web = local_cluster.rm_addresses(args.workdir).webapp if args.workdir else HostPort.parse(args.rm_web)
        if args.credential is not None:
            admin = load_credential(args.credential)
        elif args.workdir is not None:
            admin = local_cluster.admin_credential(args.workdir)
        else:
            print("cortex-rm: --credential FILE (the admin's) is needed with --rm-web", file=sys.stderr)
            return 2
        path = push_image(web, archive, admin.webhdfs_delegation(), say, sha256)
    except (local_cluster.LocalClusterError, MalformedAddress, WebHdfsError, CredentialError, OSError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
    digest = Path(path).name.removesuffix(".tar.zst")
    print(f"{path}\nname it in the RM's configuration: [resourcemanager] runtime_image = \"{digest}\"")
    return 0


def _user_show(path: Path) -> int:
    import datetime

    from cortex_rm.user_credential import CredentialError, load_credential
    from cortex_rm.yarn_api.delegation_tokens import read_fs_identifier

    try:
        credential = load_credential(path)
    except CredentialError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
    ident = read_fs_identifier(credential.fs.identifier)
    expires = datetime.datetime.fromtimestamp(ident.max_ms / 1000, datetime.timezone.utc)
    print(f"user      {ident.owner}")
    print(f"max date  {expires:%Y-%m-%d %H:%M:%S} UTC (renew it before then: hadoop dtutil renew; the RM says how often)")
    print(f"REST      Hadoop-YARN-RM-Delegation-Token: {credential.rest_header()}")
    print(f"WebHDFS   delegation={credential.webhdfs_delegation()}")
    return 0


def _user_command(args: argparse.Namespace) -> int:
    if args.user_command == "show":
        return _user_show(args.credential)
    from cortex_rm import local_cluster
    from cortex_rm.user_credential import CredentialError, load_credential, request_credential, revoke_user, write_private
    from cortex_rm.yarn.addresses import HostPort, MalformedAddress

    try:
        if args.workdir is not None:
            web = local_cluster.rm_addresses(args.workdir).webapp
            admin = load_credential(args.admin_credential) if args.admin_credential else local_cluster.admin_credential(args.workdir)
        else:
            if args.admin_credential is None:
                print("cortex-rm: --admin-credential FILE is needed with --rm-web", file=sys.stderr)
                return 2
            web, admin = HostPort.parse(args.rm_web), load_credential(args.admin_credential)
        if args.user_command == "add":
            write_private(args.out, request_credential(web, admin, args.name))
            print(f"wrote {args.name}'s credential to {args.out}; give it to them for `cortex-rm client-config --credential`")
        else:
            count = revoke_user(web, admin, args.name)
            print(f"revoked {args.name}: {count} token(s) no longer valid")
    except (local_cluster.LocalClusterError, MalformedAddress, CredentialError, OSError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `cortex-rm ... | head` ends quietly
    args = _parser().parse_args(argv)
    if args.command == "node" and args.action == "leave":
        from cortex_rm.node_leave_cli import leave_command

        return leave_command(args.config, args.workdir, args.node, args.timeout)
    if args.command == "node":
        from cortex_rm.config import ConfigError, load_config
        from cortex_rm.node import run_node
        from cortex_rm.roles.node_caps import hold_hangups

        hold_hangups()  # (a reload before the node is ready must not end it)
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
                try:
                    rm_config = args.rm_config.read_text() if args.rm_config is not None else ""
                except OSError as e:
                    raise local_cluster.LocalClusterError(f"cannot read --rm-config: {e}") from None
                local_cluster.up(
                    args.workdir, args.nodes, args.timeout, spark_archive=not args.no_spark_upload, isolated=args.isolated,
                    rm_config=rm_config, rm_standbys=args.rm_standbys, nm_recovery=args.nm_recovery,
                )
            else:
                local_cluster.down(args.workdir)
        except local_cluster.LocalClusterError as e:
            print(f"cortex-rm: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "ring":
        from cortex_rm.ring_status import ring_command

        return ring_command(args.workdir, args.address, args.all_nodes, sys.stdout, timeout=args.timeout)
    if args.command == "image":
        return _image_command(args)
    if args.command == "payouts":
        from cortex_rm.ledger_cli import payouts_command

        return payouts_command(args.workdir, args.rm_web, args.start, args.end, args.json)
    if args.command == "ledger":
        from cortex_rm.ledger_cli import verify_command

        return verify_command(args.workdir, args.config, args.url)
    if args.command == "user":
        return _user_command(args)
    if args.command == "contributor":
        from cortex_rm.contributor import install_command, uninstall_command

        if args.action == "install":
            return install_command(
                args.root, args.introducer, args.resource_manager, args.host, args.cpus, args.memory_mb, args.disk_gb,
                args.force,
            )
        return uninstall_command(args.root)
    if args.command == "event":
        from cortex_rm.event_cli import event_command

        return event_command(args)
    if args.command == "client-config":
        return _client_config(args)
    raise AssertionError(args.command)


def _client_config(args: argparse.Namespace) -> int:
    from cortex_rm import local_cluster
    from cortex_rm.client_config import installed_spark_home, write_client_config
    from cortex_rm.rm_lookup import RmLookupError, resolve
    from cortex_rm.user_credential import CredentialError, load_credential
    from cortex_rm.webhdfs_client import WebHdfsError
    from cortex_rm.yarn.addresses import HostPort, MalformedAddress

    if args.credential is None and args.workdir is None:
        print("cortex-rm: --credential FILE is needed with --rm (ask the cluster's admin for one)", file=sys.stderr)
        return 2
    try:
        if args.workdir is not None:
            rms = local_cluster.all_rm_addresses(args.workdir)
            credential = load_credential(args.credential or args.workdir / local_cluster.USER_TOKEN)
        else:
            # loaded first: the RMs a node's directory names are verified with it before anything is written
            credential = load_credential(args.credential)
            given = [HostPort.parse(part.strip()) for value in args.rm for part in value.split(",") if part.strip()]
            if not given:
                raise MalformedAddress("no address given")
            # any node's web address names every RM (its RM directory, each RM verified); an RM's client address itself
            rms = resolve(given, credential.fs)
    except (CredentialError, local_cluster.LocalClusterError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    except MalformedAddress as e:
        print(f"cortex-rm: --rm: {e}", file=sys.stderr)
        return 2
    except RmLookupError as e:
        print(f"cortex-rm: --rm: {e}", file=sys.stderr)
        return 1
    try:
        written = write_client_config(args.out, rms, credential, installed_spark_home(), upload_spark=not args.no_spark_upload)
    except CredentialError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    except WebHdfsError as e:
        print(f"cortex-rm: uploading Spark's jars failed: {e}", file=sys.stderr)
        print("cortex-rm: check that the cluster is up, or pass --no-spark-upload (single machine only)", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"use it with: export HADOOP_CONF_DIR={args.out.resolve()} SPARK_CONF_DIR={args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
