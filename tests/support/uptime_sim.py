"""A churning ring on a fake clock, witnessed and paid by the real accounting code.

Used by ``bench/payout_sim.py`` (1,000 nodes, 30 days) and ``tests/unit/test_payout_sim.py``
(a small one).  What is real and what is modelled:

* **Real**: ring ids (SHA-1 of real P-256 keys), ``UptimeWitness`` (every member, every
  session; a crash loses what it had not attested), ``sign_attestations`` and the encoded
  batches, ``ring_neighbour_table`` (who probes whom, from membership alone),
  ``UptimeTally`` reading the ledger entries in log order, ``NodeClasses``.
* **Modelled**: sessions and downtimes (Weibull, per node shape drawn in ``shapes``;
  always-on nodes); SWIM's probing: a witness probes each neighbour it watches once per
  ``pass_ms`` (its pass over ~20 neighbours at 1 s), starting a stabilization delay plus a
  random part of a pass after the relation begins, and stopping when it ends; an ack comes
  back at once while the subject is up.  Witnesses attest hourly at a random phase.
* **Thinning, exact**: feeding every probe of 30 days is ~10^9 calls, so the witness is fed
  only the probes that can change its output -- the first and last of each stretch, the
  last before each of its attestation times, and one at least every ``gap_ms`` in between
  (``tests/unit/test_payout_sim.py`` checks that the attestations equal those of the full feed).

The cheaters (each a churning node, paid from the same ledger as everyone):

==================  ==========================================================================
self                signs attestations of itself for the whole period
forger              (a) its attestations under an honest neighbour's key; (b) an honest
                    neighbour's batch about it with the end moved
non-neighbour       a member that never probed it attests the whole period; another that
                    probed it at times attests every other instant
replay              every honest batch about it appended again, verbatim; one of its real
                    witnesses re-signs its own attestations of it with new sequence numbers
flood               acks its witnesses (and five non-neighbours) unasked, 100 at a time,
                    and doubles every real ack
lone colluder       a member that ground a key to be its predecessor (so a real prober),
                    always up, attests the whole period; the ring is told the cheater never
                    left (it refutes every suspicion), so the colluder is one of ~9 probers
==================  ==========================================================================

A cheater's gain is its uptime from the whole ledger minus its uptime from the ledger
without its cheating (and, for the flooder, from witnesses that got no flood).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from cortex_rm.accounting.attestations import (
    Attestation,
    SignedAttestations,
    public_key_bytes,
    ring_id_of_key,
    sign_attestations,
)
from cortex_rm.accounting.intervals import Interval, difference, intersection, total
from cortex_rm.accounting.neighbour_history import NeighbourTable, ring_neighbour_table
from cortex_rm.accounting.node_classes import NodeClass, NodeClasses
from cortex_rm.accounting.payouts import PayoutRules, UptimeTally
from cortex_rm.accounting.periods import Period
from cortex_rm.accounting.uptime_witness import UptimeWitness, WitnessConfig, batches

HOUR = 3_600_000
DAY = 24 * HOUR
CHEATS = ("self", "forger", "non-neighbour", "replay", "flood", "lone colluder")


@dataclass(frozen=True)
class SimConfig:
    """The world: its nodes, their churn, the ring's probing, the period paid."""

    nodes: int = 1000
    always_on: int = 100
    period: Period = Period(1_788_220_800_000, 1_788_220_800_000 + 30 * DAY)  # September 2026 (UTC): 30 days
    warmup_ms: int = DAY
    close_delay_ms: int = 2 * HOUR  # the period is tallied this long after it ends (last attestations in)
    shapes: tuple[float, float] = (0.34, 0.59)
    median_session_ms: int = HOUR
    downtime_shape: float = 0.5
    median_downtime_ms: int = 2 * HOUR
    successors: int = 8
    pass_ms: int = 20_000
    stabilize_ms: int = 1_000
    # (its probe events are thinned to one per gap, and a probe and its ack share an instant: the witness's own
    # silence bound is the gap, and each of its sessions is a fresh recorder)
    witness: WitnessConfig = field(default_factory=lambda: WitnessConfig(silence_ms=WitnessConfig.gap_ms))
    rules: PayoutRules = field(default_factory=PayoutRules)
    cheaters: bool = True
    seed: int = 1


@dataclass
class SimResult:
    truth: dict[int, list[Interval]]  # node -> its sessions in the period
    uptime: dict[int, list[Interval]]  # node -> its paid instants (whole ledger)
    gains: dict[str, int]  # cheat -> ms gained
    paid_while_down: dict[str, int]  # cheat -> ms paid outside the cheater's sessions
    cheaters: dict[str, int]
    always_on: set[int]
    classes: dict[int, NodeClass]
    attestation_bytes: int
    batches: int
    attestations: int
    seconds: dict[str, float]
    verdicts: dict[str, int]
    config: SimConfig

    def errors(self) -> Iterator[tuple[int, int, int]]:
        """(node, true ms, paid ms) for every honest node up in the period."""
        cheats = set(self.cheaters.values())
        for node, sessions in self.truth.items():
            if node not in cheats and total(sessions):
                yield node, total(sessions), total(self.uptime.get(node, []))


def _weibull_ms(rng: random.Random, shape: float, median_ms: int) -> int:
    scale = median_ms / math.log(2) ** (1 / shape)  # the median of Weibull(scale, shape) is scale * ln2^(1/shape)
    return max(1, int(rng.weibullvariate(scale, shape)))


def churn_sessions(rng: random.Random, cfg: SimConfig, start: int, end: int) -> list[Interval]:
    """One churning node's sessions in [start, end): Weibull up and down times (``cfg``)."""
    shape = rng.uniform(*cfg.shapes)
    result = []
    now, up = start, rng.random() < 0.5
    while now < end:
        if up:
            length = _weibull_ms(rng, shape, cfg.median_session_ms)
        else:
            length = _weibull_ms(rng, cfg.downtime_shape, cfg.median_downtime_ms)
        if up:
            result.append((now, min(end, now + length)))
        now += length
        up = not up
    return result


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _key(rng: random.Random) -> tuple[ec.EllipticCurvePrivateKey, int]:
    """A P-256 key drawn from ``rng`` (so a seed gives the same ring), and its ring id."""
    key = ec.derive_private_key(rng.randrange(1, _P256_ORDER), ec.SECP256R1())
    return key, ring_id_of_key(key.public_key())


def _ring_id_between(low: int, high: int, rng: random.Random) -> tuple[ec.EllipticCurvePrivateKey, int]:
    """A key whose ring id lies strictly between ``low`` and ``high`` (grinding keys, as a colluder would)."""
    while True:
        key, node = _key(rng)
        if low < node < high if low < high else (node > low or node < high):
            return key, node


def _within(spans: list[Interval], starts: list[int], low: int, high: int) -> Iterator[tuple[int, int, int]]:
    """(index, start, end) of the parts of the sorted disjoint ``spans`` inside ``[low, high)``."""
    i = max(0, bisect.bisect_right(starts, low) - 1)
    while i < len(spans) and spans[i][0] < high:
        a, b = max(spans[i][0], low), min(spans[i][1], high)
        if a < b:
            yield i, a, b
        i += 1


class ChurnWorld:
    """The nodes, their sessions, the ring's probing relations; ``run`` witnesses and pays them."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.start = cfg.period.start_ms - cfg.warmup_ms
        self.end = cfg.period.end_ms + cfg.close_delay_ms
        self.keys: dict[int, ec.EllipticCurvePrivateKey] = {}
        for _ in range(cfg.nodes):
            key, node = _key(self.rng)
            self.keys[node] = key
        ids = sorted(self.keys)
        self.always_on = set(self.rng.sample(ids, cfg.always_on))
        self.sessions: dict[int, list[Interval]] = {}
        for node in ids:
            always = node in self.always_on
            self.sessions[node] = [(self.start, self.end)] if always else churn_sessions(self.rng, cfg, self.start, self.end)
        period = [(cfg.period.start_ms, cfg.period.end_ms)]
        churners = [n for n in ids if n not in self.always_on and total(intersection(self.sessions[n], period)) >= HOUR]
        self.cheaters: dict[str, int] = dict(zip(CHEATS, self.rng.sample(churners, len(CHEATS)))) if cfg.cheaters else {}
        if "lone colluder" in self.cheaters:  # its colluder replaces an always-on node, right before it on the ring
            friend = self.cheaters["lone colluder"]
            i = ids.index(friend)
            key, colluder = _ring_id_between(ids[i - 1], friend, self.rng)
            dropped = next(n for n in sorted(self.always_on) if n not in self.cheaters.values())
            self.always_on.discard(dropped)
            del self.keys[dropped], self.sessions[dropped]
            self.keys[colluder] = key
            self.always_on.add(colluder)
            self.sessions[colluder] = [(self.start, self.end)]
            self.colluder = colluder
        self.starts = {node: [a for a, _ in spans] for node, spans in self.sessions.items()}
        memberships = dict(self.sessions)
        if "lone colluder" in self.cheaters:
            memberships[self.cheaters["lone colluder"]] = [(self.start, self.end)]  # it refutes every suspicion
        self.table: NeighbourTable = ring_neighbour_table(memberships, cfg.successors)
        self.watched: dict[int, list[tuple[int, list[Interval]]]] = defaultdict(list)  # witness -> (subject, relation)
        for witness, subject, spans in self.table.relations():
            self.watched[witness].append((subject, spans))
        flooder = self.cheaters.get("flood")
        probers = self.table.witnesses_of(flooder, self.start, self.end) if flooder is not None else {}
        strangers = [n for n in sorted(self.keys) if flooder is not None and n != flooder and n not in probers]
        self._flood_targets = set(self.rng.sample(strangers, min(5, len(strangers))))

    # ------------------------------------------------------------------ one witness

    def _probes(self, witness: int, flood: bool, thin: bool = True) -> list[tuple[int, int, int, int]]:
        """The feed of ``witness``: (time, kind 0 probe+ack / 1 unasked ack / 2 attest, subject, epoch).

        Thinned (module doc) unless ``thin`` is false: then every probe is there.
        """
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}/{witness}")  # its own draws: a second run of one witness is the same
        gap_stride = max(1, cfg.witness.gap_ms // cfg.pass_ms) if thin else 1
        events: list[tuple[int, int, int, int]] = []
        phase = rng.randrange(cfg.witness.attestation_interval_ms)
        mine, my_starts = self.sessions[witness], self.starts[witness]
        for start, end in mine:
            first_tick = start + (phase - start) % cfg.witness.attestation_interval_ms
            events += [(t, 2, 0, 0) for t in range(first_tick, end, cfg.witness.attestation_interval_ms)]
        flooder = self.cheaters.get("flood")
        for subject, relation in self.watched[witness]:
            theirs, their_starts = self.sessions[subject], self.starts[subject]
            for low, high in relation:
                first = low + rng.randrange(cfg.successors * cfg.stabilize_ms) + rng.randrange(cfg.pass_ms)
                for epoch, s_start, s_end in _within(theirs, their_starts, first, high):
                    for _, u, v in _within(mine, my_starts, s_start, s_end):
                        j0, j1 = -(-(u - first) // cfg.pass_ms), (v - 1 - first) // cfg.pass_ms
                        if j0 > j1:
                            continue
                        keep = set(range(j0, j1 + 1, gap_stride)) | {j1}
                        tick = u + (phase - u) % cfg.witness.attestation_interval_ms
                        keep.update((t - first) // cfg.pass_ms for t in range(tick, v, cfg.witness.attestation_interval_ms))
                        for j in keep:
                            if j0 <= j <= j1:
                                events.append((first + j * cfg.pass_ms, 0, subject, epoch))
                        if flood and subject == flooder:
                            for j in list(keep)[:20]:  # a doubled ack, and bursts of unasked ones
                                t = first + j * cfg.pass_ms
                                events += [(t + k * 10, 1, subject, epoch) for k in range(100) if t + k * 10 < v]
        if flood and flooder is not None and witness != flooder and witness in self._flood_targets:
            for s_start, s_end in intersection(self.sessions[flooder], mine):
                events += [(t, 1, flooder, 0) for t in range(s_start, s_end, 600_000)][:200]
        events.sort()
        return events

    def witness_batches(self, witness: int, flood: bool = False, thin: bool = True) -> list[SignedAttestations]:
        """Every batch ``witness`` signs over the run, each of its sessions with a fresh recorder."""
        key = self.keys[witness]
        out: list[SignedAttestations] = []
        events = self._probes(witness, flood, thin)
        for start, end in self.sessions[witness]:
            recorder = UptimeWitness(witness, start, self.cfg.witness)
            probed, acknowledged = recorder.probed, recorder.acknowledged
            first, last = bisect.bisect_left(events, (start,)), bisect.bisect_left(events, (end,))
            for t, kind, subject, epoch in events[first:last]:
                if kind == 0:
                    probed(subject, t)
                    acknowledged(subject, t, epoch)
                elif kind == 1:
                    acknowledged(subject, t, epoch)
                else:
                    for chunk in batches(recorder.attestations_due(t)):
                        out.append(sign_attestations(key, chunk))
        return out

    # ------------------------------------------------------------------ the cheats

    def _cheat_batches(self, honest_about: dict[int, list[SignedAttestations]]) -> list[SignedAttestations]:
        period, out = self.cfg.period, []
        whole = (period.start_ms, period.end_ms)
        seq = (self.end + 1) * 1024

        def claim(witness: int, subject: int, spans: list[Interval]) -> list[Attestation]:
            return [Attestation(witness, subject, a, b, seq + i) for i, (a, b) in enumerate(spans)]

        if (x := self.cheaters.get("self")) is not None:
            out.append(sign_attestations(self.keys[x], claim(x, x, [whole])))
        if (x := self.cheaters.get("forger")) is not None:
            prober = next(iter(self.table.witnesses_of(x, *whole)))
            forged = sign_attestations(self.keys[x], claim(x, x, [whole]))
            prober_key = public_key_bytes(self.keys[prober].public_key())
            out.append(SignedAttestations(prober_key, tuple(claim(prober, x, [whole])), forged.signature))
            original = next(b for b in honest_about[x])
            moved = tuple(dataclasses.replace(a, end_ms=a.end_ms + DAY) for a in original.attestations)
            out.append(SignedAttestations(original.witness_key, moved, original.signature))
        if (x := self.cheaters.get("non-neighbour")) is not None:
            probers = self.table.witnesses_of(x, self.start, self.end)
            stranger = next(n for n in sorted(self.keys) if n != x and n not in probers)
            out.append(sign_attestations(self.keys[stranger], claim(stranger, x, [whole])))
            sometimes, spans = next(iter(probers.items()))
            out.append(sign_attestations(self.keys[sometimes], claim(sometimes, x, difference([whole], spans)[:1000])))
        if (x := self.cheaters.get("replay")) is not None:
            out += honest_about[x]
            own = [a for b in honest_about[x] for a in b.attestations if a.subject == x]
            colluder = max(sorted({a.witness for a in own}), key=lambda w: sum(a.witness == w for a in own))
            again = [(a.start_ms, a.end_ms) for a in own if a.witness == colluder]
            for chunk in batches(claim(colluder, x, again)):
                out.append(sign_attestations(self.keys[colluder], chunk))
        if (x := self.cheaters.get("lone colluder")) is not None:
            out.append(sign_attestations(self.keys[self.colluder], claim(self.colluder, x, [whole])))
        return out

    # ------------------------------------------------------------------ the run

    def run(self) -> SimResult:
        cfg, seconds = self.cfg, {}
        clock = time.perf_counter()
        flooder = self.cheaters.get("flood")
        cheats = set(self.cheaters.values())
        everything = UptimeTally(cfg.period, self.table, cfg.rules)
        baseline = UptimeTally(cfg.period, self.table, cfg.rules, subjects=cheats)
        honest_about: dict[int, list[SignedAttestations]] = defaultdict(list)
        size = count = attestations = 0
        for witness in sorted(self.keys):
            watches = any(subject == flooder for subject, _ in self.watched[witness])
            flooded = flooder is not None and (witness in self._flood_targets or watches)
            signed = self.witness_batches(witness, flood=flooded)
            clean = self.witness_batches(witness, flood=False) if flooded else signed
            for batch in signed:
                entry = batch.encode()
                size += len(entry)
                count += 1
                attestations += len(batch.attestations)
                everything.add_entry(entry)
            for batch in clean:
                about = {a.subject for a in batch.attestations} & cheats
                if about:
                    baseline.add_batch(batch)
                    for subject in about:
                        honest_about[subject].append(batch)
        seconds["witnessing and tally"] = time.perf_counter() - clock
        clock = time.perf_counter()
        for batch in self._cheat_batches(honest_about):
            everything.add_entry(batch.encode())
        uptime = {node: everything.uptime_intervals(node) for node in self.keys}
        truth = {node: intersection(self.sessions[node], [(cfg.period.start_ms, cfg.period.end_ms)]) for node in self.keys}
        gains, down = {}, {}
        for cheat, node in self.cheaters.items():
            gains[cheat] = total(uptime[node]) - total(baseline.uptime_intervals(node))
            down[cheat] = total(difference(uptime[node], truth[node]))
        classes = NodeClasses()
        for node in self.keys:
            classes.update(node, uptime[node], cfg.period.end_ms)
        seconds["cheats, payout and classes"] = time.perf_counter() - clock
        return SimResult(
            truth, uptime, gains, down, dict(self.cheaters), set(self.always_on),
            {n: classes.class_of(n) for n in self.keys}, size, count, attestations, seconds,
            {v.value: c for v, c in everything.verdicts.items()}, cfg,
        )  # fmt: skip


def simulate(cfg: SimConfig) -> SimResult:
    """Run the world of ``cfg`` once (deterministic for a seed, keys aside: their ids are random)."""
    return ChurnWorld(cfg).run()

