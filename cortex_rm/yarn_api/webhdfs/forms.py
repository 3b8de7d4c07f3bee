"""WebHDFS's JSON forms: ``FileStatus``, listings, summaries, checksums, booleans and ``RemoteException``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cortex_rm.fs.checksums import BYTES_PER_CRC, FileChecksum
from cortex_rm.fs.errors import FsError
from cortex_rm.fs.block_map import DataNode
from cortex_rm.fs.model import BlockRef, ContentSummary, FileStatus
from cortex_rm.yarn.ids import NodeId


def permission_text(permission: int) -> str:
    """WebHDFS's octal permission string: "755", "1777" with the sticky bit."""
    return format(permission & 0o1777, "o")


def file_status(status: FileStatus) -> dict[str, Any]:
    return {
        "accessTime": status.access_time,
        "blockSize": status.block_size,
        "childrenNum": status.children,
        "fileId": status.file_id,
        "group": status.group,
        "length": status.length,
        "modificationTime": status.modification_time,
        "owner": status.owner,
        "pathSuffix": status.path_suffix,
        "permission": permission_text(status.permission),
        "replication": status.replication,
        "storagePolicy": 0,
        "type": status.kind.value,
    }


def one_status(status: FileStatus) -> dict[str, Any]:
    return {"FileStatus": file_status(status)}


def listing(statuses: Sequence[FileStatus]) -> dict[str, Any]:
    return {"FileStatuses": {"FileStatus": [file_status(s) for s in statuses]}}


def batch_listing(statuses: Sequence[FileStatus], remaining: int) -> dict[str, Any]:
    """LISTSTATUS_BATCH's page: ``remainingEntries`` tells the client to ask again after the last name."""
    return {"DirectoryListing": {"partialListing": listing(statuses), "remainingEntries": remaining}}


def content_summary(summary: ContentSummary) -> dict[str, Any]:
    return {
        "ContentSummary": {
            "directoryCount": summary.directory_count,
            "fileCount": summary.file_count,
            "length": summary.length,
            "quota": -1,
            "spaceConsumed": summary.space_consumed,
            "spaceQuota": -1,
            "typeQuota": {},
        }
    }


def file_checksum(checksum: FileChecksum) -> dict[str, Any]:
    return {"FileChecksum": {"algorithm": checksum.algorithm, "bytes": checksum.bytes_hex, "length": checksum.length}}


def server_defaults(block_size: int, replication: int) -> dict[str, Any]:
    """GETSERVERDEFAULTS: FsShell asks before ``-rm`` (trash is off: interval 0)."""
    return {
        "FsServerDefaults": {
            "blockSize": block_size,
            "bytesPerChecksum": BYTES_PER_CRC,
            "writePacketSize": BYTES_PER_CRC,
            "replication": replication,
            "fileBufferSize": 4096,
            "encryptDataTransfer": False,
            "trashInterval": 0,
            "checksumType": 1,  # DataChecksum.Type.CRC32
            "keyProviderUri": "",
            "defaultStoragePolicyId": 7,  # HOT
        }
    }


def block_locations(found: Sequence[tuple[int, BlockRef, Sequence[DataNode]]]) -> dict[str, Any]:
    """GETFILEBLOCKLOCATIONS: Hadoop's ``BlockLocation`` per block; ``hosts`` are the holders' YARN
    host names (what locality-aware schedulers match), ``names`` their block-serving addresses."""
    return {
        "BlockLocations": {
            "BlockLocation": [
                {
                    "offset": offset,
                    "length": block.length,
                    "corrupt": False,
                    "hosts": [NodeId.parse(node.node_id).host for node in holders],
                    "names": [node.http_address for node in holders],
                    "topologyPaths": [f"/default-rack/{node.http_address}" for node in holders],
                    "cachedHosts": [],
                    "storageIds": [],
                    "storageTypes": ["DISK" for _ in holders],
                }
                for offset, block, holders in found
            ]
        }
    }


def boolean(value: bool) -> dict[str, Any]:
    return {"boolean": value}


def remote_exception(error: FsError) -> dict[str, Any]:
    """The error body Hadoop's client turns back into ``error.java_class``."""
    return {
        "RemoteException": {
            "exception": error.simple_name,
            "javaClassName": error.java_class,
            "message": str(error),
        }
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
