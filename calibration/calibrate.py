"""Calibrating a site: score its normal audio, set the threshold, check it, and write a certificate.

The site's audio is cut into one-minute chunks that alternate between two roles: two of every three chunks set the
threshold, the third is held out to check it (observed exceedances and alarm-rule hits, fault injection). The
model itself is never fitted on site audio, and files it was trained on are refused (their scores would be
optimistically low).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy import stats

from anomaly.atomic import failpoint
from anomaly.audio import ReadStats, audio_info, find_audio, iter_blocks
from anomaly.classify import load_classifier
from anomaly.decision import DEFAULT_MIN_MINUTES, K_RANGE, MOfN, WindowMean, fault_stream, over, rule_from_dict
from anomaly.detectors import AutoencoderDetector, Detector, load_detector, score_file
from anomaly.errors import DataError
from anomaly.evaluate import auc_pauc, chance_levels, definitions, find_labelled
from anomaly.features import FeatureParams, MicResponse, PatchStream, log_mel, patch_starts, patches
from anomaly.modeldir import classifier_hash, file_sha256, model_hash
from anomaly.simulate import FAULTS, describe_injection, fault_signal, injection_machine
from calibration.errors import CalibrationError, ShiftRefused, SiteDamagedError, SiteError
from calibration.records import RECORD_FORMAT
from calibration.states import SMOOTH, StateModel, fit_states
from calibration.store import Site, utc_now
from calibration.threshold import threshold_report
from calibration.upcrossing import delay_seconds

CHUNK_PATCHES = 64  # ~1 min chunks for the threshold/check interleave
INJECT_SEVERITIES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
INJECT_SECONDS = 30.0
DETECTED_SHARE = 0.5  # a severity counts as detected when at least half its patches exceed the threshold
SCORE_SAMPLE = 5000  # baseline scores kept in the record, for recalibration's shift test


@dataclass
class Baseline:
    """Per-patch results over all calibration audio, in recording order."""

    scores: np.ndarray
    bands: np.ndarray | None
    levels: np.ndarray  # mean log-mel of each patch (a loudness proxy, natural-log units)
    file_idx: np.ndarray
    starts: np.ndarray
    files: list[Path]
    minutes: float
    clipped_share: float
    check_audio: list[np.ndarray] = field(default_factory=list)  # raw 16 kHz audio of held-out chunks (capped)
    band_levels: np.ndarray | None = None  # [n, n_mels] mean log-mel of each band over each patch (the states' input)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (threshold part, check part); see :func:`split_masks`."""
        thr, check, _ = split_masks(self.scores.size)
        return thr, check


def split_masks(n: int, chunk_patches: int = CHUNK_PATCHES) -> tuple[np.ndarray, np.ndarray, str]:
    """The calibration's hold-out rule over ``n`` patches in recording order.

    Returns:
        ``(threshold mask, held-out mask, description)``: chunks of ``chunk_patches`` patches, two of every three set
        the threshold and the third is held out; under three chunks (only with --force), every third patch.
    """
    check = (np.arange(n) // chunk_patches) % 3 == 2
    how = f"chunks of {chunk_patches} patches, 2 of every 3 set the threshold, the 3rd is held out"
    if check.sum() == 0:
        check = np.zeros(n, bool)
        check[1::3] = True
        how = "every third patch held out (under 3 chunks of audio)"
    return ~check, check, how


def site_detector(site: Site, params: FeatureParams | None = None) -> tuple[Detector, np.ndarray | None, str]:
    """Load the site's model (checking it is the one the site was created with) and its mic-response offsets."""
    cfg = site.config()
    mdir = site.model_dir()
    det = load_detector(mdir, params or FeatureParams())
    mh = model_hash(mdir)
    if cfg.model_hash and mh != cfg.model_hash:
        raise SiteError(f"site {site.name!r}: the model at {mdir} changed since the site was set up (hash {mh}, "
                        f"site.toml says {cfg.model_hash}); run `humwatch site set-model {site.name} --model DIR`")
    offsets = None
    if cfg.response_curve:
        rc = Path(cfg.response_curve)
        rc = rc if rc.is_absolute() else site.dir / rc
        offsets = MicResponse.from_csv(rc).mel_offsets(det.params)
    return det, offsets, mh


def site_classifier(site: Site, params: FeatureParams | None = None):
    """The site's fault classifier and its hash, or ``(None, None)`` when the site has none.

    Raises:
        SiteError: the classifier changed since it was attached, or lists unknown alarm classes.
        ModelError / ParamsMismatchError: missing, corrupt, or made for another front end.
    """
    cfg = site.config()
    cdir = site.classifier_dir()
    if cdir is None:
        return None, None
    clf = load_classifier(cdir, params or FeatureParams())
    h = classifier_hash(cdir)
    if cfg.classifier_hash and h != cfg.classifier_hash:
        raise SiteError(f"site {site.name!r}: the classifier at {cdir} changed since it was attached (hash {h}, "
                        f"site.toml says {cfg.classifier_hash}); run `humwatch site set-classifier {site.name} "
                        "--classifier DIR`")
    unknown = [c for c in cfg.classifier_alarm if c not in clf.classes]
    if unknown:
        raise SiteError(f"site {site.name!r}: classifier_alarm names classes the classifier does not have: "
                        f"{', '.join(unknown)} (it has {', '.join(clf.classes)})")
    return clf, h


def collect_baseline(det: Detector, files: Sequence[Path], offsets: np.ndarray | None = None,
                     keep_check_seconds: float = 5 * 60.0,
                     on_progress: Callable[[float, str], None] | None = None) -> Baseline:
    """Score every patch of the calibration files, keeping up to ``keep_check_seconds`` of held-out raw audio.

    Files are streamed block by block; only a short tail of audio is carried between blocks.
    """
    p = det.params
    hop = p.patch_hop_samples
    cap = int(keep_check_seconds * p.sample_rate)
    scores, bands, levels, band_levels, fidx, starts = [], [], [], [], [], []
    read_stats = ReadStats()
    total_s = sum(audio_info(f).duration_s for f in files)
    done_s = 0.0
    runs: list[list[np.ndarray]] = []
    kept, global_patch = 0, 0
    for i, f in enumerate(files):
        stream = PatchStream(p, offsets)
        tail, tail_start, last_kept = np.zeros(0, np.float32), 0, None
        for block in iter_blocks(f, p.sample_rate, min_samples=p.min_samples, stats=read_stats):
            buf = np.concatenate([tail, block])
            before = stream.patches_emitted
            X = stream.push(block)
            if len(X):
                sc, b = det.score_with_bands(X)
                if b is not None:
                    bands.append(b)
                scores.append(sc)
                levels.append(X.mean(axis=(1, 2)))
                band_levels.append(X.mean(axis=1).astype(np.float32))
                starts.append(patch_starts(stream.patches_emitted, p)[before:])
                fidx.append(np.full(len(X), i))
            for j in range(before, stream.patches_emitted):
                if ((global_patch + j) // CHUNK_PATCHES) % 3 != 2 or kept >= cap or p.patch_hop != p.patch_frames:
                    continue
                a = j * hop - tail_start
                seg = buf[a: a + hop]
                if a < 0 or seg.size < hop:
                    continue
                if last_kept != j - 1:
                    runs.append([])  # patches tile the audio, so consecutive held-out patches are contiguous
                runs[-1].append(seg.copy())
                kept += hop
                last_kept = j
            keep = min(buf.size, 2 * p.min_samples)
            tail_start += buf.size - keep
            tail = buf[buf.size - keep:]
            done_s += block.size / p.sample_rate
            if on_progress:
                on_progress(min(1.0, done_s / max(total_s, 1e-9)), f.name)
        global_patch += stream.patches_emitted
    if not scores:
        raise CalibrationError("the calibration audio gave no patches")
    return Baseline(
        scores=np.concatenate(scores), bands=np.concatenate(bands) if bands else None,
        levels=np.concatenate(levels), file_idx=np.concatenate(fidx), starts=np.concatenate(starts),
        files=list(files), minutes=total_s / 60.0, clipped_share=read_stats.clipped_share,
        check_audio=[np.concatenate(r) for r in runs if r], band_levels=np.concatenate(band_levels),
    )


# -- representativeness findings ------------------------------------------------------------------------------------
@dataclass
class Finding:
    level: str  # "ok" | "warning" | "problem"
    what: str

    def to_dict(self) -> dict:
        return {"level": self.level, "what": self.what}


def _db(x_ln: float) -> float:
    """Natural-log magnitude difference → dB."""
    return 20.0 * x_ln / np.log(10.0)


def findings(b: Baseline, det: Detector) -> list[Finding]:
    """Plain-language checks of how representative the calibration audio is."""
    out: list[Finding] = []
    if b.clipped_share >= 1e-3:
        out.append(Finding("problem", f"{b.clipped_share:.2%} of samples are clipped: lower the input gain and record "
                                      "again (clipping hides the high-frequency detail faults show up in)"))
    elif b.clipped_share > 0:
        out.append(Finding("warning", f"{b.clipped_share:.3%} of samples are clipped (a few loud events)"))
    med = float(np.median(b.levels))
    quiet = b.levels < med - np.log(10.0)  # 20 dB below the typical patch
    if quiet.mean() > 0.01:
        out.append(Finding("warning", f"{quiet.mean():.1%} of the recording is 20 dB or more below its typical level "
                                      "(silence or dropouts: was the machine stopped or the microphone cut?)"))
    per_min = [b.levels[i: i + 62].mean() for i in range(0, b.levels.size, 62)]
    if len(per_min) >= 4:
        t = np.arange(len(per_min))
        slope = float(np.polyfit(t, per_min, 1)[0])
        drift_db = _db(slope * (len(per_min) - 1))
        if abs(drift_db) >= 3.0:
            out.append(Finding("warning", f"the level drifts by {drift_db:+.1f} dB from start to end of the recording "
                                          "(machine warming up, load changing, or something moved?)"))
    half = b.scores.size // 2
    if half >= 50:
        ks = stats.ks_2samp(b.scores[:half], b.scores[half:])
        shift = (np.median(b.scores[half:]) - np.median(b.scores[:half])) / (b.scores.std() + 1e-12)
        if ks.pvalue < 1e-3 and abs(shift) > 0.5:
            out.append(Finding("warning", f"the second half sounds different from the first (score median shifted by "
                                          f"{shift:+.1f} σ, KS p = {ks.pvalue:.1e}): the machine may have changed "
                                          "operating state; make sure every normal state is in the recording"))
        else:
            out.append(Finding("ok", f"first and second half agree (score median shift {shift:+.2f} σ)"))
    spread_db = _db(float(np.std(per_min))) if len(per_min) >= 4 else None
    if isinstance(det, AutoencoderDetector):
        train_level = float(det.mean_.mean())
        gap_db = _db(med - train_level)
        if gap_db < -6.0 and spread_db is not None and spread_db < 1.0:
            out.append(Finding("warning", f"the recording is one steady state {abs(gap_db):.0f} dB quieter than the "
                                          "model's training audio: was it recorded at night or at idle? Include "
                                          "every normal operating state (loads, shifts) or expect false alarms"))
    if spread_db is not None and spread_db < 0.3 and b.minutes >= 20:
        out.append(Finding("warning", f"the level hardly varies (±{spread_db:.2f} dB per minute): the recording "
                                      "looks like a single operating state; if the machine has others (start-up, "
                                      "load changes, day shift), record them too"))
    return out


def threshold_findings(rep, rule) -> list[Finding]:
    """Advice when the expected false-alarm rate is high (or, for a windowed-mean rule, when its limit had to be
    raised above the floor to keep false alarms at the target, which costs the smallest alarmed fault)."""
    out = []
    mr = getattr(rep, "alarm_rule", None)
    if mr is not None:
        if mr["limit_source"] == "target":
            out.append(Finding("warning", f"the alarm limit was raised from {mr['limit_floor']:g} to {mr['limit']:.2f} "
                                          f"calibration sds to keep false alarms at {mr['target_per_day']:g} a day: "
                                          "this recording's score drifts from minute to minute (it holds "
                                          f"{mr['n_eff']:.0f} independent {rule.n}-patch means), so smaller faults "
                                          "go unalarmed; record longer or in steadier conditions if that matters"))
        return out
    if rep.false_alarms_per_day > 1.0:
        if rep.k < K_RANGE[1]:
            change = (f"consider a larger k (now {rep.k:g}, at most {K_RANGE[1]:g}) or a stricter alarm rule than "
                      f"{rule.short}")
        else:
            change = (f"k is already at its maximum {K_RANGE[1]:g}: consider a stricter alarm rule than "
                      f"{rule.short} (more of a longer window)")
        out.append(Finding("warning", f"about {rep.false_alarms_per_day:.2g} false alarms per day expected: the "
                                      f"baseline's score tail is heavy (extremal index {rep.extremal_index:.2f}); "
                                      f"{change} with `humwatch site set`, then calibrate again; and check the "
                                      "recording for intermittent noise that is not the machine"))
    return out


def calibration_rule(record: dict):
    """The alarm rule a calibration record was certified for (what monitoring applies while it is in force)."""
    th = record["threshold"]
    if isinstance(th.get("rule"), dict):
        return rule_from_dict(th["rule"])
    return MOfN(int(th["alarm_m"]), int(th["alarm_n"]))


def _minutes_finding(b: Baseline) -> list[Finding]:
    """How much audio the threshold rests on: a warning below the default minimum (accepted only with --force or a
    lower --min-minutes), a note below the recommended hour."""
    if b.minutes < DEFAULT_MIN_MINUTES:
        return [Finding("warning", f"{b.minutes:.0f} min recorded, below the {DEFAULT_MIN_MINUTES:g} min minimum: "
                                   "the threshold's tail rests on few patches; calibrate again on 30-60 min of "
                                   "normal audio before relying on its false-alarm figures")]
    if b.minutes < 60:
        return [Finding("ok", f"{b.minutes:.0f} min recorded; 60 min is recommended")]
    return []


# -- validation: injected simulator faults and known fault recordings -----------------------------------------------
def _rule_on_fault(rule, threshold: float, context: np.ndarray, fault: np.ndarray, patch_seconds: float) -> dict:
    """Whether the alarm rule fires on a fault's patch scores. A windowed-mean rule is first filled with the held-out
    normal scores ``context`` (its state when a fault starts); its delay for a persistent fault of this size is
    stated from the fault's mean shift (calibration sds), since 30 s are shorter than its window."""
    if not isinstance(rule, WindowMean):
        return {"rule_fired": bool(rule.onsets(fault, threshold).size)}
    st = rule.stream(threshold)
    for s in context[-rule.n:]:
        st.update(s)
    fired = False
    for s in fault:
        fired = st.update(s) or fired or st.active
    shift = float(np.mean(rule.standardised(fault)))
    return {"rule_fired": bool(fired), "shift_sd": shift,
            "rule_delay_s": delay_seconds(rule, abs(shift), patch_seconds)}


def inject_faults(det: Detector, b: Baseline, threshold: float, rule, machine: str = "pump",
                  severities: Sequence[float] = INJECT_SEVERITIES, seed: int = 0,
                  offsets: np.ndarray | None = None, context: np.ndarray | None = None) -> dict:
    """Mix simulator faults into held-out site audio at several severities and measure detection (``context``: the
    held-out normal scores a windowed-mean rule starts from)."""
    p = det.params
    if not b.check_audio:
        raise CalibrationError("no held-out audio kept for fault injection (record at least 3 min)")
    pieces = []
    need = int(INJECT_SECONDS * p.sample_rate)
    for run in b.check_audio:
        for a in range(0, run.size - need + 1, need):
            pieces.append(run[a: a + need])
    if not pieces:
        pieces = [max(b.check_audio, key=len)]
    machine = injection_machine(machine)
    results = {}
    for fi, fault in enumerate(f for f in FAULTS if f != "none"):
        rows = []
        for si, sev in enumerate(severities):
            base = pieces[(fi * len(severities) + si) % len(pieces)]
            rms = float(np.sqrt(np.mean(np.square(base, dtype=np.float64)))) or 1e-4
            # The simulator's fault levels are relative to a healthy machine at -20 dBFS RMS (0.1).
            add = fault_signal(fault, sev, base.size / p.sample_rate, seed=seed + 17 * fi + si, machine=machine)
            mixed = np.clip(base + add[: base.size] * (rms / 0.1), -1.0, 1.0)
            X = patches(log_mel(mixed, p, offsets), p)
            sc = det.score_samples(X)
            ctx = np.zeros(0) if context is None else context
            rows.append({"severity": sev, "patches": int(sc.size), "detection_rate": float(over(sc, threshold).mean()),
                         **_rule_on_fault(rule, threshold, ctx, sc, p.patch_seconds)})
        detected = [r["severity"] for r in rows if r["detection_rate"] >= DETECTED_SHARE]
        results[fault] = {"by_severity": rows, "lowest_severity_detected": min(detected) if detected else None}
    return results


def injection_about(machine: str | None, severities: Sequence[float] = INJECT_SEVERITIES) -> dict:
    """What calibration's fault injection is (which simulated faults, of which machine), with a warning when the
    site's machine is not one the simulator models."""
    return describe_injection(machine, FAULTS, severities)


def has_labels(directory: Path) -> bool:
    """Whether ``directory`` holds labelled recordings (``normal_*`` and ``anomaly_*``, both)."""
    try:
        find_labelled(directory)
    except DataError:
        return False
    return True


def validate_with(det: Detector, directory: Path, threshold: float, rule,
                  offsets: np.ndarray | None = None, context: np.ndarray | None = None) -> dict:
    """Detection on known fault recordings; a file's fault is its name up to the first digit-only part, or its folder
    (``anomaly_cavitation_03.flac`` → ``anomaly_cavitation``; ``bearing/rec1.wav`` → ``bearing``)."""

    files = find_audio([directory])
    groups: dict[str, list[dict]] = {}
    for f in files:
        _, sc, _ = score_file(det, f, offsets)
        parts = [x for x in f.stem.split("_") if not x.isdigit()]
        name = "_".join(parts) if f.parent == Path(directory) else f.parent.name
        groups.setdefault(name or f.stem, []).append(
            {"file": str(f), "patches": int(sc.size), "detection_rate": float(over(sc, threshold).mean()),
             **_rule_on_fault(rule, threshold, np.zeros(0) if context is None else context, sc,
                              det.params.patch_seconds)})
    return {g: {"files": rows, "detection_rate": float(np.mean([r["detection_rate"] for r in rows])),
                "files_alarmed": int(sum(r["rule_fired"] for r in rows))} for g, rows in groups.items()}


def validate_labelled(det: Detector, directory: Path, threshold: float, rule,
                      offsets: np.ndarray | None = None, context: np.ndarray | None = None) -> dict:
    """Detection on labelled recordings of the machine (``normal_*`` / ``anomaly_*`` clips, as ``evaluate`` reads
    them): clip AUC and pAUC (clip score = mean patch score, what monitoring sees), patches over the threshold,
    files that raised an alarm, and the alarm rule over a stream of the normal clips followed by the anomalous ones
    (false alarms, delay to the first alarm)."""
    files = find_labelled(directory)
    scores = [score_file(det, f.path, offsets)[1] for f in files]
    y = np.array([f.label for f in files])
    auc, pa = auc_pauc(y, [float(s.mean()) if s.size else 0.0 for s in scores])
    normal = [s for s, lab in zip(scores, y, strict=True) if lab == 0]
    anomalous = [s for s, lab in zip(scores, y, strict=True) if lab == 1]
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    stream = fault_stream(rule, cat(normal), cat(anomalous), threshold)
    ctx = np.zeros(0) if context is None else context
    alarmed = [int(sum(_rule_on_fault(rule, threshold, ctx, s, det.params.patch_seconds)["rule_fired"] for s in part))
               for part in (normal, anomalous)]
    return {
        "directory": str(directory), "n_normal": len(normal), "n_anomaly": len(anomalous),
        "clip_score": "mean of the clip's patch scores", "auc": auc, "pauc": pa, "chance": chance_levels(),
        "definitions": definitions(),
        "over_threshold": {"normal": float(over(cat(normal), threshold).mean()),
                           "anomaly": float(over(cat(anomalous), threshold).mean())},
        "files_alarmed": {"normal": alarmed[0], "anomaly": alarmed[1]},
        "stream": {"what": "the normal clips, then the anomalous clips, in file order, through the alarm rule",
                   **stream.to_dict(det.params.patch_seconds)},
    }


# -- the calibration record -----------------------------------------------------------------------------------------
@dataclass
class CalibrationRequest:
    """What the technician asked for."""

    files: list[Path]
    min_minutes: float = DEFAULT_MIN_MINUTES
    force: bool = False
    inject: bool = False
    validate_dir: Path | None = None
    keep_audio: bool = False
    seed: int = 0


SHIFT_P = 1e-3  # significance for the recalibration safeguards
# Probability that a new baseline patch outscores an old one beyond which a shift matters: 0.71 is the common-language
# effect size of Cohen's "large" d = 0.8, so the normal wander between two healthy recordings does not count.
SHIFT_EFFECT = 0.71


def _check_minutes(req: CalibrationRequest) -> float:
    minutes = sum(audio_info(f).duration_s for f in req.files) / 60.0
    if minutes < req.min_minutes and not req.force:
        raise CalibrationError(
            f"only {minutes:.1f} min of audio; calibration needs at least {req.min_minutes:g} min (--min-minutes; 60 "
            "recommended) so that the threshold's tail is estimated from enough patches: record longer, or lower "
            "--min-minutes, or pass --force for a test (both are marked on the certificate)")
    return minutes


def _check_not_training_audio(det: Detector, files: Sequence[Path]) -> None:
    trained = set(getattr(det, "meta_", {}).get("training_data", {}).get("file_sha256", []))
    if not trained:
        return
    used = [f for f in files if file_sha256(f) in trained]
    if used:
        names = ", ".join(str(f) for f in used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
        raise CalibrationError(f"{names}: used to train the site's model, so its scores are optimistically low; "
                               "calibrate on other normal audio from the site")


def build_record(site: Site, req: CalibrationRequest, kind: str = "calibration",
                 on_progress: Callable[[float, str], None] | None = None,
                 say: Callable[[str], None] | None = None) -> tuple[dict, Baseline]:
    """Score the audio, set the threshold and assemble the certificate (not stored yet)."""
    say = say or (lambda _msg: None)
    cfg = site.config()
    if not req.files:
        raise CalibrationError("no calibration audio given")
    _check_minutes(req)
    det, offsets, mh = site_detector(site)
    _check_not_training_audio(det, req.files)
    b = collect_baseline(det, req.files, offsets, on_progress=on_progress)
    thr_mask, check_mask = b.split()
    rep = threshold_report(b.scores[thr_mask], cfg.k, cfg.rule, det.params.patch_seconds, seed=req.seed,
                           ordered=b.scores, short_ok=req.force)
    rule = rule_from_dict(rep.rule)  # the site's rule with its calibration (a windowed mean's centre, scale, limit)
    states = _states(b, det.params.patch_seconds, req.seed)
    check = b.scores[check_mask]
    check_over = over(check, rep.threshold)
    check_days = check.size * det.params.patch_seconds / 86400.0
    onsets = int(rule.onsets(check, rep.threshold).size)
    record = {
        "format_version": RECORD_FORMAT,
        "kind": kind,
        "status": "pending",  # adopted by the switch of `current` (calibration.store)
        "created_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "site": site.name,
        "model": {"path": cfg.model_path, "hash": mh, "detector": det.kind,
                  "feature_params_hash": det.params.hash(), "feature_params": det.params.to_dict()},
        "audio": {"files": [str(Path(f).resolve()) for f in req.files],
                  "file_sha256": [file_sha256(Path(f)) for f in req.files], "minutes": round(b.minutes, 3),
                  "patches": int(b.scores.size), "threshold_patches": int(thr_mask.sum()),
                  "check_patches": int(check_mask.sum()), "clipped_share": b.clipped_share,
                  "forced": bool(req.force and b.minutes < req.min_minutes), "min_minutes": req.min_minutes},
        "threshold": rep.to_dict(),
        "check": {"patches": int(check.size), "observed_exceedance": float(check_over.mean()) if check.size else None,
                  "predicted_exceedance": rep.exceedance, "observed_alarms": onsets,
                  "observed_alarms_per_day": onsets / check_days if check_days else None},
        "findings": [f.to_dict() for f in findings(b, det) + threshold_findings(rep, rule)
                     + _minutes_finding(b) + state_findings(states)],
        "states": states.to_dict() if states is not None else None,
        "baseline": {
            "score_sample": _sample(b.scores[thr_mask], SCORE_SAMPLE, req.seed),
            "band_error_mean": b.bands.mean(0).round(6).tolist() if b.bands is not None else None,
            "level_median": float(np.median(b.levels)),
            "score_quantiles": {q: float(np.quantile(b.scores, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")},
        },
        "validation": {},
    }
    if req.validate_dir is not None and has_labels(req.validate_dir):
        say(f"scoring labelled recordings (normal_*/anomaly_*) in {req.validate_dir}")
        record["validation"]["labelled"] = validate_labelled(det, req.validate_dir, rep.threshold, rule, offsets,
                                                             context=check)
    elif req.validate_dir is not None:
        say(f"scoring known fault recordings in {req.validate_dir}")
        record["validation"]["known_faults"] = validate_with(det, req.validate_dir, rep.threshold, rule, offsets,
                                                             context=check)
    if req.inject:
        about = injection_about(cfg.machine)
        say(f"injecting {about['description']}")
        if about["warning"]:
            say(f"warning: {about['warning']}")
        record["validation"]["injected_about"] = about
        record["validation"]["injected"] = inject_faults(det, b, rep.threshold, rule, machine=cfg.machine,
                                                         seed=req.seed, offsets=offsets, context=check)
    return record, b


def _states(b: Baseline, patch_seconds: float, seed: int) -> StateModel | None:
    """The states the recording covered (None when it is too short to tell)."""
    if b.band_levels is None or b.band_levels.shape[0] < 20 * SMOOTH:
        return None
    return fit_states(b.band_levels, patch_seconds, seed)


def state_findings(states: StateModel | None) -> list[Finding]:
    if states is None:
        return []
    return [Finding(level, what) for level, what in states.findings()]


def _sample(x: np.ndarray, k: int, seed: int) -> list[float]:
    if x.size > k:
        x = np.sort(np.random.default_rng(seed).choice(x, size=k, replace=False))
    return [round(float(v), 6) for v in x]


def _keeper(files: Sequence[Path]) -> Callable[[str, Path], None]:
    """What ``--keep-audio`` stores with a record: a copy of each calibration file, fsync'd."""
    def keep(cid: str, dest: Path) -> None:
        for i, f in enumerate(files):
            target = dest / f"{i:03d}_{Path(f).name}"
            with open(f, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read(1 << 16))
                failpoint("calibration:audio-copying")  # the crash tests kill here: a partial copy exists
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            shutil.copystat(f, target)
    return keep


def _store(site: Site, record: dict, req: CalibrationRequest, make_current: bool = True) -> dict:
    """Store the record (with its audio when ``req.keep_audio``) and adopt it: the store's durable order (audio,
    record, ``current``, its log line); nothing of it remains when a step fails."""
    keep = _keeper(req.files) if req.keep_audio else None
    cid = site.add_calibration(record, make_current=make_current, keep=keep)
    return site.calibration(cid)


def calibrate(site: Site, req: CalibrationRequest, on_progress=None, say=None) -> dict:
    """Calibrate a site and make the new calibration current (under the site lock)."""
    site.config()  # a missing site fails here, before a lock file is created
    with site.lock("calibration"):
        site.tidy()
        try:
            previous = site.current_id()
        except SiteDamagedError:  # a new calibration is what replaces a damaged pointer
            previous = None
        record, _ = build_record(site, req, "calibration", on_progress, say)
        record["previous"] = previous
        return _store(site, record, req)


def shift_test(current: dict, new_scores: np.ndarray) -> dict:
    """Compare a new baseline with the calibration in force.

    Two one-sided checks, each at p < 0.001:
      * exceedance: more new patches above the current threshold than the calibration allows (binomial test). The
        allowed rate is the larger of the tail estimate's upper bound and the 99 % upper (Clopper-Pearson) bound of
        what the held-out check part actually showed, since two healthy recordings differ by more than one
        recording's sampling error;
      * shift: new scores stochastically larger than the current baseline's (Mann-Whitney U), with a probability of
        superiority above 0.71 (a large effect) so that the wander between healthy recordings does not count.
    """
    thr = current["threshold"]["threshold"]
    p_hi = max(current["threshold"]["exceedance_ci"][1], 1.0 / max(current["threshold"]["n_patches"], 1))
    ck = current.get("check", {})
    if ck.get("patches"):
        k_ck = int(round(ck["observed_exceedance"] * ck["patches"]))
        p_hi = max(p_hi, float(stats.beta.ppf(0.99, k_ck + 1, ck["patches"] - k_ck)))
    k = int((new_scores > thr).sum())
    n = int(new_scores.size)
    p_exc = float(stats.binom.sf(k - 1, n, p_hi)) if k > 0 else 1.0
    old = np.asarray(current["baseline"]["score_sample"], float)
    mw = stats.mannwhitneyu(new_scores, old, alternative="greater")
    sup = float(mw.statistic / (new_scores.size * old.size))
    reasons = []
    if p_exc < SHIFT_P:
        reasons.append(f"{k} of {n} new patches ({k / n:.2%}) exceed the current threshold, where the calibration "
                       f"allows at most {p_hi:.3%} (binomial p = {p_exc:.1e})")
    if mw.pvalue < SHIFT_P and sup > SHIFT_EFFECT:
        reasons.append(f"the new scores are higher than the current baseline's (a new patch outscores an old one "
                       f"{sup:.0%} of the time; Mann-Whitney p = {mw.pvalue:.1e})")
    return {"exceed_count": k, "patches": n, "predicted_max_exceedance": p_hi, "exceedance_p": p_exc,
            "mannwhitney_p": float(mw.pvalue), "superiority": sup, "shifted": bool(reasons), "reasons": reasons}


def recalibrate(site: Site, req: CalibrationRequest, accept_shift: bool = False, on_progress=None, say=None) -> dict:
    """Recalibrate; refuse (and store the refused candidate) when the new baseline looks like a developing fault.

    Raises:
        ShiftRefused: the safeguard fired and ``accept_shift`` is False.
    """
    site.config()
    with site.lock("recalibration"):
        site.tidy()
        current = site.calibration()
        record, b = build_record(site, req, "recalibration", on_progress, say)
        st = shift_test(current, b.scores)
        record["shift_test"] = st
        record["previous"] = current["id"]
        if st["shifted"] and not accept_shift:
            record["status"] = "refused"
            cid = site.add_calibration(record, make_current=False)
            raise ShiftRefused(
                f"recalibration of {site.name!r} refused, the current threshold stays in force: "
                + "; ".join(st["reasons"]) + ". This is what a developing fault looks like: inspect the machine. "
                f"If the change is known to be healthy (overhaul, new operating point), rerun with --accept-shift "
                f"(candidate kept as {cid})")
        return _store(site, record, req)


def calibration_age_days(record: dict, now=None) -> float:
    """Days since a calibration record was made."""
    now = now or utc_now()
    made = datetime.strptime(record["created_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=now.tzinfo)
    return (now - made).total_seconds() / 86400.0


def is_due(cfg, record: dict | None, now=None) -> bool:
    """Whether a site (its ``SiteConfig``) with this current calibration record (None: never calibrated) is due for
    recalibration: its calibration is at least its interval old. The one rule ``recalibrate --due``, ``site list``,
    ``fleet recalibrate`` and the fleet page apply."""
    return record is None or calibration_age_days(record, now) >= cfg.recalibration_days


def due_sites(store, now=None, problems: list[tuple[str, str]] | None = None) -> list[tuple[str, float | None]]:
    """Sites whose current calibration is older than their interval, with its age in days (None: never).

    A damaged site is left out (one site's damage never stops the others); with ``problems``, each is appended
    there as ``(name, message)``.
    """
    out = []
    for name in store.names():
        site = store.site(name)
        try:
            cfg = site.config()
            rec = None if site.current_id() is None else site.calibration()
        except SiteError as e:
            if problems is not None:
                problems.append((name, str(e)))
            continue
        if is_due(cfg, rec, now):
            out.append((name, None if rec is None else calibration_age_days(rec, now)))
    return out
