"""Helpers shared by the CLI layers of all packages: console, progress bars, error and warning reporting."""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from anomaly.errors import HumwatchError, HumwatchWarning

# Not a terminal (pipes, CI logs): rich would wrap at 80 columns, splitting one-line errors and table cells.
console = Console(highlight=False)
if not console.is_terminal:
    console = Console(highlight=False, width=160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def progress(transient: bool = False) -> Progress:
    """A rich progress bar that stays quiet when stderr is not a terminal (CI logs)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=transient,
        disable=not err_console.is_terminal,
    )


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, HumwatchWarning):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", markup=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


@contextmanager
def user_errors():
    """Turn library errors into one ``error:`` line and an exit code; never a traceback."""
    warnings.showwarning = _show_warning
    try:
        yield
    except HumwatchError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", markup=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/] (nothing half-written was left behind)", markup=True)
        sys.exit(130)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        err_console.print(f"[red]error:[/] {escape(str(e.strerror or e) + where)}", markup=True)
        sys.exit(1)
