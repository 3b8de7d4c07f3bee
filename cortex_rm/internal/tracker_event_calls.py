"""The NodeTracker's calls for serverless events (``cortex.thrift``), mixed into ``TrackerCalls``.

* ``openFunctionCode(node_id, function)``: a node about to run a function shows the
  registration record it was given (a ring ``Record``); the RM's registry decides
  (``roles/event_registry.EventRegistry.open_function_code``) and the answer is a
  ``LocalizationSource`` for the code file, read as the function's owner.
* ``callerKey(node_id, proof)``: the node shows one of a user's signed requests to it
  (``events/request_proofs.py``); the RM checks it (signed for this connection's ring id,
  sent to the node's registered web address, with the token's entry key for that node and
  hour) and answers with who she is, as a ``CallerAssertion`` the RM signs for the node to
  carry in its ``InvokeFunction``s (``events/caller_assertions.py``), and that entry key,
  with which the node checks her other requests of the hour.

Only a registered, RUNNING (or UNHEALTHY) node calling over the connection of the key it
registered with is served, as for the file system's calls.  Refusals travel as the IDL's
exceptions: ``FunctionRefused`` (not a registration the RM holds), ``CredentialRefused``
(a token that authenticates nobody), ``TryLater`` (the node calls too often), ``FsFailure``
(the code file), ``NodeRefused`` (the node or the request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.logger import Logger

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.caller_assertions import CallerKey
from cortex_rm.events.request_proofs import SignedRequest
from cortex_rm.events.registry import RegistryRefusal
from cortex_rm.internal import block_codec
from cortex_rm.internal import tracker_codec as codec
from cortex_rm.internal.errors import CallRateExceeded, MalformedMessage
from cortex_rm.internal.event_codec import CALLER_KEY, CALLER_PROOF
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.ring_codec import _RECORD
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused

if TYPE_CHECKING:
    from cortex_rm.fs.block_map import DataNode
    from cortex_rm.fs.name_node import NameNode
    from cortex_rm.internal.tracker_server import FileSystemServices

log = Logger()
T = TypeVar("T")

#: The IDL's exceptions these calls raise on purpose (``TrackerCalls._decide`` passes them on).
EVENT_REFUSALS = (ttypes.FunctionRefused, ttypes.CredentialRefused, ttypes.TryLater)


class EventServices(Protocol):
    """What the event calls ask of the RM's registry (``EventRegistry`` implements it)."""

    def open_function_code(self, node_id: NodeId, record: Record) -> tuple[int, int, str]:
        """(length, modification time in ms, OPEN ticket) of the code of the registration ``record``
        carries; a RegistryRefusal, FsError or CallRateExceeded when not."""

    def caller_key(self, node_id: NodeId, request: SignedRequest, audience: int, node_web: str) -> CallerKey:
        """The user who signed ``request`` for the entry node ``audience`` (a ring id) at ``node_web`` (its
        registered web address), asserted for that node, and her token's entry key for it and the request's
        hour; InvalidToken or CallRateExceeded when not."""


class EventCalls:
    """``openFunctionCode`` and ``callerKey``, for ``TrackerCalls`` (which provides the rest)."""

    if TYPE_CHECKING:
        fs: FileSystemServices | None
        ring_id: int | None

        def _data_node(self, node_id: NodeId) -> tuple[NameNode, DataNode]: ...

        def _decide(self, call: str, decide: Callable[[], T]) -> T: ...

        def _fs_call(self, call: str, decide: Callable[[], T]) -> T: ...

    def _event_services(self, node: Any) -> tuple[NodeId, EventServices]:
        node_id = codec._node_id(node, "node_id")
        self._data_node(node_id)  # a registered, running node on its own key
        events = None if self.fs is None else self.fs.events
        if events is None:
            raise NodeRefused("this RM keeps no function registry")
        return node_id, events

    def openFunctionCode(self, node: Any, function: Any) -> ttypes.LocalizationSource:  # noqa: N802 (IDL name)
        def decide() -> ttypes.LocalizationSource:
            node_id, events = self._event_services(node)
            record = _RECORD.from_wire(function, "function")
            with _refusals():
                length, modified, ticket = events.open_function_code(node_id, record)
            return block_codec.source_to_thrift(block_codec.LocalizationSource(length, modified, ticket))

        return self._fs_call("openFunctionCode", decide)

    def callerKey(self, node: Any, proof: Any) -> ttypes.CallerKey:  # noqa: N802 (IDL name)
        def decide() -> ttypes.CallerKey:
            node_id = codec._node_id(node, "node_id")
            _, data_node = self._data_node(node_id)  # a registered, running node on its own key
            events = None if self.fs is None else self.fs.events
            if events is None:
                raise NodeRefused("this RM keeps no function registry")
            request = CALLER_PROOF.from_wire(proof, "proof")
            if self.ring_id is None:
                raise NodeRefused("this connection shows no ring key to assert a caller to")
            with _refusals():
                answer = events.caller_key(node_id, request, self.ring_id, data_node.http_address)
            return CALLER_KEY.to_wire(answer)

        return self._decide("callerKey", decide)


@contextmanager
def _refusals() -> Iterator[None]:
    """The registry's, the credentials' and the rate limit's refusals as the IDL's exceptions."""
    try:
        yield
    except RegistryRefusal as e:
        raise ttypes.FunctionRefused(message=str(e)) from None
    except InvalidToken as e:
        raise ttypes.CredentialRefused(message=str(e)) from None
    except CallRateExceeded as e:
        log.info("{error}", error=str(e))
        raise ttypes.TryLater(message=str(e), retry_after_ms=e.retry_after_ms) from None


def caller_key_from_thrift(value: Any) -> CallerKey:
    """callerKey's answer, checked (a node's side; the assertion's signature is the executors' to check)."""
    # (MalformedEnvelope is a MalformedMessage)
    answer: CallerKey = CALLER_KEY.from_wire(value, "callerKey")
    return answer
