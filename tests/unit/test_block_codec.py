"""The file system's tracker calls to Thrift and back: faithful round trips (also through the binary
protocol), and every rule checked on the way in with MalformedMessage naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thrift.TSerialization import deserialize, serialize

from cortex_rm.fs.block_map import ReportedBlock
from cortex_rm.fs.model import BlockRef
from cortex_rm.internal import block_codec as codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tracker_codec import MAX_CONTAINERS, PROTOCOL_FACTORY
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import MasterKey

NODE = NodeId("node-1.example", 8041)
OTHER = NodeId("10.0.0.2", 8041)
KEY = MasterKey(3, b"k" * 20)
ID1 = "blk_" + "0123456789abcdef" * 2
ID2 = "blk_" + "f" * 32
SUM1 = "d41d8cd98f00b204e9800998ecf8427e"
SUM2 = "0" * 32
BLOCK1 = BlockRef(ID1, 128 * 1024 * 1024, SUM1)
BLOCK2 = BlockRef(ID2, 0, SUM2)

REPORT = codec.BlockReportMessage(
    True, (ReportedBlock(ID1, 5, SUM1, 0), ReportedBlock(ID2, 2**40, SUM2, 86_400_000)), (ID2,), 10**12
)
COMMANDS = codec.BlockCommandsMessage(
    (ID1, ID2),
    (codec.BlockFetch(BLOCK1, ("n2:8042", "10.0.0.3:8042"), "ticket-1"), codec.BlockFetch(BLOCK2, (), "t")),
    KEY,
    1000,
    True,
)
WRITTEN = (codec.WrittenBlockMessage(BLOCK1, (NODE, OTHER)), codec.WrittenBlockMessage(BLOCK2, (OTHER,)))
LOCATED = (
    codec.BlockLocation(BLOCK1, 0, ("n1:8042", "n2:8042"), "open-ticket"),
    codec.BlockLocation(BLOCK2, BLOCK1.length, (), "open-ticket"),
)
SOURCE = codec.LocalizationSource(12345, 1_700_000_000_000, "open-ticket")

BAD_IDS = [
    "blk_xyz",
    "blk_" + "A" * 32,  # upper case
    "blk_" + "0" * 31,
    "blk_" + "0" * 33,
    ID1 + "\n",  # "$" alone would let this through
    "../" + ID1[3:],
    "",
]
BAD_SUMS = ["xyz", "0" * 31, "A" * 32, SUM1 + "\n", ""]


def _wire(struct: Any) -> Any:
    """The struct after a trip through the binary protocol the tracker speaks."""
    return deserialize(type(struct)(), serialize(struct, PROTOCOL_FACTORY), PROTOCOL_FACTORY)


# ------------------------------------------------------------- round trips


@pytest.mark.parametrize("through_the_wire", [False, True])
def test_a_block_report_round_trips(through_the_wire: bool) -> None:
    """A full report with added and removed blocks and free space comes back equal, node id included."""
    node, report = codec.report_to_thrift(NODE, REPORT)
    if through_the_wire:
        node, report = _wire(node), _wire(report)
    assert codec.report_from_thrift(node, report) == (NODE, REPORT)


@pytest.mark.parametrize("through_the_wire", [False, True])
def test_block_commands_round_trip(through_the_wire: bool) -> None:
    """Deletes, fetch orders (block, sources, token), the token key, the interval and the full-report
    flag come back equal."""
    t = codec.commands_to_thrift(COMMANDS)
    assert codec.commands_from_thrift(_wire(t) if through_the_wire else t) == COMMANDS


@pytest.mark.parametrize("through_the_wire", [False, True])
def test_a_write_commit_round_trips(through_the_wire: bool) -> None:
    """A commit's ticket and each written block with its holders come back equal."""
    node, commit = codec.commit_to_thrift(NODE, "create-ticket", WRITTEN)
    if through_the_wire:
        node, commit = _wire(node), _wire(commit)
    assert codec.commit_from_thrift(node, commit) == (NODE, "create-ticket", WRITTEN)


@pytest.mark.parametrize("through_the_wire", [False, True])
def test_block_locations_round_trip(through_the_wire: bool) -> None:
    """The file length and each located block (offset, sources, token; a block with no source too)."""
    t = codec.locations_to_thrift(BLOCK1.length, LOCATED)
    assert codec.locations_from_thrift(_wire(t) if through_the_wire else t) == (BLOCK1.length, LOCATED)


def test_localization_source_and_aggregation_target_round_trip() -> None:
    """openForLocalization's and openForAggregation's answers decode to what was sent."""
    assert codec.source_from_thrift(_wire(codec.source_to_thrift(SOURCE))) == SOURCE
    target = ttypes.AggregationTarget("/tmp/logs/alice/bucket-logs-tfile/0001/app/node", "create-ticket", "alice")
    assert codec.target_from_thrift(_wire(target)) == codec.AggregationTarget(target.path, target.ticket, "alice")


def test_empty_messages_round_trip() -> None:
    """An incremental report with nothing in it, commands with nothing to do, a commit of no blocks,
    an empty file's locations."""
    empty = codec.BlockReportMessage(False, (), (), 0)
    assert codec.report_from_thrift(*codec.report_to_thrift(NODE, empty)) == (NODE, empty)
    idle = codec.BlockCommandsMessage((), (), KEY, 100)
    assert codec.commands_from_thrift(codec.commands_to_thrift(idle)) == idle
    assert codec.commit_from_thrift(*codec.commit_to_thrift(NODE, "t", ())) == (NODE, "t", ())
    assert codec.locations_from_thrift(codec.locations_to_thrift(0, ())) == (0, ())


hex_digits = st.text("0123456789abcdef", min_size=32, max_size=32)
reported_blocks = st.builds(
    ReportedBlock,
    hex_digits.map(lambda h: "blk_" + h),
    st.integers(0, codec.MAX_LENGTH),
    hex_digits,
    st.integers(0, codec.MAX_LENGTH),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    full=st.booleans(),
    added=st.lists(reported_blocks, max_size=5),
    removed=st.lists(hex_digits.map(lambda h: "blk_" + h), max_size=5),
    free=st.integers(0, codec.MAX_LENGTH),
)
def test_any_valid_report_round_trips_through_the_wire(
    full: bool, added: list[ReportedBlock], removed: list[str], free: int
) -> None:
    """Any report within the bounds survives to_thrift -> binary protocol -> from_thrift unchanged."""
    report = codec.BlockReportMessage(full, tuple(added), tuple(removed), free)
    node, t = codec.report_to_thrift(NODE, report)
    assert codec.report_from_thrift(_wire(node), _wire(t)) == (NODE, report)


# ------------------------------------------------------------- refusals


def _set(path: str, value: Any) -> Callable[[Any], None]:
    """A change that sets the dotted ``path`` (list indexes allowed: ``added.0.length``) to ``value``."""

    def change(t: Any) -> None:
        *parents, last = path.split(".")
        for p in parents:
            t = t[int(p)] if p.isdecimal() else getattr(t, p)
        if last.isdecimal():
            t[int(last)] = value
        else:
            setattr(t, last, value)

    return change


def _cases(field: str, values: list[Any], message: str) -> list[tuple[str, Any, str]]:
    return [(field, value, message) for value in values]


REPORT_CASES = [
    ("full", None, "Required field full is unset"),
    ("full", "yes", "report.full must be a bool"),
    ("full", 1, "report.full must be a bool"),
    ("added", None, "Required field added is unset"),
    ("added", ("not", "a list"), "report.added must be a list"),
    ("added", [None] * (MAX_CONTAINERS + 1), "report.added has more than"),
    ("added.0", {"block_id": ID1}, r"report.added\[0\] is missing"),
    ("added.1", ttypes.FetchOrder(ID1, 1, SUM1, [], "t"), r"report.added\[1\] is missing"),
    ("added.0.block_id", None, r"report.added\[0\]: Required field block_id"),
    ("added.0.block_id", 7, r"report.added\[0\].block_id must be a string"),
    ("added.0.block_id", "blk_" + "0" * 40, r"report.added\[0\].block_id is longer than"),
    *_cases("added.0.block_id", BAD_IDS[:-1], r"report.added\[0\].block_id must be blk_ and 32 hex digits"),
    ("added.0.block_id", "", r"report.added\[0\].block_id must not be empty"),
    *_cases("added.0.length", [-1, codec.MAX_LENGTH + 1, True, 1.0, "5"], r"report.added\[0\].length must be an integer"),
    *_cases("added.1.checksum", BAD_SUMS[:-1], r"report.added\[1\].checksum (must be 32 hex digits|is longer)"),
    ("added.1.checksum", 0, r"report.added\[1\].checksum must be a string"),
    *_cases("added.1.age_ms", [-1, False, None], r"report.added\[1\]"),
    ("removed", None, "Required field removed is unset"),
    ("removed", "blk", "report.removed must be a list"),
    *_cases("removed.0", BAD_IDS, r"report.removed\[0\]"),
    ("removed.0", None, r"report.removed\[0\] must be blk_"),
    *_cases("free_bytes", [-1, codec.MAX_LENGTH + 1, "10"], "report.free_bytes must be an integer"),
]


@pytest.mark.parametrize(("path", "value", "message"), REPORT_CASES)
def test_a_broken_block_report_is_malformed_naming_the_field(path: str, value: Any, message: str) -> None:
    """Each broken field of a block report raises MalformedMessage that names it."""
    node, t = codec.report_to_thrift(NODE, REPORT)
    _set(path, value)(t)
    with pytest.raises(MalformedMessage, match=message):
        codec.report_from_thrift(node, t)


@pytest.mark.parametrize(
    ("node", "report", "message"),
    [
        (None, "ok", "node_id is missing"),
        (ttypes.NodeAddress("h", 0), "ok", "node_id.port"),
        (ttypes.NodeAddress("", 1), "ok", "node_id.host must not be empty"),
        (ttypes.NodeAddress(None, 1), "ok", "Required field host"),
        ("ok", None, "report is missing"),
        ("ok", ttypes.WriteCommit("t", []), "report is missing"),
    ],
)
def test_a_report_without_a_node_or_a_report_is_malformed(node: Any, report: Any, message: str) -> None:
    """The node address and the report struct must both be there, of their types."""
    good_node, good_report = codec.report_to_thrift(NODE, REPORT)
    with pytest.raises(MalformedMessage, match=message):
        codec.report_from_thrift(good_node if node == "ok" else node, good_report if report == "ok" else report)


COMMANDS_CASES = [
    ("delete", None, "Required field delete is unset"),
    ("delete", (ID1,), "delete must be a list"),
    *_cases("delete.1", BAD_IDS, r"delete\[1\]"),
    ("fetch", None, "Required field fetch is unset"),
    ("fetch.0", ttypes.ReportedBlock(ID1, 1, SUM1, 0), r"fetch\[0\] is missing"),
    ("fetch.0.block_id", "blk_1", r"fetch\[0\].block_id must be blk_"),
    ("fetch.0.length", -1, r"fetch\[0\].length must be an integer"),
    ("fetch.0.checksum", "Z" * 32, r"fetch\[0\].checksum must be 32 hex digits"),
    ("fetch.0.sources", None, r"fetch\[0\]: Required field sources"),
    ("fetch.0.sources", "n2:8042", r"fetch\[0\].sources must be a list"),
    *_cases("fetch.0.sources.1", ["no-port", "h:0", "h:65536", ":8042", "h:x", ""], r"fetch\[0\].sources"),
    ("fetch.0.token", "", r"fetch\[0\].token must not be empty"),
    ("fetch.1.token", "t" * (codec.MAX_TICKET_CHARS + 1), r"fetch\[1\].token is longer than"),
    ("fetch.1.token", b"bytes", r"fetch\[1\].token must be a string"),
    ("token_key", None, "Required field token_key is unset"),
    ("token_key", "key", "token_key is not a MasterKey"),
    ("token_key.secret", b"short", "token_key.secret must be"),
    ("token_key.key_id", 2**31, "token_key.key_id must be an integer"),
    *_cases("report_interval_ms", [99, 2**31, -1, "1000"], "report_interval_ms must be an integer"),
    ("full_report_wanted", None, "Required field full_report_wanted is unset"),
    ("full_report_wanted", "no", "full_report_wanted must be a bool"),
]


@pytest.mark.parametrize(("path", "value", "message"), COMMANDS_CASES)
def test_broken_block_commands_are_malformed_naming_the_field(path: str, value: Any, message: str) -> None:
    """Each broken field of the NameNode's answer raises MalformedMessage on the node, naming it."""
    t = codec.commands_to_thrift(COMMANDS)
    _set(path, value)(t)
    with pytest.raises(MalformedMessage, match=message):
        codec.commands_from_thrift(t)


def test_block_commands_of_the_wrong_type_are_malformed() -> None:
    """Not a BlockCommands at all (nothing, or another struct): MalformedMessage."""
    for t in (None, ttypes.BlockReport(True, [], [], 0)):
        with pytest.raises(MalformedMessage, match="BlockCommands is missing"):
            codec.commands_from_thrift(t)


COMMIT_CASES = [
    ("ticket", None, "Required field ticket is unset"),
    ("ticket", "", "commit.ticket must not be empty"),
    ("ticket", "t" * (codec.MAX_TICKET_CHARS + 1), "commit.ticket is longer than"),
    ("blocks", {}, "commit.blocks must be a list"),
    ("blocks.0", None, r"commit.blocks\[0\] is missing"),
    *_cases("blocks.1.block_id", BAD_IDS[:-1], r"commit.blocks\[1\].block_id must be blk_"),
    ("blocks.1.length", -3, r"commit.blocks\[1\].length must be an integer"),
    *_cases("blocks.0.checksum", BAD_SUMS[:-1], r"commit.blocks\[0\].checksum (must be 32 hex digits|is longer)"),
    ("blocks.0.holders", [], r"commit.blocks\[0\] has no holder"),
    ("blocks.0.holders", None, r"commit.blocks\[0\]: Required field holders"),
    ("blocks.0.holders", (), r"commit.blocks\[0\].holders must be a list"),
    ("blocks.0.holders.1", "n2:8041", r"commit.blocks\[0\].holders is missing"),
    ("blocks.0.holders.1", ttypes.NodeAddress("n2", 70000), r"commit.blocks\[0\].holders.port"),
]


@pytest.mark.parametrize(("path", "value", "message"), COMMIT_CASES)
def test_a_broken_write_commit_is_malformed_naming_the_field(path: str, value: Any, message: str) -> None:
    """Each broken field of commitWrite raises MalformedMessage that names it."""
    node, t = codec.commit_to_thrift(NODE, "create-ticket", WRITTEN)
    _set(path, value)(t)
    with pytest.raises(MalformedMessage, match=message):
        codec.commit_from_thrift(node, t)


def test_a_commit_without_a_node_or_a_commit_is_malformed() -> None:
    """The node address and the WriteCommit struct must both be there."""
    node, t = codec.commit_to_thrift(NODE, "create-ticket", WRITTEN)
    with pytest.raises(MalformedMessage, match="node_id is missing"):
        codec.commit_from_thrift(None, t)
    with pytest.raises(MalformedMessage, match="commit is missing"):
        codec.commit_from_thrift(node, ttypes.BlockReport(True, [], [], 0))


LOCATION_CASES = [
    ("file_length", None, "Required field file_length is unset"),
    ("file_length", -1, "file_length must be an integer"),
    ("blocks", None, "Required field blocks is unset"),
    ("blocks.0", "block", r"blocks\[0\] is missing"),
    ("blocks.0.block_id", ID1.upper(), r"blocks\[0\].block_id must be blk_"),
    ("blocks.1.length", codec.MAX_LENGTH + 1, r"blocks\[1\].length must be an integer"),
    ("blocks.1.checksum", "", r"blocks\[1\].checksum must not be empty"),
    ("blocks.0.offset", -1, r"blocks\[0\].offset must be an integer"),
    ("blocks.0.offset", None, r"blocks\[0\]: Required field offset"),
    ("blocks.0.sources.0", "n1", r"blocks\[0\].sources must be host:port"),
    ("blocks.0.token", "", r"blocks\[0\].token must not be empty"),
]


@pytest.mark.parametrize(("path", "value", "message"), LOCATION_CASES)
def test_broken_block_locations_are_malformed_naming_the_field(path: str, value: Any, message: str) -> None:
    """Each broken field of locateBlocks' answer raises MalformedMessage that names it."""
    t = codec.locations_to_thrift(BLOCK1.length, LOCATED)
    _set(path, value)(t)
    with pytest.raises(MalformedMessage, match=message):
        codec.locations_from_thrift(t)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("length", -1, "length must be an integer"),
        ("length", None, "Required field length"),
        ("modification_time", -1, "modification_time must be an integer"),
        ("modification_time", "now", "modification_time must be an integer"),
        ("ticket", "", "ticket must not be empty"),
        ("ticket", 5, "ticket must be a string"),
    ],
)
def test_a_broken_localization_source_is_malformed(path: str, value: Any, message: str) -> None:
    """Each broken field of openForLocalization's answer raises MalformedMessage that names it."""
    t = codec.source_to_thrift(SOURCE)
    _set(path, value)(t)
    with pytest.raises(MalformedMessage, match=message):
        codec.source_from_thrift(t)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (None, "AggregationTarget is missing"),
        (ttypes.LocalizationSource(1, 1, "t"), "AggregationTarget is missing"),
        (ttypes.AggregationTarget(None, "t", "u"), "Required field path"),
        (ttypes.AggregationTarget("", "t", "u"), "path must not be empty"),
        (ttypes.AggregationTarget("/p", "", "u"), "ticket must not be empty"),
        (ttypes.AggregationTarget(b"/p", "t", "u"), "path must be a string"),
        (ttypes.AggregationTarget("/p", "t" * (codec.MAX_TICKET_CHARS + 1), "u"), "ticket is longer than"),
        (ttypes.AggregationTarget("/p", "t", None), "Required field owner"),
        (ttypes.AggregationTarget("/p", "t", ""), "owner must not be empty"),
        (ttypes.AggregationTarget("/p", "t", "../x"), "owner must be a user name"),
    ],
)
def test_a_broken_aggregation_target_is_malformed(target: Any, message: str) -> None:
    """openForAggregation's answer must be an AggregationTarget with a path and a ticket."""
    with pytest.raises(MalformedMessage, match=message):
        codec.target_from_thrift(target)


def test_decoding_never_changes_the_struct_it_was_given() -> None:
    """A refused message is left as it was (decoding only reads)."""
    t = codec.commands_to_thrift(COMMANDS)
    t.delete[1] = "blk_bad"
    before = copy.deepcopy(t)
    with pytest.raises(MalformedMessage):
        codec.commands_from_thrift(t)
    assert t == before


def test_a_runtime_image_round_trips_and_a_broken_one_is_malformed() -> None:
    """openRuntimeImage's answer: with and without a source; a SHA-256 that is not 64 lowercase
    hex digits, or a source without an image, is refused."""
    for image in (
        codec.RuntimeImageSource("", None),
        codec.RuntimeImageSource("0f" * 32, None),
        codec.RuntimeImageSource("0f" * 32, SOURCE),
    ):
        assert codec.image_from_thrift(codec.image_to_thrift(image)) == image
    for t, message in (
        (ttypes.RuntimeImage("0F" * 32), "64 lowercase hex"),
        (ttypes.RuntimeImage("0f" * 31), "64 lowercase hex"),
        (ttypes.RuntimeImage("../" * 3), "64 lowercase hex"),
        (ttypes.RuntimeImage("", codec.source_to_thrift(SOURCE)), "without a sha256 has no source"),
        (ttypes.RuntimeImage(None), "Required field sha256"),
        (ttypes.RuntimeImage(5), "sha256 must be a string"),
        ("not a struct", "RuntimeImage"),
    ):
        with pytest.raises(MalformedMessage, match=message):
            codec.image_from_thrift(t)
