"""``humwatch`` commands of the anomaly package: simulate, info, train, score, evaluate.

Heavy modules (torch, the model) are imported inside the commands so that ``humwatch --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anomaly.cli_util import console, progress, user_errors

app = typer.Typer(no_args_is_help=True)


@app.command(rich_help_panel="Data")
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.flac or .wav), 16 kHz mono 16-bit.")],
    machine: Annotated[str, typer.Option(help="pump | compressor | fan | motor")] = "pump",
    fault: Annotated[
        str,
        typer.Option(help="none | cavitation | bearing-outer | bearing-inner | compressor-valve-leak | electrical-arc"),
    ] = "none",
    severity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 = healthy, 1 = obvious.")] = 0.5,
    minutes: Annotated[float, typer.Option(min=0.0, help="Length of the recording.")] = 1.0,
    background: Annotated[str, typer.Option(help="quiet | factory | hvac-cycling")] = "quiet",
    seed: Annotated[int, typer.Option(help="Same seed, same audio.")] = 0,
) -> None:
    """Write a synthetic machine recording (physically motivated; see docs/simulator.md).

    Example: humwatch simulate --machine pump --fault cavitation --minutes 1 --seed 1 --out x.flac
    """
    with user_errors():
        from anomaly.errors import DataError
        from anomaly.simulate import SimConfig, write_audio

        if minutes <= 0:
            raise DataError(f"--minutes must be > 0, got {minutes}")
        cfg = SimConfig(machine=machine, fault=fault, severity=severity if fault != "none" else 0.0,
                        background=background, seed=seed)
        with progress() as bar:
            task = bar.add_task("simulating", total=100, info=str(out))
            write_audio(out, cfg, minutes, progress=lambda f: bar.update(task, completed=round(100 * f)))
        console.print(f"wrote {out} ({minutes:g} min, {machine}, fault={fault}, severity={cfg.severity:g}, "
                      f"background={background}, seed={seed})")


@app.command(rich_help_panel="Data")
def info(files: Annotated[list[Path], typer.Argument(help="WAV/FLAC files or directories.")]) -> None:
    """Show each file's format and a summary of its log-mel features (what the models will see)."""
    with user_errors():
        import numpy as np
        from rich.table import Table

        from anomaly.audio import ReadStats, audio_info, find_audio, iter_blocks
        from anomaly.features import DEFAULT_PARAMS, PatchStream

        t = Table("file", "rate", "ch", "seconds", "patches", "level dBFS", "clipped", "loudest mel band")
        for f in find_audio(files):
            i = audio_info(f)
            stats, stream, n, energy, sumsq = ReadStats(), PatchStream(DEFAULT_PARAMS), 0, 0.0, 0.0
            for block in iter_blocks(f, min_samples=DEFAULT_PARAMS.min_samples, stats=stats):
                sumsq += float(np.square(block, dtype=np.float64).sum())
                p = stream.push(block)
                n += len(p)
                if len(p):
                    energy = energy + np.exp(p).sum(axis=(0, 1))
            rms = np.sqrt(sumsq / max(1, stats.samples / i.channels))
            from anomaly.features import mel_centers

            band = f"{mel_centers(DEFAULT_PARAMS)[int(np.argmax(energy))]:.0f} Hz" if n else "-"
            t.add_row(str(f), str(i.sample_rate), str(i.channels), f"{i.duration_s:.1f}", str(n),
                      f"{20 * np.log10(rms + 1e-12):.1f}", f"{stats.clipped_share:.2%}", band)
        console.print(t)
