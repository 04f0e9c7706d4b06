"""The fault classifier: :class:`FaultClassifier` (training, calibration, prediction, saving) and
:func:`load_classifier`."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomaly import __version__
from anomaly.atomic import atomic_dir
from anomaly.audio import file_log_mel
from anomaly.classify.nets import AEEmbedding, ClassifyConfig, _build_net
from anomaly.classify.probability import (
    ECE_BINS,
    _nll,
    choose_threshold,
    clip_probabilities,
    expected_calibration_error,
    fit_temperature,
)
from anomaly.classify.sampling import _EmbeddingSampler, _Sampler, grid_patches, shifted_patches, stratified_split
from anomaly.errors import DataError, ModelError, one_line
from anomaly.features import DEFAULT_PARAMS, FeatureParams
from anomaly.modeldir import CLASSIFIER_FORMAT, CLASSIFIER_KIND, check_values, file_sha256, read_checked
from anomaly.yamnet import open_recorded


class FaultClassifier:
    """Train with :meth:`fit`, use with :meth:`predict_clips` / :meth:`predict_file`, persist with :meth:`save`."""

    def __init__(self, classes: Sequence[str], params: FeatureParams = DEFAULT_PARAMS,
                 config: ClassifyConfig | None = None, base=None, base_hash: str | None = None, yamnet=None):
        """
        Args:
            base: a fitted :class:`~anomaly.detectors.AutoencoderDetector`: classify on its encoder embedding.
            yamnet: a :class:`~anomaly.yamnet.YamnetEmbedder`: classify on YAMNet's 1024-d embeddings (frozen).
                Without either, a small CNN is trained from scratch.
        """
        if base is not None and yamnet is not None:
            raise DataError("an autoencoder base (--base) and YAMNet embeddings (--embeddings yamnet) are mutually "
                            "exclusive: choose one backbone")
        self.classes = list(classes)
        self.params = params
        self.config = config or ClassifyConfig()
        self.base, self.base_hash, self.yamnet = base, base_hash, yamnet
        self.logit_offset_ = np.zeros(len(self.classes))

    # -- features -----------------------------------------------------------------------------------------------
    def _norm(self, frames: np.ndarray) -> np.ndarray:
        return ((frames - self.mean_) / self.std_).astype(np.float32)

    @torch.no_grad()
    def logits_of_patches(self, X: np.ndarray) -> np.ndarray:
        """Logits ``[n, n_classes]`` (before temperature) for raw log-mel patches ``X [n, patch_frames, n_mels]``."""
        X = np.asarray(X, np.float32)
        T, M = self.params.patch_frames, self.params.n_mels
        if X.ndim != 3 or X.shape[1:] != (T, M):
            raise DataError(f"expected patches [n, {T}, {M}], got shape {X.shape}")
        if not len(X):
            return np.zeros((0, len(self.classes)))
        if self.arch_["backbone"] == "yamnet":
            return self._logits_of_embeddings(self.yamnet.embed(X))
        self.net_.eval()
        x = torch.from_numpy(self._norm(X)).unsqueeze(1)
        return torch.cat([self.net_(b) for b in x.split(256)]).double().numpy() + self.logit_offset_[None, :]

    @torch.no_grad()
    def _logits_of_embeddings(self, E: np.ndarray) -> np.ndarray:
        """Logits ``[n, n_classes]`` of YAMNet embeddings ``E [n, dim]`` (standardised here)."""
        self.net_.eval()
        x = torch.from_numpy(self._norm(E))
        return torch.cat([self.net_(b) for b in x.split(1024)]).double().numpy() + self.logit_offset_[None, :]

    def patch_logits(self, frames: np.ndarray) -> np.ndarray:
        """Logits ``[n_patches, n_classes]`` (before temperature) for one clip's raw log-mel frames."""
        return self.logits_of_patches(grid_patches(np.asarray(frames, np.float32), self.params.patch_frames))

    def probabilities_of_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated per-patch probabilities ``[n, n_classes]`` from :meth:`logits_of_patches` output."""
        z = np.asarray(logits, np.float64) / self.temperature_
        if self.config.exclusive:
            z = z - z.max(1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    def predict_clips(self, recs: Sequence[np.ndarray], calibrated: bool = True) -> np.ndarray:
        """Clip probabilities ``[n, n_classes]`` (mean of patch probabilities) for raw log-mel frame arrays."""
        t = self.temperature_ if calibrated else 1.0
        return clip_probabilities([self.patch_logits(r) for r in recs], t, self.config.exclusive)

    def predict_file(self, path: str | Path) -> np.ndarray:
        return self.predict_clips([file_log_mel(path, self.params)])[0]

    # -- training -----------------------------------------------------------------------------------------------
    def fit(self, recs: Sequence[np.ndarray], Y: np.ndarray, precision: float = 0.9,
            on_epoch: Callable[[int, float, float], None] | None = None,
            on_embed: Callable[[int, int], None] | None = None) -> FaultClassifier:
        """Train on raw log-mel frames of clips ``recs`` with multi-hot labels ``Y``; calibrate and set thresholds.

        Args:
            on_epoch: progress ``(epoch, train_loss, val_loss)``.
            on_embed: progress of the YAMNet embeddings ``(clips done, clips)`` (YAMNet backbone only).
        """
        cfg = self.config
        Y = np.asarray(Y, np.uint8)
        if len(recs) != len(Y) or Y.ndim != 2 or Y.shape[1] != len(self.classes):
            raise DataError(f"labels {Y.shape} do not match {len(recs)} clips and {len(self.classes)} classes")
        if cfg.exclusive and (Y.sum(1) != 1).any():
            raise DataError("exclusive (softmax) classes need exactly one label per clip; some clips have "
                            f"{sorted(set(Y.sum(1).tolist()) - {1})}")
        if not 0 < precision <= 1:
            raise DataError(f"precision target must be in (0, 1], got {precision:g}")
        self.precision_target_ = float(precision)
        tr, va = stratified_split(Y, cfg.val_fraction, cfg.seed, self.classes)
        self.split_ = {"train": int(len(tr)), "val": int(len(va))}
        T = self.params.patch_frames
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        prev = torch.get_num_threads()
        torch.set_num_threads(max(1, cfg.threads))
        try:
            if self.yamnet is not None:
                # YAMNet runs once per patch, before training: the grid patches of every clip, and for training
                # clips also crops at yamnet_shifts time offsets (the time-shift augmentation of this route).
                embs = self._yamnet_embeddings(recs, set(tr.tolist()), on_embed)
                allE = np.concatenate([embs[i] for i in tr])
                self.mean_ = allE.mean(0).astype(np.float32)
                self.std_ = np.maximum(allE.std(0), 1e-6).astype(np.float32)
                self.arch_ = {"backbone": "yamnet", "embedding_dim": int(allE.shape[1]), "hidden": cfg.hidden,
                              "yamnet": self.yamnet.info(), "train_crop_offsets": self._shift_offsets()}
                val_raw = [embs[i] for i in va]  # validation clips: grid patches only
                sampler = _EmbeddingSampler([self._norm(embs[i]) for i in tr], Y[tr], cfg, rng)
                vx = [torch.from_numpy(self._norm(e)) for e in val_raw]
            else:
                if self.base is not None:
                    self.mean_, self.std_ = self.base.mean_.astype(np.float32), self.base.std_.astype(np.float32)
                    self.arch_ = {"backbone": "ae", "ae": self.base.arch.to_dict(), "hidden": cfg.hidden}
                else:
                    allf = np.concatenate([recs[i] for i in tr])
                    self.mean_ = allf.mean(0).astype(np.float32)
                    self.std_ = np.maximum(allf.std(0), 1e-3).astype(np.float32)
                    self.arch_ = {"backbone": "cnn", "widths": list(cfg.widths), "n_mels": self.params.n_mels}
                norm = [self._norm(r) for r in recs]
                sampler = _Sampler([norm[i] for i in tr], Y[tr], T, cfg, rng)
                vx = [torch.from_numpy(grid_patches(norm[i], T)).unsqueeze(1) for i in va]
            self.arch_["n_classes"] = len(self.classes)
            self.arch_["exclusive"] = cfg.exclusive
            self.net_ = _build_net(self.arch_, len(self.classes), self.base.model_ if self.base is not None else None)
            self.history_ = self._train(sampler, vx, Y, tr, va, on_epoch)
        finally:
            torch.set_num_threads(prev)

        # calibration and thresholds on the validation clips
        if self.yamnet is not None:
            zs = [self._logits_of_embeddings(e) for e in val_raw]
        else:
            zs = [self.patch_logits(recs[i]) for i in va]
        Yv = Y[va]
        p1 = clip_probabilities(zs, 1.0, cfg.exclusive)
        self.temperature_ = fit_temperature(zs, Yv, cfg.exclusive)
        pt = clip_probabilities(zs, self.temperature_, cfg.exclusive)
        yv = torch.as_tensor(Yv, dtype=torch.float64)
        self.ece_ = {"val_before": expected_calibration_error(p1, Yv),
                     "val_after": expected_calibration_error(pt, Yv), "bins": ECE_BINS,
                     "val_nll_before": float(_nll(torch.from_numpy(p1), yv, cfg.exclusive)),
                     "val_nll_after": float(_nll(torch.from_numpy(pt), yv, cfg.exclusive))}
        self.thresholds_ = {}
        for k, c in enumerate(self.classes):
            self.thresholds_[c] = choose_threshold(pt[:, k], Yv[:, k], precision)
        return self

    def _shift_offsets(self) -> list[int]:
        T, k = self.params.patch_frames, self.config.yamnet_shifts
        return [int(round(i * T / k)) for i in range(k)]

    def _yamnet_embeddings(self, recs, train_idx: set[int], on_embed) -> list[np.ndarray]:
        """YAMNet embeddings per clip ``[n_i, dim]``: the grid patches first, then (training clips only) the patches
        of the time-shifted crops."""
        T, out = self.params.patch_frames, []
        for i, r in enumerate(recs):
            r = np.asarray(r, np.float32)
            P = shifted_patches(r, T, self.config.yamnet_shifts) if i in train_idx else grid_patches(r, T)
            out.append(self.yamnet.embed(P))
            if on_embed:
                on_embed(i + 1, len(recs))
        return out

    def _train(self, sampler, vx: list[torch.Tensor], Y, tr, va, on_epoch) -> dict:
        """Train ``net_`` on batches from ``sampler``; early stopping on the loss of the validation patches ``vx``
        (one tensor per validation clip, labelled with its clip's labels)."""
        cfg, net = self.config, self.net_
        head_params = list(net.head.parameters())
        groups = [{"params": head_params, "lr": cfg.lr}]
        frozen: list[nn.Module] = []
        if isinstance(net.backbone, AEEmbedding):
            blocks = net.backbone.blocks()
            k = min(cfg.finetune_layers, len(blocks))
            train_mods = blocks[len(blocks) - k:] + ([net.backbone.to_z] if k > 0 else [])
            frozen = blocks[: len(blocks) - k] + ([] if k > 0 else [net.backbone.to_z])
            for m in frozen:
                for p in m.parameters():
                    p.requires_grad_(False)
            bb = [p for m in train_mods for p in m.parameters()]
            if bb:
                groups.append({"params": bb, "lr": cfg.finetune_lr})
        elif list(net.backbone.parameters()):  # the YAMNet route has no trainable backbone
            groups.append({"params": list(net.backbone.parameters()), "lr": cfg.lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                    total_steps=cfg.steps_per_epoch * cfg.epochs, pct_start=0.15)
        Ytr = Y[tr].astype(np.float64)
        if cfg.exclusive:
            freq = Ytr.sum(0).clip(min=1)
            w = torch.tensor(len(Ytr) / (len(freq) * freq), dtype=torch.float32)
            loss_fn = nn.CrossEntropyLoss(weight=w)
            self.pos_weight_ = None
            self.class_weight_ = w.tolist()
            self.logit_offset_ = -np.log(w.numpy().astype(np.float64))  # the same prior correction for softmax

            def loss_of(z, y):
                return loss_fn(z, y.argmax(1))
        else:
            pos = Ytr.sum(0)
            pw = torch.tensor((len(Ytr) - pos) / np.maximum(pos, 1), dtype=torch.float32)
            self.pos_weight_ = pw.tolist()
            # BCE with pos_weight w is minimised by logit = log(w p / (1 - p)): subtracting log w at inference gives
            # back probabilities of the true class frequency (before temperature scaling).
            self.logit_offset_ = -np.log(np.maximum(pw.numpy().astype(np.float64), 1e-6))
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw)
            loss_of = loss_fn
        vy = torch.from_numpy(Y[va].astype(np.float32))
        hist = {"train_loss": [], "val_loss": []}
        best, best_state, best_epoch, bad = math.inf, None, 0, 0
        t0 = time.time()
        epoch = 0
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            for m in frozen:
                m.eval()  # frozen BatchNorm keeps its statistics
            tot = 0.0
            for _ in range(cfg.steps_per_epoch):
                x, y = sampler.batch(cfg.batch_size)
                opt.zero_grad(set_to_none=True)
                loss = loss_of(net(x), y)
                loss.backward()
                opt.step()
                sched.step()
                tot += loss.item()
            net.eval()
            with torch.no_grad():  # validation loss on patches, labels of their clip
                z = torch.cat([net(b) for b in vx])
                yy = torch.cat([vy[i].expand(len(b), -1) for i, b in enumerate(vx)])
                v = float(loss_of(z, yy))
            tl = tot / cfg.steps_per_epoch
            hist["train_loss"].append(round(tl, 6))
            hist["val_loss"].append(round(v, 6))
            if on_epoch:
                on_epoch(epoch, tl, v)
            if v < best - 1e-6:
                best, best_state, best_epoch, bad = v, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(True)
        hist.update(best_epoch=best_epoch, best_val_loss=round(best, 6), epochs_run=epoch,
                    train_seconds=round(time.time() - t0, 2))
        return hist

    # -- thresholds and persistence ----------------------------------------------------------------------------
    @property
    def threshold_array(self) -> np.ndarray:
        return np.array([self.thresholds_[c]["threshold"] for c in self.classes])

    def fallbacks(self) -> list[str]:
        return [c for c in self.classes if self.thresholds_[c]["fallback"]]

    def meta(self) -> dict:
        return {
            "format_version": CLASSIFIER_FORMAT,
            "humwatch_version": __version__,
            "kind": CLASSIFIER_KIND,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "classes": self.classes,
            "output": "softmax" if self.config.exclusive else "sigmoid",
            "clip_probability": "mean of patch probabilities",
            "temperature": self.temperature_,
            "ece": self.ece_,
            "precision_target": self.precision_target_,
            "thresholds": self.thresholds_,
            "threshold_fallbacks": self.fallbacks(),
            "feature_params": self.params.to_dict(),
            "feature_params_hash": self.params.hash(),
            "base_model_hash": self.base_hash,
            "normalisation": {"mean": self.mean_.tolist(), "std": self.std_.tolist(),
                              **({"input": "yamnet_embedding"} if self.arch_["backbone"] == "yamnet" else {})},
            "architecture": self.arch_,
            "loss": {**({"pos_weight": self.pos_weight_} if self.pos_weight_ is not None
                        else {"class_weight": self.class_weight_}),
                     "logit_offset": self.logit_offset_.tolist()},
            "split": self.split_,
            "training": {**self.config.to_dict(), **self.history_},
        }

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.json`` + ``weights.pt`` (a plain state dict) atomically."""
        with atomic_dir(directory) as tmp:
            torch.save(self.net_.state_dict(), tmp / "weights.pt")
            meta = self.meta()
            meta["files"] = {"weights.pt": file_sha256(tmp / "weights.pt")}
            meta.update(extra or {})
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Path(directory)


def load_classifier(directory: str | Path, params: FeatureParams | None = DEFAULT_PARAMS) -> FaultClassifier:
    """Load a model directory written by :meth:`FaultClassifier.save`.

    A YAMNet-backbone classifier re-opens its YAMNet model from the path recorded at training and checks its sha256.

    Raises:
        ModelError: missing, corrupt or not a classifier; its YAMNet model moved, changed or unreadable.
            ParamsMismatchError: other front-end parameters.
    """
    d = Path(directory)
    meta, mp = read_checked(d, "classifier", params)
    try:
        known = set(ClassifyConfig.__dataclass_fields__)
        cfg = ClassifyConfig(**{k: v for k, v in meta.get("training", {}).items() if k in known})
        clf = FaultClassifier(meta["classes"], mp, cfg, base_hash=meta.get("base_model_hash"))
        clf.arch_ = meta["architecture"]
        clf.net_ = _build_net(clf.arch_, len(clf.classes))
        clf.mean_ = np.asarray(meta["normalisation"]["mean"], np.float32)
        clf.std_ = np.asarray(meta["normalisation"]["std"], np.float32)
        clf.temperature_ = float(meta["temperature"])
        clf.thresholds_ = meta["thresholds"]
        clf.ece_ = meta.get("ece", {})
        clf.precision_target_ = float(meta.get("precision_target", 0.9))
        clf.history_ = meta.get("training", {})
        clf.split_ = meta.get("split", {})
        loss = meta.get("loss", {})
        clf.pos_weight_, clf.class_weight_ = loss.get("pos_weight"), loss.get("class_weight")
        clf.logit_offset_ = np.asarray(loss.get("logit_offset", [0.0] * len(clf.classes)), float)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{d / 'model.json'}: incomplete classifier description ({one_line(e)})") from None
    try:
        state = torch.load(d / "weights.pt", weights_only=True, map_location="cpu")
        clf.net_.load_state_dict(state)
    except Exception as e:
        raise ModelError(f"{d / 'weights.pt'}: corrupt or incompatible weights ({one_line(e)})") from None
    check_values(d, "normalisation mean", clf.mean_)
    check_values(d, "normalisation std", clf.std_, positive=True)
    check_values(d, "temperature", [clf.temperature_], positive=True)
    for k, v in state.items():
        if v.is_floating_point():
            check_values(d, f"weight {k}", v.numpy(), where="weights.pt")
    clf.net_.eval()
    if clf.arch_.get("backbone") == "yamnet":
        clf.yamnet = open_recorded(clf.arch_.get("yamnet"), f"classifier {d}")
        if clf.yamnet.dim != clf.arch_.get("embedding_dim"):
            raise ModelError(f"{d}: YAMNet gives {clf.yamnet.dim}-d embeddings, the classifier expects "
                             f"{clf.arch_.get('embedding_dim')}")
    clf.meta_ = meta
    return clf
