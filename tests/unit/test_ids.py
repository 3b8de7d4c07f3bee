"""YARN identifiers: Hadoop's exact string forms, parsing, and the parse/str round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import (
    CONTAINER_EPOCH_SHIFT,
    CONTAINER_SEQUENCE_MASK,
    ApplicationAttemptId,
    ApplicationId,
    ContainerId,
    NodeId,
)

# Hadoop keeps the cluster timestamp in a long and the ids in ints.
timestamps = st.integers(min_value=0, max_value=2**63 - 1)
app_numbers = st.integers(min_value=0, max_value=2**31 - 1)
attempt_numbers = st.integers(min_value=0, max_value=2**31 - 1)
epochs = st.integers(min_value=0, max_value=(2**63 - 1) >> CONTAINER_EPOCH_SHIFT)
sequences = st.integers(min_value=0, max_value=CONTAINER_SEQUENCE_MASK)

application_ids = st.builds(ApplicationId, timestamps, app_numbers)
attempt_ids = st.builds(ApplicationAttemptId, application_ids, attempt_numbers)
container_ids = st.builds(
    lambda attempt, epoch, seq: ContainerId(attempt, (epoch << CONTAINER_EPOCH_SHIFT) | seq),
    attempt_ids,
    epochs,
    sequences,
)
node_ids = st.builds(
    NodeId,
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1),
    st.integers(min_value=0, max_value=65535),
)


# -- the string forms Hadoop prints --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (ApplicationId(1410901177871, 1), "application_1410901177871_0001"),
        (ApplicationId(1410901177871, 12345), "application_1410901177871_12345"),
        (ApplicationAttemptId(ApplicationId(1410901177871, 1), 1), "appattempt_1410901177871_0001_000001"),
        (
            ContainerId(ApplicationAttemptId(ApplicationId(1410901177871, 1), 1), 5),
            "container_1410901177871_0001_01_000005",
        ),
        (
            ContainerId(ApplicationAttemptId(ApplicationId(1410901177871, 1), 1), (17 << 40) | 5),
            "container_e17_1410901177871_0001_01_000005",
        ),
        (
            ContainerId(ApplicationAttemptId(ApplicationId(1410901177871, 2), 123), (3 << 40) | 1234567),
            "container_e03_1410901177871_0002_123_1234567",
        ),
        (NodeId("nm1.example.com", 8041), "nm1.example.com:8041"),
    ],
)
def test_ids_print_and_parse_as_hadoop_does(value: object, text: str) -> None:
    """Each id prints with Hadoop's prefixes and zero padding, and parses back from that text."""
    assert str(value) == text
    assert type(value).parse(text) == value  # type: ignore[attr-defined]


def test_container_epoch_lives_above_bit_40() -> None:
    """A container id carries its epoch above bit 40 and its sequence below it."""
    cid = ContainerId.parse("container_e17_1410901177871_0001_01_000005")
    assert cid.epoch == 17
    assert cid.sequence == 5
    assert cid.id == (17 << 40) | 5
    assert cid.attempt_id == ApplicationAttemptId.parse("appattempt_1410901177871_0001_000001")


def test_container_without_epoch_prefix_has_epoch_zero() -> None:
    """A container string without ``e<epoch>_`` belongs to epoch 0 and prints without the prefix."""
    cid = ContainerId.parse("container_1410901177871_0001_01_000005")
    assert cid.epoch == 0
    assert cid.id == 5
    assert "_e" not in str(cid)


def test_short_numbers_parse_and_print_padded() -> None:
    """Ids written without Hadoop's padding still parse; printing adds the padding back."""
    assert str(ApplicationId.parse("application_7_3")) == "application_7_0003"
    assert str(ApplicationAttemptId.parse("appattempt_7_3_1")) == "appattempt_7_0003_000001"
    assert str(ContainerId.parse("container_e1_7_3_1_9")) == "container_e01_7_0003_01_000009"


# -- round trips ---------------------------------------------------------------------


@given(application_ids)
def test_application_id_round_trips_through_its_string(app_id: ApplicationId) -> None:
    """Every ApplicationId parses back from its string form."""
    assert ApplicationId.parse(str(app_id)) == app_id


@given(attempt_ids)
def test_attempt_id_round_trips_through_its_string(attempt_id: ApplicationAttemptId) -> None:
    """Every ApplicationAttemptId parses back from its string form."""
    assert ApplicationAttemptId.parse(str(attempt_id)) == attempt_id


@given(container_ids)
def test_container_id_round_trips_through_its_string(container_id: ContainerId) -> None:
    """Every ContainerId, with or without an epoch, parses back from its string form."""
    parsed = ContainerId.parse(str(container_id))
    assert parsed == container_id
    assert (parsed.epoch, parsed.sequence) == (container_id.epoch, container_id.sequence)


@given(node_ids)
def test_node_id_round_trips_through_its_string(node_id: NodeId) -> None:
    """Every NodeId parses back from ``host:port``, even when the host itself has colons."""
    assert NodeId.parse(str(node_id)) == node_id


@given(st.lists(application_ids, min_size=2, max_size=10))
def test_application_ids_order_by_timestamp_then_number(ids: list[ApplicationId]) -> None:
    """ApplicationIds sort as Hadoop compares them: cluster timestamp first, then the number."""
    assert sorted(ids) == sorted(ids, key=lambda a: (a.cluster_timestamp, a.id))


# -- malformed input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (ApplicationId.parse, ""),
        (ApplicationId.parse, "application_1"),
        (ApplicationId.parse, "application_x_0001"),
        (ApplicationId.parse, "app_1_0001"),
        (ApplicationId.parse, "application_1_0001_1"),
        (ApplicationId.parse, " application_1_0001"),
        (ApplicationId.parse, "application_1_-1"),
        (ApplicationAttemptId.parse, "appattempt_1_0001"),
        (ApplicationAttemptId.parse, "application_1_0001"),
        (ContainerId.parse, "container_1_0001_01"),
        (ContainerId.parse, "container_e_1_0001_01_000001"),
        (ContainerId.parse, "container_ex_1_0001_01_000001"),
        (ContainerId.parse, "appattempt_1_0001_000001"),
        (NodeId.parse, "host"),
        (NodeId.parse, ":8041"),
        (NodeId.parse, "host:"),
        (NodeId.parse, "host:port"),
        (NodeId.parse, "host:-1"),
    ],
)
def test_malformed_ids_raise_malformed_id(parse, text: str) -> None:  # type: ignore[no-untyped-def]
    """A string that is not the id's form raises MalformedId quoting it, never another error."""
    with pytest.raises(MalformedId) as info:
        parse(text)
    assert repr(text) in str(info.value)


def test_container_sequence_wider_than_40_bits_is_malformed() -> None:
    """A sequence that would spill into the epoch bits is refused, not read as another container."""
    with pytest.raises(MalformedId):
        ContainerId.parse(f"container_1_0001_01_{CONTAINER_SEQUENCE_MASK + 1}")


@pytest.mark.parametrize("port", ["²", "80²", "①"])
def test_node_port_with_digit_like_characters_is_malformed(port: str) -> None:
    """A port of characters that look like digits but are not decimal raises MalformedId, not int()'s ValueError."""
    with pytest.raises(MalformedId):
        NodeId.parse(f"host:{port}")
