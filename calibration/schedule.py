"""Monthly recalibration as a cron line or a systemd service + timer. Files are written, never installed."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from anomaly.atomic import write_text
from calibration.errors import SiteError
from calibration.store import Site

KINDS = ("cron", "systemd")


def _command(site: Site, sites_dir: Path) -> list[str]:
    exe = Path(sys.executable).parent / "humwatch"  # the console script of the environment running now
    return [str(exe), "site", "recalibrate", site.name, "--sites-dir", str(sites_dir.resolve())]


def emit(site: Site, sites_dir: Path, kind: str, out: Path) -> list[Path]:
    """Write the schedule files (``kind``: one of ``KINDS``) for ``site`` into ``out`` and return their paths."""
    source = site.config().audio_source
    cmd = _command(site, sites_dir)
    if source is None:  # the technician must fill in where recent audio is
        cmd += ["--from", "/path/to/recent/normal/audio"]
    elif source[0] == "mic":
        cmd += ["--mic"] + (["--device", source[1]] if source[1] is not None else [])
    else:
        cmd += ["--from", source[1]]
    log = (site.dir / "recalibration.log").resolve()
    if kind == "cron":
        # Day 1 of each month, 03:00: monthly matches the default 30-day interval.
        line = f"0 3 1 * * {shlex.join(cmd)} >> {shlex.quote(str(log))} 2>&1\n"
        p = write_text(out / f"humwatch-{site.name}.cron", f"# humwatch: monthly recalibration of site {site.name}\n"
                       "# install with: crontab -l | cat - THIS_FILE | crontab -\n" + line)
        return [p]
    if kind == "systemd":
        unit = f"humwatch-recalibrate-{site.name}"
        service = (f"[Unit]\nDescription=humwatch monthly recalibration of site {site.name}\n\n[Service]\n"
                   f"Type=oneshot\nExecStart={shlex.join(cmd)}\nStandardOutput=append:{log}\n"
                   f"StandardError=append:{log}\n")
        timer = (f"[Unit]\nDescription=Monthly humwatch recalibration of site {site.name}\n\n[Timer]\n"
                 "OnCalendar=monthly\nPersistent=true\nRandomizedDelaySec=1h\n\n[Install]\n"
                 "WantedBy=timers.target\n")
        return [write_text(out / f"{unit}.service", service), write_text(out / f"{unit}.timer", timer)]
    raise SiteError(f"--emit must be {' or '.join(KINDS)}, got {kind!r}")
