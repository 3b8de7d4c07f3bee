"""Resource vectors: memory (MiB) and virtual cores, YARN's two countable resources."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    memory_mb: int = 0
    vcores: int = 0

    def __add__(self, other: Resource) -> Resource:
        return Resource(self.memory_mb + other.memory_mb, self.vcores + other.vcores)

    def __sub__(self, other: Resource) -> Resource:
        return Resource(self.memory_mb - other.memory_mb, self.vcores - other.vcores)

    def fits_in(self, other: Resource) -> bool:
        """Every component is at most the other's."""
        return self.memory_mb <= other.memory_mb and self.vcores <= other.vcores

    def __str__(self) -> str:
        return f"<memory:{self.memory_mb}, vCores:{self.vcores}>"


ZERO = Resource(0, 0)
