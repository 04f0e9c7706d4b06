"""Keep the chatter of the conversion tools (torch.onnx prints, TensorFlow's C++ logging) out of the CLI output.

Both the Python streams and the process's file descriptors 1 and 2 are redirected into a temp file for the duration;
the captured text is available afterwards (for error messages).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from anomaly.quiet import Captured, captured_fds

__all__ = ["Captured", "quiet"]


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    cap = Captured()
    py_buf = io.StringIO()
    fds = Captured()
    try:
        with captured_fds() as fds:
            prev_disable = logging.root.manager.disable
            logging.disable(logging.WARNING)
            try:
                with contextlib.redirect_stdout(py_buf), contextlib.redirect_stderr(py_buf):
                    yield cap
            finally:
                logging.disable(prev_disable)
    finally:
        cap.text = py_buf.getvalue() + fds.text
