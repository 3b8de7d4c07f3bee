"""What startContainers asks of this node, in the NodeManager's own types, and how it is refused.

``yarn_api/nm_service.py`` decodes each ``StartContainerRequestProto`` into a
``StartRequest`` before it reaches the ``ContainerManager``; nothing below the
wire sees protobuf.  Every value is kept as it arrived (no check yet): the
manager checks them in YARN's order (the token first, then the launch
context), so a request is refused for the same reason whatever else is wrong
with it.

A refusal is a ``ContainerRefused`` with a ``Refusal`` kind; the wire names the
Java exception that kind stands for (``SecretManager$InvalidToken`` or
``YarnException``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cortex_rm.container.local_resources import RequestedResource
from cortex_rm.yarn.ids import ContainerId
from cortex_rm.yarn.tokens import Token


class Refusal(enum.Enum):
    """Why a container request is refused, as the AM's NMClient tells the two apart."""

    INVALID_TOKEN = "INVALID_TOKEN"  # the ContainerToken does not allow it
    REFUSED = "REFUSED"  # anything else: shutting down, unknown container, bad launch context...


class ContainerRefused(Exception):
    """One container's request is refused: a YARN exception for ``failed_requests``."""

    def __init__(self, kind: Refusal, message: str, container_id: ContainerId | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.container_id = container_id


@dataclass(frozen=True)
class LaunchContext:
    """A ContainerLaunchContext: what to localize, the environment, the commands, the credentials."""

    local_resources: tuple[RequestedResource, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()  # in the order given
    commands: tuple[str, ...] = ()
    tokens: bytes = b""  # Hadoop's token storage, written to the container's token file


@dataclass(frozen=True)
class StartRequest:
    """One container to start: its ContainerToken (None: the request carried none) and launch context."""

    token: Token | None
    launch_context: LaunchContext
