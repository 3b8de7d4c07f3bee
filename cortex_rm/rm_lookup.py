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

**Trust.**  The directory is the asked node's word, over plain HTTP, and the RMs it names would get the
user's credential (the Spark upload, and every Hadoop client using the written configuration).  So
``resolve`` verifies each RM a directory names before it is written or sent anything
(``rm_verification.py``): the RM must prove, for a fresh nonce and the addresses listed, that it holds
the key her credential was issued with (``yarn/rm_proof.py``); the question carries her token's
identifier, never its password.  An RM that fails is dropped, saying so; if none passes, nothing is
written.  A hostile node can thus only leave RMs out (or make the lookup fail), not add its own.  RMs
typed as client addresses (``--rm`` an IPC port, or a port that does not answer HTTP) are the user's
own word and trusted as before.  Each ``--rm`` address's lookup, its RMs' proofs included, ends within
``LOOKUP_DEADLINE_S``, whatever the servers do; each read within the timeout too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
import time
from dataclasses import dataclass
from typing import Any

from cortex_rm.client_config import RMAddresses
from cortex_rm.client_http import AnswerTooLong, Broken, Unreachable, exchange
from cortex_rm.rm_verification import Verdict, verify
from cortex_rm.roles.rm_directory import DIRECTORY_PATH
from cortex_rm.yarn.addresses import HostPort, MalformedAddress
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto

DIRECTORY_MAX_BYTES = 64 * 1024  # a directory of MAX_RMS RMs is ~16 KiB
MAX_RMS = 64
DEFAULT_TIMEOUT_S = 3.0
#: The most one ``--rm`` address's lookup takes: its directory and every proof of the RMs it names.
LOOKUP_DEADLINE_S = 15.0
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


def look_up(
    address: HostPort, timeout_s: float = DEFAULT_TIMEOUT_S, deadline: float | None = None
) -> Directory | Unanswered | None:
    """Ask ``address`` for the RM directory (by ``deadline``, ``time.monotonic()``, if given): a ``Directory``;
    None if it is an RM's client port; ``Unanswered`` if it did not answer HTTP; RmLookupError otherwise
    (module docstring)."""
    try:
        answer = exchange(
            str(address), "GET", DIRECTORY_PATH, None, {"Accept": "application/json"}, timeout_s,
            max_bytes=DIRECTORY_MAX_BYTES, deadline=deadline,
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


def verdict_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """What ``client-config`` says of each RM's proof, by the directory's rm-ids."""
    lines = []
    for k, verdict in enumerate(verdicts, start=1):
        if verdict.failure is None:
            lines.append(f"  rm{k}  web {verdict.rm.webapp}: verified (it holds the key your credential was issued with)")
        else:
            lines.append(f"  rm{k}  web {verdict.rm.webapp}: NOT verified, dropped (nothing is sent to it): {verdict.failure}")
    return lines


def resolve(
    given: Sequence[HostPort], token: TokenProto | None, timeout_s: float = DEFAULT_TIMEOUT_S,
    say: Callable[[str], None] = print, deadline_s: float = LOOKUP_DEADLINE_S,
) -> list[RMAddresses]:  # fmt: skip
    """The RMs to configure for ``--rm`` ``given``: a node's web address stands for the RMs its directory
    lists that prove they hold the key of ``token`` (the user's WebHDFS token: ``rm_verification.verify``);
    any other address is an RM's client address (YARN's default other ports).  In the order given,
    each RM once (by client address).  RmLookupError from ``look_up``, if a directory lists no RM, or if none
    of the RMs it lists is verified (module docstring)."""
    found: list[RMAddresses] = []
    for address in given:
        deadline = time.monotonic() + deadline_s
        result = look_up(address, timeout_s, deadline)
        if isinstance(result, Directory):
            if not result.rms:
                raise RmLookupError(
                    f"the node at {address} has not found any RM-eligible node's addresses in the ring yet: "
                    "try again in a few seconds"
                )
            if token is None:
                raise RmLookupError(f"{address} is a node's web address: verifying the RMs it names needs your credential")
            for line in describe(result, address):
                say(line)
            verdicts = verify(result.addresses, token, timeout_s, deadline)
            for line in verdict_lines(verdicts):
                say(line)
            if not any(v.verified for v in verdicts):
                raise RmLookupError(
                    f"none of the ResourceManagers the node at {address} names proved that it holds the key your "
                    "credential was issued with (see above), so nothing was sent to them or written.  The node may be "
                    "hostile, or your credential is not this cluster's or has expired: give the active RM's client "
                    "address you know (--rm HOST:PORT), or ask the cluster's operator for a node you can trust"
                )
            found += [v.rm for v in verdicts if v.verified]
        else:
            if isinstance(result, Unanswered):
                say(f"{address}: {result.reason}; taken as a ResourceManager's client address")
            found.append(RMAddresses.from_client_address(address))
    unique: dict[HostPort, RMAddresses] = {}
    for rm in found:
        unique.setdefault(rm.client, rm)
    return list(unique.values())
