"""``client-config --rm HOST:PORT``: find the cluster's ResourceManagers from any one node's address.

Every node that knows the RM-eligible nodes serves their directory (``roles/rm_directory.py``) at
``/ws/v1/cortex/resourcemanagers`` on its web sites.  ``look_up(address)`` asks ``address`` for it once
(plain HTTP through ``client_http.exchange``, a short timeout, the answer read up to
``DIRECTORY_MAX_BYTES``) and tells apart what answered:

* **a node's web port**: 200 with ``{"resourceManagers": ...}``.  ``parse_directory`` validates it
  (every address host:port with a plain host name or IP literal, ring ids 40 hex digits, at most
  ``MAX_RMS`` RMs, no duplicates, ``active`` naming the entry marked active) into a ``Directory``:
  the eligible RMs in the order the cluster configured them (the preferred first, which is the order
  of the HA ``rm-ids``) and the active's ring id.  Anything else in it is ``RmLookupError``;
* **an RM's client (IPC) port**: Hadoop's IPC server answers an HTTP GET with a 404 saying it is an
  IPC port (``ipc_wire.HTTP_NOT_FOUND_REPLY``, as Hadoop's ``Server`` does): ``None``, the address is
  the RM's client address, as before this lookup existed;
* **nothing** (refused: a standby binds no RM port; no answer within the timeout; the connection
  dropped): ``None`` too, with the reason in ``Unanswered`` for the caller to say;
* a node that has not found the RMs in the ring yet (503), or any other answer: ``RmLookupError`` saying
  which address to give instead.

**Trust.**  The directory is the asked node's word, over plain HTTP: the RMs it names get the user's
credential (the Spark upload, and every Hadoop client using the written configuration).  So the node
named must be one the user trusts as she would trust an RM's address she types (her own node, the
operator's), and ``resolve`` says so.  Verifying each named RM (a proof, from the RM, that it holds the
key her token was issued with, before anything is sent) is not built yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cortex_rm.client_config import RMAddresses
from cortex_rm.client_http import AnswerTooLong, Broken, Unreachable, exchange
from cortex_rm.roles.rm_directory import DIRECTORY_PATH
from cortex_rm.yarn.addresses import HostPort, MalformedAddress

DIRECTORY_MAX_BYTES = 64 * 1024  # a directory of MAX_RMS RMs is ~16 KiB
MAX_RMS = 64
DEFAULT_TIMEOUT_S = 3.0
IPC_PORT_SIGNATURE = b"Hadoop IPC port"  # in the 404 a Hadoop IPC server answers an HTTP request with

# A host name (letters, digits, dots, hyphens) or an IP literal (IPv6 in brackets): nothing a URL,
# an XML file or a shell could read as more than an address.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\]")
_RING_ID = re.compile(r"[0-9a-f]{40}")
_ADDRESS_FIELDS = (("address", "client"), ("schedulerAddress", "scheduler"), ("webappAddress", "webapp"))


class RmLookupError(Exception):
    """The address answered, but not usefully; the message says what to give instead."""


@dataclass(frozen=True)
class FoundRM:
    """One RM-eligible node as the directory lists it."""

    ring_id: str
    rm: RMAddresses
    active: bool


@dataclass(frozen=True)
class Directory:
    """A node's directory: the eligible RMs in the configured order (the preferred first)."""

    rms: tuple[FoundRM, ...]
    active: str | None  # the active's ring id, if the node knows it

    @property
    def addresses(self) -> list[RMAddresses]:
        return [found.rm for found in self.rms]


@dataclass(frozen=True)
class Unanswered:
    """The address did not answer HTTP: ``reason`` (refused, timed out, ...)."""

    reason: str


def node_address(text: str, what: str) -> HostPort:
    """``host:port`` with a plain host (``_HOST``) and a port in 1..65535; RmLookupError naming ``what``."""
    try:
        address = HostPort.parse(text)
    except MalformedAddress:
        address = None
    if address is None or not _HOST.fullmatch(address.host) or address.port == 0:
        raise RmLookupError(f"{what} is {text[:80]!r}, not host:port")
    return address


def parse_directory(body: bytes) -> Directory:
    """The directory a node served (module docstring); RmLookupError saying what is wrong with it."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise RmLookupError("the answer is not JSON") from None
    section = document.get("resourceManagers") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise RmLookupError("the answer has no resourceManagers object")
    listed, active = section.get("rm"), section.get("active")
    if not isinstance(listed, list):
        raise RmLookupError("resourceManagers.rm is not a list")
    if len(listed) > MAX_RMS:
        raise RmLookupError(f"resourceManagers.rm lists {len(listed)} RMs, more than {MAX_RMS}")
    if active is not None and not (isinstance(active, str) and _RING_ID.fullmatch(active)):
        raise RmLookupError("resourceManagers.active is neither null nor a ring id")
    rms = tuple(_entry(entry, k) for k, entry in enumerate(listed))
    for kind, values in (("ring id", [f.ring_id for f in rms]), ("client address", [f.rm.client for f in rms])):
        if len(set(values)) != len(values):
            raise RmLookupError(f"resourceManagers.rm lists a {kind} twice")
    marked = [found.ring_id for found in rms if found.active]
    if marked != ([] if active is None else [active]):
        raise RmLookupError("resourceManagers.active does not name the one entry marked active")
    return Directory(rms, active)


def _entry(entry: Any, k: int) -> FoundRM:
    where = f"resourceManagers.rm[{k}]"
    if not isinstance(entry, dict):
        raise RmLookupError(f"{where} is not an object")
    ring_id, active = entry.get("ringId"), entry.get("active")
    if not (isinstance(ring_id, str) and _RING_ID.fullmatch(ring_id)):
        raise RmLookupError(f"{where}.ringId is not a ring id (40 hex digits)")
    if not isinstance(active, bool):
        raise RmLookupError(f"{where}.active is not true or false")
    addresses = {}
    for name, role in _ADDRESS_FIELDS:
        value = entry.get(name)
        if not isinstance(value, str):
            raise RmLookupError(f"{where}.{name} is not a string")
        addresses[role] = node_address(value, f"{where}.{name}")
    return FoundRM(ring_id, RMAddresses(**addresses), active)


def classify(status: int, body: bytes, address: str) -> Directory | None:
    """What a node's HTTP answer to ``GET DIRECTORY_PATH`` is (module docstring)."""
    if status == 200:
        try:
            return parse_directory(body)
        except RmLookupError as e:
            raise RmLookupError(f"{address} answered a malformed RM directory: {e}") from None
    if status == 404 and IPC_PORT_SIGNATURE in body:
        return None
    if status == 503:
        raise RmLookupError(
            f"the node at {address} has not found the ResourceManagers in the ring yet: "
            "try again in a few seconds, or give the RM's client address"
        )
    raise RmLookupError(
        f"{address} answered neither as a Cortex node's web port nor as a ResourceManager's client port "
        f"(HTTP {status} for {DIRECTORY_PATH}): give a node's web address (its [ring] status_address or "
        "[nodemanager] webapp_address) or the RM's client address ([resourcemanager] address)"
    )


def look_up(address: HostPort, timeout_s: float = DEFAULT_TIMEOUT_S) -> Directory | Unanswered | None:
    """Ask ``address`` for the RM directory: a ``Directory``; None if it is an RM's client port;
    ``Unanswered`` if it did not answer HTTP; RmLookupError otherwise (module docstring)."""
    try:
        answer = exchange(
            str(address), "GET", DIRECTORY_PATH, None, {"Accept": "application/json"}, timeout_s,
            max_bytes=DIRECTORY_MAX_BYTES,
        )  # fmt: skip
    except Unreachable as e:
        return Unanswered(f"no connection: {e}")
    except AnswerTooLong:
        raise RmLookupError(f"{address} answered more than {DIRECTORY_MAX_BYTES} bytes: not an RM directory") from None
    except Broken as e:
        return Unanswered(f"no HTTP answer: {e}")
    return classify(answer.status, answer.body, str(address))


def describe(directory: Directory, asked: HostPort) -> list[str]:
    """What ``client-config`` says it found: one line per RM, in the order of the rm-ids."""
    count = len(directory.rms)
    lines = [f"{asked} is a Cortex node; it knows {count} ResourceManager{'s' if count != 1 else ''}:"]
    for k, found in enumerate(directory.rms, start=1):
        state = "active" if found.active else "standby"
        lines.append(
            f"  rm{k}  client {found.rm.client}  web {found.rm.webapp}  ({state}, ring id {found.ring_id[:10]})"
        )
    if directory.active is None:
        lines.append("  (the node does not know which is active; the clients try them in turn)")
    return lines


def resolve(
    given: Sequence[HostPort], timeout_s: float = DEFAULT_TIMEOUT_S, say: Callable[[str], None] = print
) -> list[RMAddresses]:
    """The RMs to configure for ``--rm`` ``given``: a node's web address stands for the RMs its directory
    lists; any other address is an RM's client address (YARN's default other ports).  In the order given,
    each RM once (by client address).  RmLookupError from ``look_up``, or if a directory lists no RM."""
    found: list[RMAddresses] = []
    for address in given:
        result = look_up(address, timeout_s)
        if isinstance(result, Directory):
            if not result.rms:
                raise RmLookupError(
                    f"the node at {address} has not found any RM-eligible node's addresses in the ring yet: "
                    "try again in a few seconds"
                )
            for line in describe(result, address):
                say(line)
            say(f"(these are the addresses {address} gives: your credential goes to them, so name a node you trust, "
                "as you would an RM's address)")
            found += result.addresses
        else:
            if isinstance(result, Unanswered):
                say(f"{address}: {result.reason}; taken as a ResourceManager's client address")
            found.append(RMAddresses.from_client_address(address))
    unique: dict[HostPort, RMAddresses] = {}
    for rm in found:
        unique.setdefault(rm.client, rm)
    return list(unique.values())
