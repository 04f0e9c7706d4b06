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
from anomaly.errors import EXIT_PARTIAL
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


def _partition(text: str) -> tuple[int, int]:
    from calibration.errors import SiteError

    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise SiteError(f"--partition must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return int(k), int(n)


@app.command(rich_help_panel="Fleet")
def ingest(
    broker: Annotated[str, typer.Option(help="The broker: mqtt://HOST:PORT or mqtts://HOST:PORT.")],
    credentials: Credentials = None,
    ca: Ca = None,
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site's topics (to split the fleet "
                                             "between ingest processes) [default: every site].")] = None,
    partition: Annotated[str | None, typer.Option(help="K/N: only the sites of partition K of N (a stable hash of "
                                                  "the site name), to split the fleet between N ingest processes "
                                                  "(each with its own --client-id).")] = None,
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

        from calibration.errors import SiteError
        from calibration.fleet.ingest import Ingest, IngestConfig, summary
        from calibration.fleet.mqtt import broker as make_broker
        from calibration.store import SiteStore, validate_name

        if site is not None:
            validate_name(site)
        part = _partition(partition) if partition else None
        if part and site:
            raise SiteError("give --site or --partition, not both")
        cfg = IngestConfig(make_broker(broker, credentials, ca), SiteStore(sites_dir), client_id=client_id, site=site,
                           partition=part, silence_s=silence, stats_path=stats)
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


def run_fleet(kind: str, sites: list[str] | None, sites_dir, opts, ray_address, workers, restart, task=None) -> None:
    """Select the sites, run the job, print one line per site as it finishes; exit 6 (EXIT_PARTIAL) when a site
    failed."""
    from calibration.fleet.jobs import run_job, select_sites
    from calibration.store import SiteStore, validate_name

    for n in sites or []:
        validate_name(n)
    store = SiteStore(sites_dir)
    chosen, skipped = select_sites(store, kind, sites)
    for r in skipped:
        console.print(f"[yellow]skip[/] {escape(r.site)}: {escape(r.message)}")
    if not chosen:
        console.print(f"no site to {kind} in {escape(str(store.root))}")
        return
    where = f"Ray at {ray_address}" if ray_address else ("this process, one site at a time" if workers == 0 else
                                                         "a local Ray" + (f" ({workers} CPUs)" if workers else ""))
    console.print(f"fleet {kind}: {len(chosen)} site(s) on {escape(where)}")

    def show(r, k, n):
        colour = {"done": "green", "failed": "red"}.get(r.status, "yellow")
        console.print(f"[{k}/{n}] [{colour}]{r.status}[/] {escape(r.site)} ({r.seconds:.1f} s): {escape(r.message)}")

    results = run_job(kind, store, chosen, opts, task, ray_address, workers, restart, on_result=show)
    earlier = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    console.print(f"{len(results) - len(failed) - len(earlier)} done, {len(failed)} failed"
                  + (f", {len(earlier)} done earlier in this job (--restart to redo)" if earlier else ""))
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


@fleet_app.command("calibrate")
def fleet_calibrate(
    sites: Sites = None,
    min_minutes: Annotated[float, typer.Option(help="Refuse less audio than this.")] = 30.0,
    force: Annotated[bool, typer.Option(help="Accept less than --min-minutes (tests, demos).")] = False,
    ray_address: RayAddress = None, workers: Workers = None, restart: Restart = False, sites_dir: SitesDir = None,
) -> None:
    """Calibrate every site not calibrated yet (or the --site ones) on the audio in its configured source
    directory; one Ray task per site."""
    from calibration.fleet.jobs import JobOptions

    with user_errors():
        run_fleet("calibrate", sites, sites_dir, JobOptions(min_minutes, force), ray_address, workers, restart)


@fleet_app.command("recalibrate")
def fleet_recalibrate(
    due: Annotated[bool, typer.Option(help="Every site whose calibration is older than its interval.")] = False,
    sites: Sites = None,
    min_minutes: Annotated[float, typer.Option(help="Refuse less audio than this.")] = 30.0,
    force: Annotated[bool, typer.Option(help="Accept less than --min-minutes (tests, demos).")] = False,
    ray_address: RayAddress = None, workers: Workers = None, restart: Restart = False, sites_dir: SitesDir = None,
) -> None:
    """Recalibrate the due sites (--due) or the --site ones from their source directories; a site whose new
    baseline looks like a developing fault is refused (its threshold stays) and reported as failed."""
    from calibration.errors import SiteError
    from calibration.fleet.jobs import JobOptions

    with user_errors():
        if due == bool(sites):
            raise SiteError("give --due or --site NAME (one of the two)")
        run_fleet("recalibrate", sites, sites_dir, JobOptions(min_minutes, force), ray_address, workers, restart)


@fleet_app.command("score")
def fleet_score(sites: Sites = None, ray_address: RayAddress = None, workers: Workers = None,
                restart: Restart = False, sites_dir: SitesDir = None) -> None:
    """Score the recordings in every calibrated site's source directory that its log does not hold yet (as
    `monitor --from`), one Ray task per site."""
    from calibration.fleet.jobs import JobOptions

    with user_errors():
        run_fleet("score", sites, sites_dir, JobOptions(), ray_address, workers, restart)


@fleet_app.command("report")
def fleet_report(
    out: Annotated[Path, typer.Option("--out", "-o", help="fleet.html, or a directory for --format parquet.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="html | parquet")] = "html",
    days: Annotated[float, typer.Option(min=0.1, help="Count alarms and drift over the last N days (html); export "
                                        "the last N days (parquet; 0 = everything).")] = 7.0,
    site_reports: Annotated[bool, typer.Option(help="Also write every site's own report beside the page and link "
                                               "it.")] = True,
    ray_address: RayAddress = None, workers: Workers = None, sites_dir: SitesDir = None,
) -> None:
    """One self-contained page ranking every site by what needs attention (recent alarms, drift against its
    calibration, silent devices, calibration due, novel states), each linking to its own report; or, with
    --format parquet, the fleet's scores as a Parquet dataset partitioned by site and day (pandas, DuckDB, Spark)."""
    with user_errors():
        import time

        from calibration.errors import ReportError
        from calibration.fleet.report import write_fleet_report, write_parquet
        from calibration.store import SiteStore

        store = SiteStore(sites_dir)
        if fmt == "parquet":
            path, rows = write_parquet(store, out, time.time() - days * 86400)
            console.print(f"wrote {rows:,} scores of {len(store.names())} site(s) to {escape(str(path))}/ "
                          "(partitioned site=/day=)")
            return
        if fmt != "html":
            raise ReportError(f"--format must be html or parquet, got {fmt!r}")
        hrefs = _site_reports(store, out, days, ray_address, workers) if site_reports else {}
        path, rows = write_fleet_report(store, out, days * 86400, hrefs)
        urgent = sum(1 for _, a in rows if a and a[0].level == "act")
        console.print(f"wrote {escape(str(path))}: {len(rows)} site(s), {urgent} to act on")


def _site_reports(store, out: Path, days: float, ray_address, workers) -> dict[str, str]:
    """Every site's own report (those with scores) as a fleet job; returns the links that worked."""
    import time

    from calibration.fleet.jobs import JobOptions, run_job
    from calibration.fleet.report import site_report_task

    d = out.parent / f"{out.stem}-sites"
    names = [n for n in store.names() if (store.site(n).dir / "scores.sqlite").exists()]
    if not names:
        return {}
    opts = JobOptions(extra=(("dir", str(d.resolve())), ("since", time.time() - days * 86400)))
    results = run_job("report", store, names, opts, site_report_task, ray_address, workers, restart=True)
    for r in results:
        if r.status == "failed":
            err_console.print(f"[yellow]note:[/] no site report for {escape(r.site)}: {escape(r.message)}")
    return {r.site: f"{d.name}/{r.site}.html" for r in results if r.status == "done"}
