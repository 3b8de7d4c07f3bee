"""Hostile inputs for ``bench/soak.py``: valid seeds per kind of port, mutated.

Each port kind has a few seeds that a real client would send first (an IPC
connection header with a SASL negotiation or a SIMPLE call, REST and WebHDFS
requests, Thrift calls of the tracker and the ring).  ``Mutator`` makes each input
from one of them by one of the things a fuzzer or an attacker does: random bytes,
a truncation, flipped bytes, a length field overwritten with a large or negative
number, two seeds spliced, junk appended, a slice repeated many times.  The same
seed gives the same inputs.
"""

from __future__ import annotations

import random
import struct

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

from cortex_rm.internal.gen import NodeTracker, RingService, ttypes
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcSaslProto
from tests.support.ipc_frames import call_frame, context_frame, ping_frame, preamble, sasl_frame

ACP = "org.apache.hadoop.yarn.api.ApplicationClientProtocolPB"
AMRM = "org.apache.hadoop.yarn.api.ApplicationMasterProtocolPB"
CMP = "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB"
AUTH_SASL = 0xDF


def _ipc_seeds(protocol: str, method: str, request: bytes) -> list[bytes]:
    negotiate = sasl_frame(RpcSaslProto(state=RpcSaslProto.NEGOTIATE))
    initiate = RpcSaslProto(state=RpcSaslProto.INITIATE, token=b"\x00" * 48)
    initiate.auths.add(method="TOKEN", mechanism="DIGEST-MD5", protocol="", serverId="default")
    return [
        preamble() + context_frame(protocol) + call_frame(0, method, protocol, request),
        preamble(AUTH_SASL) + negotiate + sasl_frame(initiate),
        preamble(AUTH_SASL) + negotiate + context_frame(protocol) + ping_frame(),
        preamble() + context_frame(protocol, user=None) + call_frame(1, "noSuchMethod", protocol, request),
    ]


def ipc_seeds(protocol: str) -> list[bytes]:
    """Hadoop IPC seeds for the RM's client and scheduler ports and the NodeManager's."""
    if protocol == ACP:
        return _ipc_seeds(ACP, "getApplications", ys.GetApplicationsRequestProto(application_types=["SPARK"]).SerializeToString()) + _ipc_seeds(
            ACP, "forceKillApplication", b"\n\x08\x08\x01\x10\x80\xa0\xc5\xfa\x05"
        )
    if protocol == AMRM:
        return _ipc_seeds(AMRM, "allocate", ys.AllocateRequestProto(response_id=1, progress=0.5).SerializeToString())
    return _ipc_seeds(CMP, "getContainerStatuses", b"\n\x0c\x08\x01\x12\x08\x08\x01\x10\x02")


def http_seeds(kind: str) -> list[bytes]:
    """HTTP/1.1 requests: the RM's REST API, or a node's REST, ring status and WebHDFS data port."""
    body = b'{"state":"KILLED"}'
    common = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /ws/v1/cluster/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /ws/v1/cluster/info HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /ws/v1/cluster/info HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]
    if kind == "rm":
        return common + [
            b"GET /ws/v1/cluster/apps?states=RUNNING&limit=10 HTTP/1.1\r\nHost: x\r\n"
            b"Hadoop-YARN-RM-Delegation-Token: AAAAAAAA\r\n\r\n",
            b"PUT /ws/v1/cluster/apps/application_1_0001/state HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            b"GET /webhdfs/v1/user?op=LISTSTATUS&delegation=AAAA HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PUT /webhdfs/v1/tmp/f?op=CREATE&overwrite=true HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"POST /ws/v1/cluster/apps/new-application HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ]
    return common + [
        b"GET /ws/v1/node/containers HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws/v1/node/containerlogs/container_1_0001_01_000001/stderr?size=-100 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ws/v1/ring HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /webhdfs/v1/f?op=OPEN&ticket=AAAA&offset=0&length=10 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /webhdfs/v1/f?op=CREATE&ticket=AAAA HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    ]


def _thrift_call(service: object, method: str, message_type: int, **fields: object) -> bytes:
    buffer = TTransport.TMemoryBuffer()
    protocol = TBinaryProtocol.TBinaryProtocol(buffer)
    protocol.writeMessageBegin(method, message_type, 1)
    getattr(service, f"{method}_args")(**fields).write(protocol)
    protocol.writeMessageEnd()
    payload = buffer.getvalue()
    return struct.pack(">i", len(payload)) + payload


def thrift_seeds(kind: str) -> list[bytes]:
    """Framed Thrift calls (sent inside TLS): the tracker's, or the ring's oneway ``deliver``."""
    if kind == "tracker":
        node = ttypes.NodeAddress(host="127.0.0.9", port=1)
        return [
            _thrift_call(NodeTracker, "registerNode", TMessageType.CALL, registration=ttypes.NodeRegistration(node_id=node)),
            _thrift_call(NodeTracker, "nodeHeartbeat", TMessageType.CALL, status=ttypes.NodeStatus(node_id=node)),
            _thrift_call(NodeTracker, "locateBlocks", TMessageType.CALL, node_id=node, ticket="t", offset=0, length=-1),
        ]
    return [_thrift_call(RingService, "deliver", TMessageType.ONEWAY, envelope=ttypes.Envelope())]


class Mutator:
    """Hostile inputs from ``seeds`` (see the module docstring)."""

    def __init__(self, seeds: list[bytes], seed: int) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)

    def __call__(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.seeds))
        roll = rng.random()
        if roll < 0.08:
            return rng.randbytes(rng.randint(1, 2048))
        if roll < 0.25:
            return bytes(data[: rng.randint(0, len(data))])
        if roll < 0.50:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        if roll < 0.62:
            at = rng.randrange(max(1, len(data) - 4))
            data[at : at + 4] = struct.pack(">I", rng.choice((0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 2**26 + 1, rng.getrandbits(32))))
            return bytes(data)
        if roll < 0.74:
            other = rng.choice(self.seeds)
            return bytes(data[: rng.randrange(len(data) + 1)]) + other[rng.randrange(len(other) + 1) :]
        if roll < 0.86:
            return bytes(data) + rng.randbytes(rng.randint(1, 4096))
        start = rng.randrange(len(data))
        piece = bytes(data[start : start + rng.randint(1, 64)])
        return bytes(data[:start]) + piece * rng.randint(2, 65536 // max(1, len(piece))) + bytes(data[start:])
