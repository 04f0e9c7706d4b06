"""Model folders: the one reader of what ``humwatch train`` (a detector) and ``humwatch classify train`` (a fault
classifier) write -- ``model.json`` (versioned metadata) plus the weight files it lists with their sha256.

Read, validate and hash, for the detectors (:mod:`anomaly.detectors`), the classifier (:mod:`anomaly.classify`), the
site store and the firmware export. Nothing here loads weights (that is the model's own code); so the export can
look at a classifier's ``model.json`` (its backbone, its front end) and refuse it before loading anything.

* :func:`read_detector_meta`, :func:`read_classifier_meta`: ``model.json`` parsed and checked (it is a JSON object of
  the right kind, its ``format_version`` an integer this humwatch understands, ``files`` a mapping);
* :func:`model_params`: its FeatureParams, checked against the front end in use, if given
  (:class:`~anomaly.errors.ParamsMismatchError` naming the fields), and against the stored ``feature_params_hash``;
* :func:`check_files`: every listed file present with its sha256; :func:`read_checked`: all of these, for a loader;
* :func:`check_values`: learned numbers (weights, normalisation, thresholds) finite and, where they must be, positive
  -- for the loaders, which call it on what they load, so a damaged model is refused instead of scoring nothing;
* :func:`file_sha256`, :func:`directory_hash`, :func:`model_hash`, :func:`classifier_hash`: identities.

Errors are :class:`ModelDirError` (a :class:`~anomaly.errors.ModelError`) with a ``problem`` tag, so that a caller
with its own wording (the export) can say it in its own terms.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from anomaly.errors import EXIT_DAMAGED, EXIT_ERROR, ModelError, one_line
from anomaly.features import FeatureParams

DETECTOR_FORMAT = 1
CLASSIFIER_FORMAT = 1
CLASSIFIER_KIND = "classifier"
DETECTOR_KINDS = ("ae", "ocsvm", "iforest")


class ModelDirError(ModelError):
    """A model folder that cannot be used; ``problem`` says why: ``missing``, ``no_model_json``, ``corrupt_json``,
    ``wrong_kind``, ``format``, ``params``, ``files``, ``values``. Exit code 1 when the path is not a model folder
    of that kind (a wrong argument), 5 when it is one but damaged."""

    WRONG_PATH = ("missing", "no_model_json", "wrong_kind")

    def __init__(self, message: str, problem: str, detail: str = "", meta: dict | None = None):
        super().__init__(message)
        self.problem, self.detail, self.meta = problem, detail, meta
        self.exit_code = EXIT_ERROR if problem in self.WRONG_PATH else EXIT_DAMAGED


def check_values(directory: str | Path, name: str, values, positive: bool = False, where: str = "model.json") -> None:
    """ModelDirError (``values``) unless every number in ``values`` (array-like) is finite (and > 0 with
    ``positive``): NaN weights or a zero standard deviation would make every score NaN or infinite."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{Path(directory) / where}: {name} is not numeric ({one_line(e)})", "values") from None
    bad = ~np.isfinite(a) if not positive else ~(np.isfinite(a) & (a > 0))
    if a.size == 0 or bad.any():
        kinds = "NaN, infinite or not positive" if positive else "NaN or infinite"
        what = "is empty" if a.size == 0 else f"holds {int(bad.sum())} value(s) that are {kinds}"
        raise ModelDirError(f"{Path(directory) / where}: {name} {what}: the model is damaged; train it again",
                            "values")


# -- identities --------------------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_hash(directory: str | Path, files) -> str:
    """sha256 (16 hex) over a model directory's ``model.json`` and the sha256 of each of ``files`` (its weights)."""
    d = Path(directory)
    h = hashlib.sha256((d / "model.json").read_bytes())
    for f in sorted(files):
        h.update(file_sha256(d / f).encode())
    return h.hexdigest()[:16]


def model_hash(directory: str | Path) -> str:
    """Identity of a detector's model directory: sha256 (16 hex) over its model.json and weight files."""
    return directory_hash(directory, read_detector_meta(directory).get("files", {}))


def classifier_hash(directory: str | Path) -> str:
    """Identity of a fault-classifier directory: sha256 (16 hex) over its model.json and the files it lists."""
    d = Path(directory)
    try:
        files = json.loads((d / "model.json").read_bytes()).get("files", {})
    except (OSError, ValueError, AttributeError) as e:
        raise ModelDirError(f"{d}: not a readable fault-classifier directory ({e.__class__.__name__}: {e})",
                            "corrupt_json", one_line(e)) from None
    missing = [f for f in sorted(files) if not (d / f).is_file()]
    if missing:
        raise ModelDirError(f"{d}: the classifier's file {missing[0]} is missing", "files")
    return directory_hash(d, files)


# -- reading model.json ------------------------------------------------------------------------------------------------
def _load_json(d: Path, noun: str, trainer: str) -> object:
    if not (d / "model.json").is_file():
        raise ModelDirError(f"{d} is not a humwatch {noun} directory (no model.json; train one with `{trainer}`)",
                            "no_model_json")
    if (d / "model.json").stat().st_size > 256 << 20:
        raise ModelDirError(f"{d / 'model.json'}: too large to be a model description", "corrupt_json")
    try:
        return json.loads((d / "model.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelDirError(f"{d / 'model.json'}: corrupt JSON ({one_line(e)})", "corrupt_json", one_line(e)) from None


def _format_version(meta: dict, d: Path) -> int:
    fv = meta.get("format_version")
    if not isinstance(fv, int) or isinstance(fv, bool):
        raise ModelDirError(f"{d / 'model.json'}: format_version must be an integer, got {fv!r}", "format", meta=meta)
    return fv


def _files(meta: dict, d: Path) -> None:
    if not isinstance(meta.get("files", {}), dict):
        raise ModelDirError(f"{d / 'model.json'}: 'files' must map file names to sha256 digests", "format", meta=meta)


def read_detector_meta(directory: str | Path) -> dict:
    """``model.json`` of a detector's model directory, checked. Raises ModelDirError saying what is wrong."""
    d = Path(directory)
    if not d.exists():
        raise ModelDirError(f"model directory not found: {d}", "missing")
    meta = _load_json(d, "model", "humwatch train")
    if not isinstance(meta, dict) or "format_version" not in meta or "detector" not in meta:
        raise ModelDirError(f"{d / 'model.json'}: not a humwatch model description", "wrong_kind",
                            meta=meta if isinstance(meta, dict) else None)
    fv = _format_version(meta, d)
    _files(meta, d)
    thr = meta.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)):
        raise ModelDirError(f"{d / 'model.json'}: missing or non-numeric 'threshold'", "format", meta=meta)
    if not math.isfinite(thr):
        raise ModelDirError(f"{d / 'model.json'}: threshold is {thr!r}, not a finite number: the model is damaged; "
                            "train it again", "values", meta=meta)
    if fv > DETECTOR_FORMAT:
        raise ModelDirError(f"{d}: model format {fv} is newer than this humwatch understands ({DETECTOR_FORMAT}); "
                            "upgrade humwatch", "format", meta=meta)
    if meta["detector"] not in DETECTOR_KINDS:
        raise ModelDirError(f"{d}: unknown detector {meta['detector']!r}", "wrong_kind", meta=meta)
    return meta


def read_classifier_meta(directory: str | Path) -> dict:
    """``model.json`` of a fault classifier's directory, checked (kind, format version, files). Raises
    ModelDirError (``problem`` ``wrong_kind`` with ``meta`` set when it is a JSON object of another kind)."""
    d = Path(directory)
    meta = _load_json(d, "classifier", "humwatch classify train")
    if not isinstance(meta, dict) or meta.get("kind") != CLASSIFIER_KIND:
        raise ModelDirError(f"{d}: not a fault classifier (an anomaly detector? use `humwatch score`)", "wrong_kind",
                            meta=meta if isinstance(meta, dict) else None)
    fv = _format_version(meta, d)
    if fv > CLASSIFIER_FORMAT:
        raise ModelDirError(f"{d}: classifier format {fv} is newer than this humwatch understands; upgrade humwatch",
                            "format", meta=meta)
    _files(meta, d)
    return meta


def model_params(meta: dict, directory: str | Path, params: FeatureParams | None = None,
                 what: str = "model") -> FeatureParams:
    """The FeatureParams a model was made with.

    Args:
        params: the front end in use: ParamsMismatchError naming the differing fields when they differ (None: any).
        what: how messages name the model (``model``, ``classifier``).

    Raises:
        ModelDirError: unreadable ``feature_params``, or a ``feature_params_hash`` that does not match them.
        ParamsMismatchError: other parameters than ``params``.
    """
    d = Path(directory)
    try:
        theirs = FeatureParams.from_dict(meta["feature_params"])
    except (TypeError, ValueError, KeyError) as e:
        raise ModelDirError(f"{d / 'model.json'}: bad feature_params ({one_line(e)})", "params", one_line(e),
                            meta) from None
    if params is not None:
        params.require_same(theirs, what=f"{what} {d}")
    stored = meta.get("feature_params_hash")
    if stored is None:
        raise ModelDirError(f"{d / 'model.json'}: no feature_params_hash (every humwatch model records one): the file "
                            "was edited or damaged", "params", meta=meta)
    if stored != theirs.hash():
        raise ModelDirError(f"{d / 'model.json'}: feature_params_hash {stored!r} does not match its feature_params "
                            f"({theirs.hash()}): the file was edited or damaged", "params", meta=meta)
    return theirs


def read_checked(directory: str | Path, kind: str, params: FeatureParams | None = None) -> tuple[dict,
                                                                                                  FeatureParams]:
    """``(model.json, its FeatureParams)`` of a ``detector`` or ``classifier`` folder, with every check: the
    description (:func:`read_detector_meta` / :func:`read_classifier_meta`), the parameters against ``params``
    (:func:`model_params`) and the files' hashes (:func:`check_files`). What a loader needs before the weights."""
    meta = read_detector_meta(directory) if kind == "detector" else read_classifier_meta(directory)
    mp = model_params(meta, directory, params, "model" if kind == "detector" else "classifier")
    check_files(meta, directory)
    return meta, mp


def check_files(meta: dict, directory: str | Path) -> None:
    """Every file ``model.json`` lists is present with its sha256 (ModelDirError otherwise)."""
    d = Path(directory)
    for f, digest in meta.get("files", {}).items():
        if not (d / f).is_file():
            raise ModelDirError(f"{d}: missing weights file {f}", "files", meta=meta)
        if file_sha256(d / f) != digest:
            raise ModelDirError(f"{d / f}: checksum mismatch (file corrupt or modified)", "files", meta=meta)
