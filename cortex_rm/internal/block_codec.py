"""The file system's NodeTracker calls (``blockReport``, ``commitWrite``, ``locateBlocks``) to and
from the generated Thrift structs, validated on the way in as ``tracker_codec`` does.

A list in one message holds at most ``tracker_codec.MAX_CONTAINERS`` entries (the
binary protocol's bound); a node with more blocks sends its full report in pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cortex_rm.container.runtime_image import is_sha256
from cortex_rm.fs.block_map import ReportedBlock
from cortex_rm.fs.model import BlockRef
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tracker_codec import (
    MAX_INT32,
    _address,
    _int,
    _list,
    _master_key_from_thrift,
    _master_key_to_thrift,
    _node_address,
    _node_id,
    _text,
    _validate,
)
from cortex_rm.yarn.app_network import PORT_SLOTS, AppNetwork
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import MAX_CONTAINERS
from cortex_rm.yarn.tokens import MasterKey

MAX_REPORT_BLOCKS = MAX_CONTAINERS
MAX_TICKET_CHARS = 16 * 1024
MAX_LENGTH = 2**62
_BLOCK_ID = re.compile(r"^blk_[0-9a-f]{32}$")
_CHECKSUM = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class BlockReportMessage:
    full: bool
    added: tuple[ReportedBlock, ...]
    removed: tuple[str, ...]
    free_bytes: int


@dataclass(frozen=True)
class BlockFetch:
    """A fetch order as the node receives it: copy the block from one of ``sources`` (web addresses)."""

    block: BlockRef
    sources: tuple[str, ...]
    token: str


@dataclass(frozen=True)
class BlockCommandsMessage:
    delete: tuple[str, ...]
    fetch: tuple[BlockFetch, ...]
    token_key: MasterKey
    report_interval_ms: int
    full_report_wanted: bool = False


@dataclass(frozen=True)
class BlockLocation:
    """A block of a file being read, as the node receives it from ``locateBlocks``."""

    block: BlockRef
    offset: int
    sources: tuple[str, ...]
    token: str


@dataclass(frozen=True)
class WrittenBlockMessage:
    block: BlockRef
    holders: tuple[NodeId, ...]


def _block_id(value: Any, field: str) -> str:
    text = _text(value, field, 40, allow_empty=False)
    if not _BLOCK_ID.fullmatch(text):  # not match: "$" also matches before a trailing newline
        raise MalformedMessage(f"{field} must be blk_ and 32 hex digits, not {text[:40]!r}")
    return text


def _checksum(value: Any, field: str) -> str:
    text = _text(value, field, 32, allow_empty=False)
    if not _CHECKSUM.fullmatch(text):
        raise MalformedMessage(f"{field} must be 32 hex digits")
    return text


def _block(block_id: Any, length: Any, checksum: Any, field: str) -> BlockRef:
    return BlockRef(
        _block_id(block_id, f"{field}.block_id"),
        _int(length, f"{field}.length", 0, MAX_LENGTH),
        _checksum(checksum, f"{field}.checksum"),
    )


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedMessage(f"{field} must be a bool")
    return value


def _struct(value: Any, kind: type, field: str) -> Any:
    if not isinstance(value, kind):
        raise MalformedMessage(f"{field} is missing")
    _validate(value, field)
    return value


# ------------------------------------------------------------- blockReport


def report_to_thrift(node_id: NodeId, report: BlockReportMessage) -> tuple[ttypes.NodeAddress, ttypes.BlockReport]:
    added = [ttypes.ReportedBlock(b.block_id, b.length, b.checksum, b.age_ms) for b in report.added]
    return _node_address(node_id), ttypes.BlockReport(report.full, added, list(report.removed), report.free_bytes)


def report_from_thrift(node: Any, report: Any) -> tuple[NodeId, BlockReportMessage]:
    node_id = _node_id(node, "node_id")
    t = _struct(report, ttypes.BlockReport, "report")
    added = []
    for i, b in enumerate(_list(t.added, "report.added")):
        b = _struct(b, ttypes.ReportedBlock, f"report.added[{i}]")
        ref = _block(b.block_id, b.length, b.checksum, f"report.added[{i}]")
        age_ms = _int(b.age_ms, f"report.added[{i}].age_ms", 0, MAX_LENGTH)
        added.append(ReportedBlock(ref.block_id, ref.length, ref.checksum, age_ms))
    removed = tuple(_block_id(r, f"report.removed[{i}]") for i, r in enumerate(_list(t.removed, "report.removed")))
    free = _int(t.free_bytes, "report.free_bytes", 0, MAX_LENGTH)
    return node_id, BlockReportMessage(_bool(t.full, "report.full"), tuple(added), removed, free)


def commands_to_thrift(commands: BlockCommandsMessage) -> ttypes.BlockCommands:
    fetch = [
        ttypes.FetchOrder(f.block.block_id, f.block.length, f.block.checksum, list(f.sources), f.token)
        for f in commands.fetch
    ]
    return ttypes.BlockCommands(
        list(commands.delete),
        fetch,
        _master_key_to_thrift(commands.token_key),
        commands.report_interval_ms,
        commands.full_report_wanted,
    )


def commands_from_thrift(t: Any) -> BlockCommandsMessage:
    t = _struct(t, ttypes.BlockCommands, "BlockCommands")
    delete = tuple(_block_id(d, f"delete[{i}]") for i, d in enumerate(_list(t.delete, "delete")))
    fetch = []
    for i, f in enumerate(_list(t.fetch, "fetch")):
        f = _struct(f, ttypes.FetchOrder, f"fetch[{i}]")
        sources = tuple(_address(s, f"fetch[{i}].sources") for s in _list(f.sources, f"fetch[{i}].sources"))
        token = _text(f.token, f"fetch[{i}].token", MAX_TICKET_CHARS, allow_empty=False)
        fetch.append(BlockFetch(_block(f.block_id, f.length, f.checksum, f"fetch[{i}]"), sources, token))
    key = _master_key_from_thrift(t.token_key, "token_key")
    if key is None:
        raise MalformedMessage("BlockCommands.token_key is missing")
    interval = _int(t.report_interval_ms, "report_interval_ms", 100, MAX_INT32)
    return BlockCommandsMessage(delete, tuple(fetch), key, interval, _bool(t.full_report_wanted, "full_report_wanted"))


# ------------------------------------------------------------- commitWrite


def commit_to_thrift(
    node_id: NodeId, ticket: str, written: Sequence[WrittenBlockMessage]
) -> tuple[ttypes.NodeAddress, ttypes.WriteCommit]:
    blocks = [
        ttypes.WrittenBlock(w.block.block_id, w.block.length, w.block.checksum, [_node_address(h) for h in w.holders])
        for w in written
    ]
    return _node_address(node_id), ttypes.WriteCommit(ticket, blocks)


def commit_from_thrift(node: Any, commit: Any) -> tuple[NodeId, str, tuple[WrittenBlockMessage, ...]]:
    node_id = _node_id(node, "node_id")
    t = _struct(commit, ttypes.WriteCommit, "commit")
    ticket = _text(t.ticket, "commit.ticket", MAX_TICKET_CHARS, allow_empty=False)
    written = []
    for i, w in enumerate(_list(t.blocks, "commit.blocks")):
        w = _struct(w, ttypes.WrittenBlock, f"commit.blocks[{i}]")
        field = f"commit.blocks[{i}].holders"
        holders = tuple(_node_id(h, field) for h in _list(w.holders, field))
        if not holders:
            raise MalformedMessage(f"commit.blocks[{i}] has no holder")
        written.append(WrittenBlockMessage(_block(w.block_id, w.length, w.checksum, f"commit.blocks[{i}]"), holders))
    return node_id, ticket, tuple(written)


# ------------------------------------------------------------- locateBlocks


def locations_to_thrift(file_length: int, located: Sequence[BlockLocation]) -> ttypes.BlockLocations:
    blocks = [
        ttypes.LocatedBlock(l.block.block_id, l.block.length, l.block.checksum, l.offset, list(l.sources), l.token)
        for l in located
    ]
    return ttypes.BlockLocations(file_length, blocks)


def locations_from_thrift(t: Any) -> tuple[int, tuple[BlockLocation, ...]]:
    t = _struct(t, ttypes.BlockLocations, "BlockLocations")
    located = []
    for i, b in enumerate(_list(t.blocks, "blocks")):
        b = _struct(b, ttypes.LocatedBlock, f"blocks[{i}]")
        sources = tuple(_address(s, f"blocks[{i}].sources") for s in _list(b.sources, f"blocks[{i}].sources"))
        token = _text(b.token, f"blocks[{i}].token", MAX_TICKET_CHARS, allow_empty=False)
        offset = _int(b.offset, f"blocks[{i}].offset", 0, MAX_LENGTH)
        located.append(BlockLocation(_block(b.block_id, b.length, b.checksum, f"blocks[{i}]"), offset, sources, token))
    return _int(t.file_length, "file_length", 0, MAX_LENGTH), tuple(located)


@dataclass(frozen=True)
class LocalizationSource:
    """openForLocalization's answer: the file's length and time now, and an OPEN ticket for it."""

    length: int
    modification_time_ms: int
    ticket: str


def source_to_thrift(source: LocalizationSource) -> ttypes.LocalizationSource:
    return ttypes.LocalizationSource(source.length, source.modification_time_ms, source.ticket)


def source_from_thrift(t: Any) -> LocalizationSource:
    t = _struct(t, ttypes.LocalizationSource, "LocalizationSource")
    return LocalizationSource(
        _int(t.length, "length", 0, MAX_LENGTH),
        _int(t.modification_time, "modification_time", 0, MAX_LENGTH),
        _text(t.ticket, "ticket", MAX_TICKET_CHARS, allow_empty=False),
    )


@dataclass(frozen=True)
class RuntimeImageSource:
    """openRuntimeImage's answer: the image's SHA-256 ("" when the RM names none) and, when its
    archive is in the file system, how to read it."""

    sha256: str
    source: LocalizationSource | None


def image_to_thrift(image: RuntimeImageSource) -> ttypes.RuntimeImage:
    return ttypes.RuntimeImage(image.sha256, None if image.source is None else source_to_thrift(image.source))


def image_from_thrift(t: Any) -> RuntimeImageSource:
    t = _struct(t, ttypes.RuntimeImage, "RuntimeImage")
    sha256 = _text(t.sha256, "sha256", 64, allow_empty=True)
    if sha256 and not is_sha256(sha256):
        raise MalformedMessage("sha256 must be 64 lowercase hex digits or empty")
    if not sha256 and t.source is not None:
        raise MalformedMessage("an image without a sha256 has no source")
    return RuntimeImageSource(sha256, None if t.source is None else source_from_thrift(t.source))


@dataclass(frozen=True)
class AggregationTarget:
    """openForAggregation's answer: the file to write, the CREATE ticket to write it with, and
    the application's owner (the RM knows it; the node may have forgotten the containers)."""

    path: str
    ticket: str
    owner: str


def target_to_thrift(target: AggregationTarget) -> ttypes.AggregationTarget:
    return ttypes.AggregationTarget(target.path, target.ticket, target.owner)


def target_from_thrift(t: Any) -> AggregationTarget:
    t = _struct(t, ttypes.AggregationTarget, "AggregationTarget")
    owner = _text(t.owner, "owner", 256, allow_empty=False)
    if "/" in owner or "\x00" in owner:
        raise MalformedMessage("owner must be a user name")
    return AggregationTarget(
        _text(t.path, "path", MAX_TICKET_CHARS, allow_empty=False),
        _text(t.ticket, "ticket", MAX_TICKET_CHARS, allow_empty=False),
        owner,
    )


def network_to_thrift(network: AppNetwork) -> ttypes.ApplicationNetwork:
    return ttypes.ApplicationNetwork(network.client_host, network.port_slot)


def network_from_thrift(t: Any) -> AppNetwork:
    t = _struct(t, ttypes.ApplicationNetwork, "ApplicationNetwork")
    host = t.client_host
    if not isinstance(host, str) or len(host) > 255 or any(c.isspace() for c in host):
        raise MalformedMessage("client_host must be a host name or address (or empty)")
    slot = t.port_slot
    if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < PORT_SLOTS):
        raise MalformedMessage(f"port_slot must be in 0..{PORT_SLOTS - 1}")
    return AppNetwork(host, slot)
