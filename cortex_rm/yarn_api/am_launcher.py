"""Starting an ApplicationMaster's container on its node, as YARN's AMLauncher does.

The AM's launch context is the one the client submitted, with what the RM adds:
the AMRMToken in its credentials (the AM's identity on the scheduler port), and the
environment ``APPLICATION_WEB_PROXY_BASE`` and ``APP_SUBMIT_TIME_ENV``.  The RM
then calls ``startContainers`` on the node's ContainerManagementProtocol with the
container's token, over Hadoop IPC — the same call an AM makes for its executors —
proving, as an AM does, the attempt with an NMToken for that node (the NodeManager's
port takes nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP

from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.master_keys import RMKeys
from cortex_rm.yarn.reactors import IReactorTimeTCP
from cortex_rm.yarn.tokens import AMRM_TOKEN_KIND, Token
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.am_service import container_token
from cortex_rm.yarn_api.ipc_client import IpcClient
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_security_token_pb2 as yst
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.tokens import make_token, nm_token, token_from_proto
from cortex_rm.yarn_api.writable import read_token_storage, token_storage, token_writable

NM_PROTOCOL = "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB"
LAUNCH_TIMEOUT_S = 60.0  # SASL and the startContainers answer, once the node's port is connected
AMRM_TOKEN_ALIAS = "YARN_AM_RM_TOKEN"  # what the AM's UGI finds it under does not matter; the kind does


class Connect(Protocol):
    """How the launcher reaches a NodeManager (``IpcClient.connect``; injectable for tests)."""

    def __call__(
        self, reactor: IReactorTCP, host: str, port: int, protocol: str, user: str, *, token: Token | None = None
    ) -> defer.Deferred[IpcClient]: ...


class AMLaunchError(Exception):
    """The node refused or could not be reached; the message says which and why."""


def am_launch_context(app: Application, container: RMContainer, keys: RMKeys, scheduler_address: str) -> yp.ContainerLaunchContextProto:
    """The submitted AM launch context plus the AMRMToken and the RM's environment."""
    submission = yp.ApplicationSubmissionContextProto.FromString(app.context)
    clc = yp.ContainerLaunchContextProto()
    clc.CopyFrom(submission.am_container_spec)
    ident = yst.AMRMTokenIdentifierProto(keyId=keys.amrm.key_id)
    records.attempt_id_to_proto(container.attempt_id, ident.appAttemptId)
    amrm = make_token(keys.amrm, ident.SerializeToString(), AMRM_TOKEN_KIND, scheduler_address)
    tokens, secrets = read_token_storage(clc.tokens)
    tokens[AMRM_TOKEN_ALIAS] = token_writable(amrm)
    clc.tokens = token_storage(tokens, secrets)
    env = {e.key: e for e in clc.environment}
    for key, value in (
        ("APPLICATION_WEB_PROXY_BASE", f"/proxy/{app.app_id}"),
        ("APP_SUBMIT_TIME_ENV", str(app.submit_time_ms)),
    ):
        if key in env:
            env[key].value = value
        else:
            clc.environment.add(key=key, value=value)
    return clc


class AMLauncher:
    """Launches AM containers over Hadoop IPC; ``connect`` is injectable for tests."""

    def __init__(
        self,
        reactor: IReactorTimeTCP,
        keys: RMKeys,
        scheduler_address: str,
        rm_identifier: int,
        now_ms: Callable[[], int],
        connect: Connect | None = None,
    ) -> None:
        self.reactor = reactor
        self.keys = keys
        self.scheduler_address = scheduler_address
        self.rm_identifier = rm_identifier
        self.now_ms = now_ms
        self._connect: Connect = connect or IpcClient.connect

    def launch(self, app: Application, container: RMContainer) -> defer.Deferred[ys.StartContainersResponseProto]:
        """Fires when the node accepted the AM container; fails with AMLaunchError otherwise."""
        return defer.ensureDeferred(self._launch(app, container))

    async def _launch(self, app: Application, container: RMContainer) -> ys.StartContainersResponseProto:
        request = ys.StartContainersRequestProto()
        start = request.start_container_request.add()
        start.container_launch_context.CopyFrom(am_launch_context(app, container, self.keys, self.scheduler_address))
        start.container_token.CopyFrom(
            container_token(self.keys.container, container, app.user, self.rm_identifier, self.now_ms())
        )
        node = container.node_id
        try:
            # as YARN's AMLauncher: proven with an NMToken of the attempt for that node
            proof = token_from_proto(nm_token(self.keys.container, container.attempt_id, node, app.user))
            client = await self._connect(
                self.reactor, node.host, node.port, NM_PROTOCOL, str(container.attempt_id), token=proof
            )
        except Exception as e:
            raise AMLaunchError(f"could not reach the NodeManager at {node}: {e}") from e
        try:
            # bounded: a node that accepts the connection but never authenticates or answers
            # must not keep the AM waiting for ever (the attempt fails and is tried again)
            response = await client.call("startContainers", request, ys.StartContainersResponseProto).addTimeout(
                LAUNCH_TIMEOUT_S, self.reactor
            )
        except defer.TimeoutError:
            raise AMLaunchError(f"startContainers on {node} had no answer within {LAUNCH_TIMEOUT_S:.0f} s") from None
        except Exception as e:
            raise AMLaunchError(f"startContainers on {node} failed: {e}") from e
        finally:
            client.close()
        for failed in response.failed_requests:
            raise AMLaunchError(
                f"{node} refused AM container {container.container_id}: "
                f"{failed.exception.class_name}: {failed.exception.message}"
            )
        return response
