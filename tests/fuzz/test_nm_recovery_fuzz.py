"""Fuzzing NodeManager recovery's decoders: a container record (``ContainerRecord.from_json``, read from
the state dir at start) over mutations of valid records and over random JSON values, and the exit code
file's reader over random bytes: a record or ``ValueError``, an int in 0..255 or None, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.container.nm_recovery import EXIT_CODE_FILE, ContainerRecord, written_exit_code
from tests.fuzz.fuzzing import fuzz_settings, mutated

VALID = ContainerRecord(
    container_id="container_1700000000000_0001_01_000002", application="application_1700000000000_0001",
    user="alice", memory_mb=1024, vcores=1, priority=1, creation_time_ms=1_700_000_000_000,
    work_dir="/nm/usercache/alice/appcache/application_1700000000000_0001/container_1700000000000_0001_01_000002",
    log_dir="/logs/application_1700000000000_0001/container_1700000000000_0001_01_000002",
    log_dirs=("/logs/x",), app_dirs=("/nm/a",), user_dirs=("/nm/u",), lxc_name="c", cgroup_dir="cortex/b1/c",
    pid=4242, pid_start_ticks=99, port_slot=3, peers=(("10.0.0.1", 7077),),
)  # fmt: skip
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
_fields = st.dictionaries(st.sampled_from(sorted(ContainerRecord.__dataclass_fields__)), _json, max_size=12)


def _decoded(text: str) -> None:
    try:
        record = ContainerRecord.from_json(text)
    except ValueError:
        return
    assert ContainerRecord.from_json(record.to_json()) == record


def test_the_valid_record_round_trips() -> None:
    """The fuzzers' base case decodes to itself."""
    assert ContainerRecord.from_json(VALID.to_json()) == VALID


@fuzz_settings(400)
@given(mutated(st.just(VALID.to_json().encode())))
def test_a_mutated_record_decodes_or_is_refused(data: bytes) -> None:
    """A record or ValueError, never another exception; what decodes encodes back to itself."""
    _decoded(data.decode("utf-8", "replace"))


@fuzz_settings(400)
@given(_fields)
def test_records_with_random_field_values_decode_or_are_refused(fields: dict[str, object]) -> None:
    """Known fields with any JSON value (over the valid record's): a record or ValueError."""
    _decoded(json.dumps({**json.loads(VALID.to_json()), **fields}))


@fuzz_settings(200)
@given(st.binary(max_size=64))
def test_the_exit_code_file_reads_as_a_small_code_or_none(tmp_path_factory: object, data: bytes) -> None:
    """Whatever a container wrote there: an exit code in 0..999 (three digits at most) or None."""
    work = Path(tmp_path_factory.mktemp("work"))  # type: ignore[attr-defined]
    (work / EXIT_CODE_FILE).write_bytes(data)
    code = written_exit_code(ContainerRecord("c", "a", "u", 1, 1, 0, 0, str(work), str(work)))
    assert code is None or 0 <= code <= 999
