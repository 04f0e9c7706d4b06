"""Static memory plan: every intermediate tensor (and each kernel's scratch) gets an offset in one scratch buffer.

Liveness: a buffer lives from the step that writes it to the last step that reads it (the model's input from before
the first step, its output until after the last). Placement is greedy by size, largest first, each at the lowest
16-byte aligned offset that does not overlap a placed buffer with an intersecting lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16


@dataclass
class Buffer:
    name: str
    size: int
    first: int  # first step that uses it (-1: before the first step)
    last: int  # last step that uses it (a large number: after the last step)
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def place(buffers: list[Buffer]) -> int:
    """Assign ``offset`` to every buffer; return the total size of the scratch buffer."""
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        clashes = sorted((p for p in placed if p.overlaps_in_time(b)), key=lambda p: p.offset)
        offset = 0
        for p in clashes:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size))
        b.offset = offset
        placed.append(b)
    return _align(max((b.offset + b.size for b in buffers), default=0))


def check(buffers: list[Buffer]) -> None:
    """Raise AssertionError if two buffers alive at the same time overlap in memory (a self-check of ``place``)."""
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if a.overlaps_in_time(b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise AssertionError(f"plan: {a.name} and {b.name} overlap")
