"""The end-to-end demo on simulated audio (what ``humwatch demo`` and ``make demo`` run).

It uses all three packages (anomaly, calibration, firmware_export), so it lives beside them, as the CLI does.

simulate a pump site → train the autoencoder on normal audio → create the site and calibrate it on 30 min of its
audio (with injected faults) → evaluate on held-out normal and faulty clips → train a fault classifier on labelled
simulated clips and attach it to the site → monitor the same pump after its calibration recording: 10 min of normal
operation, then a developing cavitation fault → write the reliability report → export the firmware models.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from anomaly.atomic import atomic_path, write_json
from anomaly.audio import file_log_mel
from anomaly.classify import ClassifyConfig, FaultClassifier, evaluate_classifier
from anomaly.dataset import SIM_CLASSES, load_dataset, write_sim_dataset
from anomaly.decision import DEFAULT_RULE
from anomaly.detectors import fingerprint_files, fit_detector, load_detector, score_file
from anomaly.evaluate import auc_pauc, evaluate
from anomaly.features import DEFAULT_PARAMS
from anomaly.modeldir import classifier_hash, model_hash
from anomaly.simulate import SAMPLE_RATE, SimConfig, fault_signal, simulate, write_audio
from anomaly.train import TrainConfig
from calibration.calibrate import CalibrationRequest, calibrate, calibration_rule
from calibration.monitoring.monitor import Monitor, MonitorConfig
from calibration.report import write_report
from calibration.store import SiteConfig, SiteStore
from firmware_export.export import export_site


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo-out")
    machine: str = "pump"
    background: str = "factory"
    train_minutes: float = 6.0
    calibration_minutes: float = 30.0
    test_clips: int = 6
    clip_seconds: float = 10.0
    monitor_minutes: float = 10.0
    epochs: int = 12
    seed: int = 7
    export: bool = True
    classifier: bool = True
    classifier_clips: int = 20  # labelled simulated clips per class
    classifier_epochs: int = 15


def _sim(path: Path, cfg: DemoConfig, seed: int, minutes: float, fault: str = "none", severity: float = 0.0,
         start_s: float = 0.0) -> Path:
    """Simulated audio of unit ``seed`` (each seed is one physical unit of the machine), from ``start_s`` on."""
    return write_audio(path, SimConfig(cfg.machine, fault, severity, cfg.background, seed=seed), minutes,
                       start_s=start_s)


def _site_unit(cfg: DemoConfig) -> int:
    """The seed of the site's own pump: its calibration recording, and later what is monitored."""
    return cfg.seed * 1000 + 300


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> dict:
    """Run the demo; return its figures (also written to ``<out>/demo.json``)."""
    t0 = time.time()
    out = cfg.out
    audio = out / "audio"
    steps = 6 + cfg.export + cfg.classifier
    step = iter(range(1, steps + 1))
    say(f"[{next(step)}/{steps}] simulating a {cfg.machine} in a {cfg.background} background: "
        f"{cfg.train_minutes:g} min to train on, {cfg.calibration_minutes:g} min to calibrate on, "
        f"{cfg.test_clips} normal + {3 * cfg.test_clips} faulty test clips")
    per_file = 2.0
    train_files = [_sim(audio / "train" / f"normal_{i:02d}.flac", cfg, cfg.seed * 1000 + i, per_file)
                   for i in range(max(1, int(round(cfg.train_minutes / per_file))))]
    cal_file = _sim(audio / "calibration" / "site_normal.flac", cfg, _site_unit(cfg), cfg.calibration_minutes)
    faults = ("cavitation", "bearing-outer", "electrical-arc")
    test_dir = audio / "test"
    for i in range(cfg.test_clips):
        _sim(test_dir / f"normal_{i:02d}.flac", cfg, cfg.seed * 1000 + 500 + i, cfg.clip_seconds / 60)
        for j, fault in enumerate(faults):
            sev = 0.3 + 0.5 * i / max(1, cfg.test_clips - 1)
            _sim(test_dir / f"anomaly_{fault}_{i:02d}.flac", cfg, cfg.seed * 1000 + 600 + 10 * i + j,
                 cfg.clip_seconds / 60, fault, sev)

    say(f"[{next(step)}/{steps}] training the conv autoencoder on normal audio only ({cfg.epochs} epochs max)")
    recs = [file_log_mel(f, DEFAULT_PARAMS) for f in train_files]
    det = fit_detector("ae", recs, DEFAULT_PARAMS, train_config=TrainConfig(epochs=cfg.epochs, seed=cfg.seed))
    model_dir = det.save(out / "model", extra={"training_data": fingerprint_files(train_files)})
    h = det.history_
    say(f"      best epoch {h['best_epoch']} of {h['epochs_run']}, val loss {h['best_val_loss']:.4f}, "
        f"{h['train_seconds']:.0f} s")

    say(f"[{next(step)}/{steps}] creating site demo-pump and calibrating it on {cfg.calibration_minutes:g} min of "
        "its audio")
    store = SiteStore(out / "sites")
    # The demo owns this site: a re-run starts it afresh, so its score log and report tell one story.
    shutil.rmtree(store.site("demo-pump").dir, ignore_errors=True)
    sc = SiteConfig(name="demo-pump", model_path=str(model_dir.resolve()), model_hash=model_hash(model_dir),
                    machine=cfg.machine, microphone="simulated")
    sc.with_rule(DEFAULT_RULE)  # the alarm rule a site gets from `humwatch site create`
    site = store.create(sc, exist_ok=True)
    # A shortened demo (tests) may calibrate on less than the 30 min a technician must record.
    rec = calibrate(site, CalibrationRequest(files=[cal_file], inject=True, seed=cfg.seed,
                                             force=cfg.calibration_minutes < 30))
    th = rec["threshold"]
    low = {f: v["lowest_severity_detected"] for f, v in rec["validation"]["injected"].items()}
    say(f"      alarm rule: {calibration_rule(rec).describe()}; expected false alarms "
        f"{th['false_alarms_per_day'] * 7:.2g}/week; lowest injected severity detected: "
        + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in low.items()))

    say(f"[{next(step)}/{steps}] evaluating on held-out clips (clip score = mean patch score)")
    det = load_detector(model_dir)
    ev = evaluate(lambda p: float(score_file(det, p)[1].mean()), test_dir)
    m = ev.metrics()
    y = np.array([f.label for f in ev.files])
    per_fault = {}
    for fault in faults:
        idx = np.array([f.label == 0 or fault in f.path.name for f in ev.files])
        per_fault[fault] = auc_pauc(y[idx], ev.scores[idx])[0]
    say(f"      AUC {m['auc']:.3f} (chance {m['chance']['auc']:g}), pAUC {m['pauc']:.3f} (chance "
        f"{m['chance']['pauc']:g}); per fault AUC " + ", ".join(f"{k} {v:.3f}" for k, v in per_fault.items()))

    classifier = _classifier_step(site, cfg, out, say, f"[{next(step)}/{steps}]") if cfg.classifier else None

    say(f"[{next(step)}/{steps}] monitoring {cfg.monitor_minutes:g} min of normal operation, then 3 min in which "
        "cavitation develops (severity ramps 0 → 0.8 after the first minute)")
    mon_dir = audio / "monitor"
    # The site's own pump, after its calibration recording: 10 normal minutes, then the developing fault.
    _sim(mon_dir / "1_normal.flac", cfg, _site_unit(cfg), cfg.monitor_minutes, start_s=cfg.calibration_minutes * 60)
    _developing_fault(mon_dir / "2_developing_cavitation.flac", cfg, "cavitation")
    start = time.time() - 3600.0  # pretend it was recorded during the last hour
    with Monitor(site, MonitorConfig(start_utc=start)) as mon:
        state = mon.process_files([mon_dir / "1_normal.flac", mon_dir / "2_developing_cavitation.flac"])
    fault_start = start + cfg.monitor_minutes * 60.0 + 60.0
    alarms = [a for a in _read_alarms(site) if a["t"] >= start]  # this run's (the site may hold earlier ones)
    false = [a for a in alarms if a["t"] < fault_start]
    caught = [a for a in alarms if a["t"] >= fault_start]
    first_alarm = (caught[0]["t"] - fault_start) if caught else None
    fault = (caught[0].get("fault") or {}) if caught else {}
    named = fault.get("likely")
    named_as = ((f"named {named}" if fault.get("confident") else f"probably {named} (under its precision "
                 "threshold)") if named else "not matched to a known fault")
    say(f"      {state.patches} patches scored: {len(false)} alarm(s) during normal operation; "
        + (f"the developing fault raised an alarm {first_alarm:.0f} s after it began"
           if first_alarm is not None else "the developing fault raised no alarm")
        + (f"; the classifier: {named_as}" if caught and classifier else ""))

    report_path = out / "report.html"
    write_report(site, report_path)
    say(f"[{next(step)}/{steps}] reliability report: {report_path}")

    summary = {"seconds": None, "model": str(model_dir), "site": str(site.dir), "calibration": rec["id"],
               "threshold": th["threshold"], "false_alarms_per_day": th["false_alarms_per_day"],
               "lowest_severity_detected": low, "auc": m["auc"], "pauc": m["pauc"], "auc_per_fault": per_fault,
               "monitored_patches": state.patches, "alarms_during_normal": len(false),
               "fault_alarm_after_s": first_alarm, "fault_named": named, "classifier": classifier,
               "report": str(report_path)}
    if cfg.export:
        summary["firmware"] = _export_step(site, out, say, steps)
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(out / "demo.json", summary)
    say(f"done in {summary['seconds']:.0f} s: model {model_dir}, site {site.dir}, figures {out / 'demo.json'}")
    say(f"open the report: {report_path.resolve()}")
    if summary.get("firmware"):
        say(f"firmware for the microcontroller: {summary['firmware']}")
    return summary


def _classifier_step(site, cfg: DemoConfig, out: Path, say, tag: str) -> dict:
    """Train a fault classifier on labelled simulated clips and attach it to the demo site."""
    say(f"{tag} training a fault classifier on {cfg.classifier_clips} labelled simulated clips per class "
        f"({', '.join(SIM_CLASSES)}) and attaching it to the site")
    clips = out / "audio" / "faults"
    sets = {}
    for part, n, seed in (("train", cfg.classifier_clips, cfg.seed), ("test", max(2, cfg.classifier_clips // 4),
                                                                      cfg.seed + 1)):
        shutil.rmtree(clips / part, ignore_errors=True)  # same arguments give the same files: regenerate
        sets[part] = load_dataset(write_sim_dataset(clips / part, n, seed=seed, severity_range=(0.3, 1.0)))
    train, test = sets["train"], sets["test"]
    clf = FaultClassifier(train.classes, DEFAULT_PARAMS, ClassifyConfig(epochs=cfg.classifier_epochs, seed=cfg.seed))
    clf.fit([file_log_mel(f, DEFAULT_PARAMS) for f in train.files], train.Y, precision=0.9)
    cdir = clf.save(out / "classifier")
    ev = evaluate_classifier(clf, [file_log_mel(f, DEFAULT_PARAMS) for f in test.files], test.Y, test.classes)
    cfg_site = site.config()
    cfg_site.classifier_path, cfg_site.classifier_hash = str(cdir.resolve()), classifier_hash(cdir)
    site.save_config(cfg_site)
    say(f"      mAP {ev['map']:.3f} (chance {ev['map_chance']:.2f}) on {len(test.files)} held-out clips; "
        f"calibration error {clf.ece_['val_before']:.3f} → {clf.ece_['val_after']:.3f} after temperature scaling")
    return {"dir": str(cdir), "map": ev["map"], "held_out_clips": len(test.files)}


def _export_step(site, out: Path, say, steps: int) -> str:
    say(f"[{steps}/{steps}] exporting the int8 firmware model(s) for the site")
    result = export_site(site, out / "firmware")
    say(f"      firmware in {out / 'firmware'}")
    return str(result)


def _developing_fault(path: Path, cfg: DemoConfig, fault: str) -> Path:
    """One minute healthy, then two minutes whose fault severity ramps up linearly to 0.8."""
    healthy = SimConfig(cfg.machine, "none", 0.0, cfg.background, seed=_site_unit(cfg))
    base = simulate(healthy, 180.0, start_s=(cfg.calibration_minutes + cfg.monitor_minutes) * 60)
    add = fault_signal(fault, 0.8, 120.0, seed=healthy.seed + 1, machine=healthy.machine, start_s=60.0)
    ramp = np.linspace(0.0, 1.0, add.size, dtype=np.float32)
    base[60 * SAMPLE_RATE: 60 * SAMPLE_RATE + add.size] += ramp * add
    with atomic_path(path, suffix=".flac") as tmp:
        sf.write(tmp, np.clip(base, -1, 1), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return path


def _read_alarms(site) -> list[dict]:
    path = site.dir / "alarms.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        a = json.loads(line)
        a["t"] = datetime.fromisoformat(a["t_utc"].replace("Z", "+00:00")).timestamp()
        out.append(a)
    return out
