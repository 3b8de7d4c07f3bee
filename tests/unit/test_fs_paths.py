"""File system paths: parsing at the edge with HDFS's name rules, and FsPath's navigation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.fs.errors import InvalidPath
from cortex_rm.fs.paths import ROOT, FsPath, parse_path


@pytest.mark.parametrize(
    ("text", "components"),
    [
        ("/", ()),
        ("/a", ("a",)),
        ("/a/b", ("a", "b")),
        ("/a/b/", ("a", "b")),
        ("/a b/c-d_e.f", ("a b", "c-d_e.f")),
        ("/.hidden/..dots/...", (".hidden", "..dots", "...")),
        ("/ünïcødé/名前", ("ünïcødé", "名前")),
        ("/" + "x" * 255, ("x" * 255,)),
        ("/" + "é" * 127, ("é" * 127,)),  # 254 bytes of UTF-8
        ("/a" * 1000, ("a",) * 1000),
    ],
)
def test_valid_paths_parse_to_their_components(text: str, components: tuple[str, ...]) -> None:
    """A valid absolute path (one trailing slash allowed) splits into its components."""
    assert parse_path(text) == FsPath(components)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not absolute"),
        ("a/b", "not absolute"),
        ("hdfs://nn/a", "not absolute"),
        ("//", "empty path component"),
        ("/a//b", "empty path component"),
        ("/a/b//", "empty path component"),
        ("/a/./b", '"." is not allowed'),
        ("/a/../b", '".." is not allowed'),
        ("/..", '".." is not allowed'),
        ("/a\x00b", "NUL"),
        ("/a:b", '":"'),
        ("/" + "x" * 256, "more than the limit of 255"),
        ("/" + "é" * 128, "256 bytes"),
        ("/a" * 1001, "more than 1000 components"),
        ("/" + "a/" * 4000 + "b", "longer than 8000"),
        ("/a\ud800", "lone surrogate"),
    ],
)
def test_invalid_paths_are_refused_saying_why(text: str, reason: str) -> None:
    """Each HDFS rule refuses with InvalidPath, the message naming the path and the rule."""
    with pytest.raises(InvalidPath) as caught:
        parse_path(text)
    assert reason in str(caught.value)
    assert "Invalid path name" in str(caught.value)
    assert caught.value.java_class == "org.apache.hadoop.fs.InvalidPathException"


def test_long_paths_are_shortened_in_messages() -> None:
    """A refused 8,001-character path is quoted cut short, not in full."""
    with pytest.raises(InvalidPath) as caught:
        parse_path("/" + "a" * 8000)
    assert len(str(caught.value)) < 400


def test_navigation() -> None:
    """str, parent, name, child and prefix move around the tree as paths do."""
    path = parse_path("/a/b/c")
    assert str(path) == "/a/b/c"
    assert str(ROOT) == "/"
    assert ROOT.is_root and not path.is_root
    assert path.parent == parse_path("/a/b")
    assert path.parent.parent.parent == ROOT
    assert path.name == "c" and ROOT.name == ""
    assert ROOT.child("a").child("b").child("c") == path
    assert path.prefix(1) == parse_path("/a")
    with pytest.raises(ValueError, match="no parent"):
        _ = ROOT.parent


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a:b", "a\x00"])
def test_child_validates_the_name(name: str) -> None:
    """child() refuses a name parse_path would refuse inside a path."""
    with pytest.raises(InvalidPath):
        ROOT.child(name)


@pytest.mark.parametrize(
    ("ancestor", "other", "expected"),
    [
        ("/", "/a", True),
        ("/", "/", False),
        ("/a", "/a/b/c", True),
        ("/a", "/a", False),
        ("/a", "/ab", False),
        ("/a/b", "/a", False),
        ("/a/b", "/a/c", False),
    ],
)
def test_is_ancestor_of_is_strict_and_component_wise(ancestor: str, other: str, expected: bool) -> None:
    """is_ancestor_of holds for paths strictly below, by whole components ("/a" is not above "/ab")."""
    assert parse_path(ancestor).is_ancestor_of(parse_path(other)) is expected


names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/:\x00"), min_size=1, max_size=20).filter(
    lambda name: name not in (".", "..")
)


@given(st.lists(names, max_size=8))
def test_str_and_parse_round_trip(components: list[str]) -> None:
    """Any valid path parses back from its string form, with or without a trailing slash."""
    path = FsPath(tuple(components))
    assert parse_path(str(path)) == path
    if components:
        assert parse_path(str(path) + "/") == path
