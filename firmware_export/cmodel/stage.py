"""The export's C-model stage: the int8 networks as plain C, gated on byte equality with TensorFlow Lite Micro, and the
reference firmware's measured figures.

``cmodel_stage`` generates ``hw_model.c/.h`` (the anomaly model) and, with a classifier, ``hw_clf_model.c/.h``, and
compares each with TFLM on the export's own int8 patches plus golden vectors (:func:`gate.golden_inputs`): gates
``c_model`` and ``classifier_c_model``. ``write_sources`` puts them, the kernel library and ``hw_device.c/.h`` into the
export. ``firmware_stage`` then builds the reference firmware from the export's files and runs golden audio on the
emulated Cortex-M7 (figures for the manifest; ``measured: false`` with the reason where the cross toolchain or QEMU is
missing; never a gate: the host check above is the gate).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_export.cmodel import DEVICE_SOURCES, DIR, KERNEL_SOURCES
from firmware_export.cmodel.codegen import CModel
from firmware_export.cmodel.gate import c_model, gate_entry, golden_inputs

MODEL_PREFIX = "hw_model"
CLASSIFIER_PREFIX = "hw_clf_model"
FILES = (f"{MODEL_PREFIX}.c", f"{MODEL_PREFIX}.h", *KERNEL_SOURCES, *DEVICE_SOURCES)
CLASSIFIER_FILES = (f"{CLASSIFIER_PREFIX}.c", f"{CLASSIFIER_PREFIX}.h")


@dataclass
class CModels:
    models: dict[str, CModel] = field(default_factory=dict)  # prefix -> generated model
    sections: dict[str, dict] = field(default_factory=dict)  # "model" / "classifier" -> manifest section
    gates: list[dict] = field(default_factory=list)


def cmodel_stage(model: bytes, Xq: np.ndarray, input_zp: int, banner: str, classifier: bytes | None = None,
                 clf_Xq: np.ndarray | None = None, clf_input_zp: int = 0) -> CModels:
    """Generate and check the C models. ``Xq``/``clf_Xq``: real int8 input patches ``[n, T, M]``. A model the
    generator cannot build (an unsupported op) fails its gate with the op's name (and is left out of ``models``)."""
    out = CModels()
    runs = [("model", MODEL_PREFIX, model, Xq, input_zp, "c_model")]
    if classifier is not None:
        runs.append(("classifier", CLASSIFIER_PREFIX, classifier, clf_Xq, clf_input_zp, "classifier_c_model"))
    for what, prefix, m, X, zp, gate_name in runs:
        cm, section = c_model(m, golden_inputs(X, zp), prefix=prefix, banner=banner)
        if cm is not None:
            section["files"] = [f"{prefix}.c", f"{prefix}.h"]
            out.models[prefix] = cm
        out.sections[what] = section
        out.gates.append(gate_entry(gate_name, section))
    return out


def write_sources(out_dir: Path, cms: CModels) -> list[str]:
    """Write the generated models, the kernel library and the device layer; return the file names."""
    names = []
    for prefix, cm in cms.models.items():
        (out_dir / f"{prefix}.c").write_text(cm.source)
        (out_dir / f"{prefix}.h").write_text(cm.header)
        names += [f"{prefix}.c", f"{prefix}.h"]
    for name in (*KERNEL_SOURCES, *DEVICE_SOURCES):
        shutil.copyfile(DIR / name, out_dir / name)
        names.append(name)
    return names


def firmware_stage(out_dir: Path, model: bytes, spec, audio_file: Path | None) -> dict:
    """The reference firmware built from the export's sources in ``out_dir``, run on the first seconds of
    ``audio_file`` under QEMU (see :func:`firmware_export.firmware.measure.firmware_figures`)."""
    from firmware_export.firmware.measure import firmware_figures, golden_audio

    if audio_file is None:
        return {"measured": False, "reason": "no audio to feed the firmware"}
    return firmware_figures(out_dir, model, spec, golden_audio(audio_file))
