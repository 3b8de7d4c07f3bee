"""The NodeManager's log aggregator on a fake clock, against a fake tracker boundary (the
write itself is proven by the cluster tests): what it sends, when it tries again, and that it
keeps the local logs until an aggregation has succeeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.roles.log_aggregation import RETRY_DELAYS_S, LogAggregator, collect_logs
from cortex_rm.yarn.ids import ApplicationId

APP = ApplicationId(1_700_000_000_000, 3)


class FailingDataNode:
    """The RM cannot be reached: every openForAggregation fails (and is counted)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def open_for_aggregation(self, app_id: str) -> defer.Deferred[Any]:
        self.asked.append(app_id)
        return defer.fail(TrackerUnavailable("the RM is away"))


def run_now(work: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(work)


def logs(root: Path) -> Path:
    container = root / str(APP) / "container_1700000000000_0003_01_000001"
    container.mkdir(parents=True)
    (container / "stdout").write_text("hello\n")
    return container


def test_a_failed_aggregation_is_tried_again_then_given_up_keeping_the_logs(tmp_path: Path) -> None:
    clock, node = Clock(), FailingDataNode()
    container = logs(tmp_path / "logs")
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "left-by-a-crash.tfile").write_text("half")
    aggregator = LogAggregator(node, [tmp_path / "logs"], tmp_path / "spool", run_now, clock)  # type: ignore[arg-type]
    assert not (tmp_path / "spool").exists()  # what a crash left is gone
    first, second = aggregator.aggregate(APP), aggregator.aggregate(APP)  # the second waits for the first
    assert node.asked == [str(APP)]
    for delay in RETRY_DELAYS_S:
        assert not first.called
        clock.advance(delay)
    assert node.asked == [str(APP)] * (len(RETRY_DELAYS_S) + 1)
    assert first.called and second.called
    assert (container / "stdout").read_text() == "hello\n"  # kept: nothing was aggregated
    clock.advance(3600)
    assert len(node.asked) == len(RETRY_DELAYS_S) + 1  # given up: no more tries


def test_an_application_without_logs_here_asks_nothing_and_leaves_no_empty_dirs(tmp_path: Path) -> None:
    node = FailingDataNode()
    (tmp_path / "logs" / str(APP)).mkdir(parents=True)
    aggregator = LogAggregator(node, [tmp_path / "logs"], tmp_path / "spool", run_now, Clock())  # type: ignore[arg-type]
    done = aggregator.aggregate(APP)
    assert done.called and node.asked == []
    assert not (tmp_path / "logs" / str(APP)).exists()


def test_logs_are_collected_per_container_across_log_dirs_without_symlinks(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    logs(a)
    other = b / str(APP) / "container_1700000000000_0003_01_000001"
    other.mkdir(parents=True)
    (other / "stderr").write_text("oops\n")
    (other / "escape").symlink_to("/etc/passwd")
    (collected,) = collect_logs([a, b], APP)
    assert collected.container_id == "container_1700000000000_0003_01_000001"
    assert [p.name for p in collected.files] == ["stdout", "stderr"]
