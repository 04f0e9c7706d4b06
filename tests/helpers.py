"""Helpers for CLI tests (CliRunner on the real `humwatch` app)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from humwatch_cli import app

WIDE = {"COLUMNS": "250"}  # a wide terminal, so table cells are never cut


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or WIDE)


def assert_one_error_line(result, *needles: str, exit_code: int | None = None) -> str:
    """The command failed (with ``exit_code`` if given) and printed exactly one line, ``error: ...``, containing
    every needle, and no traceback."""
    out = result.output
    assert result.exit_code != 0, out
    if exit_code is not None:
        assert result.exit_code == exit_code, out
    assert "Traceback" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


GCC = shutil.which("gcc")
C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_c(include_dir: Path, sources, exe: Path) -> Path:
    """Compile C sources (a reference implementation and its test harness) against the generated headers in
    ``include_dir``, warnings as errors; assert that it builds."""
    r = subprocess.run([GCC, *C_FLAGS, f"-I{include_dir}", *map(str, sources), "-lm", "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe
