"""What startContainers checks before it accepts a container, and what an accepted one is made of.

``ContainerManager.start`` answers before anything runs, as YARN's
``startContainers`` does, and checks in YARN's order, so a request is refused for
the same reason whatever else is wrong with it:

* the ContainerToken must verify (``container_tokens.py``) -> else ``InvalidToken``;
* the container must not be known here ("already is running on this node");
* a caller naming an application attempt (NMClient's user is the attempt id) must
  belong to the container's application (``authorize``; stop and status ask too);
* the launch context must be usable: the token's user name, link names, resource
  URLs and timestamps, variable names, a command -> else ``YarnException`` with the reason.

An accepted request becomes an ``NMContainer`` (``new_container``) and the
``LaunchPlan`` it is launched with (``container_launch_plan``).
"""

from __future__ import annotations

import re
from collections.abc import Container

from cortex_rm.container.container_tokens import ContainerGrant, ContainerTokenVerifier, InvalidContainerToken
from cortex_rm.container.launch import LaunchContextError, LaunchPlan, NodeFacts, container_paths, plan_launch
from cortex_rm.container.local_resources import LocalizationError, check_local_resources
from cortex_rm.container.nm_container import NMContainer
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.container.start_request import ContainerRefused, Refusal, StartRequest
from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")


def caller_attempt(caller: str | None) -> ApplicationAttemptId | None:
    """The application attempt a caller names (NMClient's user is ``appattempt_...``), if any."""
    if caller is None:
        return None
    try:
        return ApplicationAttemptId.parse(caller)
    except MalformedId:
        return None


def authorize(caller: str | None, cid: ContainerId, verb: str) -> None:
    """Refuse a caller naming an attempt of another application than ``cid``'s (``verb``: what it asked)."""
    attempt = caller_attempt(caller)
    if attempt is not None and attempt.app_id != cid.attempt_id.app_id:
        raise ContainerRefused(
            Refusal.REFUSED,
            f"Unauthorized request to {verb} container. "
            f"{caller} does not belong to application {cid.attempt_id.app_id} of container {cid}",
            cid,
        )


def verified_grant(tokens: ContainerTokenVerifier, request: StartRequest, known: Container[ContainerId]) -> ContainerGrant:
    """What ``request``'s ContainerToken grants, for a container neither ``known`` here nor
    started before; else ContainerRefused."""
    if request.token is None:
        raise ContainerRefused(Refusal.INVALID_TOKEN, "No container token in the request")
    try:
        grant = tokens.verify(request.token)
    except InvalidContainerToken as e:
        raise ContainerRefused(Refusal.INVALID_TOKEN, str(e), e.container_id) from None
    cid = grant.container_id
    if cid in known:
        raise ContainerRefused(Refusal.REFUSED, f"Container {cid} already is running on this node!!", cid)
    try:
        tokens.check_not_started(grant)
    except InvalidContainerToken as e:
        raise ContainerRefused(Refusal.INVALID_TOKEN, str(e), cid) from None
    return grant


def new_container(grant: ContainerGrant, request: StartRequest, settings: ContainerSettings) -> NMContainer:
    """The container ``grant`` allows, with its dirs and checked resources; ContainerRefused if unusable."""
    cid = grant.container_id
    if not _USER.match(grant.user):
        raise ContainerRefused(Refusal.REFUSED, f"Invalid user name {grant.user!r} in the container token", cid)
    try:
        resources = check_local_resources(request.launch_context.local_resources)
    except LocalizationError as e:
        raise ContainerRefused(Refusal.REFUSED, f"Invalid launch context for {cid}: {e}", cid) from None
    paths = container_paths(
        settings.local_dirs, settings.log_dirs, grant.user, str(cid.attempt_id.app_id), str(cid), cid.sequence
    )
    return NMContainer(
        cid, grant.user, grant.resource, paths, resources, priority=grant.priority,
        creation_time_ms=grant.creation_time_ms,
    )


def container_launch_plan(c: NMContainer, request: StartRequest, node: NodeFacts) -> LaunchPlan:
    """How ``c`` is launched (environment, script, tokens); ContainerRefused if the launch context is unusable."""
    clc = request.launch_context
    try:
        return plan_launch(
            container_id=str(c.container_id),
            user=c.user,
            clc_environment=dict(clc.environment),
            commands=list(clc.commands),
            tokens=clc.tokens,
            paths=c.paths,
            node=node,
        )
    except LaunchContextError as e:
        raise ContainerRefused(Refusal.REFUSED, f"Invalid launch context for {c.container_id}: {e}", c.container_id) from None
