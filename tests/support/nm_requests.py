"""Building what an AM sends a NodeManager: ContainerTokens, NMTokens and startContainers requests.

The tokens are made as the RM makes them (a ``ContainerTokenIdentifierProto`` signed
with HMAC-SHA1 under the container-token master key), with knobs to forge them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import CONTAINER_TOKEN_KIND, MasterKey
from cortex_rm.yarn_api import records, tokens
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.tokens import make_token

APP = ApplicationId(1700000000000, 1)
ATTEMPT = ApplicationAttemptId(APP, 1)
KEY = MasterKey(17, b"container-key-secret")
NODE = NodeId("127.0.0.1", 45454)


def cid(seq: int, attempt: ApplicationAttemptId = ATTEMPT) -> ContainerId:
    return ContainerId(attempt, seq)


def container_token(
    container_id: ContainerId,
    *,
    key: MasterKey = KEY,
    node: NodeId | str = NODE,
    user: str = "alice",
    memory_mb: int = 1024,
    expiry_ms: int = 2**62,
    is_am: bool = False,
    sign_with: MasterKey | None = None,
    priority: int = 0,
    creation_ms: int = 1,
    rm_identifier: int = 1,
) -> TokenProto:
    """A ContainerToken as the RM makes it; ``sign_with`` forges the password with another key."""
    ident = yst.ContainerTokenIdentifierProto(
        nmHostAddr=str(node),
        appSubmitter=user,
        expiryTimeStamp=expiry_ms,
        masterKeyId=key.key_id,
        rmIdentifier=rm_identifier,
        creationTime=creation_ms,
        containerType=yp.APPLICATION_MASTER if is_am else yp.TASK,
    )
    records.container_id_to_proto(container_id, ident.containerId)
    records.resource_to_proto(Resource(memory_mb, 1), ident.resource)
    ident.priority.priority = priority
    token = make_token(key, ident.SerializeToString(), CONTAINER_TOKEN_KIND, str(node))
    if sign_with is not None:
        token.password = sign_with.password(token.identifier)
    return token


def nm_token(
    attempt: ApplicationAttemptId = ATTEMPT,
    *,
    key: MasterKey = KEY,
    node: NodeId = NODE,
    user: str = "alice",
    sign_with: MasterKey | None = None,
) -> TokenProto:
    """An NMToken as the RM gives an AM with its containers on ``node``; ``sign_with`` forges it."""
    token = tokens.nm_token(key, attempt, node, user)
    if sign_with is not None:
        token.password = sign_with.password(token.identifier)
    return token


def launch_context(
    command: Sequence[str] = ("true",),
    env: Mapping[str, str] | None = None,
    resources: Mapping[str, tuple[str, int, int]] | None = None,
    tokens: bytes = b"HDTS\x00\x00\x00",
) -> yp.ContainerLaunchContextProto:
    """A CLC; ``resources`` maps link name -> (file path, timestamp ms, LocalResourceTypeProto)."""
    clc = yp.ContainerLaunchContextProto(command=list(command), tokens=tokens)
    for k, v in (env or {}).items():
        clc.environment.add(key=k, value=v)
    for link, (path, ts, kind) in (resources or {}).items():
        e = clc.localResources.add()
        e.key = link
        e.value.resource.scheme = "file"
        e.value.resource.port = -1
        e.value.resource.file = path
        e.value.timestamp = ts
        e.value.type = kind
        e.value.visibility = yp.PRIVATE
    return clc


def start_request(
    token: TokenProto, clc: yp.ContainerLaunchContextProto | None = None
) -> ys.StartContainerRequestProto:
    return ys.StartContainerRequestProto(
        container_launch_context=clc if clc is not None else launch_context(), container_token=token
    )


def start_containers(*requests: ys.StartContainerRequestProto) -> ys.StartContainersRequestProto:
    out = ys.StartContainersRequestProto()
    out.start_container_request.extend(requests)
    return out


def container_ids_proto(*ids: ContainerId) -> list[yp.ContainerIdProto]:
    out = []
    for c in ids:
        p = yp.ContainerIdProto()
        records.container_id_to_proto(c, p)
        out.append(p)
    return out
