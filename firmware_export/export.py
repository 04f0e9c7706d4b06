"""``humwatch export``: a trained, calibrated model → files a firmware build can consume, with the evidence.

:func:`run_export` runs named stages, each a function of what the earlier ones produced (each reports progress and
its time through a :class:`~firmware_export.pipeline.Clock`):

1. :func:`load_stage`: the site's model, mic-response offsets and current calibration (or a bare model dir +
   ``--representative``), and the fault classifier to export with it, if any;
2. :func:`audio_stage`: read the calibration audio and cut it as calibration did (threshold part / held-out part),
   inject simulator faults into held-out audio, normalise;
3. :func:`convert_stage`: PyTorch → ONNX (dynamo, opset 18) → onnx2tf SavedModel → TFLite float and full-integer int8;
4. :func:`parity_stage`: score the held-out and fault patches in PyTorch, ONNX Runtime, float TFLite and int8 TFLite;
5. :func:`threshold_stage`: re-derive the threshold on the int8 model's scores of the threshold part with the site's
   rule (:mod:`anomaly.decision`);
6. :func:`tflm_stage`: run the int8 model in TensorFlow Lite Micro and find its arena;
7. :func:`gate_stage`: size, TFLM ops, float parity, int8 correlation, AUC drop; then the site's fault classifier
   (or ``--classifier DIR``; none with ``--no-classifier``) through the same chain as a second int8 model, with its
   own parity figures and gates (:mod:`firmware_export.classifier`);
8. :func:`c_model_stage`: each int8 network as plain C (:mod:`firmware_export.cmodel`), gated on byte equality with
   TensorFlow Lite Micro on the export's own patches and golden vectors;
9. :func:`write_stage`: on a failed gate raise :class:`GateFailed` and write nothing; otherwise write the C sources,
   measure the reference firmware built from them on an emulated Cortex-M7 (:func:`firmware_stage`) and write the
   manifest into ``--out`` atomically (the old export stays until the new one is whole).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomaly.atomic import atomic_dir, scratch_dir
from anomaly.audio import file_patches, find_audio
from anomaly.decision import (
    DEFAULT_K,
    DEFAULT_RULE,
    MEAN_LIMIT_FLOOR,
    WindowMean,
    fault_stream,
    fit_threshold,
    over,
    rule_from_dict,
    standard_of,
)
from anomaly.detectors import AutoencoderDetector, load_detector
from anomaly.evaluate import auc_pauc, chance_levels, definitions, find_labelled
from anomaly.model import count_macs, count_params
from anomaly.modeldir import file_sha256, model_hash
from anomaly.simulate import describe_injection
from calibration.calibrate import CHUNK_PATCHES, calibration_rule, site_detector
from calibration.errors import CalibrationError
from calibration.store import SiteStore
from calibration.threshold import calibrate_mean_rule, threshold_report
from firmware_export import c_arrays, data, parity, pipeline, telemetry_c, tflite
from firmware_export import classifier as clf_export
from firmware_export.cmodel import stage as c_stage
from firmware_export.errors import ExportError, GateFailed
from firmware_export.frontend_ref import DIR as REF_DIR
from firmware_export.frontend_ref import SOURCES as REF_SOURCES
from firmware_export.manifest import MANIFEST_FORMAT, clean, file_entry, macs_by_kind, tool_versions
from firmware_export.pipeline import TFLM_PATCHES, Clock
from firmware_export.targets import (
    DEFAULT_MAX_MODEL_BYTES,
    DEFAULT_TARGET,
    TARGETS,
    TFLM_OPS_SOURCE,
    latency_estimate,
)

MIN_PEARSON = 0.98
MAX_AUC_DROP = 0.02
MAX_FLOAT_RECON_DIFF = 1e-3
# The classifier's gates (classifier_*) have their constants in firmware_export/classifier.py. Without a site
# (--model), the threshold and alarm rules are anomaly.decision's defaults.

OUTPUT_FILES = ("model.onnx", "model_float.tflite", "model_int8.tflite", "model_data.cc", "model_data.h",
                "humwatch_frontend.h", "hw_frontend.h", "hw_frontend.c", telemetry_c.HEADER, *telemetry_c.SOURCES,
                *c_stage.FILES)


@dataclass
class ExportRequest:
    out: Path
    site: str | None = None
    model: Path | None = None
    sites_dir: Path | None = None
    target: str = DEFAULT_TARGET
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    representative: list[Path] = field(default_factory=list)
    seed: int = 0
    classifier: Path | None = None  # a classifier directory: used instead of (or, without a site, as) the site's
    no_classifier: bool = False  # export the anomaly model only, even when the site has a classifier
    validate_with: Path | None = None  # labelled recordings of the machine (normal_*/anomaly_*): real detection figures


@dataclass
class Source:
    kind: str
    det: AutoencoderDetector
    model_dir: Path
    model_hash: str
    offsets: np.ndarray | None
    files: list[Path]
    k: float
    rule: object  # an anomaly.decision alarm rule (the site's, calibrated; or the default)
    reference_threshold: float | None
    threshold_source: str
    machine: str
    chunk_patches: int
    site: str | None = None
    calibration_id: str | None = None
    inputs: dict = field(default_factory=dict)
    classifier_dir: Path | None = None  # the site's classifier (site.toml classifier_path)
    classifier_hash: str = ""
    classifier_alarm: list[str] = field(default_factory=list)


# -- 1. load -------------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    src: Source
    classifier: clf_export.ClassifierSource | None
    no_classifier_reason: str = ""


def _check_request(req: ExportRequest) -> None:
    if bool(req.site) == bool(req.model):
        raise ExportError("give --site NAME (a calibrated site) or --model DIR (a model directory), one of the two")
    if req.target not in TARGETS:
        raise ExportError(f"unknown --target {req.target!r}; choose one of {', '.join(TARGETS)}")
    if req.classifier and req.no_classifier:
        raise ExportError("give --classifier DIR or --no-classifier, not both")
    if req.max_model_bytes <= 0:
        raise ExportError(f"--max-model-bytes must be > 0, got {req.max_model_bytes}")
    out = Path(req.out)
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise ExportError(f"--out {out} exists and is not a humwatch export (no manifest.json); it would be "
                              "replaced as a whole: give a new or empty directory")
        cwd = Path.cwd().resolve()
        if cwd == out.resolve() or out.resolve() in cwd.parents:
            raise ExportError(f"--out {out} is (or contains) the current directory, which an export replaces as a "
                              "whole: give another directory")


def _autoencoder(det, where: str) -> AutoencoderDetector:
    if not isinstance(det, AutoencoderDetector):
        raise ExportError(f"{where}: only the conv autoencoder ('ae') exports to firmware, this is a "
                          f"{det.kind!r} detector")
    return det


def device_rule(rule, int8_scores: np.ndarray, patch_seconds: float) -> tuple:
    """The alarm rule in the int8 model's score domain, and how it was set. An m-of-n rule is unchanged (its threshold
    is the int8 one); a windowed-mean rule keeps the site's limit and takes its centre and scale from the int8
    model's scores of the threshold part; an uncalibrated one (the --model route) is calibrated on them as
    `humwatch site calibrate` would (limit floor only, when they are too few for the certificate)."""
    if not isinstance(rule, WindowMean):
        return rule, "the site's rule over the int8 threshold"
    centre, scale = standard_of(int8_scores)
    if rule.calibrated:
        return rule.with_calibration(centre, scale, rule.limit), ("the site's limit; centre and scale of the int8 "
                                                                  "model's log scores on the threshold part")
    try:
        cal, _ = calibrate_mean_rule(int8_scores, rule, patch_seconds)
        return cal, "calibrated on the int8 model's scores of the threshold part (certificate target and floor)"
    except CalibrationError as e:
        return rule.with_calibration(centre, scale, MEAN_LIMIT_FLOOR), f"limit floor only ({e})"


def _exportable_rule(rule, where: str):
    if rule.kind not in c_arrays.C_RULES:
        raise ExportError(f"{where}: the alarm rule {rule.kind!r} has no C implementation to export (the C reference "
                          f"implements {', '.join(c_arrays.C_RULES)})")
    return rule


def _model_inputs(model_dir: Path) -> dict:
    d = {"model_json_sha256": file_sha256(model_dir / "model.json")}
    w = model_dir / "weights.pt"
    if w.is_file():
        d["weights_sha256"] = file_sha256(w)
    return d


def _calibration_files(site, record: dict) -> list[Path]:
    files = record.get("audio", {}).get("files")
    if not files:
        raise ExportError(f"site {site.name!r}: calibration {record.get('id')} lists no audio files")
    digests = record.get("audio", {}).get("file_sha256") or [None] * len(files)
    out = []
    for i, (f, digest) in enumerate(zip(files, digests, strict=False)):
        p = Path(f)
        kept = site.dir / "baseline" / str(record.get("id")) / f"{i:03d}_{p.name}"
        for cand in (p, site.dir / p if not p.is_absolute() else p, kept):
            if cand.is_file():
                if digest and file_sha256(cand) != digest:
                    raise ExportError(f"calibration audio {cand} of site {site.name!r} changed since calibration "
                                      f"{record.get('id')} (sha256 differs): recalibrate the site")
                out.append(cand)
                break
        else:
            raise ExportError(
                f"calibration audio {f} of site {site.name!r} not found (the export re-reads the calibration audio "
                "for quantisation and parity: restore it, or recalibrate with --keep-audio so that the site keeps a "
                "copy)")
    return out


def _site_source(req: ExportRequest) -> Source:
    site = SiteStore(req.sites_dir).site(req.site)
    cfg = site.config()
    record = site.calibration()
    det, offsets, mh = site_detector(site)
    det = _autoencoder(det, f"site {site.name!r}")
    rec_hash = record.get("model", {}).get("hash")
    if rec_hash and rec_hash != mh:
        raise ExportError(f"site {site.name!r}: calibration {record['id']} was made with model {rec_hash}, the site "
                          f"now uses {mh}: calibrate again (`humwatch site calibrate {site.name} --from AUDIO`)")
    th = record["threshold"]
    rule = _exportable_rule(calibration_rule(record), f"site {site.name!r}")
    files = _calibration_files(site, record)
    inputs = {"model_hash": model_hash(site.model_dir()), **_model_inputs(site.model_dir()),
              "calibration_record_sha256": file_sha256(site.calibrations_dir / f"{record['id']}.json")}
    if cfg.response_curve:
        rc = Path(cfg.response_curve)
        rc = rc if rc.is_absolute() else site.dir / rc
        inputs["response_curve_sha256"] = file_sha256(rc)
    return Source(kind="site", det=det, model_dir=site.model_dir(), model_hash=mh, offsets=offsets, files=files,
                  k=float(th["k"]), rule=rule, reference_threshold=float(th["threshold"]),
                  threshold_source=f"site {site.name} calibration {record['id']}: mean + {float(th['k']):g} sigma "
                                   "of the int8 model's scores on the calibration's threshold part",
                  machine=cfg.machine, chunk_patches=CHUNK_PATCHES, site=site.name, calibration_id=record["id"],
                  inputs=inputs, classifier_dir=site.classifier_dir(), classifier_hash=cfg.classifier_hash,
                  classifier_alarm=list(cfg.classifier_alarm))


def _model_source(req: ExportRequest) -> Source:
    model_dir = Path(req.model)
    det = _autoencoder(load_detector(model_dir), str(model_dir))
    if not req.representative:
        raise ExportError("--model needs --representative AUDIO (normal recordings of the machine: they calibrate "
                          "the int8 quantisation and set the threshold), or export a calibrated site with --site NAME")
    files = find_audio(req.representative)
    mh = model_hash(model_dir)
    return Source(kind="model", det=det, model_dir=model_dir, model_hash=mh, offsets=None, files=files,
                  k=DEFAULT_K, rule=_exportable_rule(DEFAULT_RULE, "the default alarm rule"),
                  reference_threshold=None,
                  threshold_source=f"provisional (no site calibration): mean + {DEFAULT_K:g} sigma of the int8 model's "
                                   "scores on 2/3 of the --representative audio",
                  machine="",  # unknown without a site: the injected faults are a pump's
                  chunk_patches=CHUNK_PATCHES, inputs={"model_hash": mh, **_model_inputs(model_dir)})


def _classifier_source(req: ExportRequest, src: Source) -> tuple[clf_export.ClassifierSource | None, str]:
    """``(classifier, "")`` with the classifier to export next to the model, or ``(None, reason)`` when there is
    none."""
    if req.no_classifier:
        return None, "--no-classifier"
    params = src.det.params
    if req.classifier:
        return clf_export.load_for_export(req.classifier, params, src.model_hash, "--classifier"), ""
    if src.classifier_dir is None:
        return None, (f"site {src.site} has no classifier" if src.site else "no --classifier given")
    return clf_export.load_for_export(src.classifier_dir, params, src.model_hash, f"site {src.site}",
                                      expected_hash=src.classifier_hash or None, alarm=src.classifier_alarm), ""


def load_stage(req: ExportRequest) -> Loaded:
    """Check the request and load what the export starts from (raises ExportError, SiteError, ModelError)."""
    _check_request(req)
    src = _site_source(req) if req.site else _model_source(req)
    cs, reason = _classifier_source(req, src)
    return Loaded(src, cs, reason)


# -- 2. audio ------------------------------------------------------------------------------------------------------
@dataclass
class Patches:
    """The export's patch sets, normalised for the autoencoder (``[n, T, M]`` float32), and where they came from."""

    threshold: np.ndarray  # the calibration's threshold part
    check: np.ndarray  # held-out normal patches (parity)
    faults: np.ndarray  # injected faults (parity)
    representative: np.ndarray  # the int8 calibration set (one block hidden for an interpolation model)
    fault_names: list[str]
    files: list[data.FileAudio]
    representative_files: list[Path]
    split: str
    classifier: clf_export.PatchSets | None = None  # raw log-mel sets for the classifier
    labelled: list[tuple[int, np.ndarray]] = field(default_factory=list)  # --validate-with: (label, patches) per clip
    labelled_dir: Path | None = None


def _normalise(det, X: np.ndarray) -> np.ndarray:
    return ((X - det.mean_) / det.std_).astype(np.float32, copy=False)


def audio_stage(req: ExportRequest, src: Source, cs: clf_export.ClassifierSource | None) -> Patches:
    """Read and cut the audio (:func:`firmware_export.data.gather`) and normalise it for the autoencoder."""
    det = src.det
    d = data.gather(src.files, det.params, src.offsets, src.machine, src.chunk_patches,
                    representative_files=req.representative if src.kind == "site" else None, seed=req.seed,
                    extra_faults=clf_export.simulator_classes(cs.clf.classes) if cs else ())
    clf_sets = clf_export.patch_sets(d.representative, d.check, d.faults, d.fault_names, d.extra_faults,
                                     d.extra_fault_names) if cs else None
    rep = _normalise(det, d.representative)
    w = det.train_config.mask_frames
    if w:
        # An interpolation model only ever sees inputs with one block hidden: calibrate the int8 ranges on those.
        rep = parity.hide_blocks(rep, w)
    labelled = []
    if req.validate_with is not None:
        labelled = [(f.label, _normalise(det, file_patches(f.path, det.params, src.offsets)[1]))
                    for f in find_labelled(req.validate_with)]
    return Patches(threshold=_normalise(det, d.threshold), check=_normalise(det, d.check),
                   faults=_normalise(det, d.faults), representative=rep, fault_names=d.fault_names, files=d.files,
                   representative_files=d.representative_files, split=d.split, classifier=clf_sets,
                   labelled=labelled, labelled_dir=req.validate_with)


# -- 3. convert ----------------------------------------------------------------------------------------------------
def convert_stage(src: Source, patches: Patches, out_dir: Path, work: Path, clock: Clock) -> pipeline.Converted:
    """The autoencoder through the conversion chain; its ONNX and TFLite files are written into ``out_dir``."""
    p = src.det.params
    return pipeline.convert_model(src.det.model_.eval(), "model", out_dir, work, p.patch_frames, p.n_mels,
                                  patches.representative, (1, p.patch_frames, p.n_mels, 1), clock.step, clock.lap)


# -- 4. parity -----------------------------------------------------------------------------------------------------
@dataclass
class Parity:
    runs: dict  # runtime -> normalised patches in, outputs out
    scores: dict[str, dict[str, np.ndarray]]  # runtime -> {"normal", "fault"} -> scores
    recon_diff: dict[str, float]  # runtime -> max |reconstruction - PyTorch's| on the normal patches
    summary: dict  # parity.summarise
    about: dict = field(default_factory=dict)  # what was injected (simulate.describe_injection)
    labelled: dict | None = None  # runtime -> patch scores per labelled clip and clip AUC / pAUC (--validate-with)


def parity_stage(src: Source, patches: Patches, conv: pipeline.Converted) -> Parity:
    """Every runtime's output (one pass per patch, or for an interpolation model one per hidden block, assembled as
    on the device) scored with the model's score."""
    det, w = src.det, src.det.train_config.mask_frames
    runs = parity.runtimes(det.model_.eval(), conv.onnx_path, conv.fm, conv.qm)
    sets = {"normal": patches.check, "fault": patches.faults}
    recon = {rt: {k: parity.interpolated(run, X, w) for k, X in sets.items()} for rt, run in runs.items()}
    scorer = det.scorer
    scores = {rt: {k: scorer.of_output(sets[k], r[k]) for k in sets} for rt, r in recon.items()}
    recon_diff = {rt: float(np.abs(recon[rt]["normal"] - recon["pytorch"]["normal"]).max())
                  for rt in recon if rt != "pytorch"}
    about = describe_injection(src.machine, data.INJECT_FAULTS, (data.INJECT_SEVERITY,))
    return Parity(runs, scores, recon_diff, parity.summarise(scores, recon_diff, patches.fault_names), about,
                  _labelled_scores(src, patches, runs))


LABELLED_RUNTIMES = ("pytorch", "tflite_int8")


def _labelled_scores(src: Source, patches: Patches, runs: dict) -> dict | None:
    """PyTorch's and the int8 model's patch scores of every labelled clip, and the clip AUC / pAUC (clip score = mean
    patch score)."""
    if not patches.labelled:
        return None
    w, scorer = src.det.train_config.mask_frames, src.det.scorer
    y = [lab for lab, _ in patches.labelled]
    out = {}
    for rt in LABELLED_RUNTIMES:
        per_clip = [scorer.of_output(X, parity.interpolated(runs[rt], X, w)) for _, X in patches.labelled]
        auc, pa = auc_pauc(y, [float(s.mean()) for s in per_clip])
        out[rt] = {"auc": auc, "pauc": pa, "scores": per_clip}
    return {"labels": y, "runtimes": out}


# -- 5. threshold --------------------------------------------------------------------------------------------------
def threshold_stage(src: Source, patches: Patches, par: Parity, seed: int = 0) -> dict:
    """The manifest's ``threshold`` section: the site's rule on the int8 model's scores of the threshold part (the
    device's threshold), the PyTorch threshold reproduced, and how often the two decide alike."""
    det, w, thr_n = src.det, src.det.train_config.mask_frames, patches.threshold
    pt_thr_scores = det.scorer.of_output(thr_n, parity.interpolated(par.runs["pytorch"], thr_n, w))
    q_thr_scores = det.scorer.of_output(thr_n, parity.interpolated(par.runs["tflite_int8"], thr_n, w))
    pt_thr = fit_threshold(pt_thr_scores, src.k).value
    q = fit_threshold(q_thr_scores, src.k)
    rule, rule_note = device_rule(src.rule, q_thr_scores, det.params.patch_seconds)
    report = None
    if q_thr_scores.size >= 100:
        try:
            report = threshold_report(q_thr_scores, src.k, src.rule, det.params.patch_seconds, seed=seed).to_dict()
            report.pop("tail", None)
        except CalibrationError as e:
            report = {"not_estimated": str(e)}
    scores = par.scores
    pt_all = np.r_[scores["pytorch"]["normal"], scores["pytorch"]["fault"]]
    q_all = np.r_[scores["tflite_int8"]["normal"], scores["tflite_int8"]["fault"]]
    n_norm = scores["pytorch"]["normal"].size
    return {
        "rule": f"mean + k * sigma (sample sigma) of the threshold part's patch scores, k = {src.k:g}",
        "source": src.threshold_source,
        "k": src.k, "alarm_m": getattr(src.rule, "m", None), "alarm_n": src.rule.n,
        "alarm_rule": rule.describe(), "device_rule": rule.to_dict(), "device_rule_source": rule_note,
        "int8": q.value, "int8_mean": q.mean, "int8_std": q.std,
        "pytorch_reproduced": pt_thr,
        "site_pytorch": src.reference_threshold,
        "site_reproduction_rel_diff": (abs(pt_thr - src.reference_threshold) / src.reference_threshold
                                       if src.reference_threshold else None),
        "threshold_patches": int(thr_n.shape[0]),
        "split": patches.split,
        "held_out_exceedance": {
            "pytorch": float(np.mean(over(scores["pytorch"]["normal"], pt_thr))),
            "int8": float(np.mean(over(scores["tflite_int8"]["normal"], q.value)))},
        "fault_detection_rate": {
            "pytorch": float(np.mean(over(scores["pytorch"]["fault"], pt_thr))),
            "int8": float(np.mean(over(scores["tflite_int8"]["fault"], q.value)))},
        "decision_agreement": float(np.mean(over(pt_all, pt_thr) == over(q_all, q.value))),
        "decision_agreement_normal": float(np.mean(over(pt_all[:n_norm], pt_thr) == over(q_all[:n_norm], q.value))),
        "int8_report": report,
    }


def _labelled_stream(src: Source, lab: dict | None, int8_threshold: float, rule) -> dict | None:
    """The device (int8 scores, int8 threshold, the site's rule) on the labelled clips as one stream: the normal
    clips, then the anomalous ones: false alarms and the delay to the first alarm."""
    if lab is None:
        return None
    sc, y = lab["runtimes"]["tflite_int8"]["scores"], lab["labels"]
    part = [np.concatenate([s for s, lab_ in zip(sc, y, strict=True) if lab_ == want] or [np.zeros(0)])
            for want in (0, 1)]
    r = fault_stream(rule, part[0], part[1], int8_threshold)
    return {"what": "int8 scores of the normal clips, then the anomalous clips, through the alarm rule",
            **r.to_dict(src.det.params.patch_seconds)}


# -- 6. TFLM -------------------------------------------------------------------------------------------------------
def tflm_stage(conv: pipeline.Converted, patches: Patches) -> dict:
    """The int8 model in TensorFlow Lite Micro on ``TFLM_PATCHES`` held-out patches (arena, agreement with LiteRT)."""
    check = patches.check
    idx = np.linspace(0, len(check) - 1, min(TFLM_PATCHES, len(check))).round().astype(int)
    return pipeline.tflm_figures(conv, tflite.quantize(check[idx], *conv.input_quant))


# -- 7. gates ------------------------------------------------------------------------------------------------------
def gate_stage(max_model_bytes: int, conv: pipeline.Converted, par: Parity, tflm: dict) -> list[dict]:
    """The autoencoder's gates: size, TFLM ops, float parity, int8 correlation, AUC drop."""
    n8 = len(conv.int8_bytes)
    gates = [parity.gate("size", n8 <= max_model_bytes, n8, max_model_bytes,
                         f"model_int8.tflite is {n8:,} B, budget {max_model_bytes:,} B"
                         + (f" (over by {n8 - max_model_bytes:,} B)" if n8 > max_model_bytes else ""))]
    gates.append(pipeline.ops_gate("ops", conv.ops, tflm))
    rd = par.recon_diff
    fdiff = max(rd["onnxruntime"], rd["tflite_float"])
    gates.append(parity.gate("float_parity", fdiff <= MAX_FLOAT_RECON_DIFF, fdiff, MAX_FLOAT_RECON_DIFF,
                             f"max |reconstruction - PyTorch| of ONNX Runtime {rd['onnxruntime']:.2e}, "
                             f"float TFLite {rd['tflite_float']:.2e} (limit {MAX_FLOAT_RECON_DIFF:g}; a "
                             "failure means a layer was converted wrongly)"))
    s = par.summary
    r = s["tflite_int8"]["normal"]["pearson"]
    gates.append(parity.gate("correlation", r == r and r >= MIN_PEARSON, r, MIN_PEARSON,
                             f"int8 vs PyTorch score Pearson on held-out normal patches {r:.4f} (minimum "
                             f"{MIN_PEARSON})" + (f", short by {MIN_PEARSON - r:.4f}"
                                                  if r == r and r < MIN_PEARSON else "")))
    drop = s["pytorch"]["auc"] - s["tflite_int8"]["auc"]
    injected = (f"{par.about['simulated_machine']} faults ({', '.join(par.about['faults'])}) simulated into held-out "
                "normal audio; a parity check, not this machine's detection quality" if par.about else
                "injected faults")
    gates.append(parity.gate("auc_drop", drop == drop and drop <= MAX_AUC_DROP, drop, MAX_AUC_DROP,
                             f"AUC normal vs {injected}: PyTorch {s['pytorch']['auc']:.4f}, int8 "
                             f"{s['tflite_int8']['auc']:.4f}, drop {drop:+.4f} (maximum {MAX_AUC_DROP})"
                             + (f", over by {drop - MAX_AUC_DROP:.4f}" if drop > MAX_AUC_DROP else "")))
    if par.labelled is not None:
        rts = par.labelled["runtimes"]
        drop = rts["pytorch"]["auc"] - rts["tflite_int8"]["auc"]
        gates.append(parity.gate("labelled_auc_drop", drop == drop and drop <= MAX_AUC_DROP, drop, MAX_AUC_DROP,
                                 f"clip AUC on the labelled recordings of this machine (--validate-with): PyTorch "
                                 f"{rts['pytorch']['auc']:.4f}, int8 {rts['tflite_int8']['auc']:.4f}, drop "
                                 f"{drop:+.4f} (maximum {MAX_AUC_DROP})"
                                 + (f", over by {drop - MAX_AUC_DROP:.4f}" if drop > MAX_AUC_DROP else "")))
    return gates


def detection_section(src: Source, patches: Patches, par: Parity, threshold: dict) -> dict:
    """The manifest's ``detection``: what says how well this machine's faults are detected (the labelled recordings,
    when given) and what does not (the injected simulator faults)."""
    lab = par.labelled
    labelled = None
    if lab is not None:
        labelled = {"directory": str(patches.labelled_dir), "n_normal": lab["labels"].count(0),
                    "n_anomaly": lab["labels"].count(1), "clip_score": "mean of the clip's patch scores",
                    **{rt: {"auc": v["auc"], "pauc": v["pauc"]} for rt, v in lab["runtimes"].items()},
                    "pauc_definition": definitions()["pauc"], "chance": chance_levels(),
                    "int8_stream": _labelled_stream(src, lab, threshold["int8"],
                                                    rule_from_dict(threshold["device_rule"]))}
    s = par.summary
    return {"labelled": labelled,
            "injected": {**par.about, "auc": {"pytorch": s["pytorch"]["auc"], "tflite_int8": s["tflite_int8"]["auc"]},
                         "severity": data.INJECT_SEVERITY},
            "note": "the labelled recordings' figures are this machine's detection quality; the injected faults' AUC "
                    "checks that the int8 model reacts like the float one" if labelled else
                    "no labelled recordings given (--validate-with DIR of normal_*/anomaly_* clips): the injected "
                    "faults' AUC checks that the int8 model reacts like the float one, it is not this machine's "
                    "detection quality"}


def classifier_stage(req: ExportRequest, loaded: Loaded, patches: Patches, conv: pipeline.Converted, tflm: dict,
                     out_dir: Path, work: Path, clock: Clock) -> clf_export.ClassifierExport | None:
    """The fault classifier through the same chain as a second int8 model, with its parity figures and gates."""
    if loaded.classifier is None:
        return None
    return clf_export.run(loaded.classifier, loaded.src.det.params, patches.classifier, out_dir, work, clock,
                          ae_int8=len(conv.int8_bytes), max_bytes=req.max_model_bytes, ae_tflm=tflm, seed=req.seed)


# -- 8. the networks as plain C ---------------------------------------------------------------------------------------
def c_model_stage(src: Source, patches: Patches, conv: pipeline.Converted,
                  clf: clf_export.ClassifierExport | None) -> c_stage.CModels:
    """``hw_model.c`` (and ``hw_clf_model.c``) generated from the int8 models and compared byte for byte with TFLM on
    the held-out and fault patches (as the network sees them: one block hidden for an interpolation model) plus golden
    vectors: gates ``c_model`` and ``classifier_c_model``."""
    w = src.det.train_config.mask_frames
    X = np.concatenate([patches.check, patches.faults])
    X = parity.hide_blocks(X, w) if w else X
    clf_args = {}
    if clf is not None:
        sets = patches.classifier
        clf_args = {"classifier": clf.conv.int8_bytes,
                    "clf_Xq": tflite.quantize(np.concatenate([sets.normal, sets.faults]), *clf.conv.input_quant),
                    "clf_input_zp": clf.conv.input_quant[1]}
    return c_stage.cmodel_stage(conv.int8_bytes, tflite.quantize(X, *conv.input_quant), conv.input_quant[1],
                                "generated by humwatch export; do not edit", **clf_args)


def firmware_stage(out_dir: Path, loaded: Loaded, conv: pipeline.Converted, patches: Patches,
                   threshold: dict) -> dict:
    """The reference firmware built from the written sources, run on the first seconds of the first audio file on an
    emulated Cortex-M7: measured flash, RAM, stack and instructions per patch, and its agreement with Python
    (:mod:`firmware_export.firmware`); ``measured: false`` with the reason where the toolchain is missing."""
    from firmware_export.firmware.golden import DeviceSpec

    src, det = loaded.src, loaded.src.det
    spec = DeviceSpec(det.params, det.mean_, det.std_, threshold["int8"], rule_from_dict(threshold["device_rule"]),
                      det.train_config.mask_frames, det.scorer, src.offsets)  # the rule as the header states it
    audio = patches.files[0].path if patches.files else None
    return c_stage.firmware_stage(out_dir, conv.int8_bytes, spec, audio)


# -- 9. manifest and write -----------------------------------------------------------------------------------------
def _score_texts(scorer) -> tuple[str, str]:
    """How the manifest describes the device's score (model section) and the parity score."""
    if scorer.kind == "mse":
        return ("mean over the patch of (x - dequantised output)^2 with x the float normalised input; computed on the "
                "device in float (see humwatch_frontend.h)", "per-patch MSE")
    return ("squared Mahalanobis distance of log(per-band mean of (x - dequantised output)^2 + HW_BAND_ERROR_EPS) "
            "from the model's error Gaussian (hw_score_mean, hw_score_precision); computed on the device in float, "
            "the quadratic form in double (see humwatch_frontend.h)",
            "per-patch Gaussian score (Mahalanobis distance of the log band errors)")


def _model_section(src: Source, conv: pipeline.Converted, macs: dict[str, int]) -> dict:
    det = src.det
    p, model, w = det.params, det.model_, det.train_config.mask_frames
    passes = det.forward_passes()
    (iscale, izp), (oscale, ozp) = conv.input_quant, conv.output_quant
    return {
        "architecture": det.arch.to_dict(),
        "params": count_params(model),
        "macs_per_patch": count_macs(model) * passes,
        "forward_passes_per_patch": passes,
        "mask_frames": w,
        "macs_by_kind": macs,
        "onnx": conv.onnx_info,
        "tflite_ops": conv.ops,
        "tflm_allowed_ops_source": TFLM_OPS_SOURCE,
        "sizes": conv.sizes(),
        "input": {"name": "normalised log-mel patch", "shape": [1, p.patch_frames, p.n_mels, 1],
                  "layout": "NHWC: row = frame (time), column = mel band", "dtype": "int8",
                  "scale": iscale, "zero_point": izp},
        "output": {"name": "reconstruction of the normalised patch", "shape": [1, p.patch_frames, p.n_mels, 1],
                   "dtype": "int8", "scale": oscale, "zero_point": ozp},
        "passes": ("one invocation per patch" if not w else
                   f"{passes} invocations per patch (interpolation objective): for pass k the input's frames "
                   f"[{w}k, {w}k + {w}) are set to the input zero point (x = 0) and only those frames of the "
                   "output are kept; the assembled output is the 'reconstruction' the score uses "
                   "(hw_pass_input, hw_pass_collect)"),
        "score": _score_texts(det.scorer)[0],
    }


def build_manifest(req: ExportRequest, loaded: Loaded, patches: Patches, conv: pipeline.Converted, par: Parity,
                   threshold: dict, tflm: dict, clf: clf_export.ClassifierExport | None, gates: list[dict],
                   clock: Clock, cms: c_stage.CModels | None = None) -> dict:
    """The manifest (``outputs`` still empty: :func:`write_stage` fills it)."""
    src, det = loaded.src, loaded.src.det
    p = det.params
    failed = [g for g in gates if not g["passed"]]
    passes = det.forward_passes()
    macs = {k: v * passes for k, v in macs_by_kind(det.model_, p.patch_frames, p.n_mels).items()}
    return {
        "manifest_format": MANIFEST_FORMAT,
        "status": "failed" if failed else "passed",
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": req.target,
        "source": {"kind": src.kind, "site": src.site, "calibration_id": src.calibration_id,
                   "model_dir": str(Path(src.model_dir).resolve()), "model_hash": src.model_hash,
                   "detector": det.kind, "machine": src.machine},
        "inputs": {**src.inputs,
                   "audio": [{"path": str(f.path), "sha256": file_sha256(f.path), "patches": f.n_patches,
                              "role": "calibration" if src.kind == "site" else "representative"}
                             for f in patches.files]
                   + [{"path": str(f), "sha256": file_sha256(f), "role": "representative"}
                      for f in patches.representative_files]},
        "outputs": {},
        "feature_params": p.to_dict(),
        "feature_params_hash": p.hash(),
        "normalisation": {"mean": det.mean_.tolist(), "std": det.std_.tolist()},
        "mic_offsets": None if src.offsets is None else np.asarray(src.offsets, float).tolist(),
        "model": _model_section(src, conv, macs),
        "tflm": tflm,
        "c_model": cms.sections if cms else None,
        "firmware": {"measured": False, "reason": "not run (a gate failed)"},
        "latency_estimate": {
            "note": "ESTIMATE from MACs and assumed per-kernel MAC rates, not a measurement",
            "selected_target": req.target,
            "targets": {t: latency_estimate(macs, t) for t in TARGETS},
        },
        "threshold": threshold,
        "parity": {
            "score": _score_texts(det.scorer)[1] + " between the float normalised input and each runtime's "
                                                   "reconstruction",
            "patches": {"normal_held_out": int(len(patches.check)), "fault": int(len(patches.faults)),
                        "faults": list(data.INJECT_FAULTS), "severity": data.INJECT_SEVERITY,
                        "fault_mixing": "simulator fault component x (held-out RMS / 0.1), clipped to +-1, as "
                                        "calibration's fault injection",
                        "representative": int(len(patches.representative)), "seed": req.seed},
            "runtimes": clean(par.summary, 6),
        },
        "detection": detection_section(src, patches, par, threshold),
        "classifier": clf.section if clf else {"included": False, "reason": loaded.no_classifier_reason},
        "gates": {"passed": not failed, "checks": gates},
        "tools": tool_versions(),
        "timing_seconds": clock.timings,
    }


def write_stage(out_dir: Path, loaded: Loaded, conv: pipeline.Converted, tflm: dict, threshold: dict,
                clf: clf_export.ClassifierExport | None, manifest: dict, clock: Clock,
                cms: c_stage.CModels | None = None, patches: Patches | None = None) -> dict:
    """Raise :class:`GateFailed` when a gate failed (nothing written); else write the C sources and the manifest
    into ``out_dir`` (the export's temporary directory) and return the final manifest."""
    failed = [g for g in manifest["gates"]["checks"] if not g["passed"]]
    if failed:
        clock.lap("gates")
        clock.total()
        raise GateFailed(failed, clean(manifest))
    src, p = loaded.src, loaded.src.det.params
    clock.report("writing C sources", 0.95)
    banner = (f"generated by humwatch export {manifest['tools']['humwatch']} on {manifest['created_utc']}; "
              f"model {src.model_hash}" + (f", site {src.site}, calibration {src.calibration_id}"
                                           if src.site else "") + ". Do not edit.")
    cc, h = c_arrays.model_data_files(conv.int8_bytes, conv.ops, tflm.get("arena_bytes"),
                                      tflm.get("arena_bytes_recommended"), banner)
    (out_dir / "model_data.cc").write_text(cc)
    (out_dir / "model_data.h").write_text(h)
    (out_dir / "humwatch_frontend.h").write_text(c_arrays.frontend_header(
        p, src.det.mean_, src.det.std_, src.offsets, conv.input_quant, conv.output_quant,
        {"threshold": threshold["int8"], "k": src.k, "rule": rule_from_dict(threshold["device_rule"]),
         "site_threshold_float": src.reference_threshold, "threshold_source": src.threshold_source},
        {"model_hash": src.model_hash, "site": src.site, "calibration_id": src.calibration_id}, banner,
        score=src.det.scorer, mask_frames=src.det.train_config.mask_frames))
    (out_dir / telemetry_c.HEADER).write_text(telemetry_c.telemetry_header(
        src.site, threshold["int8"], src.model_hash, src.calibration_id, banner=banner,
        classes=clf.cs.classes if clf else (), rule=rule_from_dict(threshold["device_rule"])))
    for name in (*REF_SOURCES, *telemetry_c.SOURCES):
        shutil.copyfile(REF_DIR / name, out_dir / name)
    names = list(OUTPUT_FILES)
    if clf:
        clf.write_sources(out_dir, p, banner + f" Classifier {clf.cs.hash}.", anomaly_model_hash=src.model_hash,
                          site=src.site, rule=src.rule)
        names += list(clf_export.FILES)
    if cms:
        names += [n for n in c_stage.write_sources(out_dir, cms) if n not in names]
        clock.lap("write_c")
        clock.report("reference firmware on an emulated Cortex-M7", 0.97)
        manifest["firmware"] = firmware_stage(out_dir, loaded, conv, patches, threshold)
        clock.lap("firmware")
    manifest["outputs"] = {name: file_entry(out_dir / name) for name in names}
    clock.lap("write")
    clock.total()
    manifest = clean(manifest)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    clock.report("done", 1.0)
    return manifest


def run_export(req: ExportRequest, on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Run the export; return the manifest (also written to ``req.out / "manifest.json"``).

    Raises:
        ExportError (or another HumwatchError: SiteError, ModelError, AudioError): nothing could be exported.
        GateFailed: the export ran but a gate failed; ``.manifest`` holds everything measured, nothing was written.
    """
    clock = Clock(on_progress)
    clock.report("loading the model", 0.02)
    loaded = load_stage(req)
    clock.lap("load")
    clock.share = 0.6 if loaded.classifier else 1.0  # with a classifier the autoencoder takes ~60 % of the bar
    clock.step("reading audio", 0.05)
    patches = audio_stage(req, loaded.src, loaded.classifier)
    clock.lap("audio")
    with scratch_dir("humwatch-export-") as work, atomic_dir(req.out) as tmp:
        conv = convert_stage(loaded.src, patches, tmp, work, clock)
        clock.step("parity: PyTorch, ONNX Runtime, TFLite float and int8", 0.7)
        par = parity_stage(loaded.src, patches, conv)
        clock.lap("parity")
        clock.step("threshold on int8 scores", 0.8)
        threshold = threshold_stage(loaded.src, patches, par, req.seed)
        clock.lap("threshold")
        clock.step("TensorFlow Lite Micro", 0.85)
        tflm = tflm_stage(conv, patches)
        clock.lap("tflm")
        gates = gate_stage(req.max_model_bytes, conv, par, tflm)
        clf = classifier_stage(req, loaded, patches, conv, tflm, tmp, work, clock)
        if clf:
            gates += clf.gates
        clock.report("the networks as plain C (checked against TFLM)", 0.93)
        cms = c_model_stage(loaded.src, patches, conv, clf)
        gates += cms.gates
        clock.lap("c_model")
        manifest = build_manifest(req, loaded, patches, conv, par, threshold, tflm, clf, gates, clock, cms)
        return write_stage(tmp, loaded, conv, tflm, threshold, clf, manifest, clock, cms, patches)


def export_site(site, out: str | Path, target: str = DEFAULT_TARGET, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                on_progress: Callable[[str, float], None] | None = None, classifier: bool = True) -> Path:
    """Export a calibrated :class:`calibration.store.Site` into ``out`` (what ``humwatch demo`` calls).

    ``classifier=False`` leaves out the site's fault classifier (as ``--no-classifier``). Returns the output
    directory. Raises like :func:`run_export`.
    """
    run_export(ExportRequest(out=Path(out), site=site.name, sites_dir=site.dir.parent, target=target,
                             max_model_bytes=max_model_bytes, no_classifier=not classifier), on_progress)
    return Path(out)
