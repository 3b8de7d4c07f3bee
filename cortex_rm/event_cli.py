"""``cortex-rm event ...``: serverless functions from the command line, through ``cortex_rm.client``.

* ``event register NAME --file F.py [--handler H] [--replicas N] [--mode first|vote] [--timeout-s T]
  [--memory-mb M] [--max-concurrency C] [--schedule S] [--grant USER ...]``
* ``event trigger NAME [--data JSON] [--async]``: the function's JSON result alone on stdout
  (``--async``: the activation id alone); a failure on stderr, exit status 1.
* ``event result ACTIVATION_ID [--wait]``: the result of an activation (exit 3 while it runs, without ``--wait``).
* ``event list``, ``event get NAME``, ``event delete NAME``, ``event logs ACTIVATION_ID``.
* ``event sign METHOD URL [--data BODY]``: the ``Authorization`` header that signs one request
  (``METHOD URL`` with exactly that body) for the node at ``URL``, for curl: nodes take no
  plain token (``events/request_proofs.py``).  It is good once, for 5 minutes.

Each takes ``--workdir DIR`` (a local cluster's: its nodes' and RM's web addresses and
``DIR/user.token``) or ``--endpoint HOST:PORT`` (repeatable), and ``--credential FILE``
(default: the work dir's ``user.token``, else ``$HADOOP_CONF_DIR/cortex-user.token``
as ``client-config`` writes it).  What the command waits for is said on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from cortex_rm.client import Activation, Cortex
from cortex_rm.client_errors import ActivationFailed, ActivationPending, CortexError
from cortex_rm.events.functions import MODES
from cortex_rm.events.request_proofs import sign
from cortex_rm.user_credential import CREDENTIAL_FILE, CredentialError, UserCredential, load_credential

#: ``event result`` without ``--wait`` on an activation still running.
EXIT_RUNNING = 3


class EventCliError(Exception):
    """The command cannot start; the message says what to give it."""


def add_event_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``event`` and its subcommands under the ``cortex-rm`` parser's ``sub``."""
    event = sub.add_parser("event", help="serverless functions: register, trigger, read results and logs")
    esub = event.add_subparsers(dest="event_command", required=True)
    register = esub.add_parser("register", help="upload a function's code and register it (a new version if it exists)")
    register.add_argument("name")
    register.add_argument("--file", type=Path, required=True, help="the code: a Python module (.py) or a zip (.zip)")
    register.add_argument(
        "--handler", default="handler", help="the function to call (default: handler; in a zip: module.function)"
    )
    register.add_argument("--replicas", type=int, default=1, help="how many nodes run each trigger (default 1)")
    register.add_argument(
        "--mode", choices=MODES, default="first", help="answer with the first reply, or the majority's (default first)"
    )
    register.add_argument("--timeout-s", type=float, help="the longest one activation may run (default: the cluster's)")
    register.add_argument("--memory-mb", type=int, help="its memory limit (default: the cluster's)")
    register.add_argument("--max-concurrency", type=int, help="its sandboxes at once per node (default: the cluster's)")
    register.add_argument("--schedule", help="fire it on a schedule: a cron expression, or 'every N s|m|h'")
    register.add_argument(
        "--grant", action="append", default=[], metavar="USER", help="a user who may trigger it (repeatable)"
    )
    trigger = esub.add_parser("trigger", help="run a function: prints its JSON result (or, --async, the activation id)")
    trigger.add_argument("name")
    trigger.add_argument("--data", default="null", metavar="JSON", help="the event, as JSON (default: null)")
    trigger.add_argument("--async", action="store_true", dest="run_async", help="do not wait: print the activation id")
    result = esub.add_parser("result", help=f"an activation's result (exit {EXIT_RUNNING} while it still runs)")
    result.add_argument("activation_id")
    result.add_argument("--wait", action="store_true", help="wait until it ends")
    listing = esub.add_parser("list", help="your functions")
    listing.add_argument("--json", action="store_true", help="their registrations as a JSON list")
    get = esub.add_parser("get", help="a function's registration, as JSON")
    get.add_argument("name")
    delete = esub.add_parser("delete", help="delete a function")
    delete.add_argument("name")
    logs = esub.add_parser("logs", help="what an activation wrote to stdout and stderr")
    logs.add_argument("activation_id")
    signer = esub.add_parser("sign", help="print the Authorization header that signs one request to a node (for curl)")
    signer.add_argument("method", type=str.upper, help="the request's method: GET, POST, DELETE")
    signer.add_argument("url", help="the whole URL, http://HOST:PORT/ws/v1/cortex/events/...[?query]")
    signer.add_argument(
        "--data", default="", metavar="BODY", help="the body, byte for byte as curl sends it (curl --data-binary)"
    )
    for p in (register, trigger, result, listing, get, delete, logs, signer):
        where = p.add_mutually_exclusive_group()
        where.add_argument("--workdir", type=Path, help="a running local cluster's work dir")
        where.add_argument(
            "--endpoint", action="append", default=[], metavar="HOST:PORT",
            help="the web address of a node or of the ResourceManager (repeatable)",
        )  # fmt: skip
        p.add_argument(
            "--credential", type=Path, metavar="FILE",
            help="your credential (default: DIR/user.token with --workdir, else $HADOOP_CONF_DIR/cortex-user.token)",
        )  # fmt: skip


def _endpoints(workdir: Path | None, given: list[str]) -> list[str]:
    if given:
        return given
    if workdir is None:
        raise EventCliError("say where the cluster is: --workdir DIR (a local cluster) or --endpoint HOST:PORT")
    from cortex_rm import local_cluster
    from cortex_rm.ring_status import RingStatusError, ring_addresses_in

    try:
        rm = str(local_cluster.rm_addresses(workdir).webapp)
        return [*ring_addresses_in(workdir), rm]
    except (local_cluster.LocalClusterError, RingStatusError) as e:
        raise EventCliError(str(e)) from None


def _credential(path: Path | None, workdir: Path | None) -> UserCredential | None:
    if path is None and workdir is not None:
        from cortex_rm.local_cluster import USER_TOKEN

        path = workdir / USER_TOKEN
    if path is None and os.environ.get("HADOOP_CONF_DIR"):
        candidate = Path(os.environ["HADOOP_CONF_DIR"]) / CREDENTIAL_FILE
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return load_credential(path)
    except CredentialError as e:
        raise EventCliError(str(e)) from None


def client_for(args: argparse.Namespace, err: IO[str]) -> Cortex:
    """The client the arguments describe (``EventCliError`` if they name no cluster)."""
    def say(line: str) -> None:
        print(line, file=err, flush=True)

    endpoints = [_split_url(args.url)[0]] if args.event_command == "sign" else _endpoints(args.workdir, args.endpoint)
    try:
        return Cortex(endpoints, _credential(args.credential, args.workdir), say=say)
    except CortexError as e:
        raise EventCliError(str(e)) from None


def _split_url(url: str) -> tuple[str, str]:
    """``http://HOST:PORT/path?query`` as (``HOST:PORT``, ``/path?query``)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.netloc or not parts.path.startswith("/"):
        raise EventCliError(f"{url!r} is not an http://HOST:PORT/... URL")
    return parts.netloc, parts.path + (f"?{parts.query}" if parts.query else "")


def _sign(args: argparse.Namespace, cortex: Cortex, out: IO[str]) -> int:
    if cortex.credential is None:
        raise EventCliError("give the credential to sign with: --credential FILE (or --workdir DIR)")
    address, target = _split_url(args.url)
    node = cortex.ring_id_of(address)
    rm = cortex.credential.rm
    body = args.data.encode("utf-8")
    proof = sign(rm.identifier, rm.password, node, args.method, address, target, body, _now_ms())
    out.write(f"Authorization: {proof}\n")
    return 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _print_json(value: Any, out: IO[str], indent: int | None = None) -> None:
    out.write(json.dumps(value, indent=indent) + "\n")


def _failed(e: ActivationFailed, err: IO[str]) -> int:
    print(f"cortex-rm: {e}", file=err)
    if e.activation_id:
        print(f"cortex-rm: its logs: cortex-rm event logs {e.activation_id}", file=err)
    return 1


def _list(functions: list[dict[str, Any]], out: IO[str]) -> None:
    rows = [["NAME", "VERSION", "MODE", "REPLICAS", "HANDLER", "SCHEDULE", "GRANTS"]]
    for f in functions:
        grants = f.get("grants") or []
        cells = [f.get(key, "") for key in ("name", "version", "mode", "replicas", "handler")]
        rows.append([*map(str, cells), str(f.get("schedule") or "-"), ",".join(map(str, grants)) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    if len(rows) == 1:
        out.write("(no functions yet: cortex-rm event register NAME --file F.py)\n")


def run(args: argparse.Namespace, cortex: Cortex, out: IO[str], err: IO[str]) -> int:
    """Carry out ``args.event_command`` with ``cortex``; the exit status."""
    command = args.event_command
    if command == "sign":
        return _sign(args, cortex, out)
    if command == "register":
        spec = cortex.register(
            args.name, args.file, handler=args.handler, replicas=args.replicas, mode=args.mode,
            timeout_s=args.timeout_s, memory_mb=args.memory_mb, max_concurrency=args.max_concurrency,
            schedule=args.schedule, grants=args.grant,
        )  # fmt: skip
        code = spec.get("code")
        code = code if isinstance(code, dict) else {}
        out.write(f"registered {spec.get('name')} version {spec.get('version')} (code {code.get('path', '?')})\n")
    elif command == "trigger":
        try:
            payload = json.loads(args.data)
        except ValueError as e:
            print(f"cortex-rm: --data is not JSON: {e}", file=err)
            return 2
        if args.run_async:
            out.write(cortex.trigger_async(args.name, payload).id + "\n")
        else:
            print(f"waiting for {args.name} to answer ...", file=err, flush=True)
            _print_json(cortex.trigger(args.name, payload), out)
    elif command == "result":
        activation = Activation(cortex, args.activation_id)
        if args.wait:
            print(f"waiting for {args.activation_id} to end ...", file=err, flush=True)
            _print_json(activation.result(), out)
        else:
            try:
                _print_json(activation.result(timeout=0), out)
            except ActivationPending:
                print(f"cortex-rm: {args.activation_id} is still running (--wait waits for it)", file=err)
                return EXIT_RUNNING
    elif command == "list":
        functions = cortex.list()
        _print_json(functions, out, 2) if args.json else _list(functions, out)
    elif command == "get":
        _print_json(cortex.get(args.name), out, 2)
    elif command == "delete":
        deleted = cortex.delete(args.name)
        out.write(f"deleted {deleted.get('deleted', args.name)} (its last version was {deleted.get('version', '?')})\n")
    elif command == "logs":
        logs = cortex.logs(args.activation_id)
        out.write(logs if not logs or logs.endswith("\n") else logs + "\n")
    else:
        raise AssertionError(command)
    return 0


def event_command(args: argparse.Namespace) -> int:
    """``cortex-rm event ...``: output on stdout, errors on stderr; 0, 1 (refused or failed), 2 (usage), 3 (running)."""
    try:
        cortex = client_for(args, sys.stderr)
        return run(args, cortex, sys.stdout, sys.stderr)
    except EventCliError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    except ActivationFailed as e:
        return _failed(e, sys.stderr)
    except CortexError as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
