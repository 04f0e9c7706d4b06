"""The fault classifier as a second int8 model of an export, under the same kind of parity gates as the autoencoder.

The exported graph (:class:`DeviceClassifier`) maps a *raw* log-mel patch ``[1, 96, 64, 1]`` (NHWC, the front end's
step 4 with the microphone offsets, not normalised) to *calibrated* logits ``[1, n_classes]``: the classifier's own
per-band normalisation is a Mul + Add in front of the network, and the logit offset of the training loss and the
division by the temperature are folded into the weights of the last linear layer (exact). The device applies the
sigmoid (or softmax) and compares with per-class thresholds (``humwatch_classifier.h``).

Patch sets: int8 calibration on the autoencoder export's representative normal patches plus half of the injected
fault patches (``INJECT_FAULTS`` and the classifier's other simulator classes); parity on held-out normal patches
(at most ``MAX_NORMAL_PATCHES``) plus the other half of the fault patches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomaly.classify import load_classifier
from anomaly.model import count_params
from anomaly.modeldir import ModelDirError, classifier_hash, file_sha256, model_params, read_classifier_meta
from anomaly.simulate import FAULTS
from calibration.fleet.telemetry import MAX_CLASSES
from firmware_export import c_arrays, onnx_export, parity, pipeline, tflite
from firmware_export.data import evenly
from firmware_export.errors import ExportError
from firmware_export.frontend_ref import CLASSIFIER_SOURCES
from firmware_export.frontend_ref import DIR as REF_DIR
from firmware_export.manifest import clean, macs_by_kind
from firmware_export.parity import gate, pearson
from firmware_export.pipeline import TFLM_PATCHES
from firmware_export.targets import TARGETS, TFLM_OPS_SOURCE, latency_estimate

MAX_FLOAT_LOGIT_DIFF = 1e-3  # float parity: max |logit - PyTorch's| (ORT, float TFLite) <= this x max(1, max |logit|)
MIN_LOGIT_PEARSON = 0.98  # int8 vs PyTorch: Pearson of the logits over every patch x class of the parity patches
MIN_DECISION_AGREEMENT = 0.98  # share of patch x class decisions (at the per-class thresholds) equal to PyTorch's
MAX_NORMAL_PATCHES = 400  # held-out normal patches in the classifier's parity set (evenly spaced)
PROB_CLIP = 1e-7  # probability thresholds are clipped into [PROB_CLIP, 1 - PROB_CLIP] for their logit
EXPORTABLE_BACKBONES = ("cnn", "ae")
UNEXPORTABLE_BACKBONES = {
    "yamnet": "it is a head on the embeddings of the external YAMNet model (3.7 M parameters), which is not part of "
              "the classifier and does not fit a microcontroller; for firmware train a 'cnn' (or 'ae', --base) "
              "backbone classifier (`humwatch classify train` without --embeddings yamnet)",
}
# Written for an export with a classifier (the C reference hw_classifier.c/.h is copied from frontend_ref/).
FILES = ("classifier.onnx", "classifier_float.tflite", "classifier_int8.tflite", "classifier_data.cc",
         "classifier_data.h", "humwatch_classifier.h", "hw_classifier.h", "hw_classifier.c")


@dataclass
class ClassifierSource:
    """A loaded classifier and where it came from."""

    clf: object  # anomaly.classify.FaultClassifier
    directory: Path
    hash: str
    origin: str  # "site <name>" or "--classifier"
    alarm: list[str] = field(default_factory=list)  # classes whose hit alone raises an alarm (site setting)
    inputs: dict = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in the order of the device model's outputs: :class:`DeviceClassifier`'s logits, so the
        order of ``hw_clf_class_names`` in ``humwatch_classifier.h``, of the manifest's classes and of the class
        probabilities a device sends in its telemetry (its birth message's ``classes``)."""
        return tuple(self.clf.classes)

    @property
    def softmax(self) -> bool:
        return bool(self.clf.config.exclusive)

    @property
    def backbone(self) -> str:
        return str(self.clf.arch_.get("backbone"))


def load_for_export(directory: str | Path, params, model_hash: str, origin: str, expected_hash: str | None = None,
                    alarm: list[str] | None = None) -> ClassifierSource:
    """Load and check a classifier for export with an anomaly model of front-end parameters ``params``.

    Raises:
        ExportError: not a classifier directory, a backbone that cannot be exported (YAMNet), other FeatureParams
            than the anomaly model's, a hash other than the site's ``classifier_hash``, alarm classes it does not
            have, more classes than a telemetry message carries (``MAX_CLASSES``). ModelError (from
            :func:`anomaly.classify.load_classifier`): corrupt files.
    """
    d = Path(directory)
    skip = " (or leave it out: --no-classifier)" if origin.startswith("site") else ""
    if not d.is_dir():
        raise ExportError(f"classifier directory not found: {d} ({origin}){skip}")
    meta = _read_meta(d, skip)
    _check_backbone(meta, d, skip)
    _check_params(meta, d, params, model_hash, skip)
    h = classifier_hash(d)
    if expected_hash and h != expected_hash:
        raise ExportError(f"classifier {d} has hash {h}, {origin} expects {expected_hash} (classifier_hash in "
                          "site.toml): it changed since it was set on the site; attach it again with `humwatch site "
                          f"set-classifier`{skip}")
    clf = load_classifier(d, params)
    unknown = [c for c in (alarm or []) if c not in clf.classes]
    if unknown:
        raise ExportError(f"{origin}: classifier_alarm names {', '.join(map(repr, unknown))}, not classes of "
                          f"classifier {d} ({', '.join(clf.classes)})")
    if len(clf.classes) > MAX_CLASSES:
        raise ExportError(f"classifier {d} has {len(clf.classes)} classes; a device's telemetry carries at most "
                          f"{MAX_CLASSES} class probabilities ({origin}){skip}")
    inputs = {"hash": h, "model_json_sha256": file_sha256(d / "model.json")}
    if (d / "weights.pt").is_file():
        inputs["weights_sha256"] = file_sha256(d / "weights.pt")
    return ClassifierSource(clf=clf, directory=d, hash=h, origin=origin, alarm=list(alarm or []), inputs=inputs)


def _read_meta(d: Path, skip: str) -> dict:
    """The classifier's model.json (:func:`anomaly.modeldir.read_classifier_meta`), its problems in the export's
    words."""
    try:
        return read_classifier_meta(d)
    except ModelDirError as e:
        if e.problem == "no_model_json":
            raise ExportError(f"{d} is not a classifier directory (no model.json; train one with `humwatch classify "
                              "train`)") from None
        if e.problem == "corrupt_json":
            raise ExportError(f"{d / 'model.json'}: corrupt JSON ({e.detail[:200]})") from None
        if e.problem == "wrong_kind":
            meta = e.meta
            kind = meta.get("kind") if isinstance(meta, dict) else None
            desc = (f"model.json kind {kind!r}" if kind else
                    "an anomaly model directory" if isinstance(meta, dict) and "detector" in meta else
                    "model.json has no kind 'classifier'")
            raise ExportError(f"{d} is not a fault classifier ({desc}){skip}") from None
        raise


def _check_backbone(meta: dict, d: Path, skip: str) -> None:
    """Refuse, before loading anything, a backbone that cannot go onto a microcontroller."""
    arch = meta.get("architecture") if isinstance(meta.get("architecture"), dict) else {}
    backbone = arch.get("backbone")
    if backbone in UNEXPORTABLE_BACKBONES:
        raise ExportError(f"classifier {d}: the {backbone!r} backbone cannot be exported to firmware: "
                          f"{UNEXPORTABLE_BACKBONES[backbone]}{skip}")
    if backbone not in EXPORTABLE_BACKBONES:
        raise ExportError(f"classifier {d}: unknown backbone {backbone!r}; firmware export supports "
                          f"{', '.join(EXPORTABLE_BACKBONES)}{skip}")


def _check_params(meta: dict, d: Path, params, model_hash: str, skip: str) -> None:
    """The classifier reads the same log-mel patches as the anomaly model on the device: same FeatureParams."""
    try:
        theirs = model_params(meta, d)
    except ModelDirError as e:
        if e.problem == "params" and e.detail:
            raise ExportError(f"{d / 'model.json'}: no usable feature_params ({e.detail[:200]})") from None
        raise
    if theirs.hash() != params.hash():
        stored = meta.get("feature_params_hash") or theirs.hash()
        fields = ", ".join(f"{k}={b!r} (model: {a!r})" for k, (a, b) in params.diff(theirs).items())
        raise ExportError(f"classifier {d} has FeatureParams hash {stored}, the anomaly model {model_hash} has "
                          f"{params.hash()}" + (f" ({fields})" if fields else "") + ": both read the same log-mel "
                          f"patches on the device; retrain the classifier with the model's front end{skip}")


class DeviceClassifier(nn.Module):
    """What the device runs: raw log-mel patch ``[B, 1, T, M]`` → calibrated logits ``[B, n_classes]``.

    ``(net((x - mean) / std) + logit_offset) / temperature``, with the normalisation as ``x * (1/std) + (-mean/std)``
    (per band, broadcast over time) and the offset and temperature folded into the last linear layer of the head.
    """

    def __init__(self, clf):
        super().__init__()
        self.net = copy.deepcopy(clf.net_).eval()
        last = self.net.head[-1]
        if not isinstance(last, nn.Linear):
            raise ExportError(f"classifier head ends in {type(last).__name__}, expected a Linear layer")
        t = float(clf.temperature_)
        if not np.isfinite(t) or t <= 0:
            raise ExportError(f"classifier temperature must be a positive number, got {t!r}")
        offset = torch.as_tensor(np.asarray(clf.logit_offset_, np.float64), dtype=torch.float64)
        with torch.no_grad():
            w, b = last.weight.double(), last.bias.double()
            last.weight.copy_((w / t).float())
            last.bias.copy_(((b + offset) / t).float())
        std = np.asarray(clf.std_, np.float64)
        mean = np.asarray(clf.mean_, np.float64)
        self.register_buffer("scale", torch.as_tensor(1.0 / std, dtype=torch.float32).view(1, 1, 1, -1))
        self.register_buffer("shift", torch.as_tensor(-mean / std, dtype=torch.float32).view(1, 1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale + self.shift)


def simulator_classes(classes: list[str]) -> list[str]:
    """The classifier's classes that the simulator can inject (its fault names)."""
    return [c for c in classes if c in FAULTS and c != "none"]


@dataclass
class PatchSets:
    """Raw log-mel patches ``[n, T, M]`` for the classifier."""

    representative: np.ndarray
    normal: np.ndarray
    faults: np.ndarray
    fault_names: list[str]
    calibration_faults: dict[str, int]


def patch_sets(representative: np.ndarray, check: np.ndarray, faults: np.ndarray, fault_names: list[str],
               extra: np.ndarray | None, extra_names: list[str]) -> PatchSets:
    """Split the export's raw patches for the classifier: representative normal + every other fault patch for the
    int8 calibration; held-out normal (evenly, at most ``MAX_NORMAL_PATCHES``) + the other fault patches for
    parity."""
    F = faults if extra is None or not len(extra) else np.concatenate([faults, extra])
    names = np.asarray(list(fault_names) + list(extra_names))
    cal, par = np.arange(0, len(F), 2), np.arange(1, len(F), 2)
    return PatchSets(representative=np.concatenate([representative, F[cal]]).astype(np.float32, copy=False),
                     normal=evenly(check, MAX_NORMAL_PATCHES), faults=F[par], fault_names=names[par].tolist(),
                     calibration_faults={str(k): int(v) for k, v in zip(*np.unique(names[cal], return_counts=True),
                                                                         strict=True)})


def probabilities(z: np.ndarray, softmax: bool) -> np.ndarray:
    """Calibrated logits ``[n, C]`` → probabilities ``[n, C]`` (what the device computes after the model)."""
    z = np.asarray(z, np.float64)
    if softmax:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow for large |z|


def logit_thresholds(prob: np.ndarray) -> np.ndarray:
    """Per-class probability thresholds → logit thresholds ``log(t / (1 - t))`` (t clipped to ``PROB_CLIP``)."""
    t = np.clip(np.asarray(prob, np.float64), PROB_CLIP, 1 - PROB_CLIP)
    return np.log(t / (1 - t))


def int8_range(output_quant: tuple[float, int]) -> tuple[float, float]:
    """The logits an int8 output can represent: ``[(-128 - zp) * scale, (127 - zp) * scale]``."""
    s, zp = output_quant
    return (-128 - zp) * s, (127 - zp) * s


def parity_figures(z: dict[str, np.ndarray], thresholds: np.ndarray, softmax: bool, classes: list[str],
                   n_normal: int, fault_names: list[str], out_range: tuple[float, float] | None = None) -> dict:
    """How far each runtime's logits and decisions are from PyTorch's on the parity patches.

    Args:
        z: ``{runtime: calibrated logits [n, C]}`` with ``pytorch`` among them; the first ``n_normal`` rows are
            held-out normal patches, the rest injected faults named by ``fault_names``.
        thresholds: per-class probability thresholds ``[C]``.
        out_range: the int8 model's representable logits (:func:`int8_range`): PyTorch logits outside it saturate,
            and ``tflite_int8`` also gets its differences within the range and the share of saturated logits.
    """
    ref = z["pytorch"]
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    fired = {rt: probabilities(v, softmax) >= thresholds[None, :] for rt, v in z.items()}
    names = np.asarray(fault_names)
    groups = {"normal": np.arange(len(ref)) < n_normal}
    for f in dict.fromkeys(fault_names):
        groups[f] = np.r_[np.zeros(n_normal, bool), names == f]
    out: dict = {"logit_scale": scale, "runtimes": {}}
    for rt, v in z.items():
        row: dict = {}
        if rt in ("pytorch", "tflite_int8"):  # share of patches of each group on which each class fires
            row["fire_rate"] = {g: {c: float(fired[rt][m, k].mean()) if m.any() else None
                                    for k, c in enumerate(classes)} for g, m in groups.items()}
        if rt != "pytorch":
            d = np.abs(v.astype(np.float64) - ref)
            agree = fired[rt] == fired["pytorch"]
            row.update(max_abs_logit_diff=float(d.max()) if d.size else float("nan"),
                       mean_abs_logit_diff=float(d.mean()) if d.size else float("nan"),
                       pearson=pearson(ref.ravel(), v.ravel()),
                       pearson_by_class={c: pearson(ref[:, k], v[:, k]) for k, c in enumerate(classes)},
                       decision_agreement=float(agree.mean()) if agree.size else float("nan"),
                       decision_agreement_by_class={c: float(agree[:, k].mean()) for k, c in enumerate(classes)})
            if rt == "tflite_int8" and out_range is not None and d.size:
                inside = (ref > out_range[0]) & (ref < out_range[1])
                row.update(max_abs_logit_diff_in_range=float(d[inside].max()) if inside.any() else None,
                           share_saturated=float(1 - inside.mean()))
        out["runtimes"][rt] = row
    return out


def gates(par: dict, sizes: dict, ae_int8: int, max_bytes: int, output_quant: tuple[float, int],
          thr_logit: np.ndarray | None, classes: list[str]) -> list[dict]:
    """The classifier's gates (all prefixed ``classifier_``), next to the autoencoder's.

    ``classifier_size``: both int8 models together within ``--max-model-bytes`` (one flash budget);
    ``classifier_float_parity``, ``classifier_correlation``, ``classifier_decisions``: see the constants;
    ``classifier_range`` (sigmoid only): every logit threshold lies inside the int8 output range, so that each class
    can both fire and stay off on the device. (``classifier_ops`` comes from :func:`pipeline.ops_gate`.)
    """
    rts = par["runtimes"]
    out = []
    q8 = sizes["tflite_int8"]
    total = ae_int8 + q8
    out.append(gate("classifier_size", total <= max_bytes, total, max_bytes,
                    f"model_int8.tflite {ae_int8:,} B + classifier_int8.tflite {q8:,} B = {total:,} B, budget "
                    f"{max_bytes:,} B for both" + (f" (over by {total - max_bytes:,} B)" if total > max_bytes else "")))
    lim = MAX_FLOAT_LOGIT_DIFF * par["logit_scale"]
    fd = max(rts["onnxruntime"]["max_abs_logit_diff"], rts["tflite_float"]["max_abs_logit_diff"])
    out.append(gate("classifier_float_parity", fd == fd and fd <= lim, fd, lim,
                    f"max |logit - PyTorch| of ONNX Runtime {rts['onnxruntime']['max_abs_logit_diff']:.2e}, float "
                    f"TFLite {rts['tflite_float']['max_abs_logit_diff']:.2e} (limit {lim:.3g} = "
                    f"{MAX_FLOAT_LOGIT_DIFF:g} x max(1, max |logit| {par['logit_scale']:.3g}); a failure means a "
                    "layer was converted wrongly)"))
    r = rts["tflite_int8"]["pearson"]
    out.append(gate("classifier_correlation", r == r and r >= MIN_LOGIT_PEARSON, r, MIN_LOGIT_PEARSON,
                    f"int8 vs PyTorch logit Pearson over patches x classes {r:.4f} (minimum {MIN_LOGIT_PEARSON})"
                    + (f", short by {MIN_LOGIT_PEARSON - r:.4f}" if r == r and r < MIN_LOGIT_PEARSON else "")))
    a = rts["tflite_int8"]["decision_agreement"]
    worst = min(rts["tflite_int8"]["decision_agreement_by_class"].items(), key=lambda kv: kv[1])
    out.append(gate("classifier_decisions", a == a and a >= MIN_DECISION_AGREEMENT, a, MIN_DECISION_AGREEMENT,
                    f"int8 and PyTorch agree on {a:.2%} of patch x class decisions at the per-class thresholds "
                    f"(minimum {MIN_DECISION_AGREEMENT:.0%}; lowest class {worst[0]} {worst[1]:.2%})"))
    if thr_logit is not None:
        lo, hi = int8_range(output_quant)
        never = [c for c, t in zip(classes, thr_logit, strict=True) if t > hi]
        always = [c for c, t in zip(classes, thr_logit, strict=True) if t <= lo]
        bad = [f"{c} never fires (threshold logit {thr_logit[classes.index(c)]:.3g} > {hi:.3g})" for c in never] + \
              [f"{c} always fires (threshold logit {thr_logit[classes.index(c)]:.3g} <= {lo:.3g})" for c in always]
        out.append(gate("classifier_range", not bad, never + always, [lo, hi],
                        (f"int8 logit range [{lo:.3g}, {hi:.3g}]: " + "; ".join(bad) + " (the int8 calibration saw no "
                         "patch of that class near its threshold: add audio with it to --representative)") if bad else
                        f"every threshold logit lies inside the int8 output range [{lo:.3g}, {hi:.3g}]"))
    return out


@dataclass
class ClassifierExport:
    """The classifier's part of an export: its converted model, gates and manifest section."""

    cs: ClassifierSource
    conv: object  # pipeline.Converted
    gates: list[dict]
    section: dict  # the manifest's "classifier"
    thr_prob: np.ndarray
    thr_logit: np.ndarray | None

    def write_sources(self, out_dir: Path, params, banner: str, anomaly_model_hash: str, site: str | None,
                      rule) -> None:
        """Write ``classifier_data.cc/.h``, ``humwatch_classifier.h`` and the C reference into ``out_dir``
        (``rule``: the site's alarm rule, which alarm classes follow as the monitor does)."""
        clf, classes, tflm = self.cs.clf, self.cs.classes, self.section["tflm"]
        cc, h = c_arrays.model_data_files(self.conv.int8_bytes, self.conv.ops, tflm.get("arena_bytes"),
                                          tflm.get("arena_bytes_recommended"), banner, c_arrays.CLASSIFIER_ARRAY)
        (out_dir / "classifier_data.cc").write_text(cc)
        (out_dir / "classifier_data.h").write_text(h)
        (out_dir / "humwatch_classifier.h").write_text(c_arrays.classifier_header(
            params, classes, self.thr_prob, self.thr_logit, [c in self.cs.alarm for c in classes],
            self.conv.input_quant, self.conv.output_quant,
            {"model_hash": self.cs.hash, "temperature": float(clf.temperature_), "softmax": self.cs.softmax,
             "precision_target": getattr(clf, "precision_target_", None), "backbone": self.cs.backbone,
             "anomaly_model_hash": anomaly_model_hash, "site": site, "rule": rule},
            banner))
        for name in CLASSIFIER_SOURCES:
            (out_dir / name).write_bytes((REF_DIR / name).read_bytes())


def run(cs: ClassifierSource, params, sets: PatchSets, out_dir: Path, work: Path, clock: pipeline.Clock,
        ae_int8: int, max_bytes: int, ae_tflm: dict, seed: int = 0) -> ClassifierExport:
    """Convert the classifier, measure its parity on ``sets`` and in TFLM, and check its gates.

    Args:
        cs: the loaded classifier.
        params: the front end's FeatureParams (the anomaly model's, checked equal to the classifier's).
        sets: raw log-mel patch sets from :func:`patch_sets`.
        out_dir: the export's temporary directory (ONNX and TFLite files are written at once).
        clock: the export's progress and timings (``clock.report`` fractions of the whole export; the timings get a
            ``classifier_`` prefix).
        ae_int8: size of ``model_int8.tflite`` (the size gate covers both models).
        max_bytes: ``--max-model-bytes``.
        ae_tflm: the autoencoder's TFLM figures (for the combined arena).
    """
    clf = cs.clf
    classes = list(cs.classes)
    T, M, C = params.patch_frames, params.n_mels, len(classes)
    module = DeviceClassifier(clf).eval()
    conv = pipeline.convert_model(module, "classifier", out_dir, work, T, M, sets.representative, (1, C),
                                  clock.report, clock.lap, fractions=(0.62, 0.66, 0.78), label="classifier ")

    clock.report("classifier parity: PyTorch, ONNX Runtime, TFLite float and int8", 0.86)
    X = np.concatenate([sets.normal, sets.faults])
    ref = clf.logits_of_patches(X) / float(clf.temperature_)  # the classifier's own (unfolded) calibrated logits
    z = {"pytorch": parity.torch_outputs(module, X).astype(np.float64),
         "onnxruntime": onnx_export.run_onnxruntime(conv.onnx_path, X),
         "tflite_float": conv.fm.run(X), "tflite_int8": conv.qm.run(X)}
    folding = float(np.abs(z["pytorch"] - ref).max()) if len(X) else 0.0
    thr_prob = np.asarray(clf.threshold_array, np.float64)
    thr_logit = None if cs.softmax else logit_thresholds(thr_prob)
    par = parity_figures(z, thr_prob, cs.softmax, classes, len(sets.normal), sets.fault_names,
                         int8_range(conv.output_quant))
    par["folding_max_abs_diff"] = folding
    clock.lap("classifier_parity")

    clock.report("classifier in TensorFlow Lite Micro", 0.9)
    idx = np.linspace(0, len(sets.normal) - 1, min(TFLM_PATCHES, len(sets.normal))).round().astype(int)
    tflm = pipeline.tflm_figures(conv, tflite.quantize(sets.normal[idx], *conv.input_quant))
    if tflm.get("runs") and ae_tflm.get("runs"):
        tflm["both_models"] = {
            "separate_arenas_bytes": ae_tflm["arena_bytes_recommended"] + tflm["arena_bytes_recommended"],
            "one_arena_in_turn_bytes": max(ae_tflm["arena_bytes_recommended"], tflm["arena_bytes_recommended"]),
            "note": "recommended arenas: two interpreters alive at once need the sum; one arena reused by the two "
                    "models in turn (re-creating the interpreter for each) needs the larger"}
    clock.lap("classifier_tflm")

    sizes = conv.sizes()
    gs = gates(par, sizes, ae_int8, max_bytes, conv.output_quant, thr_logit, classes)
    gs.insert(1, pipeline.ops_gate("classifier_ops", conv.ops, tflm))
    fold_lim = MAX_FLOAT_LOGIT_DIFF * par["logit_scale"]
    fp = next(g for g in gs if g["gate"] == "classifier_float_parity")
    if not folding <= fold_lim:  # the folded PyTorch wrapper itself must equal the classifier
        fp.update(passed=False, value=max(fp["value"], folding),
                  detail=fp["detail"] + f"; the folded model differs from the classifier by {folding:.2e}")

    macs = macs_by_kind(module, T, M)
    iq, oq = conv.input_quant, conv.output_quant
    th = getattr(clf, "thresholds_", {})
    section = {
        "included": True,
        "source": {"origin": cs.origin, "dir": str(cs.directory.resolve()), "hash": cs.hash,
                   "backbone": cs.backbone, "classes": classes, "output": "softmax" if cs.softmax else "sigmoid",
                   "feature_params_hash": params.hash(), "base_model_hash": getattr(clf, "base_hash", None),
                   "temperature": float(clf.temperature_),
                   "logit_offset": np.asarray(clf.logit_offset_, float).tolist(),
                   "precision_target": getattr(clf, "precision_target_", None),
                   "threshold_fallbacks": clf.fallbacks()},
        "inputs": cs.inputs,
        "files": list(FILES),
        "model": {
            "architecture": clf.arch_,
            "params": count_params(module),
            "macs_per_patch": int(sum(macs.values())),
            "macs_by_kind": macs,
            "onnx": conv.onnx_info,
            "tflite_ops": conv.ops,
            "tflm_allowed_ops_source": TFLM_OPS_SOURCE,
            "sizes": sizes,
            "input": {"name": "raw log-mel patch (front-end step 4, mic offsets added, not normalised)",
                      "shape": [1, T, M, 1], "layout": "NHWC: row = frame (time), column = mel band",
                      "dtype": "int8", "scale": iq[0], "zero_point": iq[1]},
            "output": {"name": "calibrated logits", "shape": [1, C], "dtype": "int8", "scale": oq[0],
                       "zero_point": oq[1]},
            "folded": "(net((x - mean) / std) + logit_offset) / temperature: the classifier's per-band "
                      "normalisation as Mul + Add in front, the logit offset and 1/temperature in the last linear "
                      "layer",
            "device": ("softmax" if cs.softmax else "sigmoid") + " of the dequantised logits, compared with the "
                      "per-class probability thresholds" + ("" if cs.softmax else " (or the logits with the logit "
                                                                                   "thresholds)"),
        },
        "tflm": tflm,
        "latency_estimate": {"note": "ESTIMATE from MACs and assumed per-kernel MAC rates, not a measurement",
                             "targets": {t: latency_estimate(macs, t) for t in TARGETS}},
        "thresholds": {
            "rule": "per class: the calibrated probability (sigmoid/softmax of the exported logits) >= threshold; "
                    "chosen by `humwatch classify train` on validation clip probabilities (mean of the patch "
                    "probabilities) for the precision target",
            "classes": {c: {"probability": float(thr_prob[k]),
                            "logit": None if thr_logit is None else float(thr_logit[k]),
                            "alarm": c in cs.alarm, "fallback": bool(th.get(c, {}).get("fallback", False)),
                            "val_precision": th.get(c, {}).get("val_precision"),
                            "val_recall": th.get(c, {}).get("val_recall")} for k, c in enumerate(classes)},
        },
        "parity": {
            "logits": "calibrated logits of each runtime on the parity patches; decisions per patch x class at the "
                      "per-class probability thresholds",
            "patches": {"normal_held_out": int(len(sets.normal)), "fault": int(len(sets.faults)),
                        "faults": list(dict.fromkeys(sets.fault_names)),
                        "representative": int(len(sets.representative)),
                        "representative_faults": sets.calibration_faults,
                        "split": "injected fault patches alternate between the int8 calibration and parity; "
                                 f"held-out normal patches evenly, at most {MAX_NORMAL_PATCHES}", "seed": seed},
            **clean(par, 6),
        },
        "gates": {"passed": all(g["passed"] for g in gs), "checks": [g["gate"] for g in gs]},
    }
    return ClassifierExport(cs=cs, conv=conv, gates=gs, section=section, thr_prob=thr_prob, thr_logit=thr_logit)
