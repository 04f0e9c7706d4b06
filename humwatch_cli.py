"""The ``humwatch`` console script: the command tree, joined here from the packages' CLI modules, plus ``demo``, which
spans them all (:mod:`humwatch_demo`).

    Start here  demo
    Data        simulate, info                                   (anomaly/cli.py)
    Model       train, score, evaluate, classify train|evaluate  (anomaly/cli.py)
    Site        site create|list|show|history|set|set-model|set-classifier|calibrate|recalibrate|schedule
                                                                 (calibration/cli.py)
                monitor, report                                  (calibration/monitoring/cli.py)
    Fleet       ingest, fleet calibrate|recalibrate|score|report (calibration/fleet/cli.py), fleet export
                                                                 (firmware_export/cli.py)
    Firmware    export                                           (firmware_export/cli.py)

Hidden aliases keep the earlier spellings working: ``calibrate --site``, ``recalibrate --site | --due``, ``schedule
--site``. Only typer, rich (and numpy, for the defaults shown in the help) are imported at start-up; every command
imports what it needs, so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anomaly import __version__
from anomaly.cli import app as anomaly_app
from anomaly.cli_util import compact_help, console, user_errors
from calibration.cli import app as calibration_app
from calibration.fleet.cli import app as fleet_app
from calibration.monitoring.cli import app as monitoring_app
from firmware_export.cli import app as export_app

app = typer.Typer(
    name="humwatch",
    help="Listen to industrial machines and flag abnormal sound.\n\n"
    "Start with `humwatch demo`, or: simulate → train → site create → site calibrate → monitor → report → export. "
    "Every command has --help.",
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
app.add_typer(monitoring_app)
app.add_typer(export_app)
app.add_typer(fleet_app)


@app.command(rich_help_panel="Start here")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes audio, model, site and firmware.")]
    = Path("demo-out"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (early stopping may end sooner).")] = 12,
    seed: Annotated[int, typer.Option(help="Seed for simulation and training.")] = 7,
    no_export: Annotated[bool, typer.Option("--no-export", help="Skip exporting the firmware model(s) at the "
                                            "end.")] = False,
    no_classifier: Annotated[bool, typer.Option("--no-classifier", help="Skip the fault classifier (alarms then "
                                                "name no fault).")] = False,
) -> None:
    """Run the whole story on simulated audio: simulate a pump site → train → calibrate → evaluate → train a fault
    classifier → monitor a developing fault → report → export firmware."""
    with user_errors():
        from humwatch_demo import DemoConfig, run_demo

        run_demo(DemoConfig(out=out, epochs=epochs, seed=seed, export=not no_export,
                            classifier=not no_classifier),
                 say=console.print)


def command():
    """The click command tree of ``app``, with help that reads at 80 columns (:func:`anomaly.cli_util.compact_help`)."""
    return compact_help(typer.main.get_command(app))


def main() -> None:
    command()()


if __name__ == "__main__":
    main()
