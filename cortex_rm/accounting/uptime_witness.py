"""What one member saw of the neighbours it probes: the intervals they answered, ready to sign.

A ring member probes its ring neighbours (SWIM, ``dht/membership.py``); every
direct ack a neighbour sends is evidence that it was alive *then*.  The
``UptimeWitness`` turns acks into intervals ("runs") per neighbour:

* An ack extends the neighbour's current run to the ack's time, or starts one.
* **One credit per probe, and per probe interval.**  An ack counts only if it
  answers a probe this witness sent (``probed``) at most ``ack_window_ms``
  earlier, and only the first ack does; and an ack less than
  ``probe_interval_ms`` after the last credited one changes nothing.  So a
  flood of acks -- unsolicited, duplicated or replayed -- buys nothing beyond
  the probes the witness itself chose to send, and costs a dict lookup each.
* **A gap ends a run.**  Two acks more than ``gap_ms`` apart belong to two runs;
  the time between them is not attested.  So is a change of ``epoch`` (the
  neighbour's incarnation as our member table knows it: a restarted member comes
  back with a higher one), so a restart faster than the gap is not bridged.
* **Probes left unanswered end a run.**  When the neighbour has left two or more
  of our probes in a row unanswered, the first of them more than
  ``ack_window_ms`` ago, its run ends at its last ack; the next ack starts a
  new one.  Without this, a neighbour that stopped (frozen, suspended, cut off)
  without our ring declaring it dead -- so without a new incarnation when it
  came back -- would have the time it did not answer bridged, since its first
  ack after returning falls within the gap.  One lost probe never ends a run.
* A run ``[first ack, last ack]`` claims only what the witness saw bracketed by
  acks: nothing before the first or after the last.
* **The witness's own silence ends every run.**  A running member sends a probe
  (to someone) every probe period, so when it has sent none for longer than
  ``silence_ms`` (by default ``ack_window_ms``: the slowest period and some slack) it was not watching:
  frozen, suspended, or its process stalled.  A neighbour frozen with it would
  otherwise answer the first probe after the thaw with the same incarnation,
  and the run would bridge time nobody saw.  ``sent`` (every direct probe, not
  only those to watched neighbours) ends the open runs at their last acks, so
  what follows is a new run.

``attestations_due(now_ms)`` returns the ``Attestation``s to sign now: the last
piece of every run that has ended (gap, epoch, unanswered probes or our own
silence), and the new piece of every run still open whose last attestation is
``attestation_interval_ms`` old.
Pieces of one run touch (each starts where the one before ended), so the ledger
merges them back into the run; what a witness loses when it crashes is at most
its last interval's piece, which the subject's other witnesses cover.

**Sequence numbers** increase over everything one witness signs, across
restarts and without a disk: each is at least ``now_ms * 1024`` and above the
one before.  A restarted witness therefore starts above everything it signed
before, unless it signed more than 1,024 attestations per millisecond of its
previous life (it signs a few per interval), or the clock went back.

**Memory is bounded**: at most ``max_subjects`` runs and as many unanswered
probes (further subjects are refused and counted), and at most ``max_subjects``
ended pieces waiting for the next ``attestations_due`` (more are dropped and
counted).

Sans-IO: times are given, nothing is sent.  The ring member calls ``probed``
when it sends a direct probe to a neighbour it is meant to watch (its successors
and predecessor, ``neighbour_history.py``), ``acknowledged`` on each direct ack
(acks relayed by a helper prove nothing about who answered: do not pass them),
``sent`` on every other direct probe it sends,
and ``attestations_due`` every ``attestation_interval_ms`` at a random phase
(calling it more often only makes smaller batches); it signs the result
(``attestations.py``) and hands the batch to the ledger off the probe path, and
calls ``flush`` when it stops cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.accounting.attestations import MAX_ATTESTATIONS, MAX_SPAN_MS, Attestation

SEQUENCES_PER_MS = 1024


@dataclass(frozen=True)
class WitnessConfig:
    """How a witness turns acks into attestations."""

    probe_interval_ms: int = 1_000
    """At most one credited ack per subject per this many ms (SWIM's probe interval, ``SwimConfig``)."""

    ack_window_ms: int = 10_000
    """An ack counts only this long after the probe it answers: SWIM's probe period, 1 s, stretched
    up to 9 times by Lifeguard's local health multiplier, and some slack."""

    gap_ms: int = 300_000
    """Acks further apart than this are two runs.

    A member probes each of its ring neighbours once per pass, and a pass takes
    ``len(neighbours) * probe_interval`` -- times ``1 + LHM`` (up to 9) when the
    member distrusts its own health (Lifeguard).  A new neighbour is probed
    within two passes.  With ~16 neighbours (r = 8 successors, a predecessor and
    the distinct fingers of a ring of about 1,000) at 1 s, two passes at the
    slowest rate are 288 s: 5 minutes bridges them.  A gap this long only
    bridges time that is not a restart (``epoch``), so it costs little.
    """

    attestation_interval_ms: int = 3_600_000
    """An open run is attested again (its new piece) once its last attestation is this old.

    Payouts are monthly and classes need hours of evidence, so an hour of delay
    costs nothing; a witness's batch per hour holds one attestation per neighbour
    (~0.13 bytes/s for nine).  A crashed witness loses at most this long of what
    it saw, which the subject's other witnesses also saw.
    """

    max_subjects: int = 1024
    """Runs kept at once (a member has tens of neighbours); acks from more subjects are refused."""

    silence_ms: int | None = None
    """A witness that sent no probe (to anyone) for longer than this was not watching: its open runs end
    (module doc).  None: ``ack_window_ms``, the slowest probe period with some slack."""

    def __post_init__(self) -> None:
        if self.probe_interval_ms < 0 or self.ack_window_ms < 0 or self.gap_ms <= 0 or self.max_subjects < 1:
            raise ValueError("probe_interval_ms and ack_window_ms must be >= 0, gap_ms and max_subjects positive")
        if self.silence_ms is not None and self.silence_ms < self.ack_window_ms:
            raise ValueError("silence_ms must be at least ack_window_ms (a live member probes once a period)")
        if not 0 < self.attestation_interval_ms <= MAX_SPAN_MS:
            raise ValueError(f"attestation_interval_ms must lie in (0, {MAX_SPAN_MS}]")


class _Run:
    """A subject's current run: first and last credited ack, how far it is attested, when last attested."""

    __slots__ = ("start", "last", "attested_to", "attested_at", "epoch")

    def __init__(self, now_ms: int, epoch: int) -> None:
        self.start = now_ms
        self.last = now_ms
        self.attested_to = now_ms
        self.attested_at = now_ms
        self.epoch = epoch


class _Unanswered:
    """Our probes to one subject since its last ack: the first, the latest, how many."""

    __slots__ = ("oldest", "latest", "count")

    def __init__(self, now_ms: int) -> None:
        self.oldest = self.latest = now_ms
        self.count = 1


class UptimeWitness:
    """One member's record of the neighbours it probes (see the module doc)."""

    def __init__(self, witness: int, now_ms: int, config: WitnessConfig | None = None) -> None:
        self.witness = witness
        self.config = config = config or WitnessConfig()
        self._window, self._gap, self._spacing = config.ack_window_ms, config.gap_ms, max(1, config.probe_interval_ms)
        self._bound = config.max_subjects
        self._silence = config.ack_window_ms if config.silence_ms is None else config.silence_ms
        self._runs: dict[int, _Run] = {}
        self._probes: dict[int, _Unanswered] = {}  # subject -> our probes to it since its last ack
        self._ended: list[tuple[int, int, int]] = []  # (subject, start, end) of ended runs' last pieces
        self._sequence = now_ms * SEQUENCES_PER_MS - 1
        self.credited = 0  # acks that extended or started a run
        self.ignored = 0  # acks answering no probe of ours, or within the probe interval of the last credited one
        self.refused = 0  # probes and acks of subjects beyond max_subjects, and of the witness itself
        self.dropped = 0  # ended pieces beyond the bound, never attested
        self.silences = 0  # times the witness itself sent no probe for longer than silence_ms
        self.interrupted = 0  # runs ended because their subject left probes unanswered (module doc)
        self._last_sent: int | None = None  # when this member last sent a direct probe (to anyone)

    @property
    def tracked(self) -> int:
        """Subjects with a run now."""
        return len(self._runs)

    def sent(self, now_ms: int) -> None:
        """This member sent a direct probe at ``now_ms``, to anyone: it is watching (see the module doc)."""
        if self._last_sent is not None and now_ms - self._last_sent > self._silence:
            self.silences += 1
            for subject, run in self._runs.items():
                self._end(subject, run)
            self._runs.clear()
            self._probes.clear()  # (sent before the silence: an ack to them is late anyway)
        self._last_sent = now_ms if self._last_sent is None else max(self._last_sent, now_ms)

    def probed(self, subject: int, now_ms: int) -> None:
        """We sent a direct probe to ``subject`` at ``now_ms`` (the latest probe is the one an ack may answer)."""
        self.sent(now_ms)
        if subject == self.witness or (len(self._probes) >= self._bound and subject not in self._probes):
            self.refused += 1
            return
        pending = self._probes.get(subject)
        if pending is None or self._left_unanswered(subject, pending, pending.count, now_ms):
            self._probes[subject] = _Unanswered(now_ms)
        else:
            pending.latest = now_ms
            pending.count += 1

    def acknowledged(self, subject: int, now_ms: int, epoch: int = 0) -> bool:
        """``subject`` acked at ``now_ms`` (in its incarnation ``epoch``); whether it was credited."""
        pending = self._probes.get(subject)
        if pending is None or now_ms < pending.latest:  # no probe, or an ack from before it (it answers an older one)
            self.ignored += 1
            return False
        del self._probes[subject]
        self._left_unanswered(subject, pending, self._missed(pending, now_ms), now_ms)
        if now_ms - pending.latest > self._window:  # too late to count
            self.ignored += 1
            return False
        run = self._runs.get(subject)
        if run is not None:
            if epoch == run.epoch and now_ms - run.last <= self._gap:
                if now_ms - run.last < self._spacing:
                    self.ignored += 1
                    return False
                run.last = now_ms
                self.credited += 1
                return True
            if now_ms < run.last:  # an ack older than the one we hold: stale, not a new run
                self.ignored += 1
                return False
            self._end(subject, run)
        elif len(self._runs) >= self._bound:
            self.refused += 1
            return False
        self._runs[subject] = _Run(now_ms, epoch)
        self.credited += 1
        return True

    def attestations_due(self, now_ms: int) -> list[Attestation]:
        """What to sign now: ended runs' last pieces and open runs' pieces an interval old (by subject)."""
        config = self.config
        for subject, pending in list(self._probes.items()):
            self._left_unanswered(subject, pending, self._missed(pending, now_ms), now_ms)
            if now_ms - pending.latest > config.ack_window_ms and subject not in self._runs:
                # unanswered: an ack, if it comes, is too late to count (kept while a run is open: the next
                # probe adds to the count, however rarely this neighbour is probed and this is called)
                del self._probes[subject]
        for subject in [s for s, run in self._runs.items() if now_ms - run.last > config.gap_ms]:
            self._end(subject, self._runs.pop(subject))
        pieces = self._ended
        self._ended = []
        for subject, run in self._runs.items():
            if now_ms - run.attested_at >= config.attestation_interval_ms and run.last > run.attested_to:
                pieces.append((subject, run.attested_to, run.last))
                run.attested_to = run.last
                run.attested_at = now_ms
        return self._numbered(pieces, now_ms)

    def flush(self, now_ms: int) -> list[Attestation]:
        """Everything seen so far, open runs included (when the member stops cleanly)."""
        pieces = self._ended
        self._ended = []
        for subject, run in self._runs.items():
            if run.last > run.attested_to:
                pieces.append((subject, run.attested_to, run.last))
                run.attested_to = run.last
                run.attested_at = now_ms
        return self._numbered(pieces, now_ms)

    def _missed(self, pending: _Unanswered, now_ms: int) -> int:
        """How many of the probes ``pending`` counts went unanswered by ``now_ms`` (an ack answers only the latest,
        and that one only within the ack window)."""
        return pending.count if now_ms - pending.latest > self._window else pending.count - 1

    def _left_unanswered(self, subject: int, pending: _Unanswered, missed: int, now_ms: int) -> bool:
        """Whether ``subject`` has left ``missed`` of the probes ``pending`` counts unanswered, at least two and
        the first longer ago than the ack window; if so its run ends at its last ack (module doc)."""
        if missed < 2 or now_ms - pending.oldest <= self._window:
            return False
        run = self._runs.pop(subject, None)
        if run is not None:
            self.interrupted += 1
            self._end(subject, run)
        return True

    def _end(self, subject: int, run: _Run) -> None:
        if run.last <= run.attested_to:
            return
        if len(self._ended) >= self.config.max_subjects:
            self.dropped += 1
            return
        self._ended.append((subject, run.attested_to, run.last))

    def _numbered(self, pieces: list[tuple[int, int, int]], now_ms: int) -> list[Attestation]:
        attestations = []
        for subject, start, end in sorted(pieces):
            for low in range(start, end, MAX_SPAN_MS):  # only a witness not flushed for 49 days splits
                self._sequence = max(self._sequence + 1, now_ms * SEQUENCES_PER_MS)
                high = min(end, low + MAX_SPAN_MS)
                attestations.append(Attestation(self.witness, subject, low, high, self._sequence))
        return attestations


def batches(attestations: list[Attestation]) -> list[list[Attestation]]:
    """``attestations`` cut into batches of at most ``MAX_ATTESTATIONS`` (what one signature covers)."""
    return [attestations[i : i + MAX_ATTESTATIONS] for i in range(0, len(attestations), MAX_ATTESTATIONS)]
