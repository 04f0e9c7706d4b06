"""The simulated fleet of bench/false_alarms.py: sites, fault events, detectors and the per-patch score cache.

Sites (:func:`site_list`): 16 pumps (unit seeds 20000-20015), 4 compressors (21000-21003) and 4 fans (21100-21103);
backgrounds cycle factory / hvac-cycling / quiet (10 factory, 7 hvac, 7 quiet). Each site's unit is simulated from
t = 0: the first hour is the calibration recording (a C-minute calibration uses the C minutes right before
monitoring), then ``hours`` of the same unit's normal operation (``start_s`` continuing). One persistent fault per
simulator fault type (cavitation, bearing outer/inner race, compressor valve leak, electrical arc) at severity 0.3 is
switched on at a random second of a monitoring chunk (:func:`fault_events`) and stays on for that chunk and the
next; the history before the onset is the cached normal operation, so a rule's state at the onset is the real one.

Audio is rendered in 10-min chunks plus 240 samples, so every chunk gives exactly 625 patches on one continuous
patch grid. The cache (``site_<name>.npz``) holds per patch the model's score, the band levels (mean log-mel per
band over the patch) and the band errors (``score_with_bands``), for the normal stream and each fault segment, so
any rule or score variant (bench/score_variants.py) can be replayed without simulating again; a detector is cached
under its own model hash. Training also keeps the same network with its error Gaussian under ``gaussian/<machine>``.

Detectors (:func:`train`): the default is the ``mix`` recipe, one autoencoder per machine type trained (MSE score,
12 epochs, seed 7) on 6 units × 2 min, two in each background: a site's model is trained on its machine's normal
sound, and the old bench's factory-only training (3 units × 2 min in a factory) puts hvac and quiet sites out of the
model's domain (its score then follows the background level). ``--model DIR`` rescored the fleet with any
``load_detector`` directory (or DIR/<machine>/ per machine type).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

CHUNK_S = 600.0
CHUNK_PATCHES = 625
PATCH_S = 0.96
CAL_S = 3600.0
CAL_PATCHES = int(CAL_S / CHUNK_S) * CHUNK_PATCHES
FAULTS = ("cavitation", "bearing-outer", "bearing-inner", "compressor-valve-leak", "electrical-arc")
SEVERITY = 0.3
MACHINES = ("pump", "compressor", "fan")
BGS = ("factory", "hvac-cycling", "quiet")
HISTORY = 2000  # patches of normal history replayed before a fault segment


def site_list(n: int = 24) -> list[dict]:
    """The first ``n`` of the 24 sites (16 pumps cycling through the backgrounds, then 4 compressors and 4 fans)."""
    out = []
    for i in range(16):
        out.append({"name": f"pump{i:02d}", "machine": "pump", "background": BGS[i % 3], "seed": 20000 + i})
    for j, m in enumerate(("compressor", "fan")):
        for i in range(4):
            out.append({"name": f"{m[:4]}{i:02d}", "machine": m, "background": BGS[i % 3] if i < 3 else "factory",
                        "seed": 21000 + 100 * j + i})
    if n > len(out):
        raise ValueError(f"the fleet has {len(out)} sites, asked for {n}")
    return out[:n]


def fault_events(site: dict, hours: float) -> list[dict]:
    """One persistent fault per fault type, its onset at a random second of monitoring chunk (3 + 6k) mod chunks."""
    rng = np.random.default_rng(site["seed"] + 77)
    n_chunks = int(round(hours * 3600 / CHUNK_S))
    ev = []
    for k, f in enumerate(FAULTS):
        c = (3 + 6 * k) % max(n_chunks - 1, 1)
        ev.append({"fault": f, "chunk": c, "onset_s": CAL_S + c * CHUNK_S + float(rng.uniform(60.0, 480.0))})
    return ev


def train(models: Path) -> dict[str, Path]:
    """The ``mix`` detectors, one per machine type, under ``models/<machine>`` (trained once)."""
    import torch

    from anomaly.detectors import fit_detector
    from anomaly.features import DEFAULT_PARAMS as P
    from anomaly.features import log_mel
    from anomaly.simulate import SimConfig, simulate
    from anomaly.train import TrainConfig

    torch.set_num_threads(1)
    out = {}
    for mi, machine in enumerate(MACHINES):
        d = models / machine
        if not (d / "model.json").exists():
            recs = [log_mel(simulate(SimConfig(machine, "none", 0.0, BGS[i % 3], seed=7000 + 100 * mi + i), 120.0), P)
                    for i in range(6)]
            det = fit_detector("ae", recs, P, train_config=TrainConfig(epochs=12, seed=7, score="gaussian", threads=1))
            det.save(models / "gaussian" / machine)  # the same network with its error Gaussian (bench/score_variants)
            det.train_config = dataclasses.replace(det.train_config, score="mse")
            det.gauss_mean_ = det.gauss_prec_ = None
            det.save(d)
        out[machine] = d
    return out


def model_for(model: Path, machine: str) -> Path:
    """``model`` itself (a model directory), or ``model/<machine>``."""
    return model if (model / "model.json").exists() else model / machine


def _chunk_audio(cfg, t0: float, fault: dict | None) -> np.ndarray:
    from anomaly.simulate import SAMPLE_RATE, _soft_limit, fault_signal, simulate

    x = simulate(cfg, CHUNK_S + 240 / SAMPLE_RATE, start_s=t0).astype(np.float64)
    if fault is not None:  # the additive fault term from the onset on (what simulate() adds, before its limiter)
        i0 = int(round(max(0.0, fault["onset_s"] - t0) * SAMPLE_RATE))
        f = fault_signal(fault["fault"], SEVERITY, (x.size - i0) / SAMPLE_RATE, seed=cfg.seed, machine=cfg.machine,
                         start_s=t0 + i0 / SAMPLE_RATE)
        x[i0:] += f[: x.size - i0]
        x = _soft_limit(x)
    return x.astype(np.float32)


def _score_chunk(det, cfg, t0: float, fault: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patch: the score, the band levels and the band errors (float32; bench/score_variants rescores them)."""
    from anomaly.features import DEFAULT_PARAMS as P
    from anomaly.features import log_mel, patches

    X = np.asarray(patches(log_mel(_chunk_audio(cfg, t0, fault), P), P))
    assert X.shape[0] == CHUNK_PATCHES, X.shape
    score, bands = det.score_with_bands(X)
    return np.asarray(score, np.float64), X.mean(axis=1).astype(np.float32), np.asarray(bands, np.float32)


def build_site(args: tuple) -> str:
    """Simulate one site and cache its scores, band levels and band errors (skipped when cached)."""
    import torch

    from anomaly.detectors import load_detector
    from anomaly.simulate import SimConfig

    torch.set_num_threads(1)
    site, model_dir, out, hours = args
    if out.exists():
        return f"{site['name']}: cached"
    t_start = time.time()
    det = load_detector(model_dir)
    cfg = SimConfig(site["machine"], "none", 0.0, site["background"], seed=site["seed"])
    n_chunks = int(round((CAL_S + hours * 3600) / CHUNK_S))
    parts = [_score_chunk(det, cfg, c * CHUNK_S) for c in range(n_chunks)]
    data = {"score": np.concatenate([p[0] for p in parts]), "levels": np.concatenate([p[1] for p in parts]),
            "bands": np.concatenate([p[2] for p in parts])}
    evs = fault_events(site, hours)
    for i, ev in enumerate(evs):
        c0 = int(CAL_S / CHUNK_S + ev["chunk"])
        fp = [_score_chunk(det, cfg, c * CHUNK_S, ev) for c in (c0, c0 + 1)]
        data[f"fault{i}_score"] = np.concatenate([p[0] for p in fp])
        data[f"fault{i}_levels"] = np.concatenate([p[1] for p in fp])
        data[f"fault{i}_bands"] = np.concatenate([p[2] for p in fp])
        data[f"fault{i}_start_patch"] = np.array(c0 * CHUNK_PATCHES)
    meta = dict(site, hours=hours, cal_s=CAL_S, patch_s=PATCH_S, chunk_patches=CHUNK_PATCHES, model=str(model_dir),
                faults=evs, severity=SEVERITY, seconds=round(time.time() - t_start, 1))
    data["meta"] = np.array(json.dumps(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, out)
    return f"{site['name']}: {n_chunks * CHUNK_PATCHES} patches in {time.time() - t_start:.0f} s"


@dataclasses.dataclass
class Fault:
    kind: str
    onset_s: float
    start_patch: int  # first patch of the faulty segment in the site's patch grid
    score: np.ndarray
    levels: np.ndarray
    bands: np.ndarray | None = None  # the band errors (caches built before they were kept have none)

    @property
    def onset_patch(self) -> int:
        return int(self.onset_s // PATCH_S)


@dataclasses.dataclass
class Site:
    name: str
    meta: dict
    score: np.ndarray  # all normal patches, calibration hour first
    levels: np.ndarray  # [n, 64]
    faults: list[Fault]
    bands: np.ndarray | None = None  # [n, 64] band errors, when the cache has them

    def cal(self, minutes: float) -> slice:
        return slice(CAL_PATCHES - int(round(minutes * 60 / PATCH_S)), CAL_PATCHES)

    @property
    def mon(self) -> slice:
        return slice(CAL_PATCHES, self.score.size)

    def fault_stream(self, f: Fault, what: str = "score") -> tuple[np.ndarray, int]:
        """Normal history + the faulty segment (``what``: score, levels or bands), and the stream's first patch in the
        site grid."""
        normal, seg_src = getattr(self, what), getattr(f, what)
        a = max(0, f.start_patch - HISTORY)
        seg = normal[a: f.start_patch + seg_src.shape[0]].copy()
        seg[f.start_patch - a:] = seg_src
        return seg, a


def load_site(path: Path) -> Site:
    d = np.load(path)
    meta = json.loads(str(d["meta"]))
    has_bands = "bands" in d.files
    faults = [Fault(ev["fault"], ev["onset_s"], int(d[f"fault{i}_start_patch"]), d[f"fault{i}_score"],
                    d[f"fault{i}_levels"], d[f"fault{i}_bands"] if has_bands else None)
              for i, ev in enumerate(meta["faults"])]
    return Site(meta["name"], meta, d["score"], d["levels"], faults, d["bands"] if has_bands else None)
