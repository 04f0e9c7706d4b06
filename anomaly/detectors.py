"""Detectors in scikit-learn style, and saving/loading them as model directories.

Every detector has ``fit``, ``score_samples`` (one score per patch, **higher = more anomalous**; note this is the
opposite sign of scikit-learn's own outlier detectors), ``decision_function = score - threshold_`` (positive =
anomalous), ``clip_score`` and learned state with a trailing underscore. ``threshold_`` set by ``fit`` is a
provisional threshold on the validation scores, by the rule of :mod:`anomaly.decision` (mean + k·σ with its default
k); a site calibration replaces it.

A model directory holds ``model.json`` (versioned metadata: FeatureParams and their hash, normalisation,
architecture, training-data fingerprint, validation metrics) and the weights: ``weights.pt`` (a plain state dict,
loaded with ``torch.load(weights_only=True)``) for the autoencoder, ``state.npz`` (plain arrays, loaded with
``allow_pickle=False``) for the embedding detectors. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.svm import OneClassSVM

from anomaly import __version__
from anomaly.atomic import atomic_dir
from anomaly.audio import iter_patches
from anomaly.decision import DEFAULT_K, fit_threshold
from anomaly.errors import DataError, ModelError, NotFittedError, one_line
from anomaly.features import DEFAULT_PARAMS, FeatureParams
from anomaly.model import ArchConfig, ConvAutoencoder, count_macs, count_params
from anomaly.modeldir import DETECTOR_FORMAT, DETECTOR_KINDS, check_values, file_sha256, read_checked
from anomaly.score import MSE, GaussianScore, MSEScore
from anomaly.states import describe_states
from anomaly.train import (
    Split,
    TrainConfig,
    assemble_passes,
    mask_positions,
    masked_error_maps,
    split_recordings,
    train_autoencoder,
)
from anomaly.yamnet import load_embedder, open_recorded

DETECTORS = DETECTOR_KINDS
EMBEDDINGS = ("stats", "ae", "yamnet")


def _as_recordings(X, params: FeatureParams) -> list[np.ndarray]:
    """Patches ``[n, T, M]`` or a list of ``[frames, M]`` recordings → list of float32 recordings."""
    if isinstance(X, np.ndarray) and X.ndim == 3:
        recs = [np.ascontiguousarray(p, np.float32) for p in X]
    else:
        recs = [np.ascontiguousarray(r, np.float32) for r in X]
    if not recs or any(r.ndim != 2 for r in recs):
        raise DataError("expected patches [n, frames, mels] or a list of [frames, mels] recordings")
    bad = {r.shape[1] for r in recs} - {params.n_mels}
    if bad:
        raise DataError(f"expected {params.n_mels} mel bands per frame, got {sorted(bad)}")
    return recs


def _check_patches(X, n_mels: int, patch_frames: int) -> np.ndarray:
    X = np.asarray(X, np.float32)
    if X.ndim != 3 or X.shape[1:] != (patch_frames, n_mels):
        raise DataError(f"expected patches [n, {patch_frames}, {n_mels}], got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("patches contain NaN or Inf")
    return X


class Detector:
    """Common API; subclasses implement ``_fit`` and ``_score``."""

    kind = "base"

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS):
        self.params = params

    # -- scikit-learn style API -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() or load a model dir")

    def score_samples(self, X) -> np.ndarray:
        """Anomaly score per patch ``[n]`` (higher = more anomalous)."""
        self._check_fitted()
        return self._score(_check_patches(X, self.params.n_mels, self.params.patch_frames))

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - threshold_``: positive means anomalous."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X) -> np.ndarray:
        """1 for anomalous patches, 0 for normal ones."""
        return (self.decision_function(X) > 0).astype(int)

    def score_with_bands(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """``(score_samples [n], per-band errors [n, n_mels] or None)``; only reconstruction models have bands."""
        return self.score_samples(X), None

    def clip_score(self, X, reduce: str = "mean") -> float:
        """One score for a clip's patches: their mean (default) or max."""
        s = self.score_samples(X)
        if reduce == "mean":
            return float(s.mean())
        if reduce == "max":
            return float(s.max())
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")

    def _set_threshold(self, val_scores: np.ndarray) -> None:
        v = np.asarray(val_scores, float)
        fit = fit_threshold(v, DEFAULT_K)
        self.threshold_ = fit.value
        self.validation_ = {"n_patches": fit.n, "score_mean": fit.mean, "score_std": fit.std,
                            "score_p99": float(np.percentile(v, 99))}

    # -- persistence ------------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "format_version": DETECTOR_FORMAT,
            "humwatch_version": __version__,
            "detector": self.kind,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "feature_params": self.params.to_dict(),
            "feature_params_hash": self.params.hash(),
            "threshold": self.threshold_,
            "validation": self.validation_,
        }

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write the model directory atomically (a complete new directory replaces any old one)."""
        self._check_fitted()
        with atomic_dir(directory) as tmp:
            meta = self._meta()
            files = self._save_weights(tmp)
            meta["files"] = {f: file_sha256(tmp / f) for f in files}
            meta.update(extra or {})
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Path(directory)


class AutoencoderDetector(Detector):
    """Reconstruction (or interpolation) error of the convolutional autoencoder.

    Per patch the network gives a squared-error map in the normalised domain (with ``mask_frames`` > 0, the
    interpolation objective: the error of each grid block when it is hidden, see
    :func:`anomaly.train.masked_error_maps`); its time average is the 64-band error vector ``e``.

    The score of ``e`` is :mod:`anomaly.score`'s (:attr:`scorer`):

    * ``score="mse"`` (default): the mean of ``e`` -- per-patch MSE.
    * ``score="gaussian"``: the squared Mahalanobis distance of ``log(e + 1e-4)`` from a Gaussian (Ledoit-Wolf
      shrinkage) fitted on the training patches' vectors (learned state ``gauss_mean_``, ``gauss_prec_``): a
      two-sided score, so a patch whose error spectrum is *unusually low or differently shaped* -- a missing or damped
      transient -- is anomalous too, not only one with more error than usual. Better on the real recordings
      (docs/benchmarks.md); exported like the MSE.
    """

    kind = "ae"

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS, arch: ArchConfig | None = None,
                 train_config: TrainConfig | None = None):
        super().__init__(params)
        self.arch = arch or ArchConfig(patch_frames=params.patch_frames, n_mels=params.n_mels)
        self.train_config = train_config or TrainConfig()

    def fit(self, X, on_epoch=None, states: Sequence[str] | None = None) -> AutoencoderDetector:
        """Fit on normal data.

        Args:
            X: raw log-mel patches ``[n, T, M]`` or a list of recordings ``[frames, M]`` (lets training draw
                time-shifted crops).
            on_epoch: progress callback ``(epoch, train_loss, val_loss)``.
            states: one operating-state label per recording (``humwatch train --states``; see
                :mod:`anomaly.states`): training gives every state the same share of its crops. Scoring does not
                need them.
        """
        cfg = self.train_config
        recs = _as_recordings(X, self.params)
        if states is not None and len(states) != len(recs):
            raise DataError(f"got {len(states)} state labels for {len(recs)} recordings")
        allf = np.concatenate(recs)
        if not np.isfinite(allf).all():
            raise DataError("training features contain NaN or Inf")
        self.mean_ = allf.mean(0).astype(np.float32)
        self.std_ = np.maximum(allf.std(0), 1e-3).astype(np.float32)
        norm = [(r - self.mean_) / self.std_ for r in recs]
        split = split_recordings(norm, self.params.patch_frames, cfg.val_fraction, cfg.seed)
        train_states = None if states is None else [states[i] for i in split.train_index]
        self.model_, self.history_ = train_autoencoder(split, self.arch, cfg, on_epoch, train_states)
        self.states_ = None if states is None else describe_states(states)
        self.history_["split"] = split.how
        self.history_["n_train_frames"] = int(sum(r.shape[0] for r in split.train))
        self.gauss_mean_ = self.gauss_prec_ = None
        if cfg.score == "gaussian":
            # The error Gaussian: fitted on the training part's patches, so the threshold below (on held-out
            # validation patches) is not optimistic.
            grid = np.concatenate([r[: r.shape[0] // self.params.patch_frames * self.params.patch_frames]
                                   .reshape(-1, self.params.patch_frames, self.params.n_mels) for r in split.train])
            g = GaussianScore.fit(self._errors(grid).mean(dim=1).double().numpy())
            self.gauss_mean_, self.gauss_prec_ = g.mean, g.precision
        self._set_threshold(self._score_normalised(split.val))
        return self

    def forward_passes(self) -> int:
        """Network invocations per patch: one per hidden block of the grid (1 for the plain autoencoder)."""
        return len(mask_positions(self.arch.patch_frames, self.train_config.mask_frames) or [None])

    @property
    def scorer(self) -> MSEScore | GaussianScore:
        """The model's score (:mod:`anomaly.score`): the MSE, or the fitted Gaussian score of the log band errors."""
        if getattr(self, "gauss_prec_", None) is None:
            return MSE
        return GaussianScore(self.gauss_mean_, self.gauss_prec_)

    def _normalise(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((X - self.mean_) / self.std_).unsqueeze(1)

    @torch.no_grad()
    def _errors(self, Xn: np.ndarray | torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Squared error maps ``[n, T, M]`` for normalised patches."""
        x = Xn if isinstance(Xn, torch.Tensor) else torch.from_numpy(Xn).unsqueeze(1)
        self.model_.eval()
        out = [masked_error_maps(self.model_, b, self.train_config.mask_frames) for b in x.split(batch)]
        return torch.cat(out) if out else torch.zeros(0, self.params.patch_frames, self.params.n_mels)

    def _score_normalised(self, Xn: np.ndarray) -> np.ndarray:
        return self.scorer.of_bands(self._errors(Xn).mean(dim=1).double().numpy())

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_normalised(self._normalise(X))

    def band_errors(self, X) -> np.ndarray:
        """Mean squared error per mel band ``[n, n_mels]`` (which band deviated; the score's input)."""
        self._check_fitted()
        X = _check_patches(X, self.params.n_mels, self.params.patch_frames)
        return self._errors(self._normalise(X)).mean(dim=1).numpy().astype(float)

    def score_with_bands(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``(score_samples [n], band_errors [n, n_mels])`` from one forward pass."""
        self._check_fitted()
        X = _check_patches(X, self.params.n_mels, self.params.patch_frames)
        bands = self._errors(self._normalise(X)).mean(dim=1).double().numpy()
        return self.scorer.of_bands(bands), bands

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions in the raw log-mel domain ``[n, T, M]`` (for reports); with the interpolation objective
        each grid block is the network's interpolation of that block from the rest of the patch."""
        self._check_fitted()
        X = _check_patches(X, self.params.n_mels, self.params.patch_frames)
        y = assemble_passes(lambda z: self.model_(torch.from_numpy(z).unsqueeze(1)).squeeze(1).numpy(),
                            ((X - self.mean_) / self.std_).astype(np.float32), self.train_config.mask_frames)
        return y * self.std_ + self.mean_

    @torch.no_grad()
    def embed(self, X) -> np.ndarray:
        """Bottleneck vectors ``[n, bottleneck]``."""
        self._check_fitted()
        X = _check_patches(X, self.params.n_mels, self.params.patch_frames)
        return torch.cat([self.model_.encode(b) for b in self._normalise(X).split(512)]).numpy()

    def _meta(self) -> dict:
        m = super()._meta()
        m.update(
            normalisation={"mean": self.mean_.tolist(), "std": self.std_.tolist()},
            architecture={**self.arch.to_dict(), "params": count_params(self.model_),
                          "macs_per_patch": count_macs(self.model_) * self.forward_passes(),
                          "forward_passes_per_patch": self.forward_passes()},
            score=self.scorer.description,
            training={**self.train_config.to_dict(), **{k: v for k, v in self.history_.items()
                                                        if k not in ("train_loss", "val_loss")},
                      "train_loss": [round(x, 6) for x in self.history_["train_loss"]],
                      "val_loss": [round(x, 6) for x in self.history_["val_loss"]]},
        )
        if getattr(self, "states_", None):
            m["states"] = self.states_
        return m

    def _save_weights(self, d: Path) -> list[str]:
        torch.save(self.model_.state_dict(), d / "weights.pt")
        if getattr(self, "gauss_prec_", None) is None:
            return ["weights.pt"]
        np.savez(d / "scoring.npz", mean=self.gauss_mean_, precision=self.gauss_prec_,
                 eps=np.array([self.scorer.eps]))
        return ["weights.pt", "scoring.npz"]

    @classmethod
    def _from_meta(cls, meta: dict, d: Path, params: FeatureParams) -> AutoencoderDetector:
        det = cls(params, ArchConfig.from_dict({k: meta["architecture"][k] for k in
                                               ("widths", "bottleneck", "patch_frames", "n_mels")}))
        det.model_ = ConvAutoencoder(det.arch)
        try:
            state = torch.load(d / "weights.pt", weights_only=True, map_location="cpu")
            det.model_.load_state_dict(state)
        except Exception as e:
            raise ModelError(f"{d / 'weights.pt'}: corrupt or incompatible weights ({one_line(e)})") from None
        det.model_.eval()
        known = set(TrainConfig.__dataclass_fields__)
        training = {"mask_frames": 0, "score": "mse", **meta.get("training", {})}  # older models: plain AE, MSE
        try:
            det.train_config = TrainConfig(**{k: v for k, v in training.items() if k in known})
        except DataError as e:
            raise ModelError(f"{d / 'model.json'}: {e}") from None
        det.gauss_mean_ = det.gauss_prec_ = None
        if det.train_config.score == "gaussian":
            if "scoring.npz" not in meta.get("files", {}):
                raise ModelError(f"{d / 'model.json'}: a Gaussian-scored model without its scoring.npz")
            try:
                with np.load(d / "scoring.npz", allow_pickle=False) as z:
                    det.gauss_mean_, det.gauss_prec_ = z["mean"], z["precision"]
            except (OSError, ValueError, KeyError) as e:
                raise ModelError(f"{d / 'scoring.npz'}: corrupt scoring state ({one_line(e)})") from None
            n = det.params.n_mels
            if det.gauss_mean_.shape != (n,) or det.gauss_prec_.shape != (n, n):
                raise ModelError(f"{d / 'scoring.npz'}: expected mean [{n}] and precision [{n}, {n}], got "
                                 f"{det.gauss_mean_.shape} and {det.gauss_prec_.shape}")
        det.mean_ = np.asarray(meta["normalisation"]["mean"], np.float32)
        det.std_ = np.asarray(meta["normalisation"]["std"], np.float32)
        det.history_ = meta.get("training", {})
        _check_learned(d, [("normalisation mean", det.mean_, False, "model.json"),
                           ("normalisation std", det.std_, True, "model.json")]
                       + [(f"weight {k}", v.numpy(), False, "weights.pt") for k, v in state.items()
                          if v.is_floating_point()]
                       + ([("Gaussian mean", det.gauss_mean_, False, "scoring.npz"),
                           ("Gaussian precision", det.gauss_prec_, False, "scoring.npz")]
                          if det.gauss_prec_ is not None else []))
        det.states_ = meta.get("states")
        return det


def _check_learned(d: Path, arrays) -> None:
    """Every learned array finite (and positive where it divides): a damaged model is refused at load."""
    for name, values, positive, where in arrays:
        check_values(d, name, values, positive, where)


def summary_stats(X: np.ndarray) -> np.ndarray:
    """Log-mel summary statistics per patch: per-band mean, std and max over time ``[n, 3 * n_mels]``."""
    return np.concatenate([X.mean(1), X.std(1), X.max(1)], axis=1).astype(np.float32)


class EmbeddingDetector(Detector):
    """One-Class SVM or Isolation Forest on patch embeddings (log-mel statistics, the AE bottleneck, or YAMNet's
    1024-d embeddings).

    The fitted scikit-learn model is stored as plain arrays (support vectors and dual coefficients; tree node
    arrays) and scored here with numpy, so loading executes no code. A YAMNet model is not copied: model.json records
    its path and sha256, and loading re-opens and checks it.
    """

    def __init__(self, kind: str = "ocsvm", embedding: str = "stats", params: FeatureParams = DEFAULT_PARAMS,
                 ae: AutoencoderDetector | None = None, seed: int = 0, nu: float = 0.05, yamnet=None):
        """
        Args:
            ae: a fitted autoencoder, for ``embedding="ae"``.
            yamnet: a :class:`~anomaly.yamnet.YamnetEmbedder`, for ``embedding="yamnet"``.
        """
        super().__init__(params)
        if kind not in ("ocsvm", "iforest"):
            raise ValueError(f"kind must be 'ocsvm' or 'iforest', got {kind!r}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        if embedding == "ae" and ae is None:
            raise ValueError("embedding='ae' needs a fitted AutoencoderDetector (ae=...)")
        if embedding == "yamnet" and yamnet is None:
            raise ValueError("embedding='yamnet' needs a YamnetEmbedder (yamnet=anomaly.yamnet.load_embedder(PATH))")
        self.kind, self.embedding, self.ae, self.seed, self.nu = kind, embedding, ae, seed, nu
        self.yamnet = yamnet

    def _embed(self, X: np.ndarray) -> np.ndarray:
        """Raw log-mel patches ``[n, T, M]`` → embeddings ``[n, d]`` (d = 192, the AE bottleneck, or 1024)."""
        if self.embedding == "ae":
            return self.ae.embed(X)
        if self.embedding == "yamnet":
            return self.yamnet.embed(X)
        return summary_stats(X)

    def fit(self, X, val_fraction: float = 0.15) -> EmbeddingDetector:
        recs = _as_recordings(X, self.params)
        P = np.concatenate([r[: r.shape[0] // self.params.patch_frames * self.params.patch_frames]
                            .reshape(-1, self.params.patch_frames, self.params.n_mels) for r in recs])
        P = _check_patches(P, self.params.n_mels, self.params.patch_frames)
        if len(P) < 4:
            raise DataError(f"need at least 4 normal patches to fit, got {len(P)}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(P))
        n_val = max(1, int(len(P) * val_fraction))
        E = self._embed(P)
        self.emb_mean_ = E[order[n_val:]].mean(0)
        self.emb_std_ = np.maximum(E[order[n_val:]].std(0), 1e-6)
        Z = (E - self.emb_mean_) / self.emb_std_
        if self.kind == "ocsvm":
            m = OneClassSVM(kernel="rbf", gamma="scale", nu=self.nu).fit(Z[order[n_val:]])
            self.sv_ = m.support_vectors_.astype(np.float64)
            self.dual_coef_ = m.dual_coef_.ravel().astype(np.float64)
            self.intercept_ = float(m.intercept_[0])
            self.gamma_ = float(m._gamma)
        else:
            m = IsolationForest(n_estimators=200, random_state=self.seed).fit(Z[order[n_val:]])
            self.trees_ = [_tree_arrays(e.tree_) for e in m.estimators_]
            self.tree_features_ = [np.asarray(f, np.int64) for f in m.estimators_features_]
            self.max_samples_ = int(m.max_samples_)
        self._set_threshold(self._score_embedded(Z[order[:n_val]]))
        return self

    def _score_embedded(self, Z: np.ndarray) -> np.ndarray:
        if self.kind == "ocsvm":
            out = np.empty(len(Z))
            for i in range(0, len(Z), 1024):
                d = ((Z[i:i + 1024, None, :] - self.sv_[None]) ** 2).sum(-1)
                out[i:i + 1024] = np.exp(-self.gamma_ * d) @ self.dual_coef_ + self.intercept_
            return -out  # sklearn: positive inside the normal region; we want higher = more anomalous
        depth = np.zeros(len(Z))
        for (left, right, feat, thr, nsamp), fidx in zip(self.trees_, self.tree_features_, strict=True):
            depth += _tree_depths(Z[:, fidx], left, right, feat, thr, nsamp)
        return 2.0 ** (-(depth / len(self.trees_)) / _avg_path_length(self.max_samples_))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._score_embedded((self._embed(X) - self.emb_mean_) / self.emb_std_)

    def _meta(self) -> dict:
        m = super()._meta()
        m.update(embedding=self.embedding, seed=self.seed, nu=self.nu)
        if self.embedding == "ae":
            m["ae_model"] = "ae"  # the encoder is saved in the ae/ subdirectory
        if self.embedding == "yamnet":
            m["yamnet"] = self.yamnet.info()  # re-opened from this path (sha256 checked) when loading
        return m

    def _save_weights(self, d: Path) -> list[str]:
        arrays = {"emb_mean": self.emb_mean_, "emb_std": self.emb_std_}
        if self.kind == "ocsvm":
            arrays.update(sv=self.sv_, dual_coef=self.dual_coef_, intercept=np.array([self.intercept_]),
                          gamma=np.array([self.gamma_]))
        else:
            arrays["max_samples"] = np.array([self.max_samples_])
            for i, (t, f) in enumerate(zip(self.trees_, self.tree_features_, strict=True)):
                for name, a in zip(("left", "right", "feature", "threshold", "n_node_samples"), t, strict=True):
                    arrays[f"tree{i}_{name}"] = a
                arrays[f"tree{i}_features"] = f
        np.savez(d / "state.npz", **arrays)
        files = ["state.npz"]
        if self.embedding == "ae":
            self.ae.save(d / "ae")
            files += ["ae/model.json", "ae/weights.pt"]
        return files

    @classmethod
    def _from_meta(cls, meta: dict, d: Path, params: FeatureParams) -> EmbeddingDetector:
        ae = load_detector(d / "ae", params) if meta["embedding"] == "ae" else None
        yamnet = None
        if meta["embedding"] == "yamnet":
            yamnet = open_recorded(meta.get("yamnet"), f"model {d}")
        det = cls(meta["detector"], meta["embedding"], params, ae=ae, seed=meta.get("seed", 0),
                  nu=meta.get("nu", 0.05), yamnet=yamnet)
        try:
            with np.load(d / "state.npz", allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except Exception as e:
            raise ModelError(f"{d / 'state.npz'}: corrupt detector state ({one_line(e)})") from None
        det.emb_mean_, det.emb_std_ = a["emb_mean"], a["emb_std"]
        _check_learned(d, [("embedding std", det.emb_std_, True, "state.npz")]
                       + [(k, v, False, "state.npz") for k, v in a.items() if np.issubdtype(v.dtype, np.number)])
        if det.kind == "ocsvm":
            det.sv_, det.dual_coef_ = a["sv"], a["dual_coef"]
            det.intercept_, det.gamma_ = float(a["intercept"][0]), float(a["gamma"][0])
        else:
            det.max_samples_ = int(a["max_samples"][0])
            n = sum(1 for k in a if k.endswith("_left"))
            det.trees_ = [tuple(a[f"tree{i}_{x}"] for x in ("left", "right", "feature", "threshold", "n_node_samples"))
                          for i in range(n)]
            det.tree_features_ = [a[f"tree{i}_features"] for i in range(n)]
        return det


def _tree_arrays(t) -> tuple[np.ndarray, ...]:
    return (t.children_left.astype(np.int64), t.children_right.astype(np.int64), t.feature.astype(np.int64),
            t.threshold.astype(np.float64), t.n_node_samples.astype(np.int64))


def _avg_path_length(n) -> np.ndarray | float:
    """c(n) of the Isolation Forest paper: average path length of an unsuccessful BST search."""
    n = np.asarray(n, float)
    big = 2.0 * (np.log(np.maximum(n - 1.0, 1.0)) + np.euler_gamma) - 2.0 * (n - 1.0) / np.maximum(n, 1)
    out = np.where(n > 2, big, np.where(n == 2, 1.0, 0.0))
    return out if out.ndim else float(out)


def _tree_depths(Z, left, right, feat, thr, nsamp) -> np.ndarray:
    node = np.zeros(len(Z), np.int64)
    depth = np.zeros(len(Z))
    active = left[node] != -1
    while active.any():
        idx = np.nonzero(active)[0]
        nd = node[idx]
        go_left = Z[idx, feat[nd]] <= thr[nd]
        node[idx] = np.where(go_left, left[nd], right[nd])
        depth[idx] += 1
        active[idx] = left[node[idx]] != -1
    return depth + _avg_path_length(nsamp[node])


def load_detector(directory: str | Path, params: FeatureParams | None = DEFAULT_PARAMS) -> Detector:
    """Load a model directory written by :meth:`Detector.save`.

    Args:
        params: the front end in use; loading fails with ParamsMismatchError naming the differing fields when the
            model was made with others. ``None`` accepts the model's own parameters.

    Raises:
        ModelError: missing/corrupt directory or weights. ParamsMismatchError: other front-end parameters.
    """
    d = Path(directory)
    meta, mp = read_checked(d, "detector", params)
    try:
        det = (AutoencoderDetector if meta["detector"] == "ae" else EmbeddingDetector)._from_meta(meta, d, mp)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{d / 'model.json'}: incomplete model description ({one_line(e)})") from None
    det.threshold_ = float(meta["threshold"])
    v = meta.get("validation", {})
    det.validation_ = dict(v)  # a loaded model saves again with its own validation figures
    det.meta_ = meta
    return det


def check_choice(kind: str, embedding: str = "stats") -> None:
    """DataError unless ``kind`` is a detector and ``embedding`` an embedding this humwatch has."""
    if kind not in DETECTORS:
        raise DataError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if embedding not in EMBEDDINGS:
        raise DataError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")


def fit_detector(kind: str, recordings: Sequence[np.ndarray], params: FeatureParams = DEFAULT_PARAMS,
                 arch: ArchConfig | None = None, train_config: TrainConfig | None = None,
                 embedding: str = "stats", on_epoch=None, yamnet=None,
                 states: Sequence[str] | None = None) -> Detector:
    """Fit the named detector (``ae``, ``ocsvm``, ``iforest``) on normal recordings ``[frames, M]``.

    Args:
        states: one operating-state label per recording (the autoencoder only; see :mod:`anomaly.states`).
        embedding: for ocsvm/iforest: ``stats``, ``ae`` (an autoencoder is trained first) or ``yamnet``.
        yamnet: with ``embedding="yamnet"``: a :class:`~anomaly.yamnet.YamnetEmbedder` or the path of a YAMNet
            model (:func:`anomaly.yamnet.load_embedder`).
    """
    check_choice(kind, embedding)
    if embedding == "yamnet" and kind == "ae":
        raise DataError("YAMNet embeddings are for the ocsvm and iforest detectors, not the autoencoder")
    if embedding == "yamnet" and yamnet is None:
        raise DataError("YAMNet embeddings need a YAMNet model file (a .tflite file or a SavedModel directory)")
    if states is not None and kind != "ae":
        raise DataError(f"operating states (--states) are used by the autoencoder (--detector ae), not {kind}")
    cfg = train_config or TrainConfig()
    if kind == "ae":
        return AutoencoderDetector(params, arch, cfg).fit(list(recordings), on_epoch=on_epoch, states=states)
    ae = AutoencoderDetector(params, arch, cfg).fit(list(recordings), on_epoch=on_epoch) if embedding == "ae" else None
    if embedding == "yamnet" and not hasattr(yamnet, "embed"):
        yamnet = load_embedder(yamnet, threads=cfg.threads)
    return EmbeddingDetector(kind, embedding, params, ae=ae, seed=cfg.seed,
                             yamnet=yamnet if embedding == "yamnet" else None).fit(list(recordings))



def score_file(det: Detector, path: str | Path, offsets: np.ndarray | None = None, bands: bool = False,
               block_seconds: float = 60.0):
    """Score every patch of a file, block-wise.

    Returns:
        ``(start_s [n], scores [n], band_errors [n, n_mels] or None)``.
    """
    starts, scores, band_rows = [], [], []
    for s, X in iter_patches(path, det.params, offsets, block_seconds=block_seconds):
        sc, b = det.score_with_bands(X) if bands else (det.score_samples(X), None)
        if b is not None:
            band_rows.append(b)
        starts.append(s)
        scores.append(sc)
    b = np.concatenate(band_rows) if band_rows else None
    return np.concatenate(starts), np.concatenate(scores), b


def fingerprint_files(paths: Sequence[str | Path]) -> dict:
    """Identity of a training set: count, total bytes, a sha256 over the names and contents, and each file's sha256."""
    h = hashlib.sha256()
    total = 0
    digests = []
    for p in sorted(Path(x) for x in paths):
        d = file_sha256(p)
        digests.append(d)
        h.update(p.name.encode())
        h.update(d.encode())
        total += p.stat().st_size
    # Per-file digests let a site calibration refuse audio the model was trained on (its scores would be optimistic).
    return {"n_files": len(paths), "bytes": total, "sha256": h.hexdigest(), "file_sha256": sorted(set(digests))}


__all__ = ["AutoencoderDetector", "Detector", "EmbeddingDetector", "Split", "fingerprint_files", "fit_detector",
           "load_detector", "score_file", "summary_stats"]
