"""Monthly recalibration as a cron line or a systemd service + timer. Files are written, never installed.

Every value that reaches a file (the site's audio source, the store's path, the program's path, the log's path) is
checked to be one line without control characters and quoted for where it goes: the cron command with shell quoting
and ``%`` escaped (cron turns a bare ``%`` into a newline), the unit's ``ExecStart`` with systemd's double quotes and
``%%`` / ``$$`` (specifiers and variables), so no setting can add a line or a command.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from anomaly.atomic import write_text
from calibration.errors import SiteError
from calibration.store import Site

KINDS = ("cron", "systemd")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _checked(value: str, what: str) -> str:
    """``value`` if it can go into a cron or unit file (one line, no control characters), else SiteError."""
    bad = _UNSAFE.search(value)
    if bad:
        raise SiteError(f"{what} contains a control character ({bad.group()!r}): it cannot go into a schedule file")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SiteError(f"{what} is not valid UTF-8 text: it cannot go into a schedule file") from None
    return value


def cron_command(args: list[str]) -> str:
    """A command for a crontab line: shell-quoted, ``%`` escaped (cron makes a bare ``%`` a newline)."""
    return shlex.join(args).replace("%", "\\%")


def systemd_quote(arg: str) -> str:
    """One ``ExecStart=`` argument: double-quoted with C escapes, ``%`` and ``$`` doubled (no specifier or variable
    expands)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def _command(site: Site, sites_dir: Path) -> list[str]:
    exe = Path(sys.executable).parent / "humwatch"  # the console script of the environment running now
    return [str(exe), "site", "recalibrate", site.name, "--sites-dir", str(sites_dir.resolve())]


def emit(site: Site, sites_dir: Path, kind: str, out: Path) -> list[Path]:
    """Write the schedule files (``kind``: one of ``KINDS``) for ``site`` into ``out`` and return their paths."""
    if kind not in KINDS:
        raise SiteError(f"--emit must be {' or '.join(KINDS)}, got {kind!r}")
    source = site.config().audio_source
    cmd = _command(site, sites_dir)
    if source is None:  # the technician must fill in where recent audio is
        cmd += ["--from", "/path/to/recent/normal/audio"]
    elif source[0] == "mic":
        cmd += ["--mic"] + (["--device", source[1]] if source[1] is not None else [])
    else:
        cmd += ["--from", source[1]]
    cmd = [_checked(a, "the audio source" if i >= 6 else "the path of humwatch or of the site store")
           for i, a in enumerate(cmd)]
    log = _checked(str((site.dir / "recalibration.log").resolve()), "the site's path")
    if kind == "cron":
        # Day 1 of each month, 03:00: monthly matches the default 30-day interval.
        line = f"0 3 1 * * {cron_command(cmd)} >> {cron_command([log])} 2>&1\n"
        p = write_text(out / f"humwatch-{site.name}.cron", f"# humwatch: monthly recalibration of site {site.name}\n"
                       "# install with: crontab -l | cat - THIS_FILE | crontab -\n" + line)
        return [p]
    if kind == "systemd":
        unit = f"humwatch-recalibrate-{site.name}"
        if re.search(r"\s", log):
            raise SiteError(f"the site's path {log!r} contains white space, which a systemd unit cannot take in "
                            "StandardOutput=append:; use --emit cron, or a store path without spaces")
        out_log = log.replace("%", "%%")
        service = (f"[Unit]\nDescription=humwatch monthly recalibration of site {site.name}\n\n[Service]\n"
                   f"Type=oneshot\nExecStart={' '.join(systemd_quote(a) for a in cmd)}\n"
                   f"StandardOutput=append:{out_log}\nStandardError=append:{out_log}\n")
        timer = (f"[Unit]\nDescription=Monthly humwatch recalibration of site {site.name}\n\n[Timer]\n"
                 "OnCalendar=monthly\nPersistent=true\nRandomizedDelaySec=1h\n\n[Install]\n"
                 "WantedBy=timers.target\n")
        return [write_text(out / f"{unit}.service", service), write_text(out / f"{unit}.timer", timer)]
