"""The host uids and gids a node's unprivileged containers run as, one block per application.

Every container gets a user namespace (``lxc.idmap``): its uids and gids 0..65535
are a block of ``BLOCK`` consecutive host ids, so root inside is an unprivileged
uid outside.  A node owns one range of host ids (``[nodemanager]
container_id_range = "BASE:COUNT"``), cut into blocks; each application running
on the node holds one block from its first container until the NodeManager
cleans it up, and every container of the application runs in it.  So the files
an application's containers write are owned by its block's root
(``IdBlock.root``), and two applications on one node never share an id: their
processes are different users to the kernel and to the network policy
(``net_policy.py`` tells them apart by the block).

Ranges and blocks are aligned to ``BLOCK``: ``uid >> 16`` then names a block on
the whole host (what the network policy's packet marks carry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Host ids per application: a container's ids 0..65535.
BLOCK: Final = 65536
#: The default range: 1024 blocks from uid 1,000,000,000 (far above /etc/subuid's usual
#: 100000-based ranges and below 2**31, which some tools misread as negative).
DEFAULT_BASE: Final = 1_000_000_000 - (1_000_000_000 % BLOCK)
DEFAULT_COUNT: Final = 1024 * BLOCK
DEFAULT_RANGE_TEXT: Final = f"{DEFAULT_BASE}:{DEFAULT_COUNT}"
_MAX_ID: Final = 2**31  # ids at or above this are refused (signed-int readers)


#: Blocks per node when several nodes share a host (``local-cluster``): 64 applications at once.
NODE_ID_BLOCKS: Final = 64


def node_id_range(index: int) -> str:
    """Node ``index``'s (1-based) share of the default range, for nodes that share a host."""
    return f"{DEFAULT_BASE + (index - 1) * NODE_ID_BLOCKS * BLOCK}:{NODE_ID_BLOCKS * BLOCK}"


class IdRangeError(ValueError):
    """A range that cannot work; the message says why."""


@dataclass(frozen=True)
class IdBlock:
    """One application's ids: host ``root`` .. ``root + BLOCK - 1`` are its container's 0..65535."""

    root: int

    @property
    def number(self) -> int:
        """The block's host-wide number (``root >> 16``)."""
        return self.root // BLOCK

    def idmap_lines(self) -> list[str]:
        """The ``lxc.idmap`` lines mapping the container's 0..65535 onto this block."""
        return [f"lxc.idmap = u 0 {self.root} {BLOCK}", f"lxc.idmap = g 0 {self.root} {BLOCK}"]


@dataclass(frozen=True)
class IdRange:
    """A node's host ids for containers: ``base`` .. ``base + count - 1``, whole blocks."""

    base: int
    count: int

    @classmethod
    def parse(cls, text: str) -> IdRange:
        """``"BASE:COUNT"``; IdRangeError saying what is wrong."""
        try:
            base_text, count_text = text.split(":")
            found = cls(int(base_text), int(count_text))
        except ValueError:
            raise IdRangeError(f"{text!r} is not BASE:COUNT (two integers)") from None
        found.check()
        return found

    def check(self) -> None:
        """IdRangeError unless the range is whole, aligned blocks of positive ids below 2**31."""
        if self.base <= 0 or self.count < BLOCK:
            raise IdRangeError(f"{self.base}:{self.count}: the base must be positive and the count at least {BLOCK}")
        if self.base % BLOCK or self.count % BLOCK:
            raise IdRangeError(f"{self.base}:{self.count}: base and count must be multiples of {BLOCK}")
        if self.last >= _MAX_ID:
            raise IdRangeError(f"{self.base}:{self.count}: the range must end below {_MAX_ID}")

    @property
    def last(self) -> int:
        return self.base + self.count - 1

    @property
    def blocks(self) -> int:
        return self.count // BLOCK

    def block(self, index: int) -> IdBlock:
        return IdBlock(self.base + index * BLOCK)

    def overlaps(self, start: int, count: int) -> bool:
        """Whether ids ``start`` .. ``start + count - 1`` meet this range."""
        return start <= self.last and self.base <= start + count - 1

    def text(self) -> str:
        return f"{self.base}:{self.count}"


def subordinate_ranges(text: str) -> list[tuple[str, int, int]]:
    """The ``(owner, start, count)`` lines of an /etc/subuid or /etc/subgid text (bad lines skipped)."""
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found.append((parts[0], int(parts[1]), int(parts[2])))
    return found


def check_against_subordinate_files(ids: IdRange, files: Iterable[Path] = (Path("/etc/subuid"), Path("/etc/subgid"))) -> None:
    """IdRangeError if the range meets an entry of /etc/subuid or /etc/subgid (another user's
    unprivileged containers would share ids with ours)."""
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for owner, start, count in subordinate_ranges(text):
            if ids.overlaps(start, count):
                raise IdRangeError(
                    f"container_id_range {ids.text()} overlaps {path}'s {owner}:{start}:{count}: "
                    "choose another [nodemanager] container_id_range"
                )


class IdBlocks:
    """Which application holds which block of a node's range (plain bookkeeping, no IO)."""

    def __init__(self, ids: IdRange) -> None:
        self.ids = ids
        self._held: dict[str, IdBlock] = {}

    def of(self, application: str) -> IdBlock | None:
        """The block ``application`` holds, if any."""
        return self._held.get(application)

    def take(self, application: str) -> tuple[IdBlock, bool]:
        """The block of ``application``, taking the lowest free one on its first call; whether it
        is new.  IdRangeError when every block is held."""
        held = self._held.get(application)
        if held is not None:
            return held, False
        used = {b.root for b in self._held.values()}
        for index in range(self.ids.blocks):
            block = self.ids.block(index)
            if block.root not in used:
                self._held[application] = block
                return block, True
        raise IdRangeError(
            f"all {self.ids.blocks} id blocks of container_id_range {self.ids.text()} are held by running "
            "applications: give the node a larger range"
        )

    def take_again(self, application: str, number: int) -> IdBlock:
        """``application`` held the block numbered ``number`` before a restart (NodeManager recovery):
        it holds it again.  IdRangeError when that block is not in the range or is held by another."""
        index = number - self.ids.base // BLOCK
        if not 0 <= index < self.ids.blocks:
            raise IdRangeError(f"block {number} is not in container_id_range {self.ids.text()}")
        block = self.ids.block(index)
        holder = next((app for app, b in self._held.items() if b.root == block.root), None)
        if holder not in (None, application):
            raise IdRangeError(f"block {number} is held by {holder}")
        self._held[application] = block
        return block

    def release(self, application: str) -> IdBlock | None:
        """``application`` has ended here: its block is free again (the one it held, if any)."""
        return self._held.pop(application, None)

    def held(self) -> dict[str, IdBlock]:
        return dict(self._held)
