"""Fault classifier: which condition(s) a clip shows, with calibrated probabilities and per-class thresholds.

Model: a multi-label head (one sigmoid output per class; ``exclusive=True`` uses a softmax for mutually exclusive
states) on either

* the embedding of a trained autoencoder (``base``): its encoder convolutions and bottleneck ``model_.encode``, with
  the autoencoder's own normalisation; frozen by default, or with the last ``finetune_layers`` encoder blocks (and the
  bottleneck layer) trained at a low learning rate (``finetune_lr``, 1e-5…1e-4), or
* a small CNN trained from scratch (no base): 4 × [conv 3×3 stride 2 → BN → ReLU], mean over time, a linear head, or
* YAMNet's 1024-d embeddings (``yamnet``, a :class:`~anomaly.yamnet.YamnetEmbedder`, frozen): computed once per
  patch before training (grid patches, plus ``yamnet_shifts`` time-shifted crops of each training clip), standardised
  with the training mean/std, then dropout → ``hidden`` → ReLU → one logit per class.

Training draws random 96-frame crops of the training clips (time shift) and augments them with a speed/pitch
perturbation (the log-mel resampled along time and along frequency by a factor in 1 ± ``stretch``), a gain change,
added Gaussian noise and SpecAugment time/frequency masks. The YAMNet route keeps only the time shift (the fixed
offsets) and adds Gaussian noise (``noise_std``) to the standardised embeddings.

Class imbalance is handled by ``pos_weight`` in the BCE loss: for each class, negatives / positives among the
training clips (class weights ∝ 1 / frequency for softmax).

After training on a stratified by-file split, one temperature is fitted by LBFGS on the validation NLL of the clip
probabilities (clip probability = mean of the patch probabilities), and per-class thresholds are chosen on validation:
the lowest threshold whose precision reaches the target with recall > 0, else (a fallback, recorded per class) the
threshold of best F1.

The package, one module per concern (every name is importable from ``anomaly.classify`` as before): ``nets``
(ClassifyConfig, the backbones and the head), ``sampling`` (the split, patches, augmented batches), ``probability``
(clip probabilities, temperature, calibration error, thresholds), ``classifier`` (FaultClassifier, load_classifier),
``evaluation`` (evaluate_probs, evaluate_classifier).
"""

from anomaly.classify.classifier import FaultClassifier, load_classifier
from anomaly.classify.evaluation import evaluate_classifier, evaluate_probs
from anomaly.classify.nets import AEEmbedding, ClassifierNet, ClassifyConfig, EmbeddingInput, ScratchCNN
from anomaly.classify.probability import (
    ECE_BINS,
    choose_threshold,
    clip_probabilities,
    expected_calibration_error,
    fit_temperature,
)
from anomaly.classify.sampling import grid_patches, shifted_patches, stratified_split

__all__ = [
    "ECE_BINS", "AEEmbedding", "ClassifierNet", "ClassifyConfig", "EmbeddingInput", "FaultClassifier", "ScratchCNN",
    "choose_threshold", "clip_probabilities", "evaluate_classifier", "evaluate_probs", "expected_calibration_error",
    "fit_temperature", "grid_patches", "load_classifier", "shifted_patches", "stratified_split",
]
