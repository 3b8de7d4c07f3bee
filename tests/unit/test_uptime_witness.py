"""The witness's record of its neighbours: runs of acknowledged probes, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from cortex_rm.accounting.attestations import Attestation
from cortex_rm.accounting.uptime_witness import SEQUENCES_PER_MS, UptimeWitness, WitnessConfig, batches

ME, ALICE, BOB, CAROL = 1, 2, 3, 4
START = 1_788_220_800  # seconds: the fake clock's start
CONFIG = WitnessConfig(probe_interval_ms=1_000, ack_window_ms=10_000, gap_ms=300_000, attestation_interval_ms=3_600_000)


def now(clock: Clock) -> int:
    return int(clock.seconds() * 1000)


def fresh(config: WitnessConfig = CONFIG) -> tuple[Clock, UptimeWitness]:
    clock = Clock()
    clock.advance(START)
    return clock, UptimeWitness(ME, now(clock), config)


def watching(clock: Clock, witness: UptimeWitness, seconds: float) -> None:
    """``seconds`` pass while the witness runs: it probes someone (not necessarily a subject) every second."""
    end = clock.seconds() + seconds
    while clock.seconds() + 1 < end:
        clock.advance(1)
        witness.sent(now(clock))
    clock.advance(end - clock.seconds())


def probe_round(clock: Clock, witness: UptimeWitness, subject: int, every: float, times: int, epoch: int = 0) -> None:
    """``times`` probes of ``subject``, each acked 50 ms later, one every ``every`` seconds (others between)."""
    for _ in range(times):
        witness.probed(subject, now(clock))
        clock.advance(0.05)
        witness.acknowledged(subject, now(clock), epoch)
        watching(clock, witness, every - 0.05)


def spans(attestations: list[Attestation]) -> list[tuple[int, int, int]]:
    return [(a.subject, a.start_ms, a.end_ms) for a in attestations]


def test_acked_probes_make_one_run_attested_once_an_interval_old() -> None:
    """Acks 20 s apart are one run from the first ack to the last; it is attested after an hour, not before."""
    clock, witness = fresh()
    t0 = now(clock) + 50
    probe_round(clock, witness, ALICE, every=20, times=100)
    last = t0 + 99 * 20_000
    assert witness.attestations_due(now(clock)) == []  # 2,000 s: not an interval yet
    clock.advance(3_600 - 2_000)
    due = witness.attestations_due(now(clock))
    assert spans(due) == [(ALICE, t0, last)]
    assert due[0].witness == ME and due[0].sequence >= now(clock) * SEQUENCES_PER_MS
    assert witness.credited == 100 and witness.ignored == 0


def test_open_run_is_attested_in_touching_pieces_with_increasing_sequences() -> None:
    """Each interval attests the run's new part, starting where the last piece ended."""
    clock, witness = fresh()
    t0 = now(clock) + 50
    pieces: list[Attestation] = []
    for _ in range(3):
        probe_round(clock, witness, ALICE, every=20, times=180)  # an hour of probes
        pieces += witness.attestations_due(now(clock))
    assert [a.start_ms for a in pieces][0] == t0
    assert all(a.end_ms == b.start_ms for a, b in zip(pieces, pieces[1:]))
    assert [a.sequence for a in pieces] == sorted({a.sequence for a in pieces})
    assert pieces[-1].end_ms == t0 + (3 * 180 - 1) * 20_000


def test_a_flood_of_acks_credits_nothing_beyond_the_probes() -> None:
    """Unasked acks, duplicates and acks after the window count for nothing; the run is that of the probes."""
    clock, flooded = fresh()
    _, quiet = fresh()
    for _ in range(50):
        t = now(clock)
        for witness in (flooded, quiet):
            witness.probed(BOB, t)
            witness.acknowledged(BOB, t + 30)
        for k in range(1, 200):  # a hundred duplicates and unasked acks per probe
            flooded.acknowledged(BOB, t + 30 + k * 90)
        clock.advance(20)
    flooded.probed(BOB, now(clock))
    assert not flooded.acknowledged(BOB, now(clock) + 10_001)  # after the ack window
    clock.advance(4_000)
    assert spans(flooded.attestations_due(now(clock))) == spans(quiet.attestations_due(now(clock)))
    assert flooded.credited == 50 and flooded.ignored == 50 * 199 + 1


def test_one_credit_per_probe_interval() -> None:
    """Two probes answered within the probe interval: the second ack changes nothing."""
    clock, witness = fresh()
    t = now(clock)
    witness.probed(ALICE, t)
    assert witness.acknowledged(ALICE, t + 10)
    witness.probed(ALICE, t + 500)
    assert not witness.acknowledged(ALICE, t + 510)
    witness.probed(ALICE, t + 1_200)
    assert witness.acknowledged(ALICE, t + 1_210)
    clock.advance(4_000)
    assert spans(witness.attestations_due(now(clock))) == [(ALICE, t + 10, t + 1_210)]


def test_a_gap_longer_than_the_bound_ends_the_run() -> None:
    """Acks 6 minutes apart (gap 5) are two runs; the silence between them is not attested."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=20, times=10)
    watching(clock, witness, 360)
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=20, times=10)
    clock.advance(400)  # the second run ends too: both are due at once
    assert spans(witness.attestations_due(now(clock))) == [
        (ALICE, first, first + 9 * 20_000),
        (ALICE, second, second + 9 * 20_000),
    ]
    assert witness.tracked == 0


def test_a_restart_ends_the_run_even_within_the_gap() -> None:
    """A new incarnation (epoch) starts a new run: the restart's downtime is not bridged."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=20, times=5, epoch=7)
    watching(clock, witness, 30)
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=20, times=5, epoch=8)
    assert spans(witness.flush(now(clock))) == [(ALICE, first, first + 80_000), (ALICE, second, second + 80_000)]


def test_a_witness_frozen_with_its_subject_does_not_bridge_the_freeze() -> None:
    """Witness and subject stopped together for 80 s (within the 5-minute gap, same incarnation): the first
    probe the witness sends after the thaw ends the run at the last ack before the freeze, and the thaw's ack
    starts a new one, so the 80 s nobody watched are attested by neither."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=30)
    frozen_at = first + 29_000
    clock.advance(80)  # (no probe sent: the witness's own process was stopped too)
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=30)
    assert witness.silences == 1
    assert spans(witness.flush(now(clock))) == [(ALICE, first, frozen_at), (ALICE, second, second + 29_000)]


def test_a_neighbour_frozen_alone_is_not_bridged_though_it_was_never_declared_dead() -> None:
    """The subject stops for 80 s (within the 5-minute gap) while the witness goes on probing it every 3 s, and
    comes back in the same incarnation (the ring never declared it dead): the probes it left unanswered end the
    run at its last ack before the freeze, and its first ack after the thaw starts a new one."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=30)
    frozen_at = first + 29_000
    for _ in range(27):  # unanswered
        witness.probed(ALICE, now(clock))
        watching(clock, witness, 3)
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=30)
    assert (witness.interrupted, witness.silences) == (1, 0)
    assert spans(witness.flush(now(clock))) == [(ALICE, first, frozen_at), (ALICE, second, second + 29_000)]


def test_a_silent_neighbours_run_is_attested_as_ended_without_waiting_for_its_return() -> None:
    """Two probes unanswered (a third still may be), the first over the ack window ago: the next attestations
    end the run at its last ack."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=5)
    for wait in (4, 4, 3):  # (at the third probe the first is 8 s old: only the attestations end the run)
        witness.probed(ALICE, now(clock))
        watching(clock, witness, wait)
    assert spans(witness.attestations_due(now(clock))) == [(ALICE, first, first + 4_000)]
    assert witness.tracked == 0 and witness.interrupted == 1


def test_a_neighbour_probed_less_often_than_the_window_is_not_bridged_however_often_attestations_are_taken() -> None:
    """Probed every 16 s (a slow pass) and silent for 80 s, with attestations taken every 2 s in between: each
    probe's record outlives its window while the run is open, so the count reaches two and the run ends."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=16, times=3)
    taken = []
    for _ in range(5):  # unanswered
        witness.probed(ALICE, now(clock))
        for _ in range(8):
            watching(clock, witness, 2)
            taken += spans(witness.attestations_due(now(clock)))
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=16, times=3)
    assert witness.interrupted == 1 and taken == [(ALICE, first, first + 32_000)]
    assert spans(witness.flush(now(clock))) == [(ALICE, second, second + 32_000)]


def test_a_late_ack_does_not_wipe_the_count_of_probes_left_unanswered() -> None:
    """Two probes unanswered, then an ack 11 s after the second (too late to count): the run ends there, and
    the next answered probe starts a new one."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=16, times=2)
    witness.probed(ALICE, now(clock))
    watching(clock, witness, 16)
    witness.probed(ALICE, now(clock))
    watching(clock, witness, 11)
    assert not witness.acknowledged(ALICE, now(clock))
    watching(clock, witness, 5)
    second = now(clock) + 50
    probe_round(clock, witness, ALICE, every=16, times=2)
    assert witness.interrupted == 1
    assert spans(witness.flush(now(clock))) == [(ALICE, first, first + 16_000), (ALICE, second, second + 16_000)]


def test_one_lost_probe_does_not_end_a_run_even_in_a_slow_pass() -> None:
    """A single probe lost, and the next one 16 s later (a pass of 16 neighbours) answered: still one run."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=16, times=2)
    witness.probed(ALICE, now(clock))  # lost
    watching(clock, witness, 16)
    assert witness.attestations_due(now(clock)) == []
    probe_round(clock, witness, ALICE, every=16, times=2)
    assert spans(witness.flush(now(clock))) == [(ALICE, first, first + 64_000)]
    assert witness.interrupted == 0


def test_probes_to_others_keep_a_run_open_across_a_neighbours_slow_probes() -> None:
    """A witness probing someone every second keeps watching: its subject probed 4 minutes apart (a slow
    pass, within the gap) stays in one run, and no silence is counted."""
    clock, witness = fresh()
    first = now(clock) + 50
    probe_round(clock, witness, ALICE, every=1, times=2)
    watching(clock, witness, 240)  # (its probes of other members)
    probe_round(clock, witness, ALICE, every=1, times=1)
    [(subject, start, end)] = spans(witness.flush(now(clock)))
    assert (subject, start, witness.silences) == (ALICE, first, 0) and end > first + 240_000


def test_sequences_of_a_restarted_witness_start_above_the_old_ones() -> None:
    """A witness made anew (after a crash) numbers from its start time, above all it signed before."""
    clock, witness = fresh()
    probe_round(clock, witness, ALICE, every=20, times=5)
    old = witness.flush(now(clock))
    clock.advance(1)
    restarted = UptimeWitness(ME, now(clock), CONFIG)
    probe_round(clock, restarted, ALICE, every=20, times=5)
    new = restarted.flush(now(clock))
    assert min(a.sequence for a in new) > max(a.sequence for a in old)


def test_memory_is_bounded_and_the_witness_never_attests_itself() -> None:
    """Beyond max_subjects runs, a new subject's ack is refused; probing ourselves is refused (and its ack ignored)."""
    clock, witness = fresh(WitnessConfig(max_subjects=2))
    for subject in (ALICE, BOB, CAROL, ME):
        witness.probed(subject, now(clock))
        witness.acknowledged(subject, now(clock) + 5)
    assert witness.tracked == 2 and witness.refused == 2 and witness.ignored == 1
    clock.advance(2)
    for subject in (ALICE, BOB):
        witness.probed(subject, now(clock))
        witness.acknowledged(subject, now(clock) + 5)
    assert {a.subject for a in witness.flush(now(clock))} == {ALICE, BOB}


def test_unanswered_probes_are_forgotten_after_the_window() -> None:
    """A probe never answered stops counting against the bound once its ack would be too late."""
    clock, witness = fresh(WitnessConfig(max_subjects=1))
    witness.probed(ALICE, now(clock))
    clock.advance(11)
    assert witness.attestations_due(now(clock)) == []
    witness.probed(BOB, now(clock))
    assert witness.acknowledged(BOB, now(clock) + 1)


def test_batches_cut_at_the_batch_limit() -> None:
    """More attestations than a batch holds are cut into several batches."""
    attestations = [Attestation(ME, s, 0, 1, s) for s in range(2, 2 + 2_050)]
    assert [len(b) for b in batches(attestations)] == [1024, 1024, 2]
