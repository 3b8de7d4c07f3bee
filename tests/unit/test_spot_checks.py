"""Adaptive replication: trusted after agreeing in a row, spot-checked at the configured rate, reset by a dissent."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from cortex_rm.events.functions import FunctionSpec
from cortex_rm.events.spot_checks import SpotCheckConfig, SpotChecks

A, B, C = 0xA, 0xB, 0xC
EXECUTORS = [A, B, C]


class ScriptedRandom(random.Random):
    """``random()`` answers from a script (then 0.5 for ever): which draws are spot checks is the test's choice."""

    def __init__(self, draws: Iterable[float] = ()) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.5


def spec(name: str = "f", version: int = 1, mode: str = "vote", replicas: int = 3) -> FunctionSpec:
    return FunctionSpec(name=name, owner="alice", version=version, code_path="/user/alice/f.py", code_length=1,
                        code_mtime_ms=1, mode=mode, replicas=replicas)  # fmt: skip


def checks(draws: Iterable[float] = (), **config: object) -> SpotChecks:
    return SpotChecks(SpotCheckConfig(**{"trust_after": 3, "spot_check_rate": 0.1, **config}), ScriptedRandom(draws))  # type: ignore[arg-type]


def agree_all(spots: SpotChecks, function: FunctionSpec, times: int, nodes: list[int] = EXECUTORS) -> None:
    for _ in range(times):
        spots.record(function, nodes, [])


def test_untrusted_owner_is_replicated() -> None:
    """Until the owner has agreed ``trust_after`` times in a row, every trigger goes to every executor."""
    spots, f = checks(), spec()
    for _ in range(3):
        assert spots.plan(f, EXECUTORS) == EXECUTORS
        spots.record(f, EXECUTORS, [])
    assert spots.trusted(f, A)


def test_trusted_owner_runs_alone_but_for_spot_checks() -> None:
    """A trusted owner runs triggers alone; a draw under the rate still replicates (a spot check)."""
    spots, f = checks(draws=[0.5, 0.05, 0.99, 0.0999]), spec()
    agree_all(spots, f, 3)
    assert [spots.plan(f, EXECUTORS) for _ in range(4)] == [[A], EXECUTORS, [A], EXECUTORS]
    assert (spots.solo, spots.spot_checked) == (2, 2)


def test_rate_over_many_draws() -> None:
    """Over many seeded draws, the share of spot checks is the configured rate (binomial bounds, 10,000 plans)."""
    spots, f = SpotChecks(SpotCheckConfig(trust_after=1, spot_check_rate=0.25), random.Random(7)), spec()
    spots.record(f, EXECUTORS, [])
    replicated = sum(len(spots.plan(f, EXECUTORS)) == 3 for _ in range(10_000))
    assert 2_300 < replicated < 2_700  # mean 2,500, sd 43


def test_dissent_resets_trust() -> None:
    """A trusted node that dissents in a spot check is untrusted again and must agree ``trust_after`` times anew."""
    spots, f = checks(draws=[0.0]), spec()
    agree_all(spots, f, 5)
    assert spots.plan(f, EXECUTORS) == EXECUTORS  # the spot check
    spots.record(f, [B, C], [A])
    assert not spots.trusted(f, A) and spots.agreements(f, A) == 0
    assert spots.plan(f, EXECUTORS) == EXECUTORS
    assert spots.trusted(f, B)  # the others keep theirs


def test_missing_result_counts_as_dissent() -> None:
    """The caller passes an executor that did not answer while the others agreed as dissenting: it is reset."""
    spots, f = checks(), spec()
    agree_all(spots, f, 3)
    spots.record(f, agreed=[B, C], dissented=[A])
    assert spots.plan(f, EXECUTORS) == EXECUTORS


def test_an_uncorroborated_result_earns_nothing() -> None:
    """A result no peer agreed with (a solo run, or one of two that differ) does not extend a streak."""
    spots, f = checks(), spec()
    for _ in range(5):
        spots.record(f, [A], [])
    assert spots.agreements(f, A) == 0
    spots.record(f, [A], [B])
    assert spots.agreements(f, A) == 0 and spots.agreements(f, B) == 0


def test_dissent_wins_over_agreement_in_one_record() -> None:
    """A node listed both ways (a caller's slip) is treated as dissenting."""
    spots, f = checks(), spec()
    agree_all(spots, f, 3)
    spots.record(f, [A, B, C], [A])
    assert not spots.trusted(f, A) and spots.trusted(f, B)


def test_trust_is_per_function_and_version() -> None:
    """Trust earned on one function is not trust for another, nor for the next version of the same one."""
    spots, f = checks(), spec("f")
    agree_all(spots, f, 3)
    assert spots.plan(spec("g"), EXECUTORS) == EXECUTORS
    assert spots.plan(spec("f", version=2), EXECUTORS) == EXECUTORS
    spots.record(spec("f", version=2), EXECUTORS, [])
    assert spots.agreements(spec("f", version=2), A) == 1
    spots.record(f, EXECUTORS, [])  # a late vote of version 1 changes nothing now
    assert spots.agreements(spec("f", version=2), A) == 1


def test_trust_follows_the_owner() -> None:
    """Only the first executor's trust decides: a trusted successor does not make the owner's triggers solo."""
    spots, f = checks(), spec()
    agree_all(spots, f, 3, [B, C])
    assert spots.plan(f, [A, B, C]) == [A, B, C]
    assert spots.plan(f, [B, C, A]) == [B]


@pytest.mark.parametrize(
    "function",
    [spec(mode="first"), spec(replicas=1)],
)
def test_only_replicated_votes_adapt(function: FunctionSpec) -> None:
    """`first` functions and single replicas are planned on every executor given and record nothing."""
    spots = checks()
    agree_all(spots, function, 10)
    assert len(spots) == 0
    assert spots.plan(function, EXECUTORS) == EXECUTORS


def test_disabled() -> None:
    """With adaptive replication disabled, every vote runs on every replica."""
    spots, f = checks(enabled=False), spec()
    agree_all(spots, f, 10)
    assert spots.plan(f, EXECUTORS) == EXECUTORS


def test_single_executor_left() -> None:
    """With one executor left there is nothing to choose: it is the plan."""
    spots, f = checks(), spec()
    assert spots.plan(f, [A]) == [A]
    assert spots.plan(f, []) == []


def test_bounded_least_recently_used() -> None:
    """At most ``max_entries`` pairs are kept; the least recently used goes first, and a plan counts as use."""
    spots, f = checks(max_entries=3), spec()
    agree_all(spots, f, 3, [A, B])
    spots.record(f, [C, A], [])  # order of use: B, A, C
    assert spots.plan(f, [B, C]) == [B]  # B used: A, C, B
    spots.record(f, [0xD, 0xE], [])  # C and A forgotten
    assert len(spots) == 3
    assert spots.agreements(f, C) == 0 and spots.agreements(f, A) == 0 and spots.trusted(f, B)


def test_forget() -> None:
    """A node that left is forgotten for every function."""
    spots = checks()
    agree_all(spots, spec("f"), 3)
    agree_all(spots, spec("g"), 3)
    spots.forget(A)
    assert len(spots) == 4 and not spots.trusted(spec("f"), A) and not spots.trusted(spec("g"), A)


@pytest.mark.parametrize(
    "config",
    [{"trust_after": 0}, {"spot_check_rate": 1.5}, {"spot_check_rate": -0.1}, {"max_entries": 0}, {"trust_after": "10"}],
)
def test_config_bounds(config: dict[str, object]) -> None:
    """A configuration out of bounds is refused, naming the setting."""
    (name,) = config
    with pytest.raises(ValueError, match=name):
        SpotCheckConfig(**config)  # type: ignore[arg-type]
