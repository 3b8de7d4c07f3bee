"""``cortex-rm ring``: the ring as a node sees it (``GET /ws/v1/ring``, see ``yarn_api/ring_rest.py``).

* ``fetch_ring(address, timeout)`` reads one node's ring view over HTTP; every
  failure is a ``RingStatusError`` naming the address and what to check.
* ``ring_addresses_in(workdir)`` finds the web addresses of the running nodes of a
  local cluster's work dir (or of one node's state dir) from their ``ready.json``.
* ``format_ring(snapshot)`` renders a view as a table for people.
* ``ring_command(...)`` is the subcommand: one node's view, or every node's with
  ``--all``; exit 0, or 2 with the errors on stderr.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final, TextIO

from cortex_rm.yarn.addresses import HostPort, MalformedAddress

READY_FILE: Final = "ready.json"  # as cortex_rm.node.READY_FILE (not imported: node.py pulls in every role)
CLUSTER_FILE: Final = "cluster.json"  # as cortex_rm.local_cluster.CLUSTER_FILE
RING_PATH: Final = "/ws/v1/ring"
DEFAULT_TIMEOUT: Final = 5.0

# Where a node's ready.json says its ring view is served, best first: the ring's own
# status port when the node publishes one, else the web sites it is mounted on.
WEB_ADDRESS_NAMES: Final = (
    "ring.status_address",
    "nodemanager.webapp_address",
    "resourcemanager.webapp_address",
)
SHORT_ID: Final = 10  # hex digits of a ring id shown in tables (as Peer.short)
_STATUSES: Final = ("alive", "suspect", "dead", "left")
# The "refusals" counts as the header shows them: JSON name, what it counts.
_REFUSALS: Final = (
    ("rumours", "rumour(s)"),
    ("records", "record(s)"),
    ("gossip", "gossip item(s)"),
    ("senders", "envelope(s) from a key without valid puzzle or work"),
    ("rateLimited", "over rate limits"),
    ("refutedDeathClaims", "death claim(s) refuted"),
)
_START_HINT: Final = (
    "start it with `cortex-rm node --config FILE` (or a local cluster with "
    "`cortex-rm local-cluster up --workdir DIR`)"
)


class RingStatusError(Exception):
    """A ring view could not be found, fetched or read; the message says where and what to check."""


# ------------------------------------------------------------------ fetching


def fetch_ring(address: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """The ring view the node at ``address`` (its web ``host:port``) serves: ``{"ring": {...}}``.

    Raises ``RingStatusError`` when the node cannot be reached, does not answer
    within ``timeout`` seconds, has not started its ring, or answers something that
    is not a ring view.
    """
    try:
        HostPort.parse(address)
    except MalformedAddress as e:
        raise RingStatusError(f"the node's address: {e} (give the node's web address, e.g. 127.0.0.1:8042)") from None
    url = f"http://{address}{RING_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise _http_error(address, e) from None
    except urllib.error.URLError as e:
        raise _unreachable(address, e.reason, timeout) from None
    except (TimeoutError, socket.timeout) as e:
        raise _unreachable(address, e, timeout) from None
    except (OSError, ValueError) as e:  # a reset connection, a malformed answer
        raise RingStatusError(f"reading {url} failed: {e}; is {address} a Cortex node's web address?") from None
    try:
        document = json.loads(raw)
    except ValueError:
        raise RingStatusError(f"{url} did not answer JSON; is {address} a Cortex node's web address?") from None
    problem = snapshot_problem(document)
    if problem is not None:
        raise RingStatusError(
            f"{url} did not answer a ring view ({problem}); is the node running this version of Cortex?"
        )
    view: dict[str, Any] = document  # a JSON object, checked just above
    return view


def _unreachable(address: str, reason: object, timeout: float) -> RingStatusError:
    if isinstance(reason, ConnectionRefusedError):
        return RingStatusError(
            f"cannot reach the node at {address}: connection refused; is the node running? {_START_HINT}"
        )
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return RingStatusError(
            f"the node at {address} did not answer within {timeout:g} s; "
            "is it overloaded or stopped (SIGSTOP), or is a firewall dropping the connection?"
        )
    if isinstance(reason, socket.gaierror):
        return RingStatusError(f"cannot resolve the host of {address}: {reason.strerror}; check the address")
    text = getattr(reason, "strerror", None) or str(reason)
    return RingStatusError(
        f"cannot reach the node at {address}: {text}; check the address and that the node is running"
    )


def _http_error(address: str, error: urllib.error.HTTPError) -> RingStatusError:
    """A non-2xx answer, with the node's ``RemoteException`` message when it sent one."""
    message = ""
    try:
        body = json.loads(error.read())
        message = str(body["RemoteException"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        pass
    said = f": {message}" if message else ""
    if error.code == 503:
        return RingStatusError(
            f"the node at {address} has not started its ring yet{said}; wait for it to join, or see the node's log"
        )
    if error.code == 404:
        return RingStatusError(
            f"the node at {address} serves no ring view at {RING_PATH} (HTTP 404){said}; is it the node's "
            "web address (ring.status_address or nodemanager.webapp_address in its ready.json) "
            "and does the node run the ring?"
        )
    return RingStatusError(f"the node at {address} answered {RING_PATH} with HTTP {error.code}{said}")


def snapshot_problem(document: object) -> str | None:
    """Why ``document`` is not a ring view as ``ring_view_to_json`` writes it, or ``None`` if it is."""
    if not isinstance(document, dict) or not isinstance(document.get("ring"), dict):
        return 'no "ring" object'
    ring = document["ring"]
    expected: dict[str, type | tuple[type, ...]] = {
        "node": dict,
        "state": str,
        "incarnation": int,
        "predecessor": (dict, type(None)),
        "successors": list,
        "fingerCount": int,
        "records": int,
        "members": list,
    }
    for key, kind in expected.items():
        if not isinstance(ring.get(key), kind):
            return f'"ring.{key}" missing or of the wrong type'
    refusals = ring.get("refusals", {})  # (absent from nodes older than the counters)
    if not isinstance(refusals, dict) or not all(isinstance(n, int) for n in refusals.values()):
        return '"ring.refusals" is not an object of counts'
    predecessor = [ring["predecessor"]] if ring["predecessor"] else []
    peers = [ring["node"], *ring["successors"], *ring["members"], *predecessor]
    for peer in peers:
        if not (isinstance(peer, dict) and isinstance(peer.get("id"), str) and isinstance(peer.get("address"), str)):
            return "a peer without an id and an address"
    for member in ring["members"]:
        if not isinstance(member.get("status"), str) or not isinstance(member.get("incarnation"), int):
            return "a member without a status and an incarnation"
    return None


# ------------------------------------------------------------------ finding nodes


def _natural_key(name: str) -> list[Any]:
    """node2 before node10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _web_address(ready: Path) -> str:
    try:
        addresses = json.loads(ready.read_text())
    except OSError as e:
        raise RingStatusError(f"cannot read {ready}: {e.strerror}") from None
    except ValueError:
        raise RingStatusError(f"{ready} is not JSON; is the node still starting? try again in a moment") from None
    if isinstance(addresses, dict):
        for name in WEB_ADDRESS_NAMES:
            if isinstance(addresses.get(name), str):
                return str(addresses[name])
    raise RingStatusError(
        f"{ready} names no web address ({', '.join(WEB_ADDRESS_NAMES)}); the node serves no ring view"
    )


def ring_addresses_in(workdir: Path) -> list[str]:
    """The web address of every running node in ``workdir``, in node order.

    ``workdir`` is a local cluster's work dir (one state dir per node: ``node1``,
    ``node2``...) or one node's state dir.  A node counts as running when its state
    dir holds ``ready.json``; the address is its ``ring.status_address``, else its
    ``nodemanager.webapp_address``, else its ``resourcemanager.webapp_address``.
    """
    if not workdir.is_dir():
        raise RingStatusError(f"{workdir} is not a directory; give a local cluster's --workdir or a node's state_dir")
    if (workdir / READY_FILE).is_file():
        return [_web_address(workdir / READY_FILE)]
    readies = sorted(
        (d / READY_FILE for d in workdir.iterdir() if d.is_dir() and (d / READY_FILE).is_file()),
        key=lambda p: _natural_key(p.parent.name),
    )
    if readies:
        return [_web_address(ready) for ready in readies]
    if (workdir / CLUSTER_FILE).is_file():
        raise RingStatusError(
            f"the local cluster in {workdir} is not running (no node has a {READY_FILE}); "
            f"start it with: cortex-rm local-cluster up --workdir {workdir}"
        )
    raise RingStatusError(
        f"no running node in {workdir}: neither it nor its subdirectories hold a {READY_FILE}; "
        "give a running local cluster's --workdir or a running node's state_dir, or the node's --address"
    )


# ------------------------------------------------------------------ formatting


def _short(peer: dict[str, Any]) -> str:
    return f"{peer['id'][:SHORT_ID]}@{peer['address']}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_ring(snapshot: dict[str, Any]) -> str:
    """``snapshot`` (as ``fetch_ring`` returns it) as text: a header about the node, then its members.

    The member table lists this node and every peer it knows of, clockwise from this
    node (so its successors come first and its predecessor last), each marked
    ``me``, ``successor #k`` or ``predecessor``.  A successor or predecessor that
    membership has not reported yet is listed with status ``-``.  This node's own
    status is ``alive`` unless it has left the ring.
    """
    ring = snapshot["ring"]
    me = ring["node"]
    predecessor = ring["predecessor"]
    successors = ring["successors"]
    counts = {s: 0 for s in _STATUSES}
    for member in ring["members"]:
        counts[member["status"]] = counts.get(member["status"], 0) + 1
    lines = [
        f"ring view of {_short(me)}: state {ring['state']}, incarnation {ring['incarnation']}, "
        f"{ring['fingerCount']} finger(s), {ring['records']} record(s)",
        f"  predecessor  {_short(predecessor) if predecessor else '(none)'}",
        f"  successors   {', '.join(_short(p) for p in successors) if successors else '(none)'}",
        f"  members      {len(ring['members'])} known: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
    ]
    if "refusals" in ring:
        lines.append("  refused      " + ", ".join(f"{ring['refusals'].get(key, 0)} {what}" for key, what in _REFUSALS))
    lines.append("")
    # One row per ring id: this node, the members, and any neighbour membership has not reported.
    me_key = (me["id"], me["address"])
    rows: dict[tuple[str, str], list[str]] = {
        me_key: [me["id"], me["address"], "left" if ring["state"] == "left" else "alive", str(ring["incarnation"])]
    }
    for member in ring["members"]:
        key = (member["id"], member["address"])
        rows[key] = [*key, member["status"], str(member["incarnation"])]
    for peer in [*successors, *([predecessor] if predecessor else [])]:
        rows.setdefault((peer["id"], peer["address"]), [peer["id"], peer["address"], "-", "-"])
    marks: dict[tuple[str, str], list[str]] = {key: [] for key in rows}
    marks[me_key].append("me")
    for member in ring["members"]:
        if member.get("addressVerified") is False:  # (absent from an older node's answer)
            marks[(member["id"], member["address"])].append("address unproven")
    for k, peer in enumerate(successors, start=1):
        marks[(peer["id"], peer["address"])].append(f"successor #{k}")
    if predecessor:
        marks[(predecessor["id"], predecessor["address"])].append("predecessor")
    # Clockwise from this node: ids after ours in increasing order, then those before it.
    order = sorted(rows, key=lambda key: (0 if key == me_key else 1 if key[0] >= me["id"] else 2, key))
    table = [["ID", "ADDRESS", "STATUS", "INCARNATION", "ROLE"]]
    table += [[rows[k][0][:SHORT_ID], rows[k][1], rows[k][2], rows[k][3], ", ".join(marks[k])] for k in order]
    lines += _table(table)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the subcommand


def ring_command(
    workdir: Path | None,
    address: str | None,
    all_nodes: bool,
    out: TextIO,
    *,
    err: TextIO | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """``cortex-rm ring``: print the ring view of one node, or of every node of ``workdir`` with ``all_nodes``.

    The node is ``address`` if given, else the first node found in ``workdir``.
    With ``all_nodes`` a node that cannot be read is reported and the others are
    still printed.  Returns 0, or 2 when any view could not be printed (the
    reasons go to ``err``, stderr by default).
    """
    err = sys.stderr if err is None else err
    try:
        if address is not None:
            addresses = [address]
        elif workdir is not None:
            addresses = ring_addresses_in(workdir)
            if not all_nodes:
                addresses = addresses[:1]
        else:
            raise RingStatusError(
                "say which node: --workdir DIR (a local cluster or a node's state dir) or --address HOST:PORT"
            )
    except RingStatusError as e:
        print(f"cortex-rm: {e}", file=err)
        return 2
    status = 0
    printed = 0
    for addr in addresses:
        try:
            text = format_ring(fetch_ring(addr, timeout))
        except RingStatusError as e:
            print(f"cortex-rm: {e}", file=err)
            status = 2
            continue
        if printed:
            out.write("\n")
        if len(addresses) > 1:
            out.write(f"== {addr} ==\n")
        out.write(text)
        printed += 1
    return status
