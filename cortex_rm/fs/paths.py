"""File system paths: parsed and validated once, at the edge, into ``FsPath``.

A WebHDFS request names a path as text; ``parse_path`` turns it into the tuple of
its components or refuses it with ``InvalidPath``.  The rules are HDFS's
(``DFSUtil.isValidName`` and the ``dfs.namenode.fs-limits.*`` defaults):

* the path is absolute; one trailing slash is dropped (``/a/b/`` is ``/a/b``);
* no empty component (``//``), no ``.`` or ``..``, no NUL and no ``:`` in a name;
* a component is at most 255 bytes of UTF-8 (``max-component-length``);
* at most 1000 components (``MAX_PATH_DEPTH``) and 8000 characters (``MAX_PATH_LENGTH``).

Past the edge every path is an ``FsPath`` and nothing re-parses text.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex_rm.fs.errors import InvalidPath

MAX_COMPONENT_BYTES = 255  # dfs.namenode.fs-limits.max-component-length
MAX_PATH_DEPTH = 1000  # HdfsServerConstants.MAX_PATH_DEPTH
MAX_PATH_LENGTH = 8000  # HdfsServerConstants.MAX_PATH_LENGTH
_SHOWN_CHARS = 200  # how much of a refused path an error message quotes


@dataclass(frozen=True)
class FsPath:
    """An absolute, valid path as its components: ``()`` is the root ``/``."""

    components: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/" + "/".join(self.components)

    @property
    def is_root(self) -> bool:
        """True for ``/``."""
        return not self.components

    @property
    def parent(self) -> FsPath:
        """The directory holding this path; the root has none (``ValueError``)."""
        if not self.components:
            raise ValueError("the root has no parent")
        return FsPath(self.components[:-1])

    @property
    def name(self) -> str:
        """The last component; ``""`` for the root."""
        return self.components[-1] if self.components else ""

    def child(self, name: str) -> FsPath:
        """This path extended by one component, validated like a parsed one."""
        _check_component(name, str(self))
        if len(self.components) >= MAX_PATH_DEPTH:
            raise InvalidPath(f"Invalid path name {_shown(str(self))}/{name}: more than {MAX_PATH_DEPTH} components")
        return FsPath((*self.components, name))

    def prefix(self, depth: int) -> FsPath:
        """The ancestor (or self) made of the first ``depth`` components."""
        return FsPath(self.components[:depth])

    def is_ancestor_of(self, other: FsPath) -> bool:
        """True if ``other`` lies strictly below this path (a path is not its own ancestor)."""
        return len(other.components) > len(self.components) and (
            other.components[: len(self.components)] == self.components
        )


ROOT = FsPath()


def parse_path(text: str) -> FsPath:
    """Validate ``text`` as an absolute HDFS path and split it; refuse it with ``InvalidPath``
    whose message says what is wrong and quotes the path."""
    if len(text) > MAX_PATH_LENGTH:
        raise InvalidPath(f"Invalid path name {_shown(text)}: longer than {MAX_PATH_LENGTH} characters")
    if not text.startswith("/"):
        raise InvalidPath(f"Invalid path name {_shown(text)}: the path is not absolute")
    body = text[1:]
    body = body.removesuffix("/")  # one trailing slash is allowed; "//" at the end leaves an empty component
    if not body:
        if text != "/":  # "//"
            raise InvalidPath(f"Invalid path name {_shown(text)}: empty path component")
        return ROOT
    components = body.split("/")
    if len(components) > MAX_PATH_DEPTH:
        raise InvalidPath(f"Invalid path name {_shown(text)}: more than {MAX_PATH_DEPTH} components")
    for component in components:
        _check_component(component, text)
    return FsPath(tuple(components))


def _check_component(component: str, text: str) -> None:
    """Refuse one path component by HDFS's ``DFSUtil.isValidName`` rules and length limit."""
    if not component:
        raise InvalidPath(f"Invalid path name {_shown(text)}: empty path component")
    if component in (".", ".."):
        raise InvalidPath(f'Invalid path name {_shown(text)}: "{component}" is not allowed as a path component')
    if "/" in component:
        raise InvalidPath(f'Invalid path name {_shown(text)}: "/" inside the name {_shown(component)}')
    if "\x00" in component:
        raise InvalidPath(f"Invalid path name {_shown(text)}: NUL character in a path component")
    if ":" in component:
        raise InvalidPath(f'Invalid path name {_shown(text)}: ":" in the path component {_shown(component)}')
    try:
        size = len(component.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPath(f"Invalid path name {_shown(text)}: not valid Unicode (a lone surrogate)") from None
    if size > MAX_COMPONENT_BYTES:
        raise InvalidPath(
            f"Invalid path name {_shown(text)}: the component {_shown(component[:40])}... is {size} bytes of UTF-8,"
            f" more than the limit of {MAX_COMPONENT_BYTES}"
        )


def _shown(text: str) -> str:
    """The path as an error message quotes it: NUL visible, and no longer than 200 characters."""
    cut = text[:_SHOWN_CHARS] + ("..." if len(text) > _SHOWN_CHARS else "")
    return cut.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")
