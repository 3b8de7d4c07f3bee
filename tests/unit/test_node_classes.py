"""Static or volatile from attested uptime: the evidence, the thresholds and the hysteresis, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from cortex_rm.accounting.intervals import Interval
from cortex_rm.accounting.node_classes import ClassEvidence, ClassThresholds, NodeClass, NodeClasses, class_evidence

H = 3_600_000
DAY = 24 * H
NODE = 0xABC
THRESHOLDS = ClassThresholds()


def clock_at(ms: int) -> Clock:
    clock = Clock()
    clock.advance(ms / 1000)
    return clock


def ms(clock: Clock) -> int:
    return round(clock.seconds() * 1000)


def test_evidence_of_a_node_up_for_days() -> None:
    """Up for ten days, attested until half an hour ago: up, fraction 1, a ten-day session."""
    now = 20 * DAY
    evidence = class_evidence([(10 * DAY, now - H // 2)], now, THRESHOLDS)
    assert evidence == ClassEvidence(True, 1.0, 10 * DAY - H // 2)


def test_a_short_restart_does_not_end_the_session_but_a_long_absence_does() -> None:
    """A 10-minute gap keeps the session; a 20-minute one starts a new one; 2 hours silent is gone."""
    now = 30 * H
    restarted = class_evidence([(0, 10 * H), (10 * H + 10 * 60_000, now)], now, THRESHOLDS)
    assert restarted.session_ms == now
    broken = class_evidence([(0, 10 * H), (10 * H + 20 * 60_000, now)], now, THRESHOLDS)
    assert broken.session_ms == now - (10 * H + 20 * 60_000)
    gone = class_evidence([(0, now - 2 * H)], now, THRESHOLDS)
    assert not gone.up and gone.session_ms == 0


def test_the_fraction_is_over_the_window_or_since_first_attested() -> None:
    """Up 3.5 of the last 7 days is 0.5; a newcomer up all of its first day is 1."""
    now = 30 * DAY
    spans: list[Interval] = [(now - 7 * DAY + i * DAY, now - 7 * DAY + i * DAY + DAY // 2) for i in range(7)]
    spans[-1] = (now - DAY, now)
    assert abs(class_evidence(spans, now, THRESHOLDS).uptime_fraction - 4 / 7) < 1e-9
    assert class_evidence([(now - DAY, now)], now, THRESHOLDS).uptime_fraction == 1.0


def test_the_fraction_counts_from_when_the_node_was_first_a_member_if_earlier() -> None:
    """Attested only for the last day, but a ring member since two days ago: up half the time;
    a membership that starts after the first attestation changes nothing."""
    now = 30 * DAY
    assert class_evidence([(now - DAY, now)], now, THRESHOLDS, member_since_ms=now - 2 * DAY).uptime_fraction == 0.5
    assert class_evidence([(now - DAY, now)], now, THRESHOLDS, member_since_ms=now - DAY // 2).uptime_fraction == 1.0
    assert class_evidence([(now - DAY, now)], now, THRESHOLDS, member_since_ms=now - 30 * DAY).uptime_fraction == 1 / 7


def test_a_steady_node_is_promoted_after_twelve_hours_and_stays() -> None:
    """Hourly re-classification of a node that stays up: volatile until its session is 12 hours old, then static."""
    clock = clock_at(100 * DAY)
    start = ms(clock)
    classes = NodeClasses()
    seen = []
    for _ in range(24):
        clock.advance(3600)
        seen.append(classes.update(NODE, [(start, ms(clock) - 600_000)], ms(clock)))
    assert seen[:12] == [NodeClass.VOLATILE] * 12  # the last attested instant lags by 10 minutes
    assert seen[12:] == [NodeClass.STATIC] * 12
    assert classes.static_nodes() == {NODE}


def test_hysteresis_keeps_a_static_node_through_a_dip_until_the_lower_threshold() -> None:
    """A static node whose fraction falls to 0.8 stays static (needs 0.9 to enter, below 0.75 to leave)."""
    now = 50 * DAY
    classes = NodeClasses()
    assert classes.update(NODE, [(now - 7 * DAY, now)], now) is NodeClass.STATIC
    dip = 0.2 * 7 * DAY
    dipped = [(now - 7 * DAY, now - 7 * DAY + int(dip)), (now - 7 * DAY + int(2 * dip), now)]
    assert class_evidence(dipped, now, THRESHOLDS).uptime_fraction > 0.75
    assert classes.update(NODE, dipped, now) is NodeClass.STATIC
    assert NodeClasses().update(NODE, dipped, now) is NodeClass.VOLATILE  # a volatile one with it is not promoted
    deep = [(now - 7 * DAY, now - 4 * DAY), (now - 2 * DAY, now)]
    assert classes.update(NODE, deep, now) is NodeClass.VOLATILE


def test_a_static_node_gone_past_freshness_is_demoted_and_must_earn_promotion_again() -> None:
    """Two hours without attestations demote it; back up for an hour it is still volatile."""
    now = 50 * DAY
    classes = NodeClasses()
    history = [(now - 7 * DAY, now)]
    assert classes.update(NODE, history, now) is NodeClass.STATIC
    assert classes.update(NODE, history, now + 2 * H) is NodeClass.VOLATILE
    back = [*history, (now + 2 * H, now + 3 * H)]
    assert classes.update(NODE, back, now + 3 * H) is NodeClass.VOLATILE


def test_a_node_never_attested_is_volatile() -> None:
    """No evidence, no trust."""
    classes = NodeClasses()
    assert classes.update(NODE, [], 10 * DAY) is NodeClass.VOLATILE
    assert classes.class_of(0xDEF) is NodeClass.VOLATILE
