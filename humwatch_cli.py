"""The ``humwatch`` console script: one Typer app per package, joined here.

Only typer and rich are imported at start-up; every command imports what it needs, so ``--help`` is instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from anomaly import __version__
from anomaly.cli import app as anomaly_app
from calibration.cli import app as calibration_app

app = typer.Typer(
    name="humwatch",
    help="Listen to industrial machines and flag abnormal sound.\n\n"
    "Start with `humwatch demo`, or: simulate → train → site create → calibrate. Every command has --help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"humwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


app.add_typer(anomaly_app)
app.add_typer(calibration_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
