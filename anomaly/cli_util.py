"""Helpers shared by the CLI layers of all packages: console, progress bars, error and warning reporting."""

from __future__ import annotations

import re
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


# -- help that reads at 80 columns -----------------------------------------------------------------------------------
_METAVARS = {"Path": "PATH", "int": "INT", "float": "NUM", "str": "TEXT"}


def _metavar(p) -> str:
    desc = getattr(p, "type_descriptor", None)
    text = str(getattr(desc, "annotation", ""))
    if getattr(desc, "is_choice", False):
        base = "|".join(map(str, desc.choices or ()))
    else:
        base = next((v for k, v in _METAVARS.items() if re.search(rf"\b{k}\b", text)), "VALUE")
    many = getattr(p, "multiple", False) or getattr(desc, "is_list", False) or getattr(p, "nargs", 1) == -1
    return base + ("..." if many else "")


def compact_help(cmd) -> object:
    """Shorten the value column of every option's help (``<list[Path]>`` → ``PATH...``, nothing for on/off flags) in
    a click command tree, so that option names and descriptions fit 80 columns. Returns ``cmd``."""
    for p in getattr(cmd, "params", []):  # typer's own click: duck-typed
        if getattr(p, "help", None):  # help text is text: "[default: ./sites]" is no markup to swallow
            p.help = escape(p.help)
        kind = getattr(p, "param_type_name", "")
        if kind == "option" and p.metavar is None:
            p.metavar = "" if getattr(p, "is_flag", False) else _metavar(p)
        elif kind == "argument":
            value = _metavar(p)
            p.display_type_rich = lambda ctx, _v=value: _v  # arguments show their type beside their name
    if getattr(cmd, "help", None):  # docstring line breaks inside a paragraph: let the terminal width wrap it
        cmd.help = escape(re.sub(r"(?<=\S)[ \t]*\n[ \t]*(?=\S)", " ", cmd.help))
    get_help = getattr(cmd, "get_help_option", None)
    if get_help is not None and not getattr(get_help, "_compact", False):
        def help_option(ctx, _get=get_help):
            opt = _get(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        help_option._compact = True
        cmd.get_help_option = help_option
    for sub in getattr(cmd, "commands", {}).values():
        compact_help(sub)
    return cmd
