"""Our ``.proto`` files against the descriptors compiled into Hadoop's client jar.

Cortex's protos are written by hand, so every message, field, enum value and service
method they declare is checked here against the real thing: ``DumpDescriptors.java``
walks the shaded protobuf descriptors inside ``hadoop-client-api`` (the jar that
``spark-submit`` uses) and writes them as a ``FileDescriptorSet``, which is loaded into
a private ``DescriptorPool`` (never the default pool, where our generated modules live
under the same full names) and compared with our generated modules.

We may declare a subset of Hadoop's fields, but what we declare must match exactly:
number, type, label, message/enum type (by full name) and default.  Three rules are
stricter than "what we declare matches", because breaking them corrupts the wire:

* a field Hadoop marks ``required`` must be declared, or we could never send it and
  Java would reject our messages;
* an enum must list all of Hadoop's values in Hadoop's order: the first value is a
  proto2 field's implicit default, and a value we lack would turn a received enum
  field into an unknown field;
* every Hadoop service method we leave out must be named in our service file (the
  dispatcher answers those by name), so the comment stays honest.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)
from google.protobuf.descriptor_pool import DescriptorPool

from cortex_rm.yarn_api.proto import generate
from tests.support import java

PROTO_PACKAGE = "cortex_rm.yarn_api.proto"
OUR_MODULES = sorted(p.stem for p in generate.PROTO_DIR.glob("*_pb2.py"))

_TYPE_NAMES = {getattr(FieldDescriptor, n): n[len("TYPE_") :].lower() for n in dir(FieldDescriptor) if n.startswith("TYPE_")}


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def hadoop_pool(tmp_path_factory: pytest.TempPathFactory) -> DescriptorPool:
    """Hadoop's own descriptors (IPC common + YARN API files and their imports)."""
    classes = java.compile_driver("DumpDescriptors")
    out = tmp_path_factory.mktemp("hadoop-descriptors") / "hadoop-client-api.pb"
    result = java.run_driver("DumpDescriptors", [str(out)], classes=classes)
    if result.returncode != 0:
        pytest.fail(f"DumpDescriptors exited {result.returncode}:\n{result.stderr}")
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = DescriptorPool()
    for file_proto in descriptor_set.file:  # dependencies come first
        pool.Add(file_proto)
    return pool


def _our_module(name: str) -> ModuleType:
    return importlib.import_module(f"{PROTO_PACKAGE}.{name}")


# ------------------------------------------------------------------ checker
# Pure functions: they take our descriptors and Hadoop's pool and return a list of
# readable mismatches, so the same code checks the real files and the deliberately
# broken ones in test_checker_reports_each_kind_of_mismatch.


def _label(field: FieldDescriptor) -> str:
    if field.is_required:
        return "required"
    return "repeated" if field.is_repeated else "optional"


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return _TYPE_NAMES[field.type]


def _default(field: FieldDescriptor) -> object:
    """The explicit default, or ``None``; repeated and message fields have none."""
    return field.default_value if field.has_default_value else None


def _walk_messages(messages: Iterable[Descriptor]) -> Iterator[Descriptor]:
    for message in messages:
        yield message
        yield from _walk_messages(message.nested_types)


def _walk_enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    for message in _walk_messages(file.message_types_by_name.values()):
        yield from message.enum_types


_Declared = Descriptor | EnumDescriptor | ServiceDescriptor


def _hadoop_file_mismatch(ours: _Declared, theirs: _Declared) -> list[str]:
    """Our files mirror Hadoop's: a type lives in the file of the same base name."""
    ours_file = Path(ours.file.name).name
    theirs_file = theirs.file.name
    if ours_file != theirs_file:
        return [f"{ours.full_name}: declared in {ours_file}, Hadoop declares it in {theirs_file}"]
    return []


def message_mismatches(file: FileDescriptor, hadoop: DescriptorPool) -> list[str]:
    """Every way the messages of ``file`` (nested ones too) differ from Hadoop's."""
    problems: list[str] = []
    for ours in _walk_messages(file.message_types_by_name.values()):
        try:
            theirs = hadoop.FindMessageTypeByName(ours.full_name)
        except KeyError:
            problems.append(f"{ours.full_name}: no such message in Hadoop")
            continue
        problems += _hadoop_file_mismatch(ours, theirs)
        for field in ours.fields:
            where = f"{ours.full_name}.{field.name}"
            hadoop_field = theirs.fields_by_name.get(field.name)
            if hadoop_field is None:
                problems.append(f"{where}: no such field in Hadoop")
                continue
            for aspect, get in (
                ("number", lambda f: f.number),
                ("type", _type_name),
                ("label", _label),
                ("default", _default),
                ("packed", lambda f: f.is_packed),
            ):
                mine, hadoops = get(field), get(hadoop_field)
                if mine != hadoops:
                    problems.append(f"{where}: {aspect} is {mine!r}, Hadoop has {hadoops!r}")
        for hadoop_field in theirs.fields:
            if hadoop_field.is_required and hadoop_field.name not in ours.fields_by_name:
                problems.append(
                    f"{ours.full_name}.{hadoop_field.name}: required in Hadoop (field {hadoop_field.number}) "
                    "but not declared, so we could never send a valid message"
                )
    return problems


def enum_mismatches(file: FileDescriptor, hadoop: DescriptorPool) -> list[str]:
    """Every way the enums of ``file`` differ from Hadoop's (values, numbers, order)."""
    problems: list[str] = []
    for ours in _walk_enums(file):
        try:
            theirs = hadoop.FindEnumTypeByName(ours.full_name)
        except KeyError:
            problems.append(f"{ours.full_name}: no such enum in Hadoop")
            continue
        problems += _hadoop_file_mismatch(ours, theirs)
        hadoop_values = {v.name: v.number for v in theirs.values}
        for value in ours.values:
            if value.name not in hadoop_values:
                problems.append(f"{ours.full_name}.{value.name}: no such enum value in Hadoop")
            elif value.number != hadoop_values[value.name]:
                problems.append(
                    f"{ours.full_name}.{value.name}: number is {value.number}, Hadoop has {hadoop_values[value.name]}"
                )
        mine = [(v.name, v.number) for v in ours.values]
        hadoops = [(v.name, v.number) for v in theirs.values]
        if mine != hadoops and set(mine) <= set(hadoops):
            problems.append(f"{ours.full_name}: values {mine} must be all of Hadoop's, in its order: {hadoops}")
    return problems


def service_mismatches(file: FileDescriptor, hadoop: DescriptorPool) -> list[str]:
    """Every way the services of ``file`` differ from Hadoop's (names, method types)."""
    problems: list[str] = []
    for ours in file.services_by_name.values():
        try:
            theirs = hadoop.FindServiceByName(ours.full_name)
        except KeyError:
            problems.append(f"{ours.full_name}: no such service in Hadoop")
            continue
        problems += _hadoop_file_mismatch(ours, theirs)
        for method in ours.methods:
            where = f"{ours.full_name}.{method.name}"
            hadoop_method = theirs.methods_by_name.get(method.name)
            if hadoop_method is None:
                problems.append(f"{where}: no such method in Hadoop")
                continue
            for aspect, mine, hadoops in (
                ("input", method.input_type.full_name, hadoop_method.input_type.full_name),
                ("output", method.output_type.full_name, hadoop_method.output_type.full_name),
                ("client_streaming", method.client_streaming, hadoop_method.client_streaming),
                ("server_streaming", method.server_streaming, hadoop_method.server_streaming),
            ):
                if mine != hadoops:
                    problems.append(f"{where}: {aspect} is {mine!r}, Hadoop has {hadoops!r}")
    return problems


def all_mismatches(file: FileDescriptor, hadoop: DescriptorPool) -> list[str]:
    return message_mismatches(file, hadoop) + enum_mismatches(file, hadoop) + service_mismatches(file, hadoop)


def _fail_on(problems: list[str], what: str) -> None:
    if problems:
        listing = "\n  ".join(problems)
        pytest.fail(f"{len(problems)} mismatch(es) between {what} and hadoop-client-api:\n  {listing}", pytrace=False)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("module_name", OUR_MODULES)
def test_declared_messages_and_fields_match_hadoop(module_name: str, hadoop_pool: DescriptorPool) -> None:
    """Every message we declare exists in Hadoop under the same full name, and each of
    its fields has Hadoop's number, type, label, type name and default; no field that
    Hadoop requires is missing."""
    file = _our_module(module_name).DESCRIPTOR
    _fail_on(message_mismatches(file, hadoop_pool), file.name)


@pytest.mark.parametrize("module_name", OUR_MODULES)
def test_declared_enums_match_hadoop(module_name: str, hadoop_pool: DescriptorPool) -> None:
    """Every enum we declare exists in Hadoop and has exactly Hadoop's values, with the
    same numbers and in the same order."""
    file = _our_module(module_name).DESCRIPTOR
    _fail_on(enum_mismatches(file, hadoop_pool), file.name)


@pytest.mark.parametrize("module_name", OUR_MODULES)
def test_declared_service_methods_match_hadoop(module_name: str, hadoop_pool: DescriptorPool) -> None:
    """Every service and method we declare exists in Hadoop with the same request and
    response types, so the dispatcher decodes each call as the client encoded it."""
    file = _our_module(module_name).DESCRIPTOR
    _fail_on(service_mismatches(file, hadoop_pool), file.name)


@pytest.mark.parametrize(
    "module_name, service",
    [
        ("applicationclient_protocol_pb2", "ApplicationClientProtocolService"),
        ("applicationmaster_protocol_pb2", "ApplicationMasterProtocolService"),
        ("containermanagement_protocol_pb2", "ContainerManagementProtocolService"),
    ],
)
def test_service_files_name_every_hadoop_method_they_leave_out(
    module_name: str, service: str, hadoop_pool: DescriptorPool
) -> None:
    """Each YARN service file declares Hadoop's service, and every Hadoop method it does
    not declare is named in the file (the comment listing what the dispatcher refuses)."""
    file = _our_module(module_name).DESCRIPTOR
    assert service in file.services_by_name, f"{file.name} must declare service {service}"
    ours = file.services_by_name[service]
    theirs = hadoop_pool.FindServiceByName(ours.full_name)
    text = (generate.PROTO_DIR / Path(file.name).name).read_text()
    unnamed = [
        m.name for m in theirs.methods if m.name not in ours.methods_by_name and not re.search(rf"\b{m.name}\b", text)
    ]
    assert not unnamed, f"{file.name} neither declares nor mentions Hadoop methods {unnamed}"


def test_generated_modules_are_current() -> None:
    """Every ``*_pb2.py`` is byte-identical to a fresh compile of its ``.proto``
    (``python -m cortex_rm.yarn_api.proto.generate --check``)."""
    stale = generate.stale_modules()
    assert not stale, f"stale generated modules {stale}; run: python -m cortex_rm.yarn_api.proto.generate"


# -------------------------------------------- the checker itself can fail


def _set_field(message: str, field: str, **changes: object) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(proto: descriptor_pb2.FileDescriptorProto) -> None:
        target = next(m for m in proto.message_type if m.name == message)
        f = next(f for f in target.field if f.name == field)
        for key, value in changes.items():
            setattr(f, key, value)

    return mutate


def _drop_field(message: str, field: str) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(proto: descriptor_pb2.FileDescriptorProto) -> None:
        target = next(m for m in proto.message_type if m.name == message)
        target.field.remove(next(f for f in target.field if f.name == field))

    return mutate


def _clear_default(message: str, field: str) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(proto: descriptor_pb2.FileDescriptorProto) -> None:
        target = next(m for m in proto.message_type if m.name == message)
        next(f for f in target.field if f.name == field).ClearField("default_value")

    return mutate


def _set_enum_value(enum: str, value: str, number: int) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(proto: descriptor_pb2.FileDescriptorProto) -> None:
        target = next(e for e in proto.enum_type if e.name == enum)
        next(v for v in target.value if v.name == value).number = number

    return mutate


def _drop_enum_value(enum: str, value: str) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(proto: descriptor_pb2.FileDescriptorProto) -> None:
        target = next(e for e in proto.enum_type if e.name == enum)
        target.value.remove(next(v for v in target.value if v.name == value))

    return mutate


def _loaded_with(mutate: Callable[[descriptor_pb2.FileDescriptorProto], None]) -> FileDescriptor:
    """Our yarn_protos.proto, changed by ``mutate``, loaded into a pool of its own."""
    security = _our_module("Security_pb2").DESCRIPTOR
    yarn = _our_module("yarn_protos_pb2").DESCRIPTOR
    broken = descriptor_pb2.FileDescriptorProto.FromString(yarn.serialized_pb)
    mutate(broken)
    pool = DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(security.serialized_pb))
    pool.Add(broken)
    return pool.FindFileByName(broken.name)


FDP = descriptor_pb2.FieldDescriptorProto

BROKEN_YARN_PROTOS = [
    ("wrong number", _set_field("ApplicationIdProto", "id", number=3), "ApplicationIdProto.id: number is 3"),
    ("wrong type", _set_field("ApplicationIdProto", "cluster_timestamp", type=FDP.TYPE_INT32), "type is 'int32'"),
    ("wrong label", _set_field("PriorityProto", "priority", label=FDP.LABEL_REPEATED), "label is 'repeated'"),
    (
        "wrong message type",
        _set_field("ContainerIdProto", "app_id", type_name=".hadoop.yarn.ReservationIdProto"),
        "ContainerIdProto.app_id: type is 'hadoop.yarn.ReservationIdProto'",
    ),
    ("wrong default", _set_field("ContainerStatusProto", "exit_status", default_value="-1"), "default is -1,"),
    ("missing default", _clear_default("ContainerStatusProto", "diagnostics"), "default is None, Hadoop has 'N/A'"),
    ("wrong field name", _set_field("NodeIdProto", "port", name="rpc_port"), "NodeIdProto.rpc_port: no such field"),
    ("missing required field", _drop_field("ResourceInformationProto", "key"), "ResourceInformationProto.key: required"),
    ("wrong enum number", _set_enum_value("ContainerStateProto", "C_COMPLETE", 4), "C_COMPLETE: number is 4"),
    ("missing enum value", _drop_enum_value("ContainerStateProto", "C_RUNNING"), "must be all of Hadoop's"),
]


@pytest.mark.parametrize("mutate, expected", [b[1:] for b in BROKEN_YARN_PROTOS], ids=[b[0] for b in BROKEN_YARN_PROTOS])
def test_checker_reports_each_kind_of_mismatch(
    mutate: Callable[[descriptor_pb2.FileDescriptorProto], None], expected: str, hadoop_pool: DescriptorPool
) -> None:
    """A yarn_protos.proto with one deliberate error (wrong number, type, label, default,
    ...) yields exactly one readable mismatch naming it, so a real error cannot pass."""
    # Compared with the unbroken file, so that this test checks only the checker and
    # stays green (leaving the report to the tests above) if yarn_protos.proto is wrong.
    baseline = set(all_mismatches(_our_module("yarn_protos_pb2").DESCRIPTOR, hadoop_pool))

    problems = set(all_mismatches(_loaded_with(mutate), hadoop_pool)) - baseline

    assert len(problems) == 1 and expected in problems.pop(), problems
