"""``humwatch ingest`` (the fleet's MQTT telemetry into each site's score log) and ``humwatch fleet ...`` (jobs over
every site on Ray, the fleet report).

This module parses and prints; the work is in :mod:`calibration.fleet.ingest`, :mod:`calibration.fleet.jobs` and
:mod:`calibration.fleet.report`, imported inside the commands (paho and ray stay out of ``humwatch --help``).
``humwatch fleet export`` is added by :mod:`firmware_export.cli` (the export is firmware_export's).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from anomaly.cli_util import console, err_console, user_errors
from calibration.cli import SitesDir

app = typer.Typer(no_args_is_help=True)
fleet_app = typer.Typer(no_args_is_help=True, help="Jobs over every site (one Ray task per site) and the fleet's "
                                                   "report.")
app.add_typer(fleet_app, name="fleet", rich_help_panel="Fleet")

Credentials = Annotated[Path | None, typer.Option(help="File with 'user:password' [default: HUMWATCH_MQTT_USER and "
                                                  "HUMWATCH_MQTT_PASSWORD, or HUMWATCH_MQTT_CREDENTIALS].")]
Ca = Annotated[Path | None, typer.Option(help="CA certificate for an mqtts:// broker [default: HUMWATCH_MQTT_CA, else "
                                         "the system's].")]
RayAddress = Annotated[str | None, typer.Option(help="A Ray cluster (HOST:PORT) [default: a local Ray on this "
                                                "computer].")]
Sites = Annotated[list[str] | None, typer.Option("--site", "-s", help="Only these sites (repeatable) [default: "
                                                 "every site].")]
Restart = Annotated[bool, typer.Option(help="Ignore the job's saved progress and run every site again.")]
Workers = Annotated[int | None, typer.Option(min=0, help="CPUs of the local Ray [default: all]; 0 = no Ray, one site "
                                             "at a time in this process.")]


def _say(msg: str) -> None:
    err_console.print(escape(msg))


@app.command(rich_help_panel="Fleet")
def ingest(
    broker: Annotated[str, typer.Option(help="The broker: mqtt://HOST:PORT or mqtts://HOST:PORT.")],
    credentials: Credentials = None,
    ca: Ca = None,
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site's topics (to split the fleet "
                                             "between ingest processes) [default: every site].")] = None,
    client_id: Annotated[str, typer.Option(help="MQTT client id: the broker keeps this session (and what arrives "
                                           "while the ingest is down) between runs.")] = "humwatch-ingest",
    silence: Annotated[float, typer.Option(min=1, help="Seconds without a patch after which a device's silence is "
                                           "recorded as a gap.")] = 30.0,
    stats: Annotated[Path | None, typer.Option(help="Write the counters as JSON to this file every 5 s.")] = None,
    seconds: Annotated[float | None, typer.Option(min=0, help="Stop after this long [default: until interrupted].")]
    = None,
    sites_dir: SitesDir = None,
) -> None:
    """Log the fleet's telemetry (MQTT) into each site's score log, the same log `monitor` writes.

    Idempotent: a message is acknowledged only once it is committed, and a redelivered one is not logged twice.
    Applies the site's alarm rule to devices that send scores only; records gaps when a device goes silent;
    counts and logs (never crashes on) malformed messages, unknown sites and implausible times. Stop with Ctrl-C
    or SIGTERM.
    """
    with user_errors():
        import time

        from calibration.fleet.ingest import Ingest, IngestConfig, summary
        from calibration.fleet.mqtt import broker as make_broker
        from calibration.store import SiteStore, validate_name

        if site is not None:
            validate_name(site)
        cfg = IngestConfig(make_broker(broker, credentials, ca), SiteStore(sites_dir), client_id=client_id, site=site,
                           silence_s=silence, stats_path=stats)
        ing = Ingest(cfg, say=_say)
        signal.signal(signal.SIGTERM, lambda *_: ing.stop())
        ing.start()
        ing.wait_connected(15)
        end = None if seconds is None else time.monotonic() + seconds
        try:
            counts = ing.run(until=(lambda: time.monotonic() >= end) if end is not None else None)
        except KeyboardInterrupt:
            ing.stop()
            counts = ing.counts
        console.print(summary(counts))
