"""Capture what native libraries write straight to file descriptors 1 and 2 (TensorFlow's / LiteRT's C++ logging),
so it stays out of the console; the text is kept for error messages."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """The captured text, filled in when the ``with`` block ends."""

    text: str = ""

    def tail(self, lines: int = 15) -> str:
        keep = [ln for ln in self.text.splitlines() if ln.strip()][-lines:]
        return " | ".join(" ".join(ln.split()) for ln in keep)[-1500:]


@contextlib.contextmanager
def captured_fds() -> Iterator[Captured]:
    """Redirect file descriptors 1 and 2 into a temp file for the duration (Python's own streams are flushed first,
    so nothing written before is lost or captured)."""
    cap = Captured()
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            s.flush()
    saved, tmp = [], tempfile.TemporaryFile(mode="w+b")
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:  # no such descriptor (embedded interpreters)
                pass
        yield cap
    finally:
        for s in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                s.flush()
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        tmp.seek(0)
        cap.text = tmp.read().decode(errors="replace")
        tmp.close()
