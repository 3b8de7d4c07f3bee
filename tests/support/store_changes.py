"""Hypothesis strategies for what the RM's stores persist: the namespace's ``Changes`` (any field values a
64-bit column holds, any text) and the registry's ``RegistryChange`` (valid registrations), for the journal
codecs' round-trip properties and fuzzers."""

from __future__ import annotations

from hypothesis import strategies as st

from cortex_rm.events.functions import FunctionLimits, FunctionSpec
from cortex_rm.events.registry import RegistryChange
from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord

ints = st.integers(-(1 << 63), (1 << 63) - 1)
texts = st.text(st.characters(codec="utf-8"), max_size=12)  # (no lone surrogates: not Unicode text)
blocks = st.builds(BlockRef, texts, ints, texts)
records = st.builds(
    InodeRecord, ints, ints, texts, st.sampled_from(FileKind), texts, texts, ints, ints, ints, ints, ints,
    st.lists(blocks, max_size=4).map(tuple),
)  # fmt: skip
namespace_changes = st.builds(Changes, st.lists(records, max_size=4).map(tuple), st.lists(ints, max_size=6).map(tuple),
                              st.lists(blocks, max_size=4).map(tuple))  # fmt: skip

user_names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
specs = st.builds(
    FunctionSpec, st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True), user_names, st.integers(1, 1 << 40),
    st.from_regex(r"/[a-z/]{0,20}\.py", fullmatch=True), st.integers(0, 1 << 20), st.integers(0, 1 << 45),
    replicas=st.integers(1, 7), mode=st.sampled_from(["first", "vote"]), grants=st.frozensets(user_names, max_size=3),
    schedule=st.none() | st.just("every 30s"), registered_ms=st.integers(0, 1 << 45), deleted=st.booleans(),
    limits=st.builds(FunctionLimits, st.integers(64, 2048), st.sampled_from([0.5, 1.0, 30.0, 2.5]), st.integers(1, 16)),
)  # fmt: skip
registry_changes = st.builds(
    lambda saved, forgotten: RegistryChange(saved.name if saved is not None else "gone", saved, tuple(forgotten)),
    st.none() | specs, st.lists(st.integers(1, 1 << 62), max_size=4),
)  # fmt: skip
