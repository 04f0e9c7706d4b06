"""``humwatch export``: a trained, calibrated model → files a firmware build can consume, with the evidence.

Steps (each reported through ``on_progress(step, fraction)``):

1. load the site's model, mic-response offsets and current calibration (or a bare model dir + ``--representative``);
2. read the calibration audio and cut it as calibration did (threshold part / held-out part), inject simulator faults
   into held-out audio;
3. PyTorch → ONNX (dynamo, opset 18) → onnx2tf SavedModel → TFLite float and full-integer int8;
4. parity: score the held-out and fault patches in PyTorch, ONNX Runtime, float TFLite and int8 TFLite; run the int8
   model in TensorFlow Lite Micro and find its arena;
5. re-derive the threshold on the int8 model's scores of the threshold part with the site's rule (mean + kσ);
6. the site's fault classifier (or ``--classifier DIR``; none with ``--no-classifier``) through the same chain as a
   second int8 model, with its own parity figures and gates (:mod:`firmware_export.classifier`);
7. gates (size, TFLM ops, float parity, int8 correlation, AUC drop, and the classifier's); on failure raise
   :class:`GateFailed` and write nothing; otherwise write everything into ``--out`` atomically (the old export stays
   until the new one is whole).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomaly.decision import DEFAULT_K, DEFAULT_RULE, MOfN, fit_threshold
from firmware_export.errors import ExportError, GateFailed
from firmware_export.targets import DEFAULT_TARGET, TARGETS, TFLM_OPS_SOURCE, latency_estimate

DEFAULT_MAX_MODEL_BYTES = 204_800  # budget of model_int8.tflite, and of both int8 models together with a classifier
MIN_PEARSON = 0.98
MAX_AUC_DROP = 0.02
MAX_FLOAT_RECON_DIFF = 1e-3
TFLM_PATCHES = 8  # patches run through the (slow, reference-kernel) TFLM interpreter to compare with LiteRT
# The classifier's gates (classifier_*) have their constants in firmware_export/classifier.py. Without a site
# (--model), the threshold and alarm rules are anomaly.decision's defaults.

OUTPUT_FILES = ("model.onnx", "model_float.tflite", "model_int8.tflite", "model_data.cc", "model_data.h",
                "humwatch_frontend.h", "hw_frontend.h", "hw_frontend.c")


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


@dataclass
class Source:
    kind: str
    det: object
    model_dir: Path
    model_hash: str
    offsets: np.ndarray | None
    files: list[Path]
    k: float
    rule: MOfN
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


def _autoencoder(det, where: str):
    from anomaly.detectors import AutoencoderDetector

    if not isinstance(det, AutoencoderDetector):
        raise ExportError(f"{where}: only the conv autoencoder ('ae') exports to firmware, this is a "
                          f"{det.kind!r} detector")
    return det


def _model_inputs(model_dir: Path) -> dict:
    from firmware_export.manifest import sha256_file

    d = {"model_json_sha256": sha256_file(model_dir / "model.json")}
    w = model_dir / "weights.pt"
    if w.is_file():
        d["weights_sha256"] = sha256_file(w)
    return d


def _calibration_files(site, record: dict) -> list[Path]:
    files = record.get("audio", {}).get("files")
    if not files:
        raise ExportError(f"site {site.name!r}: calibration {record.get('id')} lists no audio files")
    from anomaly.detectors import file_sha256

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
    from anomaly.detectors import model_hash
    from calibration.calibrate import CHUNK_PATCHES, site_detector
    from calibration.store import SiteStore
    from firmware_export.manifest import sha256_file

    site = SiteStore(req.sites_dir).site(req.site)
    cfg = site.config()
    record = site.calibration()
    det, offsets, mh = site_detector(site)
    det = _autoencoder(det, f"site {site.name!r}")
    rec_hash = record.get("model", {}).get("hash")
    if rec_hash and rec_hash != mh:
        raise ExportError(f"site {site.name!r}: calibration {record['id']} was made with model {rec_hash}, the site "
                          f"now uses {mh}: calibrate again (`humwatch calibrate --site {site.name} --from AUDIO`)")
    th = record["threshold"]
    files = _calibration_files(site, record)
    inputs = {"model_hash": model_hash(site.model_dir()), **_model_inputs(site.model_dir()),
              "calibration_record_sha256": sha256_file(site.calibrations_dir / f"{record['id']}.json")}
    if cfg.response_curve:
        rc = Path(cfg.response_curve)
        rc = rc if rc.is_absolute() else site.dir / rc
        inputs["response_curve_sha256"] = sha256_file(rc)
    return Source(kind="site", det=det, model_dir=site.model_dir(), model_hash=mh, offsets=offsets, files=files,
                  k=float(th["k"]), rule=MOfN(int(th["alarm_m"]), int(th["alarm_n"])),
                  reference_threshold=float(th["threshold"]),
                  threshold_source=f"site {site.name} calibration {record['id']}: mean + {float(th['k']):g} sigma "
                                   "of the int8 model's scores on the calibration's threshold part",
                  machine=cfg.machine, chunk_patches=CHUNK_PATCHES, site=site.name, calibration_id=record["id"],
                  inputs=inputs, classifier_dir=site.classifier_dir(), classifier_hash=cfg.classifier_hash,
                  classifier_alarm=list(cfg.classifier_alarm))


def _model_source(req: ExportRequest) -> Source:
    from anomaly.audio import find_audio
    from anomaly.detectors import load_detector, model_hash
    from calibration.calibrate import CHUNK_PATCHES

    model_dir = Path(req.model)
    det = _autoencoder(load_detector(model_dir), str(model_dir))
    if not req.representative:
        raise ExportError("--model needs --representative AUDIO (normal recordings of the machine: they calibrate "
                          "the int8 quantisation and set the threshold), or export a calibrated site with --site NAME")
    files = find_audio(req.representative)
    mh = model_hash(model_dir)
    return Source(kind="model", det=det, model_dir=model_dir, model_hash=mh, offsets=None, files=files,
                  k=DEFAULT_K, rule=DEFAULT_RULE, reference_threshold=None,
                  threshold_source=f"provisional (no site calibration): mean + {DEFAULT_K:g} sigma of the int8 model's "
                                   "scores on 2/3 of the --representative audio",
                  machine="pump",
                  chunk_patches=CHUNK_PATCHES, inputs={"model_hash": mh, **_model_inputs(model_dir)})


def _normalise(det, X: np.ndarray) -> np.ndarray:
    return ((X - det.mean_) / det.std_).astype(np.float32, copy=False)


def _classifier_source(req: ExportRequest, src: Source):
    """``(classifier, "")`` with the :class:`firmware_export.classifier.ClassifierSource` to export next to the model,
    or ``(None, reason)`` when there is none."""
    from firmware_export.classifier import load_for_export

    if req.no_classifier:
        return None, "--no-classifier"
    params = src.det.params
    if req.classifier:
        return load_for_export(req.classifier, params, src.model_hash, "--classifier"), ""
    if src.classifier_dir is None:
        return None, (f"site {src.site} has no classifier" if src.site else "no --classifier given")
    return load_for_export(src.classifier_dir, params, src.model_hash, f"site {src.site}",
                           expected_hash=src.classifier_hash or None, alarm=src.classifier_alarm), ""


def run_export(req: ExportRequest, on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Run the export; return the manifest (also written to ``req.out / "manifest.json"``).

    Raises:
        ExportError (or another HumwatchError: SiteError, ModelError, AudioError): nothing could be exported.
        GateFailed: the export ran but a gate failed; ``.manifest`` holds everything measured, nothing was written.
    """
    from anomaly.atomic import atomic_dir
    from firmware_export import c_arrays, data, onnx_export, parity, pipeline, tflite
    from firmware_export.frontend_ref import DIR as REF_DIR
    from firmware_export.frontend_ref import SOURCES as REF_SOURCES
    from firmware_export.manifest import MANIFEST_FORMAT, clean, file_entry, macs_by_kind, sha256_file, tool_versions

    report_progress = on_progress or (lambda _s, _f: None)
    timings: dict[str, float] = {}
    t_start = t_last = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t_last
        now = time.perf_counter()
        timings[name] = round(now - t_last, 2)
        t_last = now

    _check_request(req)
    report_progress("loading the model", 0.02)
    src = _site_source(req) if req.site else _model_source(req)
    det = src.det
    p = det.params
    model = det.model_.eval()
    cs, no_clf_reason = _classifier_source(req, src)
    lap("load")
    # with a classifier the autoencoder's stages take the first ~60 % of the progress bar
    ae_share = 0.6 if cs else 1.0

    def step(what: str, f: float) -> None:
        report_progress(what, f * ae_share)

    step("reading audio", 0.05)
    clf_faults = []
    if cs:
        from firmware_export.classifier import simulator_classes

        clf_faults = simulator_classes(cs.clf.classes)
    d = data.gather(src.files, p, src.offsets, src.machine, src.chunk_patches,
                    representative_files=req.representative if src.kind == "site" else None, seed=req.seed,
                    extra_faults=clf_faults)
    clf_sets = None
    if cs:
        from firmware_export.classifier import patch_sets

        clf_sets = patch_sets(d.representative, d.check, d.faults, d.fault_names, d.extra_faults,
                              d.extra_fault_names)
    thr_n, check_n, fault_n, rep_n = (_normalise(det, X) for X in (d.threshold, d.check, d.faults, d.representative))
    del d.threshold, d.check, d.faults, d.representative, d.extra_faults
    lap("audio")

    w = det.train_config.mask_frames
    if w:
        # An interpolation model only ever sees inputs with one block hidden: calibrate the int8 ranges on those.
        rep_n = parity.hide_blocks(rep_n, w)
    with tempfile.TemporaryDirectory(prefix="humwatch-export-") as work_s, atomic_dir(req.out) as tmp:
        work = Path(work_s)
        conv = pipeline.convert_model(model, "model", tmp, work, p.patch_frames, p.n_mels, rep_n,
                                      (1, p.patch_frames, p.n_mels, 1), step, lap)
        int8_bytes, fm, qm, ops = conv.int8_bytes, conv.fm, conv.qm, conv.ops

        step("parity: PyTorch, ONNX Runtime, TFLite float and int8", 0.7)
        sets = {"normal": check_n, "fault": fault_n}
        # One network pass per patch, or (interpolation objective) one per hidden block, assembled as on the device.
        runs = {"pytorch": lambda X: parity.torch_reconstruct(model, X),
                "onnxruntime": lambda X: onnx_export.run_onnxruntime(tmp / "model.onnx", X)[:, 0],
                "tflite_float": fm.run, "tflite_int8": qm.run}
        recon = {rt: {k: parity.interpolated(run, X, w) for k, X in sets.items()} for rt, run in runs.items()}
        scorer = det.scorer
        scores = {rt: {k: scorer.of_output(sets[k], r[k]) for k in sets} for rt, r in recon.items()}
        recon_diff = {rt: float(np.abs(recon[rt]["normal"] - recon["pytorch"]["normal"]).max())
                      for rt in recon if rt != "pytorch"}
        par = parity.summarise(scores, recon_diff, d.fault_names)
        del recon
        lap("parity")

        step("threshold on int8 scores", 0.8)
        pt_thr_scores = scorer.of_output(thr_n, parity.interpolated(runs["pytorch"], thr_n, w))
        q_thr_scores = scorer.of_output(thr_n, parity.interpolated(runs["tflite_int8"], thr_n, w))
        pt_thr = fit_threshold(pt_thr_scores, src.k).value
        q_fit = fit_threshold(q_thr_scores, src.k)
        q_thr, q_mean, q_std = q_fit.value, q_fit.mean, q_fit.std
        report = None
        if q_thr_scores.size >= 100:
            from calibration.threshold import threshold_report

            report = threshold_report(q_thr_scores, src.k, src.rule, p.patch_seconds, seed=req.seed).to_dict()
            report.pop("tail", None)
        pt_all = np.r_[scores["pytorch"]["normal"], scores["pytorch"]["fault"]]
        q_all = np.r_[scores["tflite_int8"]["normal"], scores["tflite_int8"]["fault"]]
        n_norm = scores["pytorch"]["normal"].size
        threshold = {
            "rule": f"mean + k * sigma (sample sigma) of the threshold part's patch scores, k = {src.k:g}",
            "source": src.threshold_source,
            "k": src.k, "alarm_m": src.rule.m, "alarm_n": src.rule.n,
            "alarm_rule": src.rule.describe(),
            "int8": q_thr, "int8_mean": q_mean, "int8_std": q_std,
            "pytorch_reproduced": pt_thr,
            "site_pytorch": src.reference_threshold,
            "site_reproduction_rel_diff": (abs(pt_thr - src.reference_threshold) / src.reference_threshold
                                           if src.reference_threshold else None),
            "threshold_patches": int(thr_n.shape[0]),
            "split": d.split,
            "held_out_exceedance": {
                "pytorch": float(np.mean(scores["pytorch"]["normal"] > pt_thr)),
                "int8": float(np.mean(scores["tflite_int8"]["normal"] > q_thr))},
            "fault_detection_rate": {
                "pytorch": float(np.mean(scores["pytorch"]["fault"] > pt_thr)),
                "int8": float(np.mean(scores["tflite_int8"]["fault"] > q_thr))},
            "decision_agreement": float(np.mean((pt_all > pt_thr) == (q_all > q_thr))),
            "decision_agreement_normal": float(np.mean((pt_all[:n_norm] > pt_thr) == (q_all[:n_norm] > q_thr))),
            "int8_report": report,
        }
        lap("threshold")

        step("TensorFlow Lite Micro", 0.85)
        iq, oq = qm.input_quant, qm.output_quant
        tfl_idx = np.linspace(0, len(check_n) - 1, min(TFLM_PATCHES, len(check_n))).round().astype(int)
        tflm = pipeline.tflm_figures(conv, tflite.quantize(check_n[tfl_idx], *iq))
        lap("tflm")

        # -- gates ----------------------------------------------------------------------------------------------
        n8 = len(int8_bytes)
        gates = [parity.gate("size", n8 <= req.max_model_bytes, n8, req.max_model_bytes,
                             f"model_int8.tflite is {n8:,} B, budget {req.max_model_bytes:,} B"
                             + (f" (over by {n8 - req.max_model_bytes:,} B)" if n8 > req.max_model_bytes else ""))]
        gates.append(pipeline.ops_gate("ops", ops, tflm))
        fdiff = max(recon_diff["onnxruntime"], recon_diff["tflite_float"])
        gates.append(parity.gate("float_parity", fdiff <= MAX_FLOAT_RECON_DIFF, fdiff, MAX_FLOAT_RECON_DIFF,
                                 f"max |reconstruction - PyTorch| of ONNX Runtime {recon_diff['onnxruntime']:.2e}, "
                                 f"float TFLite {recon_diff['tflite_float']:.2e} (limit {MAX_FLOAT_RECON_DIFF:g}; a "
                                 "failure means a layer was converted wrongly)"))
        r = par["tflite_int8"]["normal"]["pearson"]
        gates.append(parity.gate("correlation", r == r and r >= MIN_PEARSON, r, MIN_PEARSON,
                                 f"int8 vs PyTorch score Pearson on held-out normal patches {r:.4f} (minimum "
                                 f"{MIN_PEARSON})" + (f", short by {MIN_PEARSON - r:.4f}"
                                                      if r == r and r < MIN_PEARSON else "")))
        drop = par["pytorch"]["auc"] - par["tflite_int8"]["auc"]
        gates.append(parity.gate("auc_drop", drop == drop and drop <= MAX_AUC_DROP, drop, MAX_AUC_DROP,
                                 f"AUC normal vs injected faults: PyTorch {par['pytorch']['auc']:.4f}, int8 "
                                 f"{par['tflite_int8']['auc']:.4f}, drop {drop:+.4f} (maximum {MAX_AUC_DROP})"
                                 + (f", over by {drop - MAX_AUC_DROP:.4f}" if drop > MAX_AUC_DROP else "")))

        # -- the fault classifier: a second int8 model through the same chain ----------------------------------
        clf = None
        if cs:
            from firmware_export import classifier as clf_export

            clf = clf_export.run(cs, p, clf_sets, tmp, work, report_progress, lap, ae_int8=n8,
                                 max_bytes=req.max_model_bytes, ae_tflm=tflm, seed=req.seed)
            gates += clf.gates
        failed = [g for g in gates if not g["passed"]]

        # -- manifest -------------------------------------------------------------------------------------------
        passes = det.forward_passes()
        macs = {k: v * passes for k, v in macs_by_kind(model, p.patch_frames, p.n_mels).items()}
        from anomaly.model import count_macs, count_params

        manifest = {
            "manifest_format": MANIFEST_FORMAT,
            "status": "failed" if failed else "passed",
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "target": req.target,
            "source": {"kind": src.kind, "site": src.site, "calibration_id": src.calibration_id,
                       "model_dir": str(Path(src.model_dir).resolve()), "model_hash": src.model_hash,
                       "detector": det.kind, "machine": src.machine},
            "inputs": {**src.inputs,
                       "audio": [{"path": str(f.path), "sha256": sha256_file(f.path), "patches": f.n_patches,
                                  "role": "calibration" if src.kind == "site" else "representative"}
                                 for f in d.files]
                       + [{"path": str(f), "sha256": sha256_file(f), "role": "representative"}
                          for f in d.representative_files]},
            "outputs": {},
            "feature_params": p.to_dict(),
            "feature_params_hash": p.hash(),
            "normalisation": {"mean": det.mean_.tolist(), "std": det.std_.tolist()},
            "mic_offsets": None if src.offsets is None else np.asarray(src.offsets, float).tolist(),
            "model": {
                "architecture": det.arch.to_dict(),
                "params": count_params(model),
                "macs_per_patch": count_macs(model) * passes,
                "forward_passes_per_patch": passes,
                "mask_frames": w,
                "macs_by_kind": macs,
                "onnx": conv.onnx_info,
                "tflite_ops": ops,
                "tflm_allowed_ops_source": TFLM_OPS_SOURCE,
                "sizes": conv.sizes(),
                "input": {"name": "normalised log-mel patch", "shape": [1, p.patch_frames, p.n_mels, 1],
                          "layout": "NHWC: row = frame (time), column = mel band", "dtype": "int8",
                          "scale": iq[0], "zero_point": iq[1]},
                "output": {"name": "reconstruction of the normalised patch", "shape": [1, p.patch_frames, p.n_mels, 1],
                           "dtype": "int8", "scale": oq[0], "zero_point": oq[1]},
                "passes": ("one invocation per patch" if not w else
                           f"{passes} invocations per patch (interpolation objective): for pass k the input's frames "
                           f"[{w}k, {w}k + {w}) are set to the input zero point (x = 0) and only those frames of the "
                           "output are kept; the assembled output is the 'reconstruction' the score uses "
                           "(hw_pass_input, hw_pass_collect)"),
                "score": ("mean over the patch of (x - dequantised output)^2 with x the float normalised input; "
                          "computed on the device in float (see humwatch_frontend.h)") if scorer.kind == "mse" else
                         ("squared Mahalanobis distance of log(per-band mean of (x - dequantised output)^2 + "
                          "HW_BAND_ERROR_EPS) from the model's error Gaussian (hw_score_mean, hw_score_precision); "
                          "computed on the device in float, the quadratic form in double (see humwatch_frontend.h)"),
            },
            "tflm": tflm,
            "latency_estimate": {
                "note": "ESTIMATE from MACs and assumed per-kernel MAC rates, not a measurement",
                "selected_target": req.target,
                "targets": {t: latency_estimate(macs, t) for t in TARGETS},
            },
            "threshold": threshold,
            "parity": {
                "score": ("per-patch MSE" if scorer.kind == "mse" else
                          "per-patch Gaussian score (Mahalanobis distance of the log band errors)")
                         + " between the float normalised input and each runtime's reconstruction",
                "patches": {"normal_held_out": int(len(check_n)), "fault": int(len(fault_n)),
                            "faults": list(data.INJECT_FAULTS), "severity": data.INJECT_SEVERITY,
                            "fault_mixing": "simulator fault component x (held-out RMS / 0.1), clipped to +-1, as "
                                            "calibration's fault injection", "representative": int(len(rep_n)),
                            "seed": req.seed},
                "runtimes": clean(par, 6),
            },
            "classifier": clf.section if clf else {"included": False, "reason": no_clf_reason},
            "gates": {"passed": not failed, "checks": gates},
            "tools": tool_versions(),
            "timing_seconds": timings,
        }

        if failed:
            lap("gates")
            timings["total"] = round(time.perf_counter() - t_start, 2)
            raise GateFailed(failed, clean(manifest))

        # -- C sources ------------------------------------------------------------------------------------------
        report_progress("writing C sources", 0.95)
        banner = (f"generated by humwatch export {manifest['tools']['humwatch']} on {manifest['created_utc']}; "
                  f"model {src.model_hash}" + (f", site {src.site}, calibration {src.calibration_id}"
                                               if src.site else "") + ". Do not edit.")
        cc, h = c_arrays.model_data_files(int8_bytes, ops, tflm.get("arena_bytes"),
                                          tflm.get("arena_bytes_recommended"), banner)
        (tmp / "model_data.cc").write_text(cc)
        (tmp / "model_data.h").write_text(h)
        (tmp / "humwatch_frontend.h").write_text(c_arrays.frontend_header(
            p, det.mean_, det.std_, src.offsets, iq, oq,
            {"threshold": q_thr, "k": src.k, "rule": src.rule,
             "site_threshold_float": src.reference_threshold, "threshold_source": src.threshold_source},
            {"model_hash": src.model_hash, "site": src.site, "calibration_id": src.calibration_id}, banner,
            score=scorer, mask_frames=w))
        for name in REF_SOURCES:
            shutil.copyfile(REF_DIR / name, tmp / name)
        names = list(OUTPUT_FILES)
        if clf:
            clf.write_sources(tmp, p, banner + f" Classifier {cs.hash}.", anomaly_model_hash=src.model_hash,
                              site=src.site, rule=src.rule)
            names += list(clf_export.FILES)
        manifest["outputs"] = {name: file_entry(tmp / name) for name in names}
        lap("write")
        timings["total"] = round(time.perf_counter() - t_start, 2)
        manifest = clean(manifest)
        import json

        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        report_progress("done", 1.0)
    return manifest


def export_site(site, out: str | Path, target: str = DEFAULT_TARGET, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                on_progress: Callable[[str, float], None] | None = None, classifier: bool = True) -> Path:
    """Export a calibrated :class:`calibration.store.Site` into ``out`` (what ``humwatch demo`` calls).

    ``classifier=False`` leaves out the site's fault classifier (as ``--no-classifier``). Returns the output
    directory. Raises like :func:`run_export`.
    """
    run_export(ExportRequest(out=Path(out), site=site.name, sites_dir=site.dir.parent, target=target,
                             max_model_bytes=max_model_bytes, no_classifier=not classifier), on_progress)
    return Path(out)
