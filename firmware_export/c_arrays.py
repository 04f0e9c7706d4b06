"""C sources for firmware: the int8 model as a byte array (``model_data.cc/.h``) and the front end's constants
(``humwatch_frontend.h``).

``humwatch_frontend.h`` is self-contained C99/C++ (``static const`` arrays, ``#define`` scalars, nothing to link) and
holds everything the device needs besides the model: every FeatureParams value, the window, the mel filterbank (as
sparse triangles), microphone-response offsets, per-band normalisation, the model's input/output quantisation, and
the threshold and alarm rule in the int8 model's score domain. ``frontend_ref/hw_frontend.c`` implements the front
end from it and is tested against the Python front end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from anomaly.decision import DEFAULT_RULE, hits_rule
from anomaly.features import FeatureParams, hann_window, mel_filterbank
from anomaly.score import MSE

MODEL_SYMBOL = "g_humwatch_model_data"
CLASSIFIER_SYMBOL = "g_humwatch_classifier_data"


def c_float(v: float) -> str:
    """A float32 literal that parses back to exactly the same float32 (``1e-03f``, ``-4.25f``)."""
    f = np.float32(v)
    if not np.isfinite(f):
        raise ValueError(f"non-finite value {v!r} cannot go into a C header")
    return np.format_float_scientific(f, unique=True, trim="-") + "f"


def _rows(items: Sequence[str], per_line: int, indent: str = "    ") -> str:
    lines = [indent + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(lines)


def float_array(name: str, values, size_macro: str | None = None, per_line: int = 8) -> str:
    vals = [c_float(v) for v in np.asarray(values, np.float32).ravel()]
    size = size_macro or str(len(vals))
    return f"static const float {name}[{size}] HW_UNUSED = {{\n{_rows(vals, per_line)}\n}};\n"


def int_array(name: str, ctype: str, values, size_macro: str | None = None, per_line: int = 16) -> str:
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    size = size_macro or str(len(vals))
    return f"static const {ctype} {name}[{size}] HW_UNUSED = {{\n{_rows(vals, per_line)}\n}};\n"


def sparse_mel(params: FeatureParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The filterbank as contiguous triangles: (first bin, bin count, offset into weights, weights) per band."""
    fb = mel_filterbank(params)  # [n_freqs, n_mels]
    first, count, start, weights = [], [], [], []
    for m in range(fb.shape[1]):
        nz = np.nonzero(fb[:, m])[0]
        if nz.size == 0:  # an empty band (too many mels for the FFT resolution): zero weights, log gives log_offset
            first.append(0)
            count.append(0)
            start.append(len(weights))
            continue
        a, b = int(nz[0]), int(nz[-1]) + 1
        first.append(a)
        count.append(b - a)
        start.append(len(weights))
        weights.extend(fb[a:b, m].tolist())
    return (np.array(first), np.array(count), np.array(start), np.asarray(weights, np.float32))


def _c_string(s: str) -> str:
    """A C string literal; characters outside printable ASCII become octal escapes of their UTF-8 bytes."""
    out = []
    for ch in str(s):
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode())
    return '"' + "".join(out) + '"'


C_RULES = ("m_of_n", "window_mean")  # the alarm-rule kinds hw_alarm_update implements (hw_clf_alarm_update: m-of-n)
C_SCORES = ("mse", "gaussian")  # the score kinds the C reference's hw_score implements (HW_SCORE_KIND)


def _c_rule(rule, prefix: str) -> str:
    """The alarm rule's ``#define`` lines; a rule the C reference does not implement cannot be exported."""
    if rule.kind not in C_RULES:
        raise ValueError(f"the C reference implements the alarm rules {', '.join(C_RULES)}, not {rule.kind!r}")
    return rule.c_defines(prefix)


def _resolver_method(op: str) -> str:
    return "Add" + "".join(w if w[0].isdigit() or w in ("2D", "L2") else w[0] + w[1:].lower() for w in op.split("_"))


@dataclasses.dataclass(frozen=True)
class ArrayNames:
    """File stem, array symbol and macro prefixes of one model's C array, so that several fit in one firmware."""

    stem: str  # <stem>.cc / <stem>.h
    symbol: str  # the byte array; <symbol>_len is its length
    macro: str  # <macro>_DATA_LEN, <macro>_OP_COUNT
    arena_macro: str  # <arena_macro>_BYTES, <arena_macro>_BYTES_MEASURED
    what: str  # one line for the header comment


MODEL_ARRAY = ArrayNames("model_data", MODEL_SYMBOL, "HW_MODEL", "HW_TFLM_ARENA",
                         "The full-integer (int8 in, int8 out) TFLite model for TensorFlow Lite Micro.")
CLASSIFIER_ARRAY = ArrayNames("classifier_data", CLASSIFIER_SYMBOL, "HW_CLASSIFIER", "HW_CLASSIFIER_TFLM_ARENA",
                              "The fault classifier: full-integer (int8 in, int8 out) TFLite model for TensorFlow "
                              "Lite Micro\n * (raw log-mel patch in, calibrated logits out; see "
                              "humwatch_classifier.h).")


def model_data_files(model: bytes, ops: Sequence[str], arena_bytes: int | None, arena_recommended: int | None,
                     banner: str, names: ArrayNames = MODEL_ARRAY) -> tuple[str, str]:
    """``(<stem>.cc, <stem>.h)`` for an int8 model: a 16-byte aligned byte array, its length, the ops to register
    and the measured arena (``names`` keeps the symbols of two models apart)."""
    n = len(model)
    sym, mac, guard = names.symbol, names.macro, f"HUMWATCH_{names.stem.upper()}_H"
    ops_comment = "\n".join(f" *     resolver.{_resolver_method(o)}();" for o in ops)
    arena = ""
    if arena_bytes:
        arena = (f"/* Tensor arena measured with the TFLM Python interpreter (reference kernels): {arena_bytes} B.\n"
                 " * Optimised kernels (CMSIS-NN, ESP-NN) may request scratch buffers on top: start with the\n"
                 " * recommended size and read MicroInterpreter::arena_used_bytes() on the device. */\n"
                 f"#define {names.arena_macro}_BYTES_MEASURED {arena_bytes}\n"
                 f"#define {names.arena_macro}_BYTES {arena_recommended}\n")
    h = f"""/* {names.stem}.h: {banner}
 * {names.what}
 * Operators to register (and nothing else is needed):
 *     static tflite::MicroMutableOpResolver<{len(ops)}> resolver;
{ops_comment}
 */
#ifndef {guard}
#define {guard}

#define {mac}_DATA_LEN {n}
#define {mac}_OP_COUNT {len(ops)}
{arena}
extern const unsigned char {sym}[];
extern const unsigned int {sym}_len;

#endif  /* {guard} */
"""
    hexes = [f"0x{b:02x}" for b in model]
    cc = f"""/* {names.stem}.cc: {banner} */
#include "{names.stem}.h"

/* 16-byte aligned: TFLM reads the flatbuffer in place. */
alignas(16) const unsigned char {sym}[] = {{
{_rows(hexes, 16, "  ")}
}};
const unsigned int {sym}_len = {n};
"""
    return cc, h


def frontend_header(params: FeatureParams, mean: np.ndarray, std: np.ndarray, mic_offsets: np.ndarray | None,
                    input_quant: tuple[float, int], output_quant: tuple[float, int], decision: dict,
                    identity: dict, banner: str, score=MSE, mask_frames: int = 0) -> str:
    """The text of ``humwatch_frontend.h``.

    Args:
        mask_frames: 0 for the plain autoencoder (HW_FORWARD_PASSES 1); else the interpolation objective's block
            width (HW_MASK_FRAMES, HW_FORWARD_PASSES = patch_frames / mask_frames passes per patch).
        score: the model's :mod:`anomaly.score` formula: :data:`~anomaly.score.MSE` (HW_SCORE_KIND = HW_SCORE_MSE) or
            a :class:`~anomaly.score.GaussianScore` (HW_SCORE_GAUSSIAN, its eps and its two arrays).
        decision: ``threshold`` (int8 domain), ``k``, ``rule`` (an :mod:`anomaly.decision` alarm rule; its
            ``c_defines`` give HW_ALARM_*), ``site_threshold_float`` (or None), ``threshold_source``.
        identity: ``model_hash``, ``site``, ``calibration_id``.
    """
    p = params
    n_freqs = p.n_fft // 2 + 1
    first, count, start, weights = sparse_mel(p)
    offsets = np.zeros(p.n_mels, np.float32) if mic_offsets is None else np.asarray(mic_offsets, np.float32)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    inv_std = (np.float32(1.0) / std).astype(np.float32)
    fp_lines = []
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        macro = f"HW_{f.name.upper()}"
        if isinstance(v, str):
            fp_lines.append(f"#define {macro} {_c_string(v)}")
        elif isinstance(v, float):
            fp_lines.append(f"#define {macro} {c_float(v)}")
        else:
            fp_lines.append(f"#define {macro} {int(v)}")
    site_thr = decision.get("site_threshold_float")
    if score.kind not in C_SCORES:
        raise ValueError(f"the C reference implements the scores {', '.join(C_SCORES)}, not {score.kind!r}")
    if score.kind == "mse":
        score_step = ("score = mean over the HW_PATCH_ELEMENTS elements of (x - y)^2, with the float x of step 5 "
                      "(not its\n *      quantised copy), accumulated in float (HW_SCORE_KIND == HW_SCORE_MSE);")
        score_block = "#define HW_SCORE_KIND HW_SCORE_MSE\n"
    else:
        g_mean, g_prec, g_eps = score.mean, score.precision, score.eps
        score_step = ("HW_SCORE_KIND == HW_SCORE_GAUSSIAN: e[m] = mean over the frames of (x - y)^2 in band m (float "
                      "x of\n *      step 5); z[m] = logf(e[m] + HW_BAND_ERROR_EPS) - hw_score_mean[m]; score = "
                      "sum_ij z[i] *\n *      hw_score_precision[i * HW_N_MELS + j] * z[j] (squared Mahalanobis "
                      "distance; accumulate in double);")
        score_block = (f"#define HW_SCORE_KIND HW_SCORE_GAUSSIAN\n#define HW_BAND_ERROR_EPS {c_float(g_eps)}\n"
                       "/* the error Gaussian: mean and precision (inverse covariance) of log band errors */\n"
                       + float_array("hw_score_mean", g_mean, "HW_N_MELS")
                       + float_array("hw_score_precision", g_prec, "HW_N_MELS * HW_N_MELS"))
    pow2 = p.n_fft & (p.n_fft - 1) == 0
    if mask_frames and p.patch_frames % mask_frames:
        raise ValueError(f"mask_frames {mask_frames} does not divide patch_frames {p.patch_frames}")
    passes = p.patch_frames // mask_frames if mask_frames else 1
    step7_extra = "" if not mask_frames else (
        ".\n *      HW_MASK_FRAMES > 0 (a model trained with the interpolation objective): invoke HW_FORWARD_PASSES "
        "times\n *      per patch; for pass k the input rows [k*HW_MASK_FRAMES, (k+1)*HW_MASK_FRAMES) are set to "
        "HW_INPUT_ZERO_POINT\n *      (x = 0) and only those rows of the output are kept; the assembled output is y "
        "(hw_pass_input,\n *      hw_pass_collect)")
    iscale, izp = input_quant
    oscale, ozp = output_quant
    return f"""/* humwatch_frontend.h: {banner}
 *
 * Everything a device needs besides the model, for one patch of {p.patch_frames} frames x {p.n_mels} mel bands
 * ({p.patch_seconds:g} s), computed as the Python front end (anomaly.features.log_mel) does:
 *   1. frame i = samples [i*HW_HOP_LENGTH, i*HW_HOP_LENGTH + HW_WINDOW_LENGTH) of mono float audio at
 *      HW_SAMPLE_RATE Hz, full scale +-1.0 (int16 PCM / 32768.0f); no centring, no padding;
 *   2. multiply by hw_window, zero-pad to HW_N_FFT, FFT, |X[k]| for k = 0..HW_N_FREQS-1 (squared if HW_POWER == 2);
 *   3. mel[m] = sum_j hw_mel_weights[hw_mel_weight_start[m] + j] * |X[hw_mel_first_bin[m] + j]|,
 *      j = 0..hw_mel_bin_count[m]-1 (the triangles of the HTK-mel filterbank; all other weights are 0);
 *   4. logmel[m] = logf(mel[m] + HW_LOG_OFFSET) + hw_mic_offsets[m] (microphone-response correction; 0 if none);
 *   5. x[m] = (logmel[m] - hw_norm_mean[m]) * hw_norm_inv_std[m] (the model's per-band normalisation);
 *   6. q = clamp(roundf(x / HW_INPUT_SCALE) + HW_INPUT_ZERO_POINT, -128, 127) into the int8 input tensor
 *      [1][HW_PATCH_FRAMES][HW_N_MELS][1]: row = frame (time), column = mel band, frame-major;
 *   7. invoke; y = (out_q - HW_OUTPUT_ZERO_POINT) * HW_OUTPUT_SCALE is the reconstruction of x{step7_extra};
 *   8. {score_step}
 *   9. the site's alarm rule (hw_alarm_update): with HW_ALARM_WINDOW_MEAN, the mean of the last HW_ALARM_N
 *      standardised log scores beyond its calibrated limit (hw_frontend.h says how, in exact integer sums);
 *      otherwise a patch is over when score > HW_SCORE_THRESHOLD and the alarm is raised when at least HW_ALARM_M of
 *      the last HW_ALARM_N patches are over.
 * HW_SCORE_THRESHOLD was derived from this int8 model's own scores on the site's calibration audio with the site's
 * rule (mean + HW_THRESHOLD_K sigma), so the device compares a score with a threshold of its own domain; a
 * windowed-mean rule's HW_ALARM_CENTRE and HW_ALARM_SCALE are the same scores' log mean and sd (its limit is the
 * site's).
 * Patches start every HW_PATCH_HOP_SAMPLES samples and need HW_PATCH_SAMPLES samples.
 * Reference implementation: hw_frontend.c / hw_frontend.h, shipped next to this file (tested against the Python
 * front end on golden vectors).
 */
#ifndef HUMWATCH_FRONTEND_H
#define HUMWATCH_FRONTEND_H

#if defined(__GNUC__) || defined(__clang__)
#define HW_UNUSED __attribute__((unused))
#else
#define HW_UNUSED
#endif

/* -- FeatureParams (every field; hash {p.hash()}) -- */
#define HW_FEATURE_PARAMS_HASH "{p.hash()}"
{chr(10).join(fp_lines)}

/* -- derived sizes -- */
#define HW_N_FREQS {n_freqs}
#define HW_N_FFT_IS_POW2 {1 if pow2 else 0}
#define HW_PATCH_ELEMENTS {p.patch_frames * p.n_mels}
#define HW_PATCH_SAMPLES {p.min_samples}
#define HW_PATCH_HOP_SAMPLES {p.patch_hop_samples}
#define HW_MEL_WEIGHTS_COUNT {len(weights)}

/* -- model input/output quantisation (int8 tensors [1][{p.patch_frames}][{p.n_mels}][1]) -- */
#define HW_INPUT_SCALE {c_float(iscale)}
#define HW_INPUT_ZERO_POINT {int(izp)}
#define HW_OUTPUT_SCALE {c_float(oscale)}
#define HW_OUTPUT_ZERO_POINT {int(ozp)}

/* -- network passes per patch (step 7): 1, or one per hidden block of an interpolation model -- */
#define HW_MASK_FRAMES {int(mask_frames)}
#define HW_FORWARD_PASSES {passes}

/* -- score (step 8) -- */
#define HW_SCORE_MSE 0
#define HW_SCORE_GAUSSIAN 1
{score_block}
/* -- decision, in the int8 model's score domain ({decision['threshold_source']}) -- */
#define HW_SCORE_THRESHOLD {c_float(decision['threshold'])}
#define HW_THRESHOLD_K {c_float(decision['k'])}
{_c_rule(decision['rule'], "HW_ALARM")}
/* the site's threshold for the float (PyTorch) model, for reference only: do not compare device scores with it */
#define HW_SITE_THRESHOLD_FLOAT {c_float(site_thr) if site_thr is not None else "(-1.0f) /* none */"}

/* -- identity -- */
#define HW_MODEL_HASH {_c_string(identity.get('model_hash', ''))}
#define HW_SITE_NAME {_c_string(identity.get('site') or '')}
#define HW_CALIBRATION_ID {_c_string(identity.get('calibration_id') or '')}

/* periodic Hann window, HW_WINDOW_LENGTH samples (zero-padded to HW_N_FFT at its end) */
{float_array("hw_window", hann_window(p), "HW_WINDOW_LENGTH")}
/* HTK-mel filterbank with unit peaks, as contiguous triangles over the FFT bins */
{int_array("hw_mel_first_bin", "unsigned short", first, "HW_N_MELS")}
{int_array("hw_mel_bin_count", "unsigned short", count, "HW_N_MELS")}
{int_array("hw_mel_weight_start", "unsigned short", start, "HW_N_MELS")}
{float_array("hw_mel_weights", weights, "HW_MEL_WEIGHTS_COUNT")}
/* additive log offsets per band undoing the microphone's response (all 0 without a response curve) */
{float_array("hw_mic_offsets", offsets, "HW_N_MELS")}
/* per-band normalisation of the model (training-data mean and standard deviation of the log-mel) */
{float_array("hw_norm_mean", mean, "HW_N_MELS")}
{float_array("hw_norm_std", std, "HW_N_MELS")}
{float_array("hw_norm_inv_std", inv_std, "HW_N_MELS")}
#endif  /* HUMWATCH_FRONTEND_H */
"""


def classifier_header(params: FeatureParams, classes: Sequence[str], threshold_prob: Sequence[float],
                      threshold_logit: Sequence[float] | None, alarm: Sequence[bool], input_quant: tuple[float, int],
                      output_quant: tuple[float, int], info: dict, banner: str) -> str:
    """The text of ``humwatch_classifier.h``: class names, per-class thresholds and the classifier's quantisation.

    Args:
        classes: the class names, in the order of the model's outputs ``[n_classes]``.
        threshold_prob: per-class thresholds on the (calibrated) probability ``[n_classes]``.
        threshold_logit: the same thresholds on the calibrated logit (sigmoid classifiers), or None (softmax).
        alarm: per class, whether a hit alone raises an alarm (the site's ``classifier_alarm``).
        info: ``model_hash``, ``temperature``, ``softmax`` (bool), ``precision_target``, ``backbone``,
            ``anomaly_model_hash``, ``site``, ``rule`` (the site's alarm rule; default
            :data:`anomaly.decision.DEFAULT_RULE`; class hits are counted by :func:`anomaly.decision.hits_rule`).
    """
    p = params
    n = len(classes)
    iscale, izp = input_quant
    oscale, ozp = output_quant
    softmax = bool(info.get("softmax"))
    names = _rows([_c_string(c) for c in classes], 4)
    logit = (float_array("hw_clf_threshold_logit", threshold_logit, "HW_CLF_N_CLASSES")
             if threshold_logit is not None else
             "/* no logit thresholds: a softmax classifier's probability of a class depends on every logit */\n")
    act = ("p = softmax(z) over the classes" if softmax else
           "p[c] = 1 / (1 + expf(-z[c])) (independent sigmoids: none, one or several classes may be present)")
    return f"""/* humwatch_classifier.h: {banner}
 *
 * The fault classifier (which known condition a patch shows), a second int8 model next to the anomaly model.
 * Input: the RAW log-mel patch of step 4 of humwatch_frontend.h (microphone offsets added, NOT normalised: the
 * classifier's own per-band normalisation is inside the model), [1][HW_CLF_PATCH_FRAMES][HW_CLF_N_MELS][1],
 * row = frame (time), column = mel band. Per patch:
 *   1. q = clamp(roundf(logmel / HW_CLF_INPUT_SCALE) + HW_CLF_INPUT_ZERO_POINT, -128, 127) into the input tensor;
 *   2. invoke; z[c] = (out_q[c] - HW_CLF_OUTPUT_ZERO_POINT) * HW_CLF_OUTPUT_SCALE are the CALIBRATED logits: the
 *      normalisation, the training's logit offset and the division by the temperature HW_CLF_TEMPERATURE are
 *      folded into the model (do not divide again);
 *   3. {act};
 *   4. class c counts for this patch when p[c] >= hw_clf_threshold_prob[c]{"" if softmax else
     " (the same as z[c] >= hw_clf_threshold_logit[c])"};
 *   5. a class with hw_clf_alarm[c] = 1 (the site's classifier_alarm) raises an alarm of its own when it counts in at
 *      least HW_CLF_ALARM_M of the last HW_CLF_ALARM_N patches (the site's rule), as `humwatch monitor` does.
 * The thresholds were chosen for a precision target of HW_CLF_PRECISION_TARGET on validation clip probabilities
 * (the mean of the patch probabilities of a clip); the monitor and this header apply them per patch.
 * Reference implementation: hw_classifier.c / hw_classifier.h.
 */
#ifndef HUMWATCH_CLASSIFIER_H
#define HUMWATCH_CLASSIFIER_H

#if defined(__GNUC__) || defined(__clang__)
#define HW_UNUSED __attribute__((unused))
#else
#define HW_UNUSED
#endif

#define HW_CLF_N_CLASSES {n}
#define HW_CLF_SOFTMAX {1 if softmax else 0}
#define HW_CLF_PATCH_FRAMES {p.patch_frames}
#define HW_CLF_N_MELS {p.n_mels}
#define HW_CLF_FEATURE_PARAMS_HASH "{p.hash()}"
{_c_rule(hits_rule(info.get('rule') or DEFAULT_RULE), "HW_CLF_ALARM")}

/* -- int8 input (raw log-mel) and output (calibrated logits) quantisation -- */
#define HW_CLF_INPUT_SCALE {c_float(iscale)}
#define HW_CLF_INPUT_ZERO_POINT {int(izp)}
#define HW_CLF_OUTPUT_SCALE {c_float(oscale)}
#define HW_CLF_OUTPUT_ZERO_POINT {int(ozp)}

/* -- calibration: already folded into the model, recorded for reference -- */
#define HW_CLF_TEMPERATURE {c_float(info['temperature'])}
#define HW_CLF_PRECISION_TARGET {c_float(info.get('precision_target') or 0.0)}

/* -- identity -- */
#define HW_CLF_MODEL_HASH {_c_string(info.get('model_hash', ''))}
#define HW_CLF_BACKBONE {_c_string(info.get('backbone', ''))}
#define HW_CLF_ANOMALY_MODEL_HASH {_c_string(info.get('anomaly_model_hash') or '')}
#define HW_CLF_SITE_NAME {_c_string(info.get('site') or '')}

/* class names, in the order of the model's outputs */
static const char *const hw_clf_class_names[HW_CLF_N_CLASSES] HW_UNUSED = {{
{names}
}};
/* per-class thresholds on the calibrated probability */
{float_array("hw_clf_threshold_prob", threshold_prob, "HW_CLF_N_CLASSES")}
/* the same thresholds on the calibrated logit, logf(t / (1 - t)) */
{logit}
/* 1 = this class raises alarms of its own under the m-of-n rule (site setting classifier_alarm) */
{int_array("hw_clf_alarm", "unsigned char", [1 if a else 0 for a in alarm], "HW_CLF_N_CLASSES")}
#endif  /* HUMWATCH_CLASSIFIER_H */
"""
