"""Static memory plan: every intermediate tensor (and each kernel's scratch) gets an offset in one scratch buffer.

Liveness: a buffer lives from the step that writes it to the last step that reads it (the model's input from before
the first step, its output until after the last). Placement is greedy by size, largest first, each at the lowest
16-byte aligned offset that does not overlap a placed buffer with an intersecting lifetime.

One exception makes the planner memory-aware of how the kernels stream: a convolution-like kernel writes its output
row by row and never reads an input row again once it has moved past it, so its output may overlap its input (when the
input dies at that step) provided the input starts at least ``gap`` bytes after the output, with ``gap`` computed per
step from the shapes (:class:`Overlap`): every output row is then written over input rows that are already consumed.
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


@dataclass(frozen=True)
class Overlap:
    """Buffer ``src`` (the input of a streaming kernel, dying there) may share memory with ``dst`` (its output) when
    ``src.offset - dst.offset >= gap``."""

    src: str
    dst: str
    gap: int


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _floor_align(n: int) -> int:
    return n // ALIGN * ALIGN


def _allowed(a: Buffer, b: Buffer, overlaps: dict[tuple[str, str], int]) -> bool:
    """True if ``a`` and ``b`` may occupy these offsets together."""
    if not a.overlaps_in_time(b) or a.offset >= b.offset + b.size or b.offset >= a.offset + a.size:
        return True
    if (a.name, b.name) in overlaps:
        return a.offset - b.offset >= overlaps[(a.name, b.name)]
    if (b.name, a.name) in overlaps:
        return b.offset - a.offset >= overlaps[(b.name, a.name)]
    return False


def place(buffers: list[Buffer], overlaps: list[Overlap] = (), tries: int = 300) -> int:
    """Assign ``offset`` to every buffer; return the total size of the scratch buffer.

    First-fit in several orders (largest first, by first use, by last use, and ``tries`` shuffles with a fixed seed:
    where a streaming output may lie under its input, the order decides whether it can); the smallest plan wins.
    """
    import random

    ov = {(o.src, o.dst): o.gap for o in overlaps}
    orders = [sorted(buffers, key=lambda b: (-b.size, b.first, b.name)),
              sorted(buffers, key=lambda b: (b.size, b.first, b.name)),
              sorted(buffers, key=lambda b: (b.first, -b.size, b.name)),
              sorted(buffers, key=lambda b: (-b.last, -b.size, b.name))]
    rng = random.Random(0)
    for _ in range(tries if overlaps else 0):
        o = list(orders[0])
        rng.shuffle(o)
        orders.append(o)
    best = None
    for order in orders:
        size = _first_fit(order, ov)
        if best is None or size < best[0]:
            best = (size, {b.name: b.offset for b in buffers})
    for b in buffers:
        b.offset = best[1][b.name]
    return best[0]


def _first_fit(order: list[Buffer], ov: dict[tuple[str, str], int]) -> int:
    placed: list[Buffer] = []
    for b in order:
        clashes = [p for p in placed if p.overlaps_in_time(b)]
        cands = {0} | {_align(p.offset + p.size) for p in clashes}
        for p in clashes:
            if (b.name, p.name) in ov:
                cands.add(_align(p.offset + ov[(b.name, p.name)]))
            if (p.name, b.name) in ov:
                cands.add(max(0, _floor_align(p.offset - ov[(p.name, b.name)])))
        for c in sorted(cands):
            b.offset = c
            if all(_allowed(b, p, ov) for p in clashes):
                break
        placed.append(b)
    return _align(max((b.offset + b.size for b in order), default=0))


def check(buffers: list[Buffer], overlaps: list[Overlap] = ()) -> None:
    """Raise AssertionError if two buffers alive at the same time overlap in memory other than as a streaming
    kernel's input and output allow (a self-check of ``place``)."""
    ov = {(o.src, o.dst): o.gap for o in overlaps}
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if not _allowed(a, b, ov):
                raise AssertionError(f"plan: {a.name} and {b.name} overlap")
