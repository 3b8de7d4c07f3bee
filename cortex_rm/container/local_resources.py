"""A launch context's LocalResources in the NodeManager's own types, and the checks made before any I/O.

A ContainerLaunchContext's ``local_resources`` maps a *link name* (the name the
container sees in its work dir, e.g. ``pyspark.zip`` or ``__spark_conf__``) to a
``LocalResourceProto``: a URL, the source's size and modification time, and a type.
``yarn_api/nm_service.py`` decodes each entry into a ``RequestedResource``, as it
arrived; ``check_local_resources`` turns them into ``LocalResource``s or refuses
the launch context with a ``LocalizationError``.

Refused before any I/O: link names that are absolute, contain ``..`` or empty
components, or clash with the NodeManager's own files (``launch_container.sh``,
``container_tokens``, ``tmp``); an entry given twice, or without a URL or a timestamp.
What happens to a resource afterwards is ``localizer.py``'s.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from cortex_rm.container.launch import LAUNCH_SCRIPT, TMP_DIR, TOKENS_FILE

RESERVED_LINK_NAMES = frozenset({LAUNCH_SCRIPT, TOKENS_FILE, TMP_DIR})


class LocalizationError(Exception):
    """A resource cannot be localized; the message is the container's diagnostics."""


class ResourceType(enum.Enum):
    """YARN's LocalResourceType."""

    FILE = "FILE"
    ARCHIVE = "ARCHIVE"
    PATTERN = "PATTERN"


class Visibility(enum.Enum):
    """YARN's LocalResourceVisibility: who shares the node's cached copy."""

    PUBLIC = "PUBLIC"  # every application on the node (the source must be readable by everyone)
    PRIVATE = "PRIVATE"  # the applications of one user
    APPLICATION = "APPLICATION"  # one application


@dataclass(frozen=True)
class ResourceUrl:
    """YARN's URL record (``URLProto``)."""

    scheme: str
    file: str
    host: str = ""
    port: int = -1
    user_info: str = ""

    def __str__(self) -> str:
        """Hadoop's Path form: ``file:/abs/path``, or ``scheme://[user@]host[:port]/path``."""
        if not self.host:
            return f"{self.scheme}:{self.file}"
        user = f"{self.user_info}@" if self.user_info else ""
        port = f":{self.port}" if self.port >= 0 else ""
        return f"{self.scheme}://{user}{self.host}{port}{self.file}"

    @property
    def file_name(self) -> str:
        name = PurePosixPath(self.file).name
        return name or "resource"


@dataclass(frozen=True)
class LocalResource:
    """One entry of a CLC's ``local_resources``."""

    link_name: str
    url: ResourceUrl
    type: ResourceType
    timestamp_ms: int
    size: int = -1
    visibility: Visibility = Visibility.APPLICATION

    @property
    def cache_key(self) -> tuple[str, int, ResourceType]:
        return (str(self.url), self.timestamp_ms, self.type)


def check_link_name(name: str) -> PurePosixPath:
    """The link name as a relative path inside the work dir, or LocalizationError."""
    if not name or "\x00" in name:
        raise LocalizationError(f"invalid link name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise LocalizationError(f"link name {name!r} must be a relative path inside the container's work dir")
    if path.parts[0] in RESERVED_LINK_NAMES:
        raise LocalizationError(f"link name {name!r} is reserved by the NodeManager")
    return path


@dataclass(frozen=True)
class RequestedResource:
    """One entry of a launch context's ``local_resources`` as it arrived, before any check."""

    link_name: str
    url: ResourceUrl | None  # None: the entry names no URL
    type: ResourceType
    timestamp_ms: int | None  # None: the entry gives no timestamp
    size: int = -1
    visibility: Visibility = Visibility.APPLICATION


def check_local_resources(entries: Iterable[RequestedResource]) -> list[LocalResource]:
    """A launch context's ``local_resources``, checked (link names, URL, timestamp); LocalizationError if invalid."""
    resources: dict[str, LocalResource] = {}
    for entry in entries:
        check_link_name(entry.link_name)
        if entry.link_name in resources:
            raise LocalizationError(f"link name {entry.link_name!r} is given twice")
        if entry.url is None or not entry.url.scheme or not entry.url.file:
            raise LocalizationError(f"resource {entry.link_name!r} has no URL (scheme and file)")
        if entry.timestamp_ms is None:
            raise LocalizationError(f"resource {entry.link_name!r} has no timestamp")
        resources[entry.link_name] = LocalResource(
            link_name=entry.link_name,
            url=entry.url,
            type=entry.type,
            timestamp_ms=entry.timestamp_ms,
            size=entry.size,
            visibility=entry.visibility,
        )
    return list(resources.values())
