"""``humwatch site ...``: create, inspect and calibrate sites (one per installation).

``site create | list | show | history | set | set-model | set-classifier | calibrate | recalibrate | schedule``. The
earlier root spellings ``humwatch calibrate --site NAME``, ``recalibrate --site NAME | --due`` and ``schedule --site
NAME`` still work (hidden aliases of the ``site`` commands). This module parses and prints; the rules are in
:mod:`calibration.site_setup`, :mod:`calibration.calibrate`, :mod:`calibration.schedule` and :mod:`anomaly.decision`.
Library modules are imported inside the commands so that ``humwatch --help`` stays instant.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from anomaly.cli_util import console, error_line, esc, progress, user_errors
from anomaly.decision import DEFAULT_K, DEFAULT_MIN_MINUTES, DEFAULT_RULE, K_RANGE, describe_threshold, parse_rule
from anomaly.errors import EXIT_DAMAGED, EXIT_REFUSED

app = typer.Typer(no_args_is_help=True)
site_app = typer.Typer(no_args_is_help=True, help="Sites (one per installation): create, inspect, calibrate, "
                                                  "recalibrate, schedule.")
app.add_typer(site_app, name="site", rich_help_panel="Site")

SitesDir = Annotated[Path | None, typer.Option("--sites-dir", envvar="HUMWATCH_SITES",
                                               help="Site store root [default: ./sites].")]
Name = Annotated[str, typer.Argument(help="Site name.")]
SiteOption = Annotated[str, typer.Option("--site", "-s", help="Site name.")]
From = Annotated[list[Path] | None, typer.Option("--from", help="Normal audio of this site: files or directories "
                                                 "(repeatable).")]
Mic = Annotated[bool, typer.Option("--mic", help="Record from a sound card now.")]
Device = Annotated[str | None, typer.Option(help="Sound card index or name for --mic.")]
Minutes = Annotated[float, typer.Option(help="How long to record with --mic.")]
MinMinutes = Annotated[float, typer.Option(help="Refuse less audio than this (a lower value is marked on the "
                                           "certificate).")]
Force = Annotated[bool, typer.Option("--force", help="Accept less than --min-minutes (tests, demos; marked on the "
                                     "certificate).")]
InjectFaults = Annotated[bool, typer.Option("--inject-faults", help="Mix simulated faults (of the site's machine type "
                                            "when the simulator models it, else of a pump) into held-out audio and "
                                            "report detection per fault and severity: a check that the model reacts, "
                                            "not real detection.")]
ValidateWith = Annotated[Path | None, typer.Option(help="Recordings of this machine to check detection on: labelled "
                                                   "normal_*/anomaly_* clips (AUC, pAUC, false alarms, alarm delay; "
                                                   "preferred) or known fault recordings.")]
KeepAudio = Annotated[bool, typer.Option("--keep-audio", help="Keep a copy of the calibration audio in the site.")]
Due = Annotated[bool, typer.Option("--due", help="Every site whose calibration is older than its interval (audio "
                                   "from each site's configured source).")]
AcceptShift = Annotated[bool, typer.Option("--accept-shift", help="Adopt the new baseline even if it looks like a "
                                           "developing fault (only after inspecting the machine).")]
Emit = Annotated[str, typer.Option(help="cron | systemd")]
ScheduleOut = Annotated[Path, typer.Option("--out", "-o", help="Directory to write the files into.")]

CALIBRATE_HELP = ("Calibrate a site on 30-60 min of its normal audio and print the certificate.\n\n"
                  "The threshold is mean + k·σ of the site's scores; the certificate states the expected false alarms "
                  "per day under the site's alarm rule, and plain-language findings about the recording.")
RECALIBRATE_HELP = ("Recalibrate; refuses a new baseline that looks like a developing fault (exit code 4).\n\n"
                    "The new recording is compared with the calibration in force: if it exceeds the current threshold "
                    "more often than the certificate predicts, or its scores shifted upward significantly, the current "
                    "threshold stays.")
SCHEDULE_HELP = "Write a monthly recalibration job (cron line, or systemd service + timer). Nothing is installed."


def _store(sites_dir):
    from calibration.store import SiteStore

    return SiteStore(sites_dir)


@site_app.command("create")
def site_create(
    name: Annotated[str, typer.Argument(help="Site name: a-z, 0-9, '-', '_' (e.g. pump-3).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch train`.")],
    k: Annotated[float, typer.Option(help=f"Threshold = mean + k·σ of the baseline scores ({K_RANGE[0]:g}-"
                                     f"{K_RANGE[1]:g}).")] = DEFAULT_K,
    alarm: Annotated[str, typer.Option(help="Alarm rule: mean/N (the mean standardised score of the last N "
                                       "patches leaves its calibrated range; default) or m/n (m of the last n "
                                       "patches over the threshold).")]
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
    """Create a site that uses a trained model. Next: `humwatch site calibrate NAME --from AUDIO`."""
    with user_errors():
        from calibration.site_setup import create_site
        from calibration.store import validate_name

        validate_name(name)
        site = create_site(_store(sites_dir), name, model, k=k, rule=parse_rule(alarm), machine=machine,
                           microphone=microphone, response=response, interval_days=interval_days, source=source)
        console.print(f"created site {name} in {esc(site.dir)}  (threshold {describe_threshold(k)}; alarm: "
                      f"{site.config().alarm_rule})")
        console.print(f"next: humwatch site calibrate {name} --from <30-60 min of normal audio>")


@site_app.command("list")
def site_list(sites_dir: SitesDir = None) -> None:
    """All sites with their calibration state (a damaged site is listed as damaged; the others as usual)."""
    with user_errors():
        from calibration.calibrate import calibration_age_days, due_sites
        from calibration.errors import SiteError

        store = _store(sites_dir)
        store.check_root(must_exist=sites_dir is not None)  # the default store may not exist yet; a named one must
        names = store.names()
        if not names:
            console.print(f"no sites in {esc(store.root)} (create one with `humwatch site create NAME --model DIR`)")
            return
        t = Table("site", "machine", "threshold", "calibrated (UTC)", "calibrations", "due in")
        problems: list[tuple[str, str]] = []
        due = dict(due_sites(store, problems=problems))
        damaged = dict(problems)
        for name in names:
            site = store.site(name)
            try:
                if name in damaged:
                    raise SiteError(damaged[name])
                cfg = site.config()
                cur = site.calibration() if site.current_id() else None
            except SiteError as e:
                damaged[name] = str(e)
                t.add_row(esc(name), "-", "[red]damaged[/]", "see below", str(len(site.calibration_ids())), "-")
                continue
            due_in = ("now" if name in due or cur is None else
                      f"{cfg.recalibration_days - calibration_age_days(cur):.0f} d")
            t.add_row(esc(name), esc(cfg.machine) or "-", f"{cur['threshold']['threshold']:.4g}" if cur else "-",
                      cur["created_utc"] if cur else "not calibrated", str(len(site.calibration_ids())), due_in)
        console.print(t)
        for name, msg in damaged.items():
            console.print(f"[red]damaged[/] {esc(name)}: {esc(' '.join(msg.split()))}", soft_wrap=True)


@site_app.command("show")
def site_show(name: Name, sites_dir: SitesDir = None) -> None:
    """Settings and the current calibration certificate of a site."""
    with user_errors():
        from calibration.calibrate import site_classifier
        from calibration.certificate import print_certificate

        site = _store(sites_dir).site(name)
        site.config()
        console.print(site.toml_path.read_text(encoding="utf-8"), markup=False)
        if site.classifier_dir() is not None:
            clf, h = site_classifier(site)
            console.print(f"fault classifier {h}: " + ", ".join(f"{esc(c)} ≥ {t:.2f}" for c, t in
                                                                 zip(clf.classes, clf.threshold_array, strict=True)))
        if site.current_id():
            print_certificate(site.calibration(), console)
        else:
            console.print(f"[yellow]not calibrated[/]: humwatch site calibrate {name} --from AUDIO")


@site_app.command("history")
def site_history(name: Name, sites_dir: SitesDir = None) -> None:
    """Every calibration of a site (threshold over time; adopted, refused or not adopted: a run stopped before the
    switch; damaged records listed as damaged) and every settings change."""
    with user_errors():
        from calibration.calibrate import calibration_rule
        from calibration.errors import SiteDamagedError

        site = _store(sites_dir).site(name)
        site.config()
        damaged = []
        try:
            cur = site.current_id()
        except SiteDamagedError as e:
            cur = None
            damaged.append(str(e))
        t = Table("id", "kind", "status", "minutes", "k", "rule", "threshold", "false alarms/day", "current")
        for cid, rec, err in site.records():
            if rec is None:
                damaged.append(err)
                t.add_row(cid, "-", "[red]damaged[/]", "-", "-", "-", "-", "-", "*" if cid == cur else "")
                continue
            th = rec["threshold"]
            t.add_row(rec["id"], rec["kind"], rec["status"], f"{rec['audio']['minutes']:.0f}", f"{th['k']:g}",
                      calibration_rule(rec).spelling, f"{th['threshold']:.4g}",
                      f"{th['false_alarms_per_day']:.2g}", "*" if rec["id"] == cur else "")
        console.print(t if t.row_count else f"site {name} has no calibrations yet")
        for msg in damaged:
            console.print(f"[red]damaged[/]: {esc(' '.join(msg.split()))}", soft_wrap=True)
        changes = site.settings_history()
        if changes:
            s = Table("changed (UTC)", "setting", "from", "to")
            for e in changes:
                for what, v in e["changes"].items():
                    s.add_row(esc(str(e.get("t_utc"))), esc(what), esc(repr(v.get("old"))),
                              esc(repr(v.get("new"))))
            console.print(s)


@site_app.command("set")
def site_set(
    name: Name,
    k: Annotated[float | None, typer.Option("--k", "-k", help=f"Threshold = mean + k·σ ({K_RANGE[0]:g}-"
                                            f"{K_RANGE[1]:g}); from the next calibration.")] = None,
    alarm: Annotated[str | None, typer.Option("--alarm", "-a", help="Alarm rule, e.g. 3/5 (m of the last n "
                                              "patches); from the next calibration.")] = None,
    machine: Annotated[str | None, typer.Option("--machine", "-M", help="Machine type (pump, compressor, fan, "
                                                "motor or any text); now.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Audio for scheduled recalibration: a directory, "
                                               "mic or mic:DEVICE ('' to clear).")] = None,
    interval_days: Annotated[int | None, typer.Option("--interval-days", min=1, help="Recalibrate every N days; "
                                                      "now.")] = None,
    microphone: Annotated[str | None, typer.Option("--microphone", help="Microphone make, model, mounting.")]
    = None,
    sites_dir: SitesDir = None,
) -> None:
    """Change a site's settings; each is checked, recorded in `site history`, and its effect is printed.

    k and the alarm rule take effect at the next calibration (the threshold, the rule and the certificate's
    false-alarm figures belong together; monitoring keeps those of the calibration in force). The machine type,
    the interval and the microphone take effect now; the source at the next scheduled recalibration (write the job
    again with `humwatch site schedule`).
    """
    with user_errors():
        from calibration.site_setup import set_settings

        site = _store(sites_dir).site(name)
        got = set_settings(site, k=k, alarm=alarm, machine=machine, source=source, interval_days=interval_days,
                           microphone=microphone)
        if not got.changes:
            console.print(f"site {esc(name)}: nothing changed (the values given are the current ones)")
            return
        for what, (old, new) in got.changes.items():
            console.print(f"{what}: {esc(repr(old))} → {esc(repr(new))}; takes effect "
                          f"{esc(got.effects[what])}")
        if {"k", "alarm"} & set(got.changes) and site.current_id():
            console.print(f"next: humwatch site recalibrate {esc(name)} --from <recent normal audio>  (or "
                          "site calibrate)")


@site_app.command("repair")
def site_repair(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply the fixes without asking.")] = False,
    sites_dir: SitesDir = None,
) -> None:
    """Check every file of a site; list what is damaged and the safe fix, and apply it (asking first).

    Fixes: damaged calibration records are moved to calibrations/damaged/; `current` is re-pointed to the newest
    intact calibration that was in force (or cleared: calibrate again); a damaged current.log is rewritten without
    its damaged lines; a damaged score log is moved aside (a new one starts); leftovers of killed runs are removed.
    Damaged settings (site.toml) or a changed model are named with what to do, not changed. Exit 0: nothing (left)
    to repair; 5: damage remains (or was not repaired: no --yes and no terminal to ask).
    """
    with user_errors():
        from calibration.repair import diagnose, repair

        site = _store(sites_dir).site(name)
        problems = diagnose(site)
        if not problems:
            console.print(f"site {name}: no damage found")
            return
        console.print(f"site {name}: {len(problems)} problem(s)")
        for pr in problems:
            console.print(f"- {esc(pr.what)}", soft_wrap=True)
            console.print(f"  fix: {esc(pr.fix)}" if pr.fixable else f"  [yellow]not repaired here[/]: {esc(pr.fix)}",
                          soft_wrap=True)
        if not any(pr.fixable for pr in problems):
            raise typer.Exit(EXIT_DAMAGED)
        if not yes:
            if not console.is_terminal or not typer.confirm("apply these fixes?", default=False):
                console.print(f"nothing changed; to apply: humwatch site repair {name} --yes")
                raise typer.Exit(EXIT_DAMAGED)
        for line in repair(site):
            console.print(f"done: {esc(line)}", soft_wrap=True)
        left = diagnose(site)
        for pr in left:
            console.print(f"[yellow]still[/]: {esc(pr.what)} ({esc(pr.fix)})", soft_wrap=True)
        if left:
            raise typer.Exit(EXIT_DAMAGED)


@site_app.command("set-model")
def site_set_model(
    name: Name,
    model: Annotated[Path, typer.Option("--model", "-m", help="The new model directory.")],
    sites_dir: SitesDir = None,
) -> None:
    """Point a site at another (e.g. retrained) model. The site must then be calibrated again."""
    with user_errors():
        from calibration.site_setup import set_model

        set_model(_store(sites_dir).site(name), model)
        console.print(f"site {name} now uses {esc(model)}; calibrate it again before monitoring")


@site_app.command("set-classifier")
def site_set_classifier(
    name: Name,
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
        from calibration.errors import SiteError
        from calibration.site_setup import remove_classifier, set_classifier

        site = _store(sites_dir).site(name)
        if remove:
            if classifier is not None or alarm_on:
                raise SiteError("--remove takes no --classifier or --alarm-on")
            remove_classifier(site)
            console.print(f"site {name} has no fault classifier now")
            return
        if classifier is None:
            raise SiteError("give the classifier with --classifier DIR (or --remove to detach one)")
        got = set_classifier(site, classifier, alarm_on)
        clf = got.classifier
        console.print(f"site {name} now uses the fault classifier {esc(classifier)} (classes: "
                      f"{esc(', '.join(clf.classes))})")
        alone = ", ".join(got.alarm_classes) if got.alarm_classes else "none (it names the fault of anomaly alarms)"
        console.print(f"alarms on a classifier hit alone: {esc(alone)}")
        fb = clf.fallbacks()
        if fb:
            console.print(f"[yellow]note[/]: the precision target was not reachable on validation for "
                          f"{esc(', '.join(fb))}; their thresholds are the best-F1 fallback")


# -- calibrate, recalibrate, schedule ---------------------------------------------------------------------------------
def device_arg(device: str | None) -> int | str | None:
    """--device: a PortAudio index when it is a number, else a device name."""
    return int(device) if device is not None and device.isdigit() else device


def _sources(from_: list[Path] | None, mic: bool, device: str | None, minutes: float, site, say) -> list[Path]:
    from anomaly.audio import find_audio
    from calibration.errors import CalibrationError
    from calibration.monitoring.mic import record_mic

    if bool(from_) == bool(mic):
        raise CalibrationError("give the audio with --from FILES/DIRS or record it with --mic (one of the two)")
    if from_:
        return find_audio(from_)
    dev = device_arg(device)
    path = site.new_recording_path()
    say(f"recording {minutes:g} min from {'the default sound card' if dev is None else f'device {esc(dev)}'} "
        f"into {esc(path)}")
    with progress() as bar:
        task = bar.add_task("recording", total=100, info="")

        def meter(frac, level, overflowed):
            warn = " OVERFLOW" if overflowed else ""
            bar.update(task, completed=round(100 * frac), info=f"level {level:6.1f} dBFS{warn}")

        record_mic(path, minutes, dev, on_block=meter)
    return [path]


def _run(kind: str, site_name, from_, mic, device, minutes, min_minutes, force, sites_dir, inject=False,
         validate_dir=None, keep_audio=False, accept_shift=False):
    from calibration.calibrate import CalibrationRequest, calibrate, recalibrate
    from calibration.certificate import print_certificate

    site = _store(sites_dir).site(site_name)
    site.config()
    files = _sources(from_, mic, device, minutes, site, console.print)
    req = CalibrationRequest(files=files, min_minutes=min_minutes, force=force, inject=inject,
                             validate_dir=validate_dir, keep_audio=keep_audio)
    with progress() as bar:
        task = bar.add_task("scoring", total=100, info="")
        cb = dict(on_progress=lambda f, name: bar.update(task, completed=round(100 * f), info=esc(name)),
                  say=lambda msg: bar.console.print(msg, markup=False))
        rec = calibrate(site, req, **cb) if kind == "calibrate" else recalibrate(site, req, accept_shift, **cb)
    print_certificate(rec, console)
    console.print(f"stored as {esc(site.calibrations_dir / (rec['id'] + '.json'))} (current)")


def _recalibrate_due(sites_dir, minutes, min_minutes, force, accept_shift) -> None:
    """Every due site from its configured source; one site's failure does not stop the others (exit 4 then)."""
    from anomaly.errors import HumwatchError
    from calibration.calibrate import due_sites

    store = _store(sites_dir)
    problems: list[tuple[str, str]] = []
    due = due_sites(store, problems=problems)
    failures = len(problems)
    for name, msg in problems:
        error_line(f"{name}: {msg}")
    for name, age in due:
        source = store.site(name).config().audio_source
        console.print(f"[bold]{name}[/]: " + ("never calibrated" if age is None else f"{age:.0f} days old"))
        if age is None or source is None:
            console.print("  skipped: " + ("calibrate it first" if age is None else
                                           "no audio source in site.toml (set source = a directory or 'mic')"))
            continue
        is_mic = source[0] == "mic"
        try:
            _run("recalibrate", name, None if is_mic else [Path(source[1])], is_mic, source[1] if is_mic else None,
                 minutes, min_minutes, force, sites_dir, accept_shift=accept_shift)
        except HumwatchError as e:
            failures += 1
            error_line(f"{name}: {e}")
    if failures:
        raise typer.Exit(EXIT_REFUSED)


def _recalibrate(site, due, from_, mic, device, minutes, min_minutes, force, accept_shift, sites_dir) -> None:
    from calibration.errors import SiteError

    if due == bool(site):
        raise SiteError("give --site NAME or --due (one of the two)")
    if site:
        _run("recalibrate", site, from_, mic, device, minutes, min_minutes, force, sites_dir,
             accept_shift=accept_shift)
    else:
        _recalibrate_due(sites_dir, minutes, min_minutes, force, accept_shift)


def _schedule(site: str, emit: str, out: Path, sites_dir) -> None:
    from calibration import schedule as sched

    store = _store(sites_dir)
    paths = sched.emit(store.site(site), store.root, emit, out)
    for p in paths:
        console.print(f"wrote {esc(p)}")
    if emit == "cron":
        console.print(f"install (after reading it): crontab -l | cat - {esc(shlex.quote(str(paths[0])))} | crontab -")
    else:
        console.print(f"install (after reading them): cp {esc(shlex.join(map(str, paths)))} /etc/systemd/system/ && "
                      f"systemctl enable --now {esc(paths[1].name)}")


@site_app.command("calibrate", help=CALIBRATE_HELP)
def site_calibrate(name: Name, from_: From = None, mic: Mic = False, device: Device = None, minutes: Minutes = 45.0,
                   min_minutes: MinMinutes = DEFAULT_MIN_MINUTES, force: Force = False,
                   inject_faults: InjectFaults = False, validate_with: ValidateWith = None,
                   keep_audio: KeepAudio = False, sites_dir: SitesDir = None) -> None:
    with user_errors():
        _run("calibrate", name, from_, mic, device, minutes, min_minutes, force, sites_dir, inject_faults,
             validate_with, keep_audio)


@site_app.command("recalibrate", help=RECALIBRATE_HELP)
def site_recalibrate(name: Annotated[str | None, typer.Argument(help="Site name (or --due).")] = None, due: Due = False,
                     from_: From = None, mic: Mic = False, device: Device = None, minutes: Minutes = 45.0,
                     min_minutes: MinMinutes = DEFAULT_MIN_MINUTES, force: Force = False,
                     accept_shift: AcceptShift = False, sites_dir: SitesDir = None) -> None:
    with user_errors():
        _recalibrate(name, due, from_, mic, device, minutes, min_minutes, force, accept_shift, sites_dir)


@site_app.command("schedule", help=SCHEDULE_HELP)
def site_schedule(name: Name, emit: Emit = "cron", out: ScheduleOut = Path("."), sites_dir: SitesDir = None) -> None:
    with user_errors():
        _schedule(name, emit, out, sites_dir)


# -- the earlier root spellings (hidden aliases) ----------------------------------------------------------------------
@app.command("calibrate", hidden=True, help=CALIBRATE_HELP)
def calibrate_alias(site: SiteOption, from_: From = None, mic: Mic = False, device: Device = None,
                    minutes: Minutes = 45.0, min_minutes: MinMinutes = DEFAULT_MIN_MINUTES, force: Force = False,
                    inject_faults: InjectFaults = False, validate_with: ValidateWith = None,
                    keep_audio: KeepAudio = False, sites_dir: SitesDir = None) -> None:
    site_calibrate(site, from_, mic, device, minutes, min_minutes, force, inject_faults, validate_with, keep_audio,
                   sites_dir)


@app.command("recalibrate", hidden=True, help=RECALIBRATE_HELP)
def recalibrate_alias(site: Annotated[str | None, typer.Option("--site", "-s", help="Site name.")] = None,
                      due: Due = False, from_: From = None, mic: Mic = False, device: Device = None,
                      minutes: Minutes = 45.0, min_minutes: MinMinutes = DEFAULT_MIN_MINUTES, force: Force = False,
                      accept_shift: AcceptShift = False, sites_dir: SitesDir = None) -> None:
    site_recalibrate(site, due, from_, mic, device, minutes, min_minutes, force, accept_shift, sites_dir)


@app.command("schedule", hidden=True, help=SCHEDULE_HELP)
def schedule_alias(site: SiteOption, emit: Emit = "cron", out: ScheduleOut = Path("."),
                   sites_dir: SitesDir = None) -> None:
    site_schedule(site, emit, out, sites_dir)
