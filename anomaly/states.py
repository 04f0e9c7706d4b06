"""Operating-state labels for training (``humwatch train --states FILE``).

A plant often logs the state a machine runs in (speed or load setting, product, car model on a test rig) from its
PLC or drive. Given per recording, training uses it to give every state the same share of the training crops
(:func:`anomaly.train.state_weights`), so rarely recorded states are learnt as well as common ones.

The file is a CSV with two columns, ``file`` and ``state`` (a header row ``file,state`` is optional)::

    file,state
    normal_0001.flac,speed-31V
    line2/normal_0002.flac,speed-40V

A ``file`` is matched against the training recordings by its path (relative paths are taken from the CSV's folder,
then from the current folder) or, when that finds nothing, by its file name if exactly one training recording has
that name. Every training recording needs a state, every row must name a training recording, and there must be at
least two states; anything else is refused with the offending lines or files named.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from anomaly.errors import DataError

HEADER = ("file", "state")
MAX_LISTED = 3


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _rows(path: Path) -> list[tuple[int, str, str]]:
    """``(line, file, state)`` of every data row (header and blank lines skipped)."""
    if not path.is_file():
        raise DataError(f"states file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the states file ({e})") from None
    rows = []
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row]
        if n == 1 and tuple(c.lower() for c in cells) == HEADER:
            continue
        if len(cells) != 2:
            raise DataError(f"{path} line {n}: expected two columns 'file,state', got {len(cells)}: {','.join(row)}")
        if not cells[0] or not cells[1]:
            raise DataError(f"{path} line {n}: empty {'file' if not cells[0] else 'state'} in {','.join(row)!r}")
        rows.append((n, cells[0], cells[1]))
    if not rows:
        raise DataError(f"{path}: no 'file,state' rows")
    return rows


def _match(name: str, base: Path, by_path: dict[Path, int], by_name: dict[str, list[int]]) -> int | None:
    p = Path(name)
    for cand in ([p] if p.is_absolute() else [base / p, Path.cwd() / p]):
        i = by_path.get(cand.resolve())
        if i is not None:
            return i
    hits = by_name.get(p.name, [])
    return hits[0] if len(hits) == 1 and p.name == name else None


def read_states(path: str | Path, files: Sequence[str | Path]) -> list[str]:
    """The state of each of ``files`` (the training recordings, in order) from the CSV at ``path``.

    Raises:
        DataError: unreadable file, malformed rows, a file given two states, rows naming no training recording,
            training recordings without a state, or fewer than two states.
    """
    path = Path(path)
    rows = _rows(path)
    by_path = {Path(f).resolve(): i for i, f in enumerate(files)}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_name.setdefault(Path(f).name, []).append(i)
    states: dict[int, str] = {}
    unknown = []
    for n, name, state in rows:
        i = _match(name, path.parent, by_path, by_name)
        if i is None:
            unknown.append(f"{name} (line {n})")
        elif states.setdefault(i, state) != state:
            raise DataError(f"{path} line {n}: {name} is given two states, {states[i]!r} and {state!r}")
    if unknown:
        raise DataError(f"{path}: {len(unknown)} row(s) name no training recording: {_listed(unknown)} (give paths "
                        "relative to the CSV's folder, or file names that are unique among the --normal recordings)")
    missing = [str(files[i]) for i in range(len(files)) if i not in states]
    if missing:
        raise DataError(f"{path}: {len(missing)} of {len(files)} training recording(s) have no state: "
                        f"{_listed(missing)} (every --normal recording needs a row)")
    labels = [states[i] for i in range(len(files))]
    if len(set(labels)) < 2:
        raise DataError(f"{path}: every recording has the state {labels[0]!r}; --states needs at least two operating "
                        "states (without labels, leave --states out)")
    return labels


def describe_states(labels: Sequence[str]) -> dict:
    """What a model stores about its training states: the labels and how many recordings each had."""
    counts = Counter(labels)
    return {"use": "state-balanced sampling: every state gets the same share of the training crops",
            "counts": dict(sorted(counts.items())), "n_states": len(counts)}
