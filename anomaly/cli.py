"""``humwatch`` commands of the anomaly package: simulate, info, train, score, evaluate.

Heavy modules (torch, the model) are imported inside the commands so that ``humwatch --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from anomaly.cli_util import console, esc, progress, user_errors
from anomaly.decision import DEFAULT_K, describe_threshold
from anomaly.errors import shown

app = typer.Typer(no_args_is_help=True)


@app.command(rich_help_panel="Data")
def simulate(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (.flac or .wav), 16 kHz mono 16-bit.")]
    = None,
    machine: Annotated[str, typer.Option(help="pump | compressor | fan | motor")] = "pump",
    fault: Annotated[
        str,
        typer.Option(help="none | cavitation | bearing-outer | bearing-inner | compressor-valve-leak | electrical-arc"),
    ] = "none",
    severity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 = healthy, 1 = obvious.")] = 0.5,
    minutes: Annotated[float, typer.Option(min=0.0, help="Length of the recording.")] = 1.0,
    background: Annotated[str, typer.Option(help="quiet | factory | hvac-cycling")] = "quiet",
    seed: Annotated[int, typer.Option(help="Same seed, same audio.")] = 0,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="Write a labelled set instead: one folder per "
                                                 "class of 10 s clips (machines and backgrounds varied).")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="With --dataset: clips per class.")] = 50,
    severity_range: Annotated[tuple[float, float], typer.Option("--severity-range", help="With --dataset: fault "
                                                                "severity uniform in LO HI.")] = (0.3, 1.0),
) -> None:
    """Write a synthetic machine recording, or (--dataset) a labelled clip set (see docs/simulator.md).

    Example: humwatch simulate --machine pump --fault cavitation --minutes 1 --seed 1 --out x.flac

    Example: humwatch simulate --dataset data/faults --per-class 50 --severity-range 0.3 1.0
    """
    with user_errors():
        from anomaly.errors import DataError

        if dataset is not None:
            if out is not None:
                raise DataError("give either --out (one recording) or --dataset (a labelled set), not both")
            from anomaly.dataset import SIM_CLASSES, write_sim_dataset

            with progress() as bar:
                task = bar.add_task("simulating", total=per_class * len(SIM_CLASSES), info=str(dataset))
                write_sim_dataset(dataset, per_class, seed, severity_range,
                                  progress=lambda i, n: bar.update(task, completed=i))
            console.print(f"wrote {per_class * len(SIM_CLASSES)} clips of 10 s to {esc(dataset)} ({per_class} per "
                          f"class: {', '.join(SIM_CLASSES)}; severity {severity_range[0]:g}-{severity_range[1]:g}, "
                          f"seed={seed}; details in simulation.csv)")
            return
        if out is None:
            raise DataError("give --out FILE (one recording) or --dataset DIR (a labelled set)")
        from anomaly.simulate import SimConfig, write_audio

        if minutes <= 0:
            raise DataError(f"--minutes must be > 0, got {minutes}")
        cfg = SimConfig(machine=machine, fault=fault, severity=severity if fault != "none" else 0.0,
                        background=background, seed=seed)
        with progress() as bar:
            task = bar.add_task("simulating", total=100, info=str(out))
            write_audio(out, cfg, minutes, progress=lambda f: bar.update(task, completed=round(100 * f)))
        console.print(f"wrote {esc(out)} ({minutes:g} min, {esc(machine)}, fault={esc(fault)}, "
                      f"severity={cfg.severity:g}, background={esc(background)}, seed={seed})")


@app.command(rich_help_panel="Data")
def info(files: Annotated[list[Path], typer.Argument(help="WAV/FLAC files or directories.")]) -> None:
    """Show each file's format and a summary of its log-mel features (what the models will see)."""
    with user_errors():
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
            t.add_row(esc(f), str(i.sample_rate), str(i.channels), f"{i.duration_s:.1f}", str(n),
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


YamnetPath = Annotated[Path | None, typer.Option(
    "--yamnet", help="With --embeddings yamnet: your YAMNet model, a .tflite file or a SavedModel directory taking "
    "log-mel patches of 96 frames x 64 bands (nothing is downloaded; how to build it from the published weights: "
    "docs/classifier.md, 'YAMNet embeddings'). Its path and sha256 are recorded; it must stay there.")]


def _yamnet_option(wanted: bool, path: Path | None, threads: int):
    """Check the --embeddings yamnet / --yamnet pair and open the model (``None`` when not wanted)."""
    from anomaly.errors import DataError

    if wanted and path is None:
        raise DataError("--embeddings yamnet needs --yamnet PATH: a YAMNet .tflite file or SavedModel directory you "
                        "provide (see docs/classifier.md, 'YAMNet embeddings')")
    if not wanted:
        if path is not None:
            raise DataError("--yamnet is only used with --embeddings yamnet")
        return None
    from anomaly.yamnet import load_embedder

    return load_embedder(path, threads=threads)


@app.command(rich_help_panel="Model")
def train(
    normal: Annotated[list[Path], typer.Option("--normal", "-n", help="Normal recordings: files or directories "
                                               "(repeat the option for several).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (replaced atomically).")],
    detector: Annotated[str, typer.Option(help="ae (conv autoencoder) | ocsvm | iforest")] = "ae",
    embedding: Annotated[str, typer.Option("--embeddings", "-e", help="For ocsvm/iforest: stats (log-mel "
                                           "statistics) | ae (bottleneck) | yamnet (YAMNet's 1024-d embeddings, "
                                           "needs --yamnet)")] = "stats",
    yamnet: YamnetPath = None,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = 40,
    seed: Annotated[int, typer.Option(help="Same seed and data, same model.")] = 0,
    widths: Annotated[str, typer.Option(help="Encoder conv widths, 3-4 comma-separated.")] = "8,16,32,32",
    bottleneck: Annotated[int, typer.Option(help="Latent size (8-128; 16-64 recommended).")] = 32,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Turn off time shift, gain, noise and "
                                             "SpecAugment masks.")] = False,
    samples_per_epoch: Annotated[int, typer.Option(min=64, help="Random crops drawn per epoch.")] = 2048,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for training.")] = 2,
    score: Annotated[str | None, typer.Option(help="ae: mse (mean squared error; the default) | gaussian "
                                              "(Mahalanobis distance of the log per-band errors from their "
                                              "distribution on normal audio: two-sided, also flags sounds that got "
                                              "weaker; see docs/model.md).")] = None,
    mask_frames: Annotated[int, typer.Option(min=0, help="ae: 0 = reconstruct the patch; 24 = interpolate each "
                                             "hidden 24-frame block from the rest (4 passes per patch; best with "
                                             "--score gaussian, see docs/benchmarks.md).")] = 0,
    embedding_alias: Annotated[str | None, typer.Option("--embedding", hidden=True)] = None,
    states: Annotated[Path | None, typer.Option("--states", help="ae: CSV 'file,state' giving each --normal "
                                                "recording its operating state (speed, load setting...): every "
                                                "state gets the same share of training (docs/model.md).")] = None,
) -> None:
    """Train a detector on normal audio only.

    Example: humwatch train --normal data/pump/train --out models/pump

    Example: humwatch train --normal data/car/train --states data/car/states.csv --out models/car
    """
    with user_errors():
        from anomaly.audio import find_audio
        from anomaly.detectors import check_choice, fingerprint_files, fit_detector
        from anomaly.errors import DataError
        from anomaly.features import DEFAULT_PARAMS
        from anomaly.model import ArchConfig
        from anomaly.train import TrainConfig

        embedding = embedding_alias or embedding  # the singular spelling still works
        check_choice(detector, embedding)  # before reading any audio
        if embedding == "yamnet" and detector == "ae":
            raise DataError("--embeddings yamnet is for --detector ocsvm or iforest (the autoencoder learns its own "
                            "features)")
        embedder = _yamnet_option(embedding == "yamnet", yamnet, threads)
        try:
            arch = ArchConfig(widths=_parse_widths(widths), bottleneck=bottleneck)
        except ValueError as e:
            raise DataError(str(e)) from None
        if detector != "ae" and (score is not None or mask_frames):
            raise DataError("--score and --mask-frames are options of the autoencoder (--detector ae)")
        if mask_frames and DEFAULT_PARAMS.patch_frames % mask_frames:
            raise DataError(f"--mask-frames must divide the patch length {DEFAULT_PARAMS.patch_frames} (e.g. 24, 32, "
                            f"48), got {mask_frames}")
        cfg = TrainConfig(epochs=epochs, seed=seed, samples_per_epoch=samples_per_epoch, threads=threads,
                          score=score or TrainConfig().score, mask_frames=mask_frames)
        if states is not None and detector != "ae":
            raise DataError("--states is an option of the autoencoder (--detector ae)")
        files = find_audio(normal)
        labels = None
        if states is not None:
            from anomaly.states import read_states

            labels = read_states(states, files)  # before reading any audio
        recs = _read_recordings(files, DEFAULT_PARAMS)
        minutes = sum(r.shape[0] for r in recs) * DEFAULT_PARAMS.hop_length / DEFAULT_PARAMS.sample_rate / 60
        console.print(f"{len(files)} normal recordings, {minutes:.1f} min"
                      + (f", {len(set(labels))} operating states" if labels else ""))
        if no_augment:
            cfg = cfg.without_augmentation()
        with progress() as bar:
            task = bar.add_task("training", total=epochs, info="")

            def on_epoch(ep, tl, vl):
                bar.update(task, completed=ep, info=f"loss {tl:.4f} val {vl:.4f}")

            det = fit_detector(detector, recs, DEFAULT_PARAMS, arch, cfg, embedding, on_epoch=on_epoch,
                               yamnet=embedder, states=labels)
        det.save(out, extra={"training_data": fingerprint_files(files)})
        _print_model_summary(det, out)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _print_model_summary(det, out) -> None:
    from anomaly.detectors import AutoencoderDetector
    from anomaly.model import count_macs, count_params
    from anomaly.train import stopping_advice

    console.print(f"saved {det.kind} model to {esc(out)}")
    if getattr(det, "yamnet", None) is not None:
        console.print(f"  on YAMNet embeddings of {esc(det.yamnet.path)} (sha256 {det.yamnet.sha256[:12]}; it must "
                      "stay there, unchanged, for the model to load)")
    if isinstance(det, AutoencoderDetector):
        h = det.history_
        passes = det.forward_passes()
        console.print(f"  {count_params(det.model_):,} parameters, {passes * count_macs(det.model_) / 1e6:.2f} M "
                      f"MACs/patch{f' ({passes} passes)' if passes > 1 else ''}; "
                      f"best epoch {h['best_epoch']} of {h['epochs_run']} ({h['split']}), "
                      f"val loss {h['best_val_loss']:.4f}, {h['train_seconds']:.0f} s")
        advice = stopping_advice(h, det.train_config.epochs, det.train_config.patience)
        if advice:
            console.print(f"  {advice}")
    st = getattr(det, "states_", None)
    if st:
        console.print(f"  {st['n_states']} operating states, each given the same share of training: "
                      + ", ".join(f"{k} ({v})" for k, v in st["counts"].items()), markup=False)
    console.print(f"  provisional threshold {det.threshold_:.4g} ({describe_threshold(DEFAULT_K)} of validation "
                  "scores; a site calibration replaces it)")


Reduce = Annotated[str, typer.Option(help="Clip score: mean | max of the patch scores.")]
Threads = Annotated[int, typer.Option(min=1, help="CPU threads (1 is faster on a busy machine).")]


def _scoring_model(model: Path, reduce: str, threads: int):
    """Check --reduce, set the thread count and load the model (shared by score and evaluate)."""
    import torch

    from anomaly.detectors import load_detector
    from anomaly.errors import DataError

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
        import pandas as pd

        from anomaly import atomic
        from anomaly.audio import find_audio
        from anomaly.detectors import score_file
        from anomaly.errors import DataError

        if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
            raise DataError(f"--out must end in .csv or .parquet, got {out.name}")
        det = _scoring_model(model, reduce, threads)
        paths = find_audio(files)
        want_bands = out is not None and out.suffix.lower() == ".parquet"
        frames, table = [], Table("file", "patches", f"clip score ({reduce})", "max", "over threshold")
        with progress(transient=True) as bar:
            task = bar.add_task("scoring", total=len(paths), info="")
            for p in paths:
                bar.update(task, info=esc(p.name))
                starts, sc, bands = score_file(det, p, bands=want_bands)
                df = pd.DataFrame({"file": shown(p), "start_s": np.round(starts, 3), "score": sc})
                if bands is not None:
                    df = pd.concat([df, pd.DataFrame(bands, columns=[f"band_{i:02d}" for i in range(bands.shape[1])])],
                                   axis=1)
                frames.append(df)
                table.add_row(esc(p), str(len(sc)), f"{_clip(sc, reduce):.4g}", f"{sc.max():.4g}",
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
            console.print(f"wrote {len(allrows)} patch scores to {esc(out)}")


@app.command(rich_help_panel="Model")
def evaluate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch train`.")],
    test: Annotated[Path, typer.Option("--test", "-t", help="Directory of normal_*/anomaly_* recordings "
                                       "(searched recursively; machine = parent dir, or grandparent of test/).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON here.")] = None,
    reduce: Reduce = "mean",
    threads: Threads = 2,
) -> None:
    """AUC and pAUC on labelled recordings, per machine (pAUC as the DCASE evaluator: standardised, max FPR 0.1,
    chance 0.5)."""
    with user_errors():
        from anomaly import atomic
        from anomaly.detectors import score_file
        from anomaly.evaluate import evaluate as run_eval

        det = _scoring_model(model, reduce, threads)

        def clip(p):
            return _clip(score_file(det, p)[1], reduce)

        with progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=None, info="")
            ev = run_eval(clip, test, on_file=lambda i, n: bar.update(task, completed=i, total=n))
        m = ev.metrics()
        ch = m["chance"]
        p = f"{m['max_fpr']:g}"
        t = Table("machine", "normal", "anomaly", f"AUC (chance {ch['auc']:g})",
                  f"pAUC p={p} (chance {ch['pauc']:g})",
                  f"raw partial area (chance {ch['pauc_raw']:g})")
        for name, r in m["machines"].items():
            t.add_row(esc(name), str(r["n_normal"]), str(r["n_anomaly"]), _fmt(r["auc"]), _fmt(r["pauc"]),
                      _fmt(r["pauc_raw"]))
        t.add_row("[bold]all", str(sum(r["n_normal"] for r in m["machines"].values())),
                  str(sum(r["n_anomaly"] for r in m["machines"].values())), f"[bold]{_fmt(m['auc'])}",
                  f"[bold]{_fmt(m['pauc'])}", _fmt(m["pauc_raw"]))
        console.print(t)
        console.print(f"chance levels: AUC {ch['auc']:g} and pAUC {ch['pauc']:g} are what scores with no information "
                      "give; 1.0 is perfect.")
        console.print(f"pAUC: {m['definitions']['pauc']}; raw partial area: {m['definitions']['pauc_raw']}",
                      markup=False)
        if json_out is not None:
            m["model"] = str(model)
            m["reduce"] = reduce
            atomic.write_text(json_out, json.dumps(m, indent=2) + "\n")
            console.print(f"wrote {esc(json_out)}")


# ----------------------------------------------------------------------------------------------------------------------
# classify: which fault (docs/classifier.md)

classify_app = typer.Typer(no_args_is_help=True, help="Fault classifier: which condition(s) a clip shows.")


def _labelled_recordings(data: Path, params, what: str):
    from anomaly.dataset import load_dataset

    ds = load_dataset(data)
    return ds, _read_recordings(ds.files, params, what)


@classify_app.command("train")
def classify_train(
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled clips: one folder per class, or labels.csv "
                                       "(file,labels separated by ';').")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (replaced atomically).")],
    base: Annotated[Path | None, typer.Option(help="Autoencoder model dir (`humwatch train`): classify on its encoder "
                                              "embedding. Without it, a small CNN is trained from scratch.")] = None,
    embeddings: Annotated[str, typer.Option("--embeddings", "-e", help="cnn: learn from the log-mel (the "
                                            "scratch CNN, or the --base encoder) | yamnet: a head on YAMNet's 1024-d "
                                            "embeddings (needs --yamnet; not with --base)")] = "cnn",
    yamnet: YamnetPath = None,
    precision: Annotated[float, typer.Option(min=0.01, max=1.0, help="Per-class precision target for the "
                                             "thresholds (on the validation clips).")] = 0.9,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = 30,
    seed: Annotated[int, typer.Option(help="Same seed and data, same model.")] = 0,
    exclusive: Annotated[bool, typer.Option("--exclusive", help="Softmax over mutually exclusive classes instead "
                                            "of independent sigmoids (one label per clip).")] = False,
    finetune_layers: Annotated[int, typer.Option(min=0, max=4, help="With --base: also train the last N encoder "
                                                 "blocks (0 = frozen encoder).")] = 0,
    finetune_lr: Annotated[float, typer.Option(help="Learning rate of the fine-tuned encoder layers "
                                               "(1e-5...1e-4).")] = 1e-4,
    threads: Threads = 2,
    embeddings_alias: Annotated[str | None, typer.Option("--embedding", hidden=True)] = None,
) -> None:
    """Train a fault classifier on labelled clips; calibrate it and choose per-class thresholds.

    Example: humwatch classify train --data data/faults --out models/faults --precision 0.9
    """
    with user_errors():
        from anomaly.classify import ClassifyConfig, FaultClassifier, stratified_split
        from anomaly.detectors import AutoencoderDetector, fingerprint_files, load_detector
        from anomaly.errors import DataError
        from anomaly.features import DEFAULT_PARAMS
        from anomaly.modeldir import model_hash
        from anomaly.train import stopping_advice

        embeddings = embeddings_alias or embeddings  # the singular spelling still works
        if not 1e-6 <= finetune_lr <= 1e-2:
            raise DataError(f"--finetune-lr must be in [1e-6, 1e-2] (1e-5...1e-4 advised), got {finetune_lr:g}")
        if embeddings not in ("cnn", "yamnet"):
            raise DataError(f"unknown --embeddings {embeddings!r}; choose cnn or yamnet")
        if embeddings == "yamnet" and base is not None:
            raise DataError("--base and --embeddings yamnet are mutually exclusive: the classifier has one backbone, "
                            "the autoencoder's encoder or YAMNet")
        if embeddings == "yamnet" and finetune_layers:
            raise DataError("--finetune-layers does not apply to --embeddings yamnet (YAMNet stays frozen)")
        if embeddings != "yamnet" and yamnet is not None:
            raise DataError("--yamnet is only used with --embeddings yamnet")
        det = bhash = None
        if base is not None:
            det = load_detector(base)
            if not isinstance(det, AutoencoderDetector):
                raise DataError(f"--base {base} is a {det.kind} detector; it must be an autoencoder (--detector ae)")
            bhash = model_hash(base)
        elif finetune_layers:
            raise DataError("--finetune-layers needs --base (the scratch CNN is trained in full anyway)")
        embedder = _yamnet_option(embeddings == "yamnet", yamnet, threads)
        from anomaly.dataset import load_dataset

        ds = load_dataset(data)
        stratified_split(ds.Y, ClassifyConfig().val_fraction, seed, ds.classes)  # too few clips: fail before reading
        recs = _read_recordings(ds.files, DEFAULT_PARAMS, "reading")
        console.print(f"{len(ds.files)} clips, {len(ds.classes)} classes ({esc(ds.layout)}): "
                      + ", ".join(f"{esc(c)} {n}" for c, n in ds.counts().items()))
        cfg = ClassifyConfig(epochs=epochs, seed=seed, exclusive=exclusive, finetune_layers=finetune_layers,
                             finetune_lr=finetune_lr, threads=threads)
        clf = FaultClassifier(ds.classes, DEFAULT_PARAMS, cfg, base=det, base_hash=bhash, yamnet=embedder)
        with progress() as bar:
            etask = bar.add_task("YAMNet embeddings", total=len(recs), info="", visible=embedder is not None)
            task = bar.add_task("training", total=epochs, info="")
            clf.fit(recs, ds.Y, precision=precision,
                    on_epoch=lambda ep, tl, vl: bar.update(task, completed=ep, info=f"loss {tl:.4f} val {vl:.4f}"),
                    on_embed=lambda i, n: bar.update(etask, completed=i))
        clf.save(out, extra={"training_data": {k: v for k, v in fingerprint_files(ds.files).items()
                                               if k != "file_sha256"}})
        h = clf.history_
        enc = "frozen" if not finetune_layers else f"last {finetune_layers} blocks fine-tuned at {finetune_lr:g}"
        backbone = f"autoencoder {esc(base)} (encoder {enc})" if base is not None else "small CNN from scratch"
        if embedder is not None:
            backbone = (f"head on YAMNet embeddings of {esc(embedder.path)} (sha256 {embedder.sha256[:12]}; it must "
                        "stay there, unchanged, for the classifier to load)")
        console.print(f"saved classifier to {esc(out)}: {backbone}; best epoch {h['best_epoch']} of {h['epochs_run']}, "
                      f"{h['train_seconds']:.0f} s; split {clf.split_['train']} train / {clf.split_['val']} "
                      "validation clips")
        advice = stopping_advice(h, cfg.epochs, cfg.patience)
        if advice:
            console.print(f"  {advice}")
        console.print(f"temperature {clf.temperature_:.3f}: validation ECE ({clf.ece_['bins']} bins) "
                      f"{clf.ece_['val_before']:.4f} -> {clf.ece_['val_after']:.4f}")
        t = Table("class", "threshold", "val precision", "val recall", "note")
        for c in clf.classes:
            r = clf.thresholds_[c]
            note = f"[yellow]precision {precision:g} not reachable: best-F1 threshold" if r["fallback"] else ""
            t.add_row(esc(c), f"{r['threshold']:.3f}", _fmt(r["val_precision"]), _fmt(r["val_recall"]), note)
        console.print(t)
        fb = clf.fallbacks()
        if fb:
            console.print(f"[yellow]warning:[/] precision target {precision:g} not met on validation for: "
                          f"{esc(', '.join(fb))} (their thresholds maximise F1 instead)")


@classify_app.command("evaluate")
def classify_evaluate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory from `humwatch classify train`.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled clips (as for training; held out from it).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON here.")] = None,
    threads: Threads = 2,
) -> None:
    """Per-class average precision, mAP, precision/recall at the thresholds and confusions on labelled clips."""
    with user_errors():
        import torch

        from anomaly import atomic
        from anomaly.classify import evaluate_classifier, load_classifier

        torch.set_num_threads(threads)
        clf = load_classifier(model)
        ds, recs = _labelled_recordings(data, clf.params, "evaluating")
        m = evaluate_classifier(clf, recs, ds.Y, ds.classes)
        m.pop("probabilities")
        target = clf.precision_target_
        t = Table("class", "clips", "AP (chance)", "threshold", "precision", "recall", f"precision >= {target:g}",
                  "most confused with")
        for c, r in m["classes"].items():
            conf = m["confusions"][c]
            worst = max(conf, key=conf.get) if conf else None
            ok = {True: "yes", False: "[red]NO", None: "-"}[r["meets_precision_target"]]
            ap = _fmt(r["ap"]) + (f" ({r['ap_chance']:.2f})" if r["ap"] is not None else "")
            t.add_row(esc(c), str(r["n_positive"]), ap, f"{r['threshold']:.3f}", _fmt(r["precision"]),
                      _fmt(r["recall"]), ok, f"{esc(worst)} ({conf[worst]:.0%})" if worst and conf[worst] > 0 else "-")
        console.print(t)
        chance = f" (chance {m['map_chance']:.2f}: the share of positives)" if m["map_chance"] is not None else ""
        console.print(f"[bold]mAP {_fmt(m['map'])}[/]{chance} over {m['n_clips']} clips; ECE {m['ece']:.4f} "
                      f"(uncalibrated {m['ece_uncalibrated']:.4f}, temperature {m['temperature']:.3f})")
        if m["below_precision_target"]:
            console.print(f"[yellow]warning:[/] precision target {target:g} not met on these clips for: "
                          f"{esc(', '.join(m['below_precision_target']))}")
        if m["never_fired"]:
            console.print(f"[yellow]warning:[/] never fired on its own clips: {esc(', '.join(m['never_fired']))}")
        if json_out is not None:
            m["model"] = str(model)
            m["data"] = str(data)
            atomic.write_text(json_out, json.dumps(m, indent=2) + "\n")
            console.print(f"wrote {esc(json_out)}")


app.add_typer(classify_app, name="classify", rich_help_panel="Model")
