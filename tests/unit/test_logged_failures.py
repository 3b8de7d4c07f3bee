"""The suite's own guard: a test that logs a failure it did not declare fails (``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parents[1] / "conftest.py").read_text()

TESTS = '''
import pytest
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


def test_logs_a_failure():
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("dividing failed")


def test_drops_a_failed_deferred():
    defer.fail(RuntimeError("nobody handles me"))


def test_logs_an_error_level_event_only():
    log.error("a refusal, logged at error level: not a failure")


@pytest.mark.expect_logged_errors("dividing failed.*ZeroDivisionError")
def test_declares_the_failure_it_logs():
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("dividing failed")


@pytest.mark.expect_logged_errors("something else")
def test_declares_another_failure_than_it_logs():
    log.failure("dividing failed", Failure(ZeroDivisionError()))


@pytest.mark.expect_logged_errors("dividing failed")
def test_declares_a_failure_it_never_logs():
    pass
'''


def test_undeclared_failures_fail_their_test(pytester: pytest.Pytester) -> None:
    """log.failure and an unhandled error in a Deferred fail the test; an error-level event does not;
    a declared failure passes only if it was logged and matches."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    expect_logged_errors(*patterns): logged failures the test expects\n")
    pytester.makepyfile(test_guard=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=6, errors=4)
    result.stdout.fnmatch_lines(
        [
            "ERROR*test_logs_a_failure*",
            "ERROR*test_drops_a_failed_deferred*",
            "ERROR*test_declares_another_failure_than_it_logs*",
            "ERROR*test_declares_a_failure_it_never_logs*",
        ],
        consecutive=False,
    )
