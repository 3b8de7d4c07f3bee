"""Random protobuf messages and Thrift structs, built from their descriptors.

``protobuf_messages(Cls)`` fills any generated protobuf message with random field
values of the right types (integers biased to their bounds, text, bytes, valid enum
numbers, nested messages to a depth, repeated fields of a few entries); with
``initialized=True`` every required field is set, as a message the IPC layer lets
through (it answers FATAL to one that lacks a required field) must be.

``thrift_structs(Cls)`` does the same from a generated struct's ``thrift_spec``, and
with ``wrong_types=True`` also puts values of the wrong type in fields, which the
codecs must refuse as ``MalformedMessage`` even though Thrift's own decoder never
produces them (a codec is the last check before state).
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from thrift.Thrift import TType

F = FieldDescriptor

_INT_BOUNDS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}

#: Text that breaks naive parsers: separators, ids, Unicode digits, NUL, very long.
TRICKY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "application_1_1",
        "application_1700000000000_0001",
        "container_e01_1700000000000_0001_01_000001",
        "host:0",
        "host:\u0661\u0662",
        "root.default",
        "default",
        "..",
        "/",
        "\u00b2",
        "\ufeff",
        "a" * 5000,
        "%ff",
        "*",
    ]
)


def bounded_integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in ``[low, high]``, often one of the bounds, 0, 1 or -1."""
    edges = sorted({v for v in (low, high, 0, 1, -1, low + 1, high - 1) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def texts(max_size: int = 24) -> st.SearchStrategy[str]:
    """Random text (no surrogates: protobuf and Thrift only carry valid Unicode) or a tricky one."""
    return st.one_of(st.text(max_size=max_size), TRICKY_TEXT)


def _protobuf_value(field: FieldDescriptor, depth: int, initialized: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_BOUNDS:
        return bounded_integers(*_INT_BOUNDS[kind])
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(width=32 if kind == F.TYPE_FLOAT else 64)
    if kind == F.TYPE_STRING:
        return texts()
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=24)
    if kind == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    assert kind in (F.TYPE_MESSAGE, F.TYPE_GROUP), kind
    return _messages(field.message_type, depth - 1, initialized)


@functools.cache
def _messages(descriptor: Descriptor, depth: int, initialized: bool) -> st.SearchStrategy[Message]:
    cls = _class_of(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            nested = field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP)
            if field.is_repeated:
                if (
                    depth <= 0
                    and nested
                    or field.message_type is not None
                    and field.message_type.GetOptions().map_entry
                ):
                    continue
                values = draw(st.lists(_protobuf_value(field, depth, initialized), max_size=3))
                container = getattr(message, field.name)
                for value in values:
                    if nested:
                        container.add().CopyFrom(value)
                    else:
                        container.append(value)
                continue
            required = initialized and field.is_required
            if not required and (depth <= 0 and nested or not draw(st.booleans())):
                continue
            value = draw(_protobuf_value(field, max(depth, 1) if required else depth, initialized))
            if nested:
                getattr(message, field.name).CopyFrom(value)
            else:
                setattr(message, field.name, value)
        return message

    return build()


def _class_of(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def protobuf_messages(cls: type[Message], *, depth: int = 3, initialized: bool = False) -> st.SearchStrategy[Message]:
    """Random ``cls`` messages (see the module docstring)."""
    return _messages(cls.DESCRIPTOR, depth, initialized)


# --- Thrift -------------------------------------------------------------------------------------

_THRIFT_INTS = {TType.BYTE: 8, TType.I16: 16, TType.I32: 32, TType.I64: 64}
_WRONG = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.binary(max_size=4), st.booleans(), st.just([1]))


def _thrift_value(
    ttype: int, args: Any, depth: int, wrong_types: bool, optional: bool = True
) -> st.SearchStrategy[Any]:
    right: st.SearchStrategy[Any]
    if ttype in _THRIFT_INTS:
        bits = _THRIFT_INTS[ttype]
        right = bounded_integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    elif ttype == TType.BOOL:
        right = st.booleans()
    elif ttype == TType.DOUBLE:
        right = st.floats()
    elif ttype == TType.STRING:
        right = texts() if args == "UTF8" else st.binary(max_size=24)
    elif ttype == TType.STRUCT:
        right = _thrift_structs(args[0], depth - 1, wrong_types) if depth > 0 else st.builds(args[0])
    elif ttype in (TType.LIST, TType.SET):
        item_type, item_args = args[0], args[1]
        items = st.lists(_thrift_value(item_type, item_args, depth, wrong_types, optional=False), max_size=3)
        right = items if ttype == TType.LIST else items.map(lambda values: set(_hashable(values)))
    elif ttype == TType.MAP:
        key_type, key_args, value_type, value_args = args[0], args[1], args[2], args[3]
        right = st.dictionaries(
            _thrift_value(key_type, key_args, 0, False, optional=False).filter(_is_hashable),
            _thrift_value(value_type, value_args, depth, wrong_types, optional=False),
            max_size=3,
        )
    else:
        raise AssertionError(f"no strategy for Thrift type {ttype}")
    alternatives = [right, st.none()] if optional else [right]
    if wrong_types:
        alternatives.append(_WRONG)
    return st.one_of(*alternatives)


def _hashable(values: list[Any]) -> list[Any]:
    return [v for v in values if _is_hashable(v)]


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@functools.cache
def _thrift_structs(cls: type, depth: int, wrong_types: bool) -> st.SearchStrategy[Any]:
    specs = [spec for spec in cls.thrift_spec if spec is not None]  # type: ignore[attr-defined]
    fields = {name: _thrift_value(ttype, args, depth, wrong_types) for _, ttype, name, args, _ in specs}
    return st.builds(cls, **fields)


def thrift_structs(cls: type, *, depth: int = 3, wrong_types: bool = False) -> st.SearchStrategy[Any]:
    """Random instances of the generated Thrift struct ``cls`` (see the module docstring)."""
    return _thrift_structs(cls, depth, wrong_types)


# --- proto2 text that is not UTF-8 ----------------------------------------------------------------

_MARKER = "\x7f~\x7f~"
_NOT_UTF8 = b"\xff\xfe\x80\xc3"  # as long as the marker, so no length prefix changes


def _mark_text_fields(message: Message, chosen: list[bool]) -> None:
    """Replace some set ``string`` fields (at any depth) by the marker; ``chosen`` decides which, in order."""
    for field, value in message.ListFields():
        if field.type == F.TYPE_STRING and not field.is_repeated:
            if chosen and chosen.pop():
                setattr(message, field.name, _MARKER)
        elif field.type == F.TYPE_STRING:
            for index in range(len(value)):
                if chosen and chosen.pop():
                    value[index] = _MARKER
        elif field.type == F.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                _mark_text_fields(item, chosen)


def with_text_not_utf8(messages: st.SearchStrategy[Message]) -> st.SearchStrategy[Message]:
    """Messages from ``messages`` with some of their text fields holding bytes that are not UTF-8,
    as a client can send them: proto2 does not check, and Python's protobuf then returns those
    fields as ``bytes`` instead of ``str``."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = draw(messages)
        _mark_text_fields(message, draw(st.lists(st.booleans(), min_size=1, max_size=12)))
        raw = message.SerializePartialToString().replace(_MARKER.encode(), _NOT_UTF8)
        parsed = type(message)()
        parsed.ParseFromString(raw)
        return parsed

    return build()
