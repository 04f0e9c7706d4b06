"""``humwatch monitor`` (score a site's audio, raise alarms, log every score) and ``humwatch report`` (the log as
one HTML page, CSV or Parquet).

This module parses and prints; the monitor is :mod:`calibration.monitoring.monitor`, the report
:mod:`calibration.report`. Both are imported inside the commands so that ``humwatch --help`` stays instant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from anomaly.cli_util import console, err_console, esc, user_errors
from anomaly.errors import EXIT_PARTIAL
from calibration.cli import SitesDir, device_arg

app = typer.Typer(no_args_is_help=True)

_SPARK = " ▁▂▃▄▅▆▇█"


def _view(state):
    vals = list(state.recent)
    top = max([state.threshold * 1.5] + vals)
    spark = "".join(_SPARK[min(8, int(8 * v / top))] for v in vals) if vals else ""
    t = Table.grid(padding=(0, 2))
    t.add_row("source", esc(state.source))
    t.add_row("patches", f"{state.patches} ({state.audio_seconds / 60:.1f} min of audio)")
    t.add_row("recent scores", spark)
    t.add_row("threshold", f"{state.threshold:.4g}   rule {state.rule}")
    t.add_row("state", "[bold red]ALARM[/]" if state.in_alarm else "[green]normal[/]")
    if state.time_sources:
        t.add_row("file times", ", ".join(f"{_SOURCE_WORDS.get(k, k)} {n}" for k, n in state.time_sources.items())
                  + (f"  [yellow]({len(state.time_problems)} problem(s))[/]" if state.time_problems else ""))
    if state.top_class is not None:
        t.add_row("likeliest fault", f"{escape(state.top_class[0])} (p = {state.top_class[1]:.2f})")
    last = state.last_alarm
    fault = ((last.get("fault") or {}).get("likely") or "unknown fault") if last and "fault" in last else None
    t.add_row("alarms", str(state.alarms) + (f"  (last at {last['t_utc']}" + (f", {escape(fault)}" if fault else "")
                                             + ")" if last else ""))
    nov = state.last_novel
    t.add_row("novel states", (f"[yellow]now[/] ({escape(nov['differs'])}); " if state.in_novel_state and nov else "")
              + f"{state.novel_states} notice(s)" + (f", last at {nov['t_utc']}" if nov else ""))
    return t


_SOURCE_WORDS = {"metadata": "file metadata", "name": "file names", "start-time": "--start-time",
                 "contiguous": "following on from the previous file", "mtime": "modification times (uncertain)"}


def alarm_line(info: dict) -> str:
    """One plain line about an alarm, for logs: time, site, score against the threshold, where, and what (a
    novel-state notice: NOTICE, and how the sound differs)."""
    from calibration.monitoring.scorelog import NOVEL_STATE

    if info.get("kind") == NOVEL_STATE:
        where = (f" in {Path(info['file']).name} at {info.get('offset_s', 0):.1f} s" if info.get("file") else "")
        return (f"NOTICE {info['t_utc']} site {info['site']}: novel state ({info.get('differs', '')}){where}; "
                "not an alarm: inspect, and recalibrate with it if the machine is healthy")
    thr = info.get("threshold") or 0
    ratio = f" ({info['score'] / thr:.1f}× threshold)" if thr else ""
    where = (f" in {Path(info['file']).name} at {info.get('offset_s', 0):.1f} s" if info.get("file") else "")
    fault = (info.get("fault") or {}).get("likely")
    bands = info.get("top_bands") or []
    what = (f"; likely {fault}" if fault else "") + (f"; band {bands[0]['center_hz']} Hz ×{bands[0]['error_ratio']:.1f}"
                                                     + (f": {bands[0]['hint']}" if bands[0].get("hint") else "")
                                                     if bands else "")
    uncertain = " (time uncertain: from the file's modification time)" if info.get("time_source") == "mtime" else ""
    return (f"ALARM {info['t_utc']} site {info['site']}: {info.get('kind', 'anomaly')}, score {info['score']:.4g}"
            f"{ratio}{where}{what}{uncertain}")


def _print_alarm(info: dict) -> None:
    console.print(esc(alarm_line(info)), soft_wrap=True)


@app.command(rich_help_panel="Site")
def monitor(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name (must be calibrated).")],
    from_: Annotated[list[Path] | None, typer.Option("--from", help="Audio files or directories to score, in "
                                                     "order (repeatable).")] = None,
    mic: Annotated[bool, typer.Option("--mic", help="Listen to a sound card until interrupted (Ctrl-C).")] = False,
    device: Annotated[str | None, typer.Option(help="Sound card index or name for --mic.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Stop --mic after this long.")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Replay files at real-time speed (default: as fast "
                                           "as possible).")] = False,
    on_alarm: Annotated[str | None, typer.Option(help="Command to run on each alarm; gets the alarm JSON on stdin "
                                                 "(split like a shell would, no shell; checked at start).")] = None,
    retention_days: Annotated[float, typer.Option(min=1, max=36500, help="Keep raw scores this long after they "
                                                  "were logged.")] = 56,
    start_time: Annotated[str | None, typer.Option("--start-time", "-t", help="Time (ISO 8601, UTC unless it "
                                                   "says otherwise; 2000-01-01 to a day from now) of the first file "
                                                   "without a time of its own; later such files follow on.")] = None,
    name_time: Annotated[list[str] | None, typer.Option("--name-time", "-n", help="strftime-like format of a time in "
                                                        "the file names, e.g. %Y%m%d_%H%M%S (repeatable; replaces "
                                                        "the built-in formats).")] = None,
    time_zone: Annotated[str, typer.Option("--time-zone", "-z", help="Zone of times in files and names that carry "
                                           "none: UTC, +01:00 or Europe/Berlin.")] = "UTC",
    publish: Annotated[str | None, typer.Option(help="Also publish every score and alarm to an MQTT broker "
                                                "(mqtt://HOST:PORT or mqtts://; credentials from HUMWATCH_MQTT_USER/"
                                                "_PASSWORD or a --credentials file; docs/fleet.md).")] = None,
    device_id: Annotated[str | None, typer.Option(help="Device id for --publish [default: this computer's name].")]
    = None,
    credentials: Annotated[Path | None, typer.Option(help="File with 'user:password' for --publish.")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate for an mqtts:// broker.")] = None,
    sites_dir: SitesDir = None,
) -> None:
    """Score every 0.96 s patch against the site's calibration, raise alarms, log every raw score.

    Scores go to sites/NAME/scores.sqlite (read them with `humwatch report`), alarms to sites/NAME/alarms.jsonl;
    when the output is not a terminal (a log), one line per alarm. A file's time comes from its metadata (WAV bext
    or LIST/ICRD, FLAC tags), else from its name, else from --start-time, else from its modification time (with a
    warning: copying changes it). A file the log already holds (same path and start time) is resumed where the log
    stops. With --publish they also go to the fleet's broker at QoS 1 (buffered while it is away; `humwatch ingest`
    logs them centrally). Exit 0: all scored; 6: some files skipped (each named in a warning); 1: nothing could be
    scored.
    """
    with user_errors():
        import warnings

        from anomaly.audio import find_audio
        from anomaly.errors import StorageError
        from anomaly.recording_time import NAME_FORMATS, TimePolicy, parse_tz
        from calibration.errors import CalibrationError
        from calibration.monitoring.mic import mic_blocks
        from calibration.monitoring.monitor import Monitor, MonitorConfig, MonitorWarning
        from calibration.store import SiteStore, utc_now

        if bool(from_) == bool(mic):
            raise CalibrationError("give the audio with --from FILES/DIRS or listen with --mic (one of the two)")
        start = _parse_start(start_time)
        policy = TimePolicy(name_formats=tuple(name_time) if name_time else NAME_FORMATS, tz=parse_tz(time_zone),
                            start_utc=start)
        live = Live(console=err_console, refresh_per_second=4, transient=False) if err_console.is_terminal else None
        cfg = MonitorConfig(realtime=realtime, on_alarm=on_alarm, retention_days=retention_days, start_utc=start,
                            time_policy=policy, on_alarm_line=None if live else _print_alarm)
        cfg.check()  # before any site file or audio is read
        s = SiteStore(sites_dir).site(site)
        unreadable: list[str] = []
        files = find_audio(from_, unreadable) if from_ else None
        for msg in unreadable:
            warnings.warn(MonitorWarning(msg), stacklevel=1)
        s.config()
        pub = _publisher(publish, device_id, credentials, ca, s.name) if publish else None
        sink = None
        if pub is not None:
            from calibration.fleet.publish import TelemetrySink

            sink = TelemetrySink(pub, s.name)
        update = (lambda st: live.update(_view(st))) if live else None
        mon = None
        try:
            with Monitor(s, cfg, on_update=update, sink=sink) as mon:
                mon.state.skipped.extend(unreadable)
                try:
                    if live:
                        live.start()
                    if files is not None:
                        mon.process_files(files)
                    else:
                        dev = device_arg(device)
                        mon.state.source = f"microphone {dev if dev is not None else '(default)'}"
                        mon.process_blocks(mic_blocks(dev, minutes), utc_now().timestamp(), None)
                finally:
                    if live:
                        live.stop()
        except StorageError:
            for a in mon.unwritten_alarms if mon is not None else []:
                console.print(f"unlogged alarm: {json.dumps(a)}", markup=False)
            raise
        finally:
            if pub is not None:  # also when the monitor could not start
                left = pub.close(wait=30 if mon is not None else 0)
                console.print(f"published {pub.sent} message(s) to {esc(pub.broker)}: {pub.acked} acknowledged"
                              + (f", {left} not acknowledged (the broker is away)" if left else "")
                              + (f", {pub.dropped} dropped (buffer full)" if pub.dropped else ""))
        _summary(s, mon.state)


def _parse_start(text: str | None) -> float | None:
    """--start-time as UTC epoch seconds (a time without a zone is UTC); the range is checked by MonitorConfig."""
    from calibration.errors import CalibrationError

    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()
    except (ValueError, OverflowError, OSError):
        raise CalibrationError(f"--start-time must be ISO 8601 like 2026-11-25T08:00:00Z, got {text!r}") from None


def _summary(s, state) -> None:
    """The run's last lines, and its exit code: 0 all scored, 6 some inputs skipped, 1 nothing scored."""
    from calibration.errors import CalibrationError

    resumed = f", {state.resumed} already in the log (not scored again)" if state.resumed else ""
    console.print(f"{state.patches} patches ({state.audio_seconds / 60:.1f} min) scored{resumed}, {state.alarms} "
                  "alarm(s)" + (f", {len(state.skipped)} input(s) skipped" if state.skipped else "")
                  + f"; scores in {esc(s.dir / 'scores.sqlite')}, alarms in {esc(s.dir / 'alarms.jsonl')}")
    if state.time_sources:
        console.print("recording times from " + ", ".join(f"{_SOURCE_WORDS.get(k, k)} ({n} file(s))" for k, n in
                                                          state.time_sources.items())
                      + (f"; {len(state.time_problems)} problem(s) warned about above" if state.time_problems
                         else ""))
    if state.alarm_faults:
        console.print("alarms by likely fault: " + ", ".join(
            f"{escape(f)} {n}" for f, n in sorted(state.alarm_faults.items(), key=lambda kv: -kv[1])))
    if state.patches == 0 and state.resumed == 0:
        raise CalibrationError("nothing was scored" + (f": all {len(state.skipped)} input(s) were skipped (see the "
                                                       "warnings above)" if state.skipped else
                                                       " (no audio long enough for one patch)"))
    if state.skipped:
        raise typer.Exit(EXIT_PARTIAL)


def _publisher(url: str, device_id: str | None, credentials: Path | None, ca: Path | None, site: str):
    import socket

    from calibration.fleet import telemetry
    from calibration.fleet.mqtt import Publisher, broker

    b = broker(url, credentials, ca)
    dev = device_id or (socket.gethostname().split(".")[0] or "monitor")
    pub = Publisher(b, telemetry.check_device(dev), say=lambda m: err_console.print(f"[yellow]warning:[/] "
                                                                                    f"{escape(m)}"))
    try:
        pub.wait_connected(10)
    except Exception:
        pub.close(0)
        raise
    err_console.print(f"publishing site {site} as device {dev} to {b}")
    return pub


@app.command(rich_help_panel="Site")
def report(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="report.html, or scores.csv / scores.parquet to export "
                                      "the score log.")],
    since: Annotated[str | None, typer.Option(help="Only the last 7d, 12h or 90m, or since an ISO date/time (UTC) "
                                              "such as 2026-11-20 (default: everything logged).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="html | csv | parquet (default: from the --out "
                                            "suffix, else html).")] = None,
    top: Annotated[int, typer.Option(min=0, max=50, help="How many of the most anomalous patches to show with "
                                     "their spectrograms.")] = 6,
    sites_dir: SitesDir = None,
) -> None:
    """One self-contained HTML page about a site's monitoring, or its score log as CSV/Parquet.

    The page (no network needed) shows the score timeline with thresholds, calibration changes and alarms, the alarm
    table, the score histogram and weekly/daily drift against the calibration baseline, the most anomalous patches
    (spectrogram, reconstruction, error map, which frequency band deviated) and the calibration certificate and
    history.
    """
    with user_errors():
        from calibration.report import export_log, format_for, parse_since, write_report
        from calibration.store import SiteStore

        s = SiteStore(sites_dir).site(site)
        since_utc = parse_since(since)
        kind = format_for(out, fmt)
        if kind == "html":
            path = write_report(s, out, since_utc, top)
            console.print(f"wrote {esc(path)} ({path.stat().st_size / 1e6:.1f} MB): open it in a web browser")
        else:
            path, rows = export_log(s, out, kind, since_utc)
            console.print(f"wrote {rows} scores to {esc(path)}")
