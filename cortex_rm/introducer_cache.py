"""The introducers a client has learned, kept on disk between runs (``cortex_rm.client``).

Any node of a cluster answers ``GET /ws/v1/cortex/events/introducers`` with the web
addresses of other nodes and of its ResourceManager.  The client keeps them here so
that a later run still finds the cluster when the nodes it was given have gone.

The file holds one group of addresses per cluster, keyed by the cluster's
ResourceManager address as its nodes name it::

    {"clusters": [{"resourceManager": "h:8088", "introducers": ["h1:8042", ...], "updatedMs": 1700000000000}]}

A client is offered only the groups that contain one of the endpoints it was
given, so a user of two clusters never sends one cluster's credential to the
other's nodes.  The file is bounded (``MAX_CLUSTERS`` groups of ``MAX_INTRODUCERS``
addresses, the least recently updated dropped first; a file over ``MAX_FILE_BYTES``
is not read), written atomically (a private temporary file renamed over it, mode
600, in a directory of mode 700), and a file that cannot be read or parsed is
ignored (and replaced at the next write): the cache only ever saves a lookup.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cortex_rm.yarn.addresses import HostPort, MalformedAddress

CACHE_FILE = "introducers.json"
MAX_CLUSTERS = 16
MAX_INTRODUCERS = 64
MAX_ADDRESS_CHARS = 262  # a 255-character host name, a colon and a port
MAX_FILE_BYTES = 256 * 1024


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cortex-rm`` (``~/.cache/cortex-rm``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortex-rm"


def valid_address(text: object) -> str | None:
    """``text`` as a ``host:port`` address, or None if it is not one."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_CHARS or any(c.isspace() or c in "/?#@" for c in text):
        return None
    try:
        return str(HostPort.parse(text))
    except MalformedAddress:
        return None


@dataclass(frozen=True)
class ClusterIntroducers:
    """What one cluster's nodes said: its ResourceManager's web address and its nodes'."""

    resource_manager: str
    introducers: tuple[str, ...]
    updated_ms: int

    def addresses(self) -> tuple[str, ...]:
        """The nodes, then the ResourceManager (which answers the same calls)."""
        return tuple(_unique([*self.introducers, self.resource_manager]))


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address, None)
    return list(seen)


class IntroducerCache:
    """The cache file in ``directory`` (see the module doc)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CACHE_FILE

    def load(self) -> list[ClusterIntroducers]:
        """Every group the file holds, most recently updated first; [] if it is missing or unreadable."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            document = json.loads(data) if len(data) <= MAX_FILE_BYTES else None
        except (OSError, ValueError, RecursionError):
            return []
        entries = document.get("clusters") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            return []
        groups = [g for g in (_group(e) for e in entries[:MAX_CLUSTERS]) if g is not None]
        return sorted(groups, key=lambda g: -g.updated_ms)

    def candidates(self, given: Sequence[str]) -> list[str]:
        """The cached addresses of the clusters that ``given`` belongs to, not in ``given``."""
        wanted = set(given)
        found = [a for g in self.load() if wanted & set(g.addresses()) for a in g.addresses()]
        return [a for a in _unique(found) if a not in wanted]

    def remember(self, learned: ClusterIntroducers) -> None:
        """Put ``learned`` in place of its cluster's group and write the file (``OSError`` if it cannot)."""
        others = [g for g in self.load() if g.resource_manager != learned.resource_manager]
        groups = [learned, *others][:MAX_CLUSTERS]
        document = {
            "clusters": [
                {"resourceManager": g.resource_manager, "introducers": list(g.introducers), "updatedMs": g.updated_ms}
                for g in groups
            ]
        }
        self._write(json.dumps(document, indent=1).encode())

    def _write(self, data: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", dir=directory)  # mode 600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def learned_from(document: object, now_ms: int) -> ClusterIntroducers | None:
    """The group an ``introducers`` answer names (its invalid addresses dropped), or None if it names no RM."""
    if not isinstance(document, dict):
        return None
    return _group({**document, "updatedMs": now_ms})


def _group(entry: object) -> ClusterIntroducers | None:
    if not isinstance(entry, dict):
        return None
    rm = valid_address(entry.get("resourceManager"))
    updated = entry.get("updatedMs")
    raw = entry.get("introducers")
    if rm is None or not isinstance(updated, int) or isinstance(updated, bool) or not isinstance(raw, list):
        return None
    addresses = [a for a in (valid_address(x) for x in raw[: MAX_INTRODUCERS * 4]) if a is not None]
    return ClusterIntroducers(rm, tuple(_unique(addresses)[:MAX_INTRODUCERS]), updated)
