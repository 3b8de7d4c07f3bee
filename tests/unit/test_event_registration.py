"""A registration's REST body, checked (``events/registration.py``): defaults, the code's kind from
its suffix, and every mistake refused with the field named as the body spells it."""

from __future__ import annotations

from typing import Any

import pytest

from cortex_rm.events.functions import FunctionLimits, InvalidFunction
from cortex_rm.events.registration import RegistrationRequest

PATH = "/user/alice/.cortex/functions/hello/0123456789abcdef-hello.py"


def test_a_body_with_only_the_code_path_takes_every_default() -> None:
    """Handler ``handler``, python (from .py), default limits, one replica, first, no schedule, no grants."""
    request = RegistrationRequest.from_json({"code": {"path": PATH}})
    assert request == RegistrationRequest(code_path=PATH)
    assert request.kind == "python"
    spec = request.spec("hello", "alice", 3, 120, 1_700_000_000_000, 1_700_000_000_500)
    assert (spec.name, spec.owner, spec.version) == ("hello", "alice", 3)
    assert (spec.code_length, spec.code_mtime_ms) == (120, 1_700_000_000_000)
    assert (spec.code_kind, spec.handler, spec.limits) == ("python", "handler", FunctionLimits())
    assert (spec.replicas, spec.mode) == (1, "first")
    assert spec.registered_ms == 1_700_000_000_500 and not spec.deleted


def test_every_field_of_a_full_body_reaches_the_registration() -> None:
    body = {
        "code": {"path": "/user/alice/f/deps.zip"},
        "handler": "main.handle",
        "limits": {"memoryMb": 512, "timeoutS": 2.5, "maxConcurrency": 8},
        "replicas": 3,
        "mode": "vote",
        "schedule": "every 5m",
        "grants": ["bob", "carol"],
    }
    request = RegistrationRequest.from_json(body)
    assert request.kind == "zip"
    assert request.limits == FunctionLimits(memory_mb=512, timeout_s=2.5, max_concurrency=8)
    assert (request.replicas, request.mode, request.schedule) == (3, "vote", "every 5m")
    assert request.grants == frozenset({"bob", "carol"})


def test_an_integer_timeout_is_the_same_registration_as_its_float() -> None:
    """(A registration is compared with the ring's copy: 60 and 60.0 must not differ.)"""
    request = RegistrationRequest.from_json({"code": {"path": PATH}, "limits": {"timeoutS": 60}})
    assert request.limits == FunctionLimits()


def test_a_given_kind_wins_over_the_suffix_and_a_path_without_one_needs_it() -> None:
    assert RegistrationRequest.from_json({"code": {"path": "/user/a/handler"}, "kind": "python"}).kind == "python"
    with pytest.raises(InvalidFunction, match=r"^kind: .*neither \.py nor \.zip"):
        RegistrationRequest.from_json({"code": {"path": "/user/a/handler"}})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"code": None}, "code must be"),
        ({"code": {"path": "relative.py"}}, "code.path"),
        ({"code": {"path": "/x.py", "length": 3}}, "code.length: unknown field"),
        ({"replica": 2}, "replica: unknown field"),
        ({"kind": "jar"}, "kind must be"),
        ({"handler": "not a name"}, "handler must be"),
        ({"handler": 7}, "handler must be"),
        ({"limits": {"memoryMb": 16}}, "limits.memoryMb must be a number from 32 to 8192"),
        ({"limits": {"memoryMb": True}}, "limits.memoryMb"),
        ({"limits": {"timeoutS": 0}}, "limits.timeoutS"),
        ({"limits": {"maxConcurrency": 1000}}, "limits.maxConcurrency"),
        ({"limits": {"cpu": 1}}, "limits.cpu: unknown field"),
        ({"limits": []}, "limits must be a JSON object"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 8}, "replicas"),
        ({"replicas": 1.0}, "replicas"),
        ({"mode": "majority"}, "mode must be"),
        ({"schedule": ""}, "schedule must be"),
        ({"schedule": "x" * 129}, "schedule must be"),
        ({"grants": "bob"}, "grants must be a list"),
        ({"grants": ["bob", "no spaces"]}, "grants: 'no spaces'"),
        ({"grants": [f"u{i}" for i in range(65)]}, "grants must be a list of at most 64"),
    ],
)
def test_a_wrong_field_is_refused_naming_it(change: dict[str, Any], field: str) -> None:
    body: dict[str, Any] = {"code": {"path": PATH}, **change}
    with pytest.raises(InvalidFunction, match=field.replace(".", r"\.").replace("(", r"\(")):
        RegistrationRequest.from_json(body)


def test_a_zip_needs_a_module_qualified_handler() -> None:
    with pytest.raises(InvalidFunction, match="handler: a zip's handler is module.function"):
        RegistrationRequest.from_json({"code": {"path": "/user/a/f.zip"}})


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    with pytest.raises(InvalidFunction, match="the body must be a JSON object"):
        RegistrationRequest.from_json(body)
