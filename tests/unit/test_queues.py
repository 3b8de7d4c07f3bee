"""The capacity scheduler's queue tree: naming, submission rules, validation, absolute shares."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.allocator.errors import InvalidSubmission, UnknownQueue
from cortex_rm.allocator.queues import DEFAULT_QUEUES, QueueSpec, QueueState, QueueTree


def _tree() -> QueueTree:
    """root ─ prod (60) ─ etl (50), adhoc (50, STOPPED)
            └ dev (40, max 80) ─ adhoc (100)        (two leaves named adhoc)
    """
    return QueueTree(
        QueueSpec(
            "root",
            children=(
                QueueSpec(
                    "prod",
                    capacity=60,
                    children=(
                        QueueSpec("etl", capacity=50),
                        QueueSpec("adhoc", capacity=50, state=QueueState.STOPPED),
                    ),
                ),
                QueueSpec("dev", capacity=40, maximum_capacity=80, children=(QueueSpec("adhoc"),)),
            ),
        )
    )


# -- names ---------------------------------------------------------------------------


def test_default_tree_is_root_with_one_default_leaf() -> None:
    """With no configuration, ``root`` has one leaf ``default`` taking the whole cluster."""
    tree = QueueTree()
    assert [q.path for q in tree] == ["root", "root.default"]
    leaf = tree.find("default")
    assert leaf.is_leaf and leaf.absolute_capacity == 1.0
    assert tree.root.spec == DEFAULT_QUEUES


def test_unique_leaf_is_found_by_short_name_and_full_path() -> None:
    """``etl`` and ``root.prod.etl`` name the same leaf."""
    tree = _tree()
    assert tree.find("etl") is tree.find("root.prod.etl")
    assert tree.display_name(tree.find("etl")) == "etl"


def test_root_and_every_path_are_found() -> None:
    """Every queue, parents included, is found by its full path; ``root`` is the root."""
    tree = _tree()
    assert tree.find("root") is tree.root
    for queue in tree:
        assert tree.find(queue.path) is queue


def test_top_level_parent_is_found_by_short_name() -> None:
    """A parent directly under root is found by its short name too."""
    tree = _tree()
    assert tree.find("prod") is tree.find("root.prod")


def test_ambiguous_leaf_name_is_refused_listing_both_paths() -> None:
    """Two leaves named ``adhoc``: the short name is an error naming both full paths."""
    tree = _tree()
    with pytest.raises(UnknownQueue, match="ambiguous") as info:
        tree.find("adhoc")
    assert "root.prod.adhoc" in str(info.value) and "root.dev.adhoc" in str(info.value)
    with pytest.raises(InvalidSubmission, match="ambiguous"):
        tree.leaf_for_submission("adhoc")


def test_ambiguous_leaves_are_shown_by_full_path() -> None:
    """Reports show an ambiguous leaf by its full path, so it can be told apart."""
    tree = _tree()
    leaf = tree.find("root.dev.adhoc")
    assert tree.display_name(leaf) == "root.dev.adhoc"
    assert tree.leaf_for_submission("root.dev.adhoc") is leaf


def test_unknown_queue_error_lists_the_queues() -> None:
    """Naming a queue that does not exist says so and lists the existing ones."""
    with pytest.raises(UnknownQueue, match="'nope' does not exist.*root.prod.etl"):
        _tree().find("nope")


# -- submission ----------------------------------------------------------------------


def test_empty_queue_name_submits_to_default() -> None:
    """A submission without a queue goes to ``default``, as in YARN."""
    tree = QueueTree()
    assert tree.leaf_for_submission("") is tree.find("root.default")


def test_submission_to_unknown_queue_is_invalid() -> None:
    """A submission to a queue that does not exist is refused with YARN's wording."""
    with pytest.raises(InvalidSubmission, match="non-existent queue"):
        _tree().leaf_for_submission("nope")


@pytest.mark.parametrize("name", ["root", "prod", "root.prod", "root.dev"])
def test_submission_to_parent_queue_is_refused_naming_its_leaves(name: str) -> None:
    """Applications run in leaves only; submitting to a parent names the leaves to use instead."""
    tree = _tree()
    with pytest.raises(InvalidSubmission, match="is a parent queue") as info:
        tree.leaf_for_submission(name)
    queue = tree.find(name)
    for child in queue.children:
        assert child.path in str(info.value)


def test_submission_to_stopped_leaf_is_refused() -> None:
    """A STOPPED leaf accepts no new applications."""
    tree = _tree()
    with pytest.raises(InvalidSubmission, match="root.prod.adhoc is STOPPED"):
        tree.leaf_for_submission("root.prod.adhoc")


def test_leaf_under_a_stopped_parent_is_not_running() -> None:
    """A running leaf under a STOPPED parent is stopped too."""
    tree = QueueTree(
        QueueSpec("root", children=(QueueSpec("p", state=QueueState.STOPPED, children=(QueueSpec("leaf"),)),))
    )
    leaf = tree.find("leaf")
    assert leaf.spec.state is QueueState.RUNNING
    assert not leaf.is_running
    with pytest.raises(InvalidSubmission, match="STOPPED"):
        tree.leaf_for_submission("leaf")


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (QueueSpec("top"), "must be named 'root'"),
        (QueueSpec("root", children=(QueueSpec("a", capacity=60), QueueSpec("b", capacity=30))), "sum to 100, not 90"),
        (QueueSpec("root", children=(QueueSpec("a", capacity=60), QueueSpec("a", capacity=40))), "share a name"),
        (QueueSpec("root", children=(QueueSpec("a", capacity=100, maximum_capacity=50),)), "capacity=100"),
        (
            QueueSpec("root", children=(QueueSpec("a", capacity=120, maximum_capacity=120), QueueSpec("b", capacity=-20))),
            "root.a: .*capacity=120",
        ),
        (QueueSpec("root", children=(QueueSpec("a", capacity=-10), QueueSpec("b", capacity=110))), "root.a"),
        (QueueSpec("root", children=(QueueSpec("a", maximum_capacity=150),)), "maximum_capacity=150"),
        (QueueSpec("root", children=(QueueSpec(""),)), "name"),
        (QueueSpec("root", children=(QueueSpec("a.b"),)), "name"),
        (QueueSpec("root", capacity=50, maximum_capacity=100), "root"),
        (QueueSpec("root", maximum_capacity=50, capacity=50), "root"),
    ],
)
def test_invalid_trees_are_rejected_naming_the_queue(spec: QueueSpec, message: str) -> None:
    """Bad names, capacities outside 0..max..100, siblings not summing to 100 and a partial root are refused."""
    with pytest.raises(ValueError, match=message):
        QueueTree(spec)


def test_siblings_summing_to_100_within_rounding_are_accepted() -> None:
    """Three thirds written as 33.333333333 sum to 100 within the tolerance."""
    third = 100 / 3
    tree = QueueTree(QueueSpec("root", children=tuple(QueueSpec(n, capacity=third) for n in "abc")))
    assert len([q for q in tree if q.is_leaf]) == 3


# -- absolute capacities -------------------------------------------------------------


def test_absolute_capacities_multiply_down_the_tree() -> None:
    """A leaf's absolute share is the product of the shares on its path."""
    tree = _tree()
    assert tree.find("root.prod").absolute_capacity == pytest.approx(0.6)
    assert tree.find("etl").absolute_capacity == pytest.approx(0.3)
    assert tree.find("root.dev.adhoc").absolute_capacity == pytest.approx(0.4)
    assert tree.find("root.dev.adhoc").absolute_maximum_capacity == pytest.approx(0.8)
    assert tree.find("etl").absolute_maximum_capacity == pytest.approx(1.0)
    assert tree.find("root.dev").absolute_maximum_capacity == pytest.approx(0.8)


def _shares(n: int) -> st.SearchStrategy[list[float]]:
    """``n`` non-negative percentages summing to 100 (the last one takes the remainder)."""
    return st.lists(st.integers(min_value=0, max_value=1000), min_size=n, max_size=n).filter(sum).map(
        lambda ws: [100.0 * w / sum(ws) for w in ws]
    )


@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda n: st.tuples(_shares(n), st.lists(st.integers(min_value=1, max_value=3), min_size=n, max_size=n))
    ).flatmap(
        lambda top: st.tuples(st.just(top[0]), st.tuples(*[_shares(k) for k in top[1]]))
    )
)
def test_leaves_absolute_capacities_sum_to_the_whole_cluster(layout) -> None:  # type: ignore[no-untyped-def]
    """In any valid two-level tree the leaves' guaranteed shares add up to exactly the cluster."""
    top_shares, child_shares = layout
    spec = QueueSpec(
        "root",
        children=tuple(
            QueueSpec(
                f"p{i}",
                capacity=share,
                children=tuple(QueueSpec(f"l{i}_{j}", capacity=c) for j, c in enumerate(child_shares[i])),
            )
            for i, share in enumerate(top_shares)
        ),
    )
    tree = QueueTree(spec)
    total = sum(q.absolute_capacity for q in tree if q.is_leaf)
    assert math.isclose(total, 1.0, rel_tol=1e-9)
    for queue in tree:
        assert 0.0 <= queue.absolute_capacity <= queue.absolute_maximum_capacity <= 1.0 + 1e-12
