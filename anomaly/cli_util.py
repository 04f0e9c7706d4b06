"""Helpers shared by the CLI layers of all packages: console, progress bars, error and warning reporting, and
escaping of user-supplied text (file and site names, paths) for rich's markup."""

from __future__ import annotations

import os
import re
import sys
import warnings
from contextlib import contextmanager

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from anomaly.errors import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    IO_ERRNOS,
    HumwatchError,
    HumwatchWarning,
    one_line,
    shown,
)

# Not a terminal (pipes, CI logs): rich would wrap at 80 columns, splitting one-line errors and table cells.
console = Console(highlight=False)
if not console.is_terminal:
    console = Console(highlight=False, width=160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def esc(x: object) -> str:
    """User-supplied text (a path, a file or site name, a machine description) made safe to print with rich
    markup on: ``[bold red]x.wav`` is shown as written, ``[/]`` cannot break the line, undecodable bytes are
    escaped."""
    return escape(shown(x))


def progress(transient: bool = False) -> Progress:
    """A rich progress bar that stays quiet when stderr is not a terminal (CI logs)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=transient,
        disable=not err_console.is_terminal,
    )


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, HumwatchWarning):
        err_console.print(f"[yellow]warning:[/] {esc(message)}", markup=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def error_line(message: object) -> None:
    """Print one ``error:`` line on stderr (the message escaped, on one line)."""
    err_console.print(f"[red]error:[/] {esc(' '.join(str(message).split()))}", markup=True)


def os_error_code(e: OSError) -> int:
    """Exit code of an OSError: 74 (EX_IOERR) when the system refused (disk full, read-only, permission), else 1."""
    return EXIT_IO if e.errno in IO_ERRNOS else EXIT_ERROR


@contextmanager
def user_errors():
    """Turn library errors into one ``error:`` line and an exit code (``anomaly.errors.EXIT_*``); never a traceback.

    Anything unexpected is a bug: one line naming it and exit 70; ``HUMWATCH_DEBUG=1`` shows the traceback instead.
    """
    warnings.showwarning = _show_warning
    try:
        yield
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise  # typer's own exits and usage errors
    except HumwatchError as e:
        error_line(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/] (nothing half-written was left behind)", markup=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as e:
        where = f": {shown(e.filename)}" if e.filename else ""
        error_line(f"{e.strerror or one_line(e)}{where}")
        sys.exit(os_error_code(e))
    except Exception as e:  # a bug: still one line, never a traceback (unless asked for)
        if os.environ.get("HUMWATCH_DEBUG"):
            raise
        error_line(f"unexpected {type(e).__name__}: {one_line(e)} (a humwatch bug: please report it with the "
                   "output of the same command run with HUMWATCH_DEBUG=1)")
        sys.exit(EXIT_INTERNAL)


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
