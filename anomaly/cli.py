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
        from anomaly.features import DEFAULT_PARAMS, PatchStream, mel_centers

        t = Table("file", "rate", "ch", "seconds", "patches", "level dBFS", "clipped", "loudest mel band")
        for f in find_audio(files):
            i = audio_info(f)
            stats, stream, n, energy, sumsq, count = ReadStats(), PatchStream(DEFAULT_PARAMS), 0, 0.0, 0.0, 0
            for block in iter_blocks(f, min_samples=DEFAULT_PARAMS.min_samples, stats=stats):
                sumsq += float(np.square(block, dtype=np.float64).sum())
                count += block.size
                p = stream.push(block)
                n += len(p)
                if len(p):
                    energy = energy + np.exp(p).sum(axis=(0, 1))
            rms = np.sqrt(sumsq / max(1, count))
            band = f"{mel_centers(DEFAULT_PARAMS)[int(np.argmax(energy))]:.0f} Hz" if n else "-"
            t.add_row(str(f), str(i.sample_rate), str(i.channels), f"{i.duration_s:.1f}", str(n),
                      f"{20 * np.log10(rms + 1e-12):.1f}", f"{stats.clipped_share:.2%}", band)
        console.print(t)


def _parse_widths(text: str) -> tuple[int, ...]:
    from anomaly.errors import DataError

    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise DataError(f"--widths must be comma-separated integers like 8,16,32,32, got {text!r}") from None


def _read_recordings(files, params, what: str = "reading"):
    from anomaly.audio import file_log_mel

    recs = []
    with progress(transient=True) as bar:
        task = bar.add_task(what, total=len(files), info="")
        for f in files:
            bar.update(task, info=f.name)
            recs.append(file_log_mel(f, params))
            bar.advance(task)
    return recs


@app.command(rich_help_panel="Model")
def train(
    normal: Annotated[list[Path], typer.Option("--normal", "-n", help="Normal recordings: files or directories "
                                               "(repeat the option for several).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (replaced atomically).")],
    detector: Annotated[str, typer.Option(help="ae (conv autoencoder) | ocsvm | iforest")] = "ae",
    embedding: Annotated[str, typer.Option(help="For ocsvm/iforest: stats (log-mel statistics) | ae (bottleneck)")]
    = "stats",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = 40,
    seed: Annotated[int, typer.Option(help="Same seed and data, same model.")] = 0,
    widths: Annotated[str, typer.Option(help="Encoder conv widths, 3-4 comma-separated.")] = "8,16,32,32",
    bottleneck: Annotated[int, typer.Option(help="Latent size (8-128; 16-64 recommended).")] = 32,
    augment: Annotated[bool, typer.Option(help="Time shift, gain, noise and SpecAugment masks.")] = True,
    samples_per_epoch: Annotated[int, typer.Option(min=64, help="Random crops drawn per epoch.")] = 2048,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for training.")] = 2,
) -> None:
    """Train a detector on normal audio only.

    Example: humwatch train --normal data/pump/train --out models/pump
    """
    with user_errors():
        from anomaly.audio import find_audio
        from anomaly.errors import DataError
        from anomaly.features import DEFAULT_PARAMS
        from anomaly.model import ArchConfig
        from anomaly.score import DETECTORS, EMBEDDINGS, fingerprint_files, fit_detector
        from anomaly.train import TrainConfig

        if detector not in DETECTORS:
            raise DataError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        if embedding not in EMBEDDINGS:
            raise DataError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
        try:
            arch = ArchConfig(widths=_parse_widths(widths), bottleneck=bottleneck)
        except ValueError as e:
            raise DataError(str(e)) from None
        files = find_audio(normal)
        recs = _read_recordings(files, DEFAULT_PARAMS)
        minutes = sum(r.shape[0] for r in recs) * DEFAULT_PARAMS.hop_length / DEFAULT_PARAMS.sample_rate / 60
        console.print(f"{len(files)} normal recordings, {minutes:.1f} min")
        cfg = TrainConfig(epochs=epochs, seed=seed, samples_per_epoch=samples_per_epoch, threads=threads)
        if not augment:
            cfg = cfg.without_augmentation()
        with progress() as bar:
            task = bar.add_task("training", total=epochs, info="")

            def on_epoch(ep, tl, vl):
                bar.update(task, completed=ep, info=f"loss {tl:.4f} val {vl:.4f}")

            det = fit_detector(detector, recs, DEFAULT_PARAMS, arch, cfg, embedding, on_epoch=on_epoch)
        det.save(out, extra={"training_data": fingerprint_files(files)})
        _print_model_summary(det, out)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _print_model_summary(det, out) -> None:
    from anomaly.model import count_macs, count_params
    from anomaly.score import AutoencoderDetector

    console.print(f"saved {det.kind} model to {out}")
    if isinstance(det, AutoencoderDetector):
        h = det.history_
        console.print(f"  {count_params(det.model_):,} parameters, {count_macs(det.model_) / 1e6:.2f} M MACs/patch; "
                      f"best epoch {h['best_epoch']} of {h['epochs_run']} ({h['split']}), "
                      f"val loss {h['best_val_loss']:.4f}, {h['train_seconds']:.0f} s")
    console.print(f"  provisional threshold {det.threshold_:.4g} (mean + 4σ of validation scores; "
                  f"a site calibration replaces it)")


Reduce = Annotated[str, typer.Option(help="Clip score: mean | max of the patch scores.")]
Threads = Annotated[int, typer.Option(min=1, help="CPU threads (1 is faster on a busy machine).")]


def _scoring_model(model: Path, reduce: str, threads: int):
    """Check --reduce, set the thread count and load the model (shared by score and evaluate)."""
    import torch

    from anomaly.errors import DataError
    from anomaly.score import load_detector

    if reduce not in ("mean", "max"):
        raise DataError(f"--reduce must be mean or max, got {reduce!r}")
    torch.set_num_threads(threads)
    return load_detector(model)


def _clip(scores, reduce: str) -> float:
    return float(scores.mean() if reduce == "mean" else scores.max())


@app.command(rich_help_panel="Model")
def score(
    files: Annotated[list[Path], typer.Argument(help="WAV/FLAC files or directories to score.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch train`.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="scores.csv or scores.parquet (per patch; "
                                             "per-band errors only in Parquet).")] = None,
    reduce: Reduce = "mean",
    threads: Threads = 2,
) -> None:
    """Score recordings patch by patch (0.96 s each) with a trained model."""
    with user_errors():
        import numpy as np
        import pandas as pd
        from rich.table import Table

        from anomaly import atomic
        from anomaly.audio import find_audio
        from anomaly.errors import DataError
        from anomaly.score import score_file

        if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
            raise DataError(f"--out must end in .csv or .parquet, got {out.name}")
        det = _scoring_model(model, reduce, threads)
        paths = find_audio(files)
        want_bands = out is not None and out.suffix.lower() == ".parquet"
        frames, table = [], Table("file", "patches", f"clip score ({reduce})", "max", "over threshold")
        with progress(transient=True) as bar:
            task = bar.add_task("scoring", total=len(paths), info="")
            for p in paths:
                bar.update(task, info=p.name)
                starts, sc, bands = score_file(det, p, bands=want_bands)
                df = pd.DataFrame({"file": str(p), "start_s": np.round(starts, 3), "score": sc})
                if bands is not None:
                    df = pd.concat([df, pd.DataFrame(bands, columns=[f"band_{i:02d}" for i in range(bands.shape[1])])],
                                   axis=1)
                frames.append(df)
                table.add_row(str(p), str(len(sc)), f"{_clip(sc, reduce):.4g}", f"{sc.max():.4g}",
                              f"{int((sc > det.threshold_).sum())}")
                bar.advance(task)
        console.print(table)
        console.print(f"threshold {det.threshold_:.4g} ({'site' if 'site' in det.meta_ else 'provisional'})")
        if out is not None:
            allrows = pd.concat(frames, ignore_index=True)
            with atomic.atomic_path(out, suffix=out.suffix) as tmp:
                if out.suffix.lower() == ".csv":
                    allrows.to_csv(tmp, index=False)
                else:
                    allrows.to_parquet(tmp, index=False)
            console.print(f"wrote {len(allrows)} patch scores to {out}")


@app.command(rich_help_panel="Model")
def evaluate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch train`.")],
    test: Annotated[Path, typer.Option("--test", "-t", help="Directory of normal_*/anomaly_* recordings "
                                       "(searched recursively; machine = parent dir, or grandparent of test/).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON here.")] = None,
    reduce: Reduce = "mean",
    threads: Threads = 2,
) -> None:
    """AUC and pAUC (p = 0.1, DCASE definition) on labelled recordings, per machine."""
    with user_errors():
        import json

        from rich.table import Table

        from anomaly import atomic
        from anomaly.evaluate import evaluate as run_eval
        from anomaly.score import score_file

        det = _scoring_model(model, reduce, threads)

        def clip(p):
            return _clip(score_file(det, p)[1], reduce)

        with progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=None, info="")
            ev = run_eval(clip, test, on_file=lambda i, n: bar.update(task, completed=i, total=n))
        m = ev.metrics()
        t = Table("machine", "normal", "anomaly", "AUC", "pAUC (0.1)")
        for name, r in m["machines"].items():
            t.add_row(name, str(r["n_normal"]), str(r["n_anomaly"]), _fmt(r["auc"]), _fmt(r["pauc"]))
        t.add_row("[bold]all", str(sum(r["n_normal"] for r in m["machines"].values())),
                  str(sum(r["n_anomaly"] for r in m["machines"].values())), f"[bold]{m['auc']:.3f}",
                  f"[bold]{m['pauc']:.3f}")
        console.print(t)
        if json_out is not None:
            m["model"] = str(model)
            m["reduce"] = reduce
            atomic.write_text(json_out, json.dumps(m, indent=2) + "\n")
            console.print(f"wrote {json_out}")

