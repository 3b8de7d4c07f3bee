"""Fuzzing the RM directory ``client-config`` reads from a node it was pointed at (``rm_lookup.parse_directory``):
random bytes, random JSON, a valid directory with fields replaced, and mutated bytes of one.  The answer is
``RmLookupError`` or a directory whose every address is a plain host:port (what it writes into the site
files), never another exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.rm_lookup import RmLookupError, classify, node_address, parse_directory
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.messages import texts

ENTRY = {"ringId": "ab" * 20, "address": "10.0.0.1:8032", "schedulerAddress": "10.0.0.1:8030",
         "webappAddress": "rm.example:8088", "trackerAddress": "10.0.0.1:8031", "active": True}  # fmt: skip
VALID = {"resourceManagers": {"active": "ab" * 20, "rm": [ENTRY, {**ENTRY, "ringId": "cd" * 20,
         "address": "[::1]:8032", "active": False}]}}  # fmt: skip

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(12), inner, max_size=3),
    max_leaves=10,
)


def _replaced(entry_fields: dict[str, Any], section_fields: dict[str, Any]) -> bytes:
    document = json.loads(json.dumps(VALID))
    document["resourceManagers"]["rm"][0].update(entry_fields)
    document["resourceManagers"].update(section_fields)
    return json.dumps(document).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=120),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(
        _replaced,
        st.dictionaries(st.sampled_from(sorted(ENTRY)), JSON | texts(), max_size=2),
        st.dictionaries(st.sampled_from(["active", "rm"]), JSON, max_size=1),
    ),
    mutated(st.just(json.dumps(VALID).encode())),
)


@fuzz_settings(600)
@given(PAYLOADS)
def test_a_directory_answer_parses_into_plain_addresses_or_is_refused(body: bytes) -> None:
    try:
        directory = parse_directory(body)
    except RmLookupError:
        return
    for rm in directory.addresses:
        for address in (rm.client, rm.scheduler, rm.webapp):
            assert node_address(str(address), "re-read") == address
    assert [f.ring_id for f in directory.rms if f.active] == ([] if directory.active is None else [directory.active])


@fuzz_settings(200)
@given(st.integers(100, 599), PAYLOADS)
def test_any_http_answer_is_a_directory_none_or_a_lookup_error(status: int, body: bytes) -> None:
    try:
        classify(status, body, "10.0.0.9:8042")
    except RmLookupError:
        pass
