"""Keep the chatter of the conversion tools (torch.onnx prints, TensorFlow's C++ logging) out of the CLI output.

Both the Python streams and the process's file descriptors 1 and 2 are redirected into a temp file for the duration;
the captured text is available afterwards (for error messages).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    text: str = ""

    def tail(self, lines: int = 15) -> str:
        keep = [ln for ln in self.text.splitlines() if ln.strip()][-lines:]
        return " | ".join(" ".join(ln.split()) for ln in keep)[-1500:]


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    cap = Captured()
    py_buf = io.StringIO()
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            s.flush()
    saved, tmp = [], tempfile.TemporaryFile(mode="w+b")
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:  # no such descriptor (embedded interpreters): Python-level redirect only
                pass
        prev_disable = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(py_buf), contextlib.redirect_stderr(py_buf):
                yield cap
        finally:
            logging.disable(prev_disable)
    finally:
        for s in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                s.flush()
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        tmp.seek(0)
        cap.text = py_buf.getvalue() + tmp.read().decode(errors="replace")
        tmp.close()
