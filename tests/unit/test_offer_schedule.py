"""The node's schedule ([nodemanager] schedule): windows of the local day, read from the config,
and what the node's heartbeats say at each moment (driven by a fake clock in UTC)."""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from cortex_rm.config.errors import ConfigError
from cortex_rm.config.nodemanager import NodeManagerSection
from cortex_rm.container.offer_schedule import OfferSchedule, ScheduleError
from cortex_rm.roles.node_caps import NodeCaps
from cortex_rm.yarn.resource_tracker import NodeHealth

MIDNIGHT = calendar.timegm((2026, 12, 7, 0, 0, 0))  # a Monday, 00:00 UTC


def at(hh: int, mm: int) -> float:
    return MIDNIGHT + hh * 3600 + mm * 60


@pytest.mark.parametrize(
    ("text", "on", "off"),
    [
        ("", [(0, 0), (12, 0), (23, 59)], []),
        ("22:00-07:00", [(22, 0), (23, 59), (0, 0), (6, 59)], [(7, 0), (12, 0), (21, 59)]),
        ("08:00-12:00, 14:00-18:00", [(8, 0), (11, 59), (14, 0), (17, 30)], [(7, 59), (12, 0), (13, 0), (18, 0)]),
        ("00:00-24:00", [(0, 0), (23, 59)], []),
        ("9:30-10:00", [(9, 30), (9, 59)], [(9, 29), (10, 0)]),
    ],
)
def test_windows_include_their_start_exclude_their_end_and_wrap_past_midnight(
    text: str, on: list[tuple[int, int]], off: list[tuple[int, int]]
) -> None:
    """A window holds from its start (included) to its end (excluded); an end before the start wraps."""
    schedule = OfferSchedule.parse(text)
    assert all(schedule.offers(at(*t), time.gmtime) for t in on)
    assert not any(schedule.offers(at(*t), time.gmtime) for t in off)


@pytest.mark.parametrize(
    ("text", "why"),
    [("night", "not a window"), ("22:00", "not a window"), ("25:00-07:00", "not a time of day"),
     ("22:00-22:00", "empty"), ("10:60-11:00", "not a time of day"), ("22:00-07:00,", "not a window")],
)
def test_a_schedule_that_cannot_be_read_is_a_config_error_naming_the_key(text: str, why: str) -> None:
    """Bad schedules are refused by the parser and by the config check, which names the key."""
    with pytest.raises(ScheduleError, match=why):
        OfferSchedule.parse(text)
    with pytest.raises(ConfigError, match="nodemanager.schedule"):
        NodeManagerSection(schedule=text).check("cortex.toml", Path("/tmp"))


def test_heartbeats_say_the_node_offers_only_within_its_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the day on a fake clock, the health each heartbeat carries says offering only from
    22:00 to 07:00; the rest of the health is passed on unchanged."""
    monkeypatch.setattr(time, "localtime", time.gmtime)  # (the fake clock's day is UTC)
    clock = Clock()
    role: Any = SimpleNamespace(reactor=clock, data_node=None, status_updater=None)
    caps = NodeCaps(role, NodeManagerSection(schedule="22:00-07:00"), None)
    health = NodeHealth(healthy=False, health_report="x")
    seen = []
    for hh in (6, 7, 12, 21, 22, 23):
        clock.advance(at(hh, 0) - clock.seconds())
        seen.append((hh, caps.with_offer(health).offering))
        assert caps.with_offer(health).health_report == "x"
    assert seen == [(6, True), (7, False), (12, False), (21, False), (22, True), (23, True)]
