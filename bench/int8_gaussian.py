"""Does an int8 model keep the Gaussian score? PyTorch vs full-integer TFLite on simulated pump audio.

Usage: python bench/int8_gaussian.py [--epochs 8] [--mask-frames 0|24] [--out JSON]

Trains the default autoencoder with ``score="gaussian"`` (one pass; with ``--mask-frames 24`` the interpolation
objective, four passes per patch) on 6 min of simulated normal pump audio, converts it with the export's own chain
(``firmware_export.pipeline.convert_model``: ONNX → onnx2tf → int8 TFLite, calibrated on normal and fault patches,
with one block hidden for an interpolation model, as ``humwatch export`` does), and compares, per patch, the Gaussian
score (Mahalanobis distance of the log band errors) and the plain MSE computed from the PyTorch and from the int8
outputs (assembled from the masked passes as on the device, ``firmware_export.parity.interpolated``): Pearson on
held-out normal patches, and patch AUC against three faults at severity 0.3. The evidence that the firmware keeps
what ``--score gaussian`` (and ``--mask-frames``) measure. JSON: bench/results/int8_gaussian[_maskN].json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import RESULTS, write_json  # noqa: E402  (puts the project root on sys.path too)

import anomaly  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)
from anomaly.detectors import AutoencoderDetector  # noqa: E402
from anomaly.evaluate import auc_pauc  # noqa: E402
from anomaly.features import DEFAULT_PARAMS as P  # noqa: E402
from anomaly.features import log_mel, patches  # noqa: E402
from anomaly.simulate import SimConfig, simulate  # noqa: E402
from anomaly.train import TrainConfig  # noqa: E402

FAULTS = (("cavitation", 0.3), ("bearing-outer", 0.3), ("electrical-arc", 0.3))


def frames(cfg: SimConfig, seconds: float) -> np.ndarray:
    return np.asarray(log_mel(simulate(cfg, seconds), P))


def main(argv: list[str] | None = None) -> int:
    import torch  # after ``anomaly``, which sets the OpenMP wait policy before torch loads

    from firmware_export.parity import hide_blocks, interpolated, pearson
    from firmware_export.pipeline import convert_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--mask-frames", type=int, default=0, help="0 (one pass) or a block width dividing 96")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    w = args.mask_frames
    out = args.out or RESULTS / ("int8_gaussian.json" if not w else f"int8_gaussian_mask{w}.json")
    torch.set_num_threads(1)
    t0 = time.time()
    train = [frames(SimConfig("pump", "none", 0, "factory", seed=500 + i), 120.0) for i in range(3)]
    normal = np.asarray(patches(frames(SimConfig("pump", "none", 0, "factory", seed=600), 120.0), P))
    faulty = {f: np.asarray(patches(frames(SimConfig("pump", f, s, "factory", seed=700), 60.0), P)) for f, s in FAULTS}
    det = AutoencoderDetector(train_config=TrainConfig(threads=1, epochs=args.epochs, score="gaussian",
                                                                mask_frames=w)).fit(train)

    def norm(X):
        return ((X - det.mean_) / det.std_).astype(np.float32)

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        rep = norm(np.concatenate([normal[::2]] + [v[::4] for v in faulty.values()]))
        rep = hide_blocks(rep, w) if w else rep
        conv = convert_model(det.model_.eval(), "model", td, td / "work", P.patch_frames, P.n_mels, rep,
                             (1, P.patch_frames, P.n_mels, 1), lambda *a: None, lambda *a: None)

        def scores(X, runtime: str) -> tuple[np.ndarray, np.ndarray]:
            xn = norm(X)
            if runtime == "pytorch":
                def run(z):
                    with torch.no_grad():
                        return det.model_(torch.from_numpy(z).unsqueeze(1)).squeeze(1).numpy()
            else:
                def run(z):
                    return conv.qm.run(z).reshape(z.shape)
            r = interpolated(run, xn, w)
            bands = ((r - xn) ** 2).mean(axis=1)
            return det.scorer.of_bands(bands), bands.mean(1)

        res: dict = {"epochs": args.epochs, "mask_frames": w, "forward_passes": det.forward_passes(),
                     "int8_bytes": len(conv.int8_bytes)}
        (gn_pt, mn_pt), (gn_q, mn_q) = scores(normal, "pytorch"), scores(normal, "int8")
        res["normal_patches"] = len(normal)
        res["pearson_normal"] = {"gaussian": pearson(gn_pt, gn_q), "mse": pearson(mn_pt, mn_q)}
        res["patch_auc"] = {}
        for f, X in faulty.items():
            (gf_pt, mf_pt), (gf_q, mf_q) = scores(X, "pytorch"), scores(X, "int8")
            y = np.r_[np.zeros(len(gn_pt)), np.ones(len(gf_pt))]
            res["patch_auc"][f] = {
                "gaussian_pytorch": auc_pauc(y, np.r_[gn_pt, gf_pt])[0],
                "gaussian_int8": auc_pauc(y, np.r_[gn_q, gf_q])[0],
                "mse_pytorch": auc_pauc(y, np.r_[mn_pt, mf_pt])[0], "mse_int8": auc_pauc(y, np.r_[mn_q, mf_q])[0]}
    res["seconds"] = round(time.time() - t0, 1)
    print(f"int8 vs PyTorch on {res['normal_patches']} normal patches: Pearson gaussian "
          f"{res['pearson_normal']['gaussian']:.5f}, mse {res['pearson_normal']['mse']:.5f}")
    print(f"{'fault (severity 0.3)':22} {'gauss pt':>9} {'gauss int8':>10} {'mse pt':>7} {'mse int8':>8}")
    for f, r in res["patch_auc"].items():
        print(f"{f:22} {r['gaussian_pytorch']:9.3f} {r['gaussian_int8']:10.3f} {r['mse_pytorch']:7.3f} "
              f"{r['mse_int8']:8.3f}")
    write_json(out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
