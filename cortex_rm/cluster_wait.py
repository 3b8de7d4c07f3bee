"""Waiting for a local cluster's daemons: each answering on its web port, then registered with the RM."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cortex_rm.client_config import RMAddresses
from cortex_rm.node import READY_FILE
from cortex_rm.processes import alive
from cortex_rm.user_credential import UserCredential
from cortex_rm.yarn.delegation import REST_TOKEN_HEADER

#: Where an active RM keeps its admin's credential, in its state dir.
ADMIN_TOKEN = "admin.token"


class Daemon(Protocol):
    """What is waited for of a started daemon (``local_cluster.LocalNode``)."""

    @property
    def name(self) -> str: ...
    @property
    def directory(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def nm_webapp(self) -> str: ...


class LocalClusterError(Exception):
    """The local cluster could not be started or stopped; the message says what to do."""


def wait_ready(node: Daemon, timeout: float, say: Callable[[str], None]) -> None:
    """Wait until the daemon wrote its ready file and its web port answers."""
    say(f"waiting for {node.name} to answer on http://{node.nm_webapp}/ws/v1/node/info ...")
    _poll(node, READY_FILE, f"http://{node.nm_webapp}/ws/v1/node/info", lambda _: True, timeout,
          f"{node.name} did not answer within {timeout:.0f} s")  # fmt: skip


def wait_active(node: Daemon, rm: RMAddresses, timeout: float, say: Callable[[str], None]) -> None:
    """Wait until ``node`` serves as the active RM: its admin's credential written, its REST API answering as the
    active (with standbys, the eligible nodes elect it first)."""
    say(f"waiting for {node.name} to become the active ResourceManager ...")
    _poll(node, ADMIN_TOKEN, f"http://{rm.webapp}/ws/v1/cluster/info",
          lambda body: json.loads(body)["clusterInfo"].get("haState") == "ACTIVE", timeout,
          f"{node.name} did not become the active ResourceManager within {timeout:.0f} s (a majority of the "
          "eligible nodes must be up)")  # fmt: skip


def _poll(node: Daemon, file: str, url: str, accept: Callable[[bytes], bool], timeout: float, failed: str) -> None:
    """Until ``file`` is in the node's directory and ``url`` answers 200 with a body ``accept`` takes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(node.pid):
            raise LocalClusterError(f"{node.name} exited during start; see {node.directory}/logs/daemon.out")
        if (Path(node.directory) / file).exists():
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200 and accept(response.read()):
                        return
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
        time.sleep(0.1)
    raise LocalClusterError(f"{failed}; see {node.directory}/logs/daemon.out")


def wait_registered(
    rm: RMAddresses, admin: UserCredential, count: int, timeout: float, say: Callable[[str], None], states: str = "RUNNING"
) -> None:
    """Wait until the RM reports ``count`` nodes in ``states`` (RUNNING: registered and healthy;
    a node is UNHEALTHY while it has not got the runtime image); asks as the ``admin``."""
    if states != "RUNNING":
        say(f"waiting for {count} node(s) to register with the ResourceManager ...")
    url = f"http://{rm.webapp}/ws/v1/cluster/nodes?states={states}"
    deadline = time.monotonic() + timeout
    seen: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(as_admin(admin, url), timeout=2) as response:
                seen = json.load(response)["nodes"]["node"]
            if len(seen) >= count:
                return
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    reports = health_reports(rm, admin)
    raise LocalClusterError(
        f"only {len(seen)} of {count} node(s) were {states} at the ResourceManager within {timeout:.0f} s"
        + (f" ({reports})" if reports else "")
        + "; see the nodes' logs/daemon.out"
    )


def as_admin(admin: UserCredential, url: str) -> urllib.request.Request:
    """A GET of ``url`` with the admin's credential (the RM shows nodes to users only)."""
    return urllib.request.Request(url, headers={REST_TOKEN_HEADER: admin.rest_header()})


def health_reports(rm: RMAddresses, admin: UserCredential) -> str:
    """What the nodes that are not RUNNING say they wait for."""
    try:
        url = f"http://{rm.webapp}/ws/v1/cluster/nodes?states=UNHEALTHY"
        with urllib.request.urlopen(as_admin(admin, url), timeout=2) as response:
            nodes = json.load(response)["nodes"]["node"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return ""
    return "; ".join(f"{n.get('id')}: {n.get('healthReport')}" for n in nodes)
