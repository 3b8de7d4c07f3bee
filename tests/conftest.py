"""Shared pytest setup.

* ``JAVA_HOME`` for the Hadoop-client tests (``$JAVA_HOME``, else the JDK on PATH).
* ``log_events`` (or ``logged``): every twisted.logger event emitted during the test.
* Logged failures fail the test: every test runs with an observer on Twisted's
  global log publisher, and a ``log.failure`` or a critical event — an unhandled
  error in a Deferred included (garbage is collected at the end of each test so
  those are logged in time) — fails it, unless the test declares that it expects
  it with ``@pytest.mark.expect_logged_errors("regex", ...)``: each logged failure
  must then match one of the patterns (searched in the event's text and its
  exception).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

pytest_plugins = ["pytester"]  # tests/unit/test_logged_failures.py runs this fixture on test files of its own


def _default_java_home() -> str:
    javac = shutil.which("javac")
    if javac:
        return str(Path(javac).resolve().parents[1])
    return "/usr/lib/jvm/java-17-openjdk-amd64"


os.environ.setdefault("JAVA_HOME", _default_java_home())


class LoggedFailures:
    """Collects the failures and critical events logged while one test runs."""

    def __init__(self, expected: tuple[str, ...]) -> None:
        self.expected = [re.compile(p, re.DOTALL) for p in expected]
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("log_level") is LogLevel.critical:
            self.events.append(event)

    @staticmethod
    def describe(event: dict[str, Any]) -> str:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f"\n{failure.getTraceback()}"
        return text

    def unexpected(self) -> list[str]:
        texts = [self.describe(e) for e in self.events]
        return [t for t in texts if not any(p.search(t) for p in self.expected)]


@pytest.fixture(autouse=True)
def logged_failures(request: pytest.FixtureRequest) -> Iterator[LoggedFailures]:
    """Fail the test on any logged failure it did not declare (see the module docstring)."""
    marker = request.node.get_closest_marker("expect_logged_errors")
    collector = LoggedFailures(tuple(marker.args) if marker is not None else ())
    globalLogPublisher.addObserver(collector)
    try:
        yield collector
        gc.collect()  # a Deferred that failed unhandled logs its error when it is collected
    finally:
        globalLogPublisher.removeObserver(collector)
    if marker is not None and not collector.events:
        pytest.fail(f"the test declares expect_logged_errors{marker.args} but logged no failure")
    unexpected = collector.unexpected()
    if unexpected:
        pytest.fail("logged failures the test does not expect:\n\n" + "\n\n".join(unexpected), pytrace=False)


@pytest.fixture(autouse=True)
def sigpipe_ignored() -> Iterator[None]:
    """Python ignores SIGPIPE; ``cortex_rm.cli.main`` restores the default (so that ``| head`` ends it
    quietly).  A test that runs ``main`` must not leave it so: a later write to a closed socket would
    kill the whole test run."""
    yield
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


@pytest.fixture(scope="session")
def runtime_image_root() -> Path:
    """The standard runtime image, built (a cache hit once built on this machine) and unpacked once:
    the ``root_image`` of every container the LXC tests start (``tests/support/runtime_image.py``)."""
    from tests.support.runtime_image import test_image_root

    return test_image_root()


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's ``tmp_path``, searchable by "other" on the way to it: unprivileged containers
    (whose root is an unprivileged host uid) mount dirs under it (``tests/support/reachable.py``)."""
    from tests.support.reachable import make_reachable

    return make_reachable(tmp_path)


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every twisted.logger event emitted during the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    yield events
    globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]


@pytest.fixture
def logged(log_events: list[LogEvent]) -> list[LogEvent]:
    """``log_events`` under the name some tests use."""
    return log_events
