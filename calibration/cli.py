"""``humwatch`` commands of the calibration package: site, calibrate, recalibrate, schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from anomaly.cli_util import console, err_console, progress, user_errors
from anomaly.decision import DEFAULT_K, DEFAULT_RULE, K_RANGE, MOfN, describe_threshold

app = typer.Typer(no_args_is_help=True)
site_app = typer.Typer(no_args_is_help=True, help="Create and inspect sites (one per installation).")
app.add_typer(site_app, name="site", rich_help_panel="Sites")

SitesDir = Annotated[Path | None, typer.Option("--sites-dir", envvar="HUMWATCH_SITES",
                                               help="Site store root [default: ./sites].")]


def _store(sites_dir):
    from calibration.store import SiteStore

    return SiteStore(sites_dir)


@site_app.command("create")
def site_create(
    name: Annotated[str, typer.Argument(help="Site name: a-z, 0-9, '-', '_' (e.g. pump-3).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch train`.")],
    k: Annotated[float, typer.Option(help=f"Threshold = mean + k·σ of the baseline scores ({K_RANGE[0]:g}-"
                                     f"{K_RANGE[1]:g}).")] = DEFAULT_K,
    alarm: Annotated[str, typer.Option(help="Alarm rule m/n: alarm when m of the last n patches exceed.")]
    = DEFAULT_RULE.spelling,
    machine: Annotated[str, typer.Option(help="What is monitored (free text; pump/compressor/fan/motor also "
                                         "picks the simulator machine for --inject-faults).")] = "",
    microphone: Annotated[str, typer.Option(help="Microphone make/model and mounting (free text).")] = "",
    response: Annotated[Path | None, typer.Option(help="Microphone response CSV (frequency_hz,gain_db).")] = None,
    interval_days: Annotated[int, typer.Option(min=1, help="Recalibrate every N days.")] = 30,
    source: Annotated[str, typer.Option(help="Audio source for scheduled recalibration: a directory, or 'mic' "
                                        "or 'mic:DEVICE'.")] = "",
    sites_dir: SitesDir = None,
) -> None:
    """Create a site that uses a trained model. Next: `humwatch calibrate --site NAME --from AUDIO`."""
    with user_errors():
        from anomaly.detectors import load_detector
        from anomaly.features import MicResponse
        from anomaly.modeldir import model_hash
        from calibration.store import SiteConfig, validate_name

        validate_name(name)
        load_detector(model)  # fail now, not at calibration time
        if response is not None:
            MicResponse.from_csv(response)
        rule = MOfN.parse(alarm)
        store = _store(sites_dir)
        model_path = model.resolve()
        site_dir = store.site(name).dir.resolve()
        if model_path.is_relative_to(site_dir):  # a model kept inside the site folder moves with it
            model_path = model_path.relative_to(site_dir)
        cfg = SiteConfig(name=name, model_path=str(model_path), model_hash=model_hash(model), machine=machine,
                         microphone=microphone, response_curve=str(response.resolve()) if response else "", k=k,
                         alarm_m=rule.m, alarm_n=rule.n, recalibration_days=interval_days, source=source)
        site = store.create(cfg)
        console.print(f"created site {name} in {site.dir}  (threshold {describe_threshold(k)}; alarm: "
                      f"{cfg.alarm_rule})")
        console.print(f"next: humwatch calibrate --site {name} --from <30-60 min of normal audio>")


@site_app.command("set-model")
def site_set_model(
    name: Annotated[str, typer.Argument(help="Site name.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The new model directory.")],
    sites_dir: SitesDir = None,
) -> None:
    """Point a site at another (e.g. retrained) model. The site must then be calibrated again."""
    with user_errors():
        from anomaly.atomic import write_text
        from anomaly.detectors import load_detector
        from anomaly.modeldir import model_hash

        site = _store(sites_dir).site(name)
        cfg = site.config()
        load_detector(model)
        with site.lock("model change"):
            cfg.model_path, cfg.model_hash = str(model.resolve()), model_hash(model)
            site.save_config(cfg)
            if site.current_id():
                write_text(site.dir / "current", "")  # the old threshold belongs to the old model
        console.print(f"site {name} now uses {model}; calibrate it again before monitoring")


@site_app.command("set-classifier")
def site_set_classifier(
    name: Annotated[str, typer.Argument(help="Site name.")],
    classifier: Annotated[Path | None, typer.Option("--classifier", "-c", help="Fault-classifier directory from "
                                                    "`humwatch classify train`.")] = None,
    alarm_on: Annotated[list[str] | None, typer.Option("--alarm-on", help="A class whose hit alone raises an alarm "
                                                       "(repeatable; 'all' = every class but normal).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Detach the site's classifier.")] = False,
    sites_dir: SitesDir = None,
) -> None:
    """Attach a fault classifier: alarms then name the likely fault, and its outputs go to the score log.

    By default the classifier only describes anomaly alarms. With --alarm-on CLASS, a patch stream where that
    class reaches its threshold (the site's m-of-n rule) raises an alarm even when the autoencoder's score stays
    below the threshold, for faults the autoencoder reconstructs well. The anomaly calibration is unaffected.
    """
    with user_errors():
        from anomaly.modeldir import classifier_hash
        from calibration.calibrate import site_classifier, site_detector
        from calibration.errors import SiteError

        site = _store(sites_dir).site(name)
        cfg = site.config()
        if remove:
            if classifier is not None or alarm_on:
                raise SiteError("--remove takes no --classifier or --alarm-on")
            with site.lock("classifier change"):
                cfg.classifier_path, cfg.classifier_hash, cfg.classifier_alarm = "", "", []
                site.save_config(cfg)
            console.print(f"site {name} has no fault classifier now")
            return
        if classifier is None:
            raise SiteError("give the classifier with --classifier DIR (or --remove to detach one)")
        from anomaly.classify import load_classifier

        det, _, _ = site_detector(site)
        clf = load_classifier(classifier, det.params)  # also checks the front end matches the site's model
        faults = [c for c in clf.classes if c != "normal"]
        wanted = list(dict.fromkeys(alarm_on or []))
        if "all" in wanted:
            wanted = faults
        unknown = [c for c in wanted if c not in clf.classes]
        if unknown:
            raise SiteError(f"--alarm-on: unknown class {unknown[0]!r} (the classifier has {', '.join(faults)})")
        if "normal" in wanted:
            raise SiteError("--alarm-on normal makes no sense: the normal class never raises an alarm")
        with site.lock("classifier change"):
            cfg.classifier_path, cfg.classifier_hash = str(classifier.resolve()), classifier_hash(classifier)
            cfg.classifier_alarm = wanted
            site.save_config(cfg)
        site_classifier(site, det.params)
        fb = clf.fallbacks()
        console.print(f"site {name} now uses the fault classifier {classifier} (classes: {', '.join(clf.classes)})")
        alone = ", ".join(wanted) if wanted else "none (it names the fault of anomaly alarms)"
        console.print(f"alarms on a classifier hit alone: {alone}")
        if fb:
            console.print(f"[yellow]note[/]: the precision target was not reachable on validation for "
                          f"{', '.join(fb)}; their thresholds are the best-F1 fallback")


@site_app.command("list")
def site_list(sites_dir: SitesDir = None) -> None:
    """All sites with their calibration state."""
    with user_errors():
        from rich.table import Table

        store = _store(sites_dir)
        names = store.names()
        if not names:
            console.print(f"no sites in {store.root} (create one with `humwatch site create NAME --model DIR`)")
            return
        t = Table("site", "machine", "threshold", "calibrated (UTC)", "calibrations", "due in")
        from calibration.calibrate import due_sites

        due = dict(due_sites(store))
        for name in names:
            site = store.site(name)
            cfg = site.config()
            cur = site.calibration() if site.current_id() else None
            t.add_row(escape(name), escape(cfg.machine) or "-", f"{cur['threshold']['threshold']:.4g}" if cur else "-",
                      cur["created_utc"] if cur else "not calibrated", str(len(site.calibration_ids())),
                      "now" if name in due else _due_in(cur, cfg.recalibration_days))
        console.print(t)


def _due_in(cur, days) -> str:
    from datetime import datetime

    from calibration.store import utc_now

    if cur is None:
        return "now"
    made = datetime.strptime(cur["created_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=utc_now().tzinfo)
    left = days - (utc_now() - made).total_seconds() / 86400
    return f"{left:.0f} d"


@site_app.command("show")
def site_show(name: Annotated[str, typer.Argument(help="Site name.")], sites_dir: SitesDir = None) -> None:
    """Settings and the current calibration certificate of a site."""
    with user_errors():
        from calibration.certificate import print_certificate

        site = _store(sites_dir).site(name)
        site.config()
        console.print(site.toml_path.read_text(), markup=False)
        if site.classifier_dir() is not None:
            from calibration.calibrate import site_classifier

            clf, h = site_classifier(site)
            console.print(f"fault classifier {h}: " + ", ".join(f"{c} ≥ {t:.2f}" for c, t in
                                                                 zip(clf.classes, clf.threshold_array, strict=True)))
        if site.current_id():
            print_certificate(site.calibration(), console)
        else:
            console.print(f"[yellow]not calibrated[/]: humwatch calibrate --site {name} --from AUDIO")


@site_app.command("history")
def site_history(name: Annotated[str, typer.Argument(help="Site name.")], sites_dir: SitesDir = None) -> None:
    """Every calibration of a site: threshold over time, adopted or refused."""
    with user_errors():
        from rich.table import Table

        site = _store(sites_dir).site(name)
        site.config()
        cur = site.current_id()
        t = Table("id", "kind", "status", "minutes", "threshold", "false alarms/day", "current")
        for rec in site.history():
            th = rec["threshold"]
            t.add_row(rec["id"], rec["kind"], rec["status"], f"{rec['audio']['minutes']:.0f}",
                      f"{th['threshold']:.4g}", f"{th['false_alarms_per_day']:.2g}", "*" if rec["id"] == cur else "")
        console.print(t if t.row_count else f"site {name} has no calibrations yet")


def _device(device: str | None) -> int | str | None:
    """--device: a PortAudio index when it is a number, else a device name."""
    return int(device) if device is not None and device.isdigit() else device


def _sources(from_: list[Path] | None, mic: bool, device: str | None, minutes: float, site, say) -> list[Path]:
    from anomaly.audio import find_audio
    from calibration.errors import CalibrationError
    from calibration.sources import record_mic
    from calibration.store import utc_id

    if bool(from_) == bool(mic):
        raise CalibrationError("give the audio with --from FILES/DIRS or record it with --mic (one of the two)")
    if from_:
        return find_audio(from_)
    dev = _device(device)
    path = site.dir / "baseline" / f"mic-{utc_id()}.flac"
    say(f"recording {minutes:g} min from {'the default sound card' if dev is None else f'device {dev}'} "
        f"into {path}")
    with progress() as bar:
        task = bar.add_task("recording", total=100, info="")

        def meter(frac, level, overflowed):
            warn = " OVERFLOW" if overflowed else ""
            bar.update(task, completed=round(100 * frac), info=f"level {level:6.1f} dBFS{warn}")

        record_mic(path, minutes, dev, on_block=meter)
    return [path]


def _run(kind: str, site_name, from_, mic, device, minutes, min_minutes, force, inject, validate_dir, keep_audio,
         accept_shift, sites_dir):
    from calibration.calibrate import CalibrationRequest, calibrate, recalibrate
    from calibration.certificate import print_certificate

    site = _store(sites_dir).site(site_name)
    site.config()
    files = _sources(from_, mic, device, minutes, site, console.print)
    req = CalibrationRequest(files=files, min_minutes=min_minutes, force=force, inject=inject,
                             validate_dir=validate_dir, keep_audio=keep_audio)
    with progress() as bar:
        task = bar.add_task("scoring", total=100, info="")
        cb = dict(on_progress=lambda f, name: bar.update(task, completed=round(100 * f), info=name),
                  say=lambda msg: bar.console.print(msg))
        rec = calibrate(site, req, **cb) if kind == "calibrate" else recalibrate(site, req, accept_shift, **cb)
    print_certificate(rec, console)
    console.print(f"stored as {site.calibrations_dir / (rec['id'] + '.json')} (current)")


@app.command(rich_help_panel="Sites")
def calibrate(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name.")],
    from_: Annotated[list[Path] | None, typer.Option("--from", help="Normal audio of this site: files or "
                                                     "directories (repeatable).")] = None,
    mic: Annotated[bool, typer.Option("--mic", help="Record from a sound card now.")] = False,
    device: Annotated[str | None, typer.Option(help="Sound card index or name for --mic.")] = None,
    minutes: Annotated[float, typer.Option(help="How long to record with --mic.")] = 45.0,
    min_minutes: Annotated[float, typer.Option(help="Refuse less audio than this.")] = 30.0,
    force: Annotated[bool, typer.Option(help="Accept less than --min-minutes (tests, demos).")] = False,
    inject_faults: Annotated[bool, typer.Option(help="Mix simulator faults into held-out audio and report "
                                                "detection per fault and severity.")] = False,
    validate_with: Annotated[Path | None, typer.Option(help="Directory of known fault recordings to check "
                                                       "detection on.")] = None,
    keep_audio: Annotated[bool, typer.Option(help="Keep a copy of the calibration audio in the site.")] = False,
    sites_dir: SitesDir = None,
) -> None:
    """Calibrate a site on 30-60 min of its normal audio and print the certificate.

    The threshold is mean + k·σ of the site's scores; the certificate states the expected false alarms per day
    under the site's alarm rule, and plain-language findings about the recording.
    """
    with user_errors():
        _run("calibrate", site, from_, mic, device, minutes, min_minutes, force, inject_faults, validate_with,
             keep_audio, False, sites_dir)


@app.command(rich_help_panel="Sites")
def recalibrate(
    site: Annotated[str | None, typer.Option("--site", "-s", help="Site name.")] = None,
    due: Annotated[bool, typer.Option(help="Every site whose calibration is older than its interval (audio from "
                                      "each site's configured source).")] = False,
    from_: Annotated[list[Path] | None, typer.Option("--from", help="Recent normal audio: files or directories.")]
    = None,
    mic: Annotated[bool, typer.Option("--mic", help="Record from a sound card now.")] = False,
    device: Annotated[str | None, typer.Option(help="Sound card index or name for --mic.")] = None,
    minutes: Annotated[float, typer.Option(help="How long to record with --mic.")] = 45.0,
    min_minutes: Annotated[float, typer.Option(help="Refuse less audio than this.")] = 30.0,
    force: Annotated[bool, typer.Option(help="Accept less than --min-minutes (tests, demos).")] = False,
    accept_shift: Annotated[bool, typer.Option(help="Adopt the new baseline even if it looks like a developing "
                                               "fault (only after inspecting the machine).")] = False,
    sites_dir: SitesDir = None,
) -> None:
    """Recalibrate; refuses a new baseline that looks like a developing fault (exit code 4).

    The new recording is compared with the calibration in force: if it exceeds the current threshold more often
    than the certificate predicts, or its scores shifted upward significantly, the current threshold stays.
    """
    with user_errors():
        from calibration.calibrate import due_sites
        from calibration.errors import SiteError

        if due == bool(site):
            raise SiteError("give --site NAME or --due (one of the two)")
        if site:
            _run("recalibrate", site, from_, mic, device, minutes, min_minutes, force, False, None, False,
                 accept_shift, sites_dir)
            return
        store = _store(sites_dir)
        failures = 0
        for name, age in due_sites(store):
            cfg = store.site(name).config()
            console.print(f"[bold]{name}[/]: " + ("never calibrated" if age is None else f"{age:.0f} days old"))
            if age is None or not cfg.source:
                console.print("  skipped: " + ("calibrate it first" if age is None else
                                               "no audio source in site.toml (set source = a directory or 'mic')"))
                continue
            is_mic = cfg.source.startswith("mic")
            dev = cfg.source.split(":", 1)[1] if is_mic and ":" in cfg.source else None
            try:
                _run("recalibrate", name, None if is_mic else [Path(cfg.source)], is_mic, dev, minutes, min_minutes,
                     force, False, None, False, accept_shift, sites_dir)
            except Exception as e:  # one site's failure must not stop the others
                from anomaly.errors import HumwatchError

                if not isinstance(e, HumwatchError):
                    raise
                failures += 1
                err_console.print(f"[red]error:[/] {escape(name)}: {escape(str(e))}", markup=True)
        if failures:
            raise typer.Exit(4)


@app.command(rich_help_panel="Sites")
def schedule(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name.")],
    emit: Annotated[str, typer.Option(help="cron | systemd")] = "cron",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the files into.")] = Path("."),
    sites_dir: SitesDir = None,
) -> None:
    """Write a monthly recalibration job (cron line, or systemd service + timer). Nothing is installed."""
    with user_errors():
        from calibration import schedule as sched
        from calibration.errors import SiteError

        if emit not in ("cron", "systemd"):
            raise SiteError(f"--emit must be cron or systemd, got {emit!r}")
        store = _store(sites_dir)
        s = store.site(site)
        paths = sched.emit(s, store.root, emit, out)
        for p in paths:
            console.print(f"wrote {p}")
        if emit == "cron":
            console.print(f"install (after reading it): crontab -l | cat - {paths[0]} | crontab -")
        else:
            console.print(f"install (after reading them): cp {' '.join(map(str, paths))} /etc/systemd/system/ && "
                          f"systemctl enable --now {paths[1].name}")



_SPARK = " ▁▂▃▄▅▆▇█"


def _view(state):
    from rich.table import Table

    vals = list(state.recent)
    top = max([state.threshold * 1.5] + vals)
    spark = "".join(_SPARK[min(8, int(8 * v / top))] for v in vals) if vals else ""
    t = Table.grid(padding=(0, 2))
    t.add_row("source", state.source)
    t.add_row("patches", f"{state.patches} ({state.audio_seconds / 60:.1f} min of audio)")
    t.add_row("recent scores", spark)
    t.add_row("threshold", f"{state.threshold:.4g}   rule {state.rule}")
    t.add_row("state", "[bold red]ALARM[/]" if state.in_alarm else "[green]normal[/]")
    if state.top_class is not None:
        t.add_row("likeliest fault", f"{escape(state.top_class[0])} (p = {state.top_class[1]:.2f})")
    last = state.last_alarm
    fault = ((last.get("fault") or {}).get("likely") or "unknown fault") if last and "fault" in last else None
    t.add_row("alarms", str(state.alarms) + (f"  (last at {last['t_utc']}" + (f", {escape(fault)}" if fault else "")
                                             + ")" if last else ""))
    return t


@app.command(rich_help_panel="Sites")
def monitor(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name (must be calibrated).")],
    from_: Annotated[list[Path] | None, typer.Option("--from", help="Audio files or directories to score, in "
                                                     "order (repeatable).")] = None,
    mic: Annotated[bool, typer.Option("--mic", help="Listen to a sound card until interrupted (Ctrl-C).")] = False,
    device: Annotated[str | None, typer.Option(help="Sound card index or name for --mic.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Stop --mic after this long.")] = None,
    realtime: Annotated[bool, typer.Option(help="Replay files at real-time speed (default: as fast as possible).")]
    = False,
    on_alarm: Annotated[str | None, typer.Option(help="Command to run on each alarm; gets the alarm JSON on stdin.")]
    = None,
    retention_days: Annotated[float, typer.Option(min=1, help="Keep raw scores this long.")] = 56,
    start_time: Annotated[str | None, typer.Option(help="UTC time of the first file's first sample "
                                                   "(ISO 8601); default: each file's mtime minus its duration.")]
    = None,
    sites_dir: SitesDir = None,
) -> None:
    """Score every 0.96 s patch against the site's calibration, raise alarms, log every raw score.

    Scores go to sites/NAME/scores.sqlite (read them with `humwatch report`), alarms to sites/NAME/alarms.jsonl.
    """
    with user_errors():
        from datetime import datetime

        from rich.live import Live

        from anomaly.audio import find_audio
        from calibration.errors import CalibrationError
        from calibration.monitor import Monitor, MonitorConfig, mic_blocks
        from calibration.store import utc_now

        if bool(from_) == bool(mic):
            raise CalibrationError("give the audio with --from FILES/DIRS or listen with --mic (one of the two)")
        start = None
        if start_time:
            try:
                start = datetime.fromisoformat(start_time.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise CalibrationError(f"--start-time must be ISO 8601 like 2026-11-25T08:00:00Z, got "
                                       f"{start_time!r}") from None
        cfg = MonitorConfig(realtime=realtime, on_alarm=on_alarm, retention_days=retention_days, start_utc=start)
        s = _store(sites_dir).site(site)
        files = find_audio(from_) if from_ else None
        live = Live(console=err_console, refresh_per_second=4, transient=False) if err_console.is_terminal else None
        update = (lambda st: live.update(_view(st))) if live else None
        with Monitor(s, cfg, on_update=update) as mon:
            try:
                if live:
                    live.start()
                if files is not None:
                    state = mon.process_files(files)
                else:
                    dev = _device(device)
                    mon.state.source = f"microphone {dev if dev is not None else '(default)'}"
                    mon.process_blocks(mic_blocks(dev, minutes), utc_now().timestamp(), None)
                    state = mon.state
            finally:
                if live:
                    live.stop()
        console.print(f"{state.patches} patches ({state.audio_seconds / 60:.1f} min) scored, {state.alarms} alarm(s)"
                      + (f", {len(state.skipped)} file(s) skipped" if state.skipped else "")
                      + f"; scores in {s.dir / 'scores.sqlite'}, alarms in {s.dir / 'alarms.jsonl'}")
        if state.alarm_faults:
            console.print("alarms by likely fault: " + ", ".join(
                f"{escape(f)} {n}" for f, n in sorted(state.alarm_faults.items(), key=lambda kv: -kv[1])))


@app.command(rich_help_panel="Sites")
def report(
    site: Annotated[str, typer.Option("--site", "-s", help="Site name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="report.html, or scores.csv / scores.parquet to export "
                                      "the score log.")],
    since: Annotated[str | None, typer.Option(help="Only the last 7d, 12h or 90m, or since an ISO date/time (UTC) "
                                              "such as 2026-11-20 [default: everything logged].")] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="html | csv | parquet [default: from the --out "
                                            "suffix, else html].")] = None,
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

        s = _store(sites_dir).site(site)
        since_utc = parse_since(since)
        kind = format_for(out, fmt)
        if kind == "html":
            path = write_report(s, out, since_utc, top)
            console.print(f"wrote {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB): open it in a web browser")
        else:
            path, rows = export_log(s, out, kind, since_utc)
            console.print(f"wrote {rows} scores to {escape(str(path))}")
