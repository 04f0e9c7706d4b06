"""What the exported model may contain and what it is expected to cost on each target.

Two tables, both stated as data so that the manifest can repeat them:

* ``TFLM_BUILTIN_OPS``: the TensorFlow Lite builtin operators that TensorFlow Lite Micro registers. Taken from the
  ``Register_*`` kernels compiled into the pinned ``tflite_micro`` wheel (0.dev20261023182759, its
  ``PythonOpsResolver``), keeping only the standard builtins (TFLM's own signal-processing ops such as ``FRAMER`` or
  ``FILTER_BANK`` are custom ops and are not listed). An exported model whose op set is not a subset fails the op gate.
* ``TARGETS``: clock and an *assumed* effective int8 MAC rate per kernel class, used for a latency **estimate** only
  (MACs / (rate x clock)). The rates are assumptions with their source stated, not measurements: measure on the
  device before relying on them.
"""

from __future__ import annotations

TFLM_BUILTIN_OPS: frozenset[str] = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D", "BATCH_MATMUL",
    "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST", "CEIL", "CONCATENATION", "CONV_2D",
    "COS", "CUMSUM", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DETECTION_POSTPROCESS", "DIV",
    "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP", "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV",
    "FLOOR_MOD", "FULLY_CONNECTED", "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF",
    "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOG_SOFTMAX", "LOGICAL_AND",
    "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG",
    "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "READ_VARIABLE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2",
    "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SVDF", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK", "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
})
TFLM_OPS_SOURCE = ("Register_* kernels of the pinned tflite_micro wheel (PythonOpsResolver), standard builtins only; "
                   "LiteRT's DELEGATE pseudo-op is ignored")

# Kernel classes of the autoencoder's MACs (see firmware_export.manifest.macs_by_kind).
KINDS = ("conv", "fully_connected", "transpose_conv")

TARGETS: dict[str, dict] = {
    "cortex-m7": {
        "description": "Arm Cortex-M7 at 480 MHz (e.g. STM32H7) with TFLM + CMSIS-NN kernels",
        "clock_hz": 480e6,
        "macs_per_cycle": {"conv": 0.5, "fully_connected": 0.5, "transpose_conv": 0.35},
        "source": "assumption: CMSIS-NN s8 kernels use the M7's dual 16-bit MAC (SMLAD, 2 MAC/cycle peak); with "
                  "im2col, requantisation and memory stalls about a quarter of the peak is typical for small "
                  "channel counts. CMSIS-NN has a TRANSPOSE_CONV s8 kernel (TFLM kernels/cmsis_nn/transpose_conv.cc),"
                  " assumed less efficient. Not measured on hardware.",
    },
    "esp32-s3": {
        "description": "Espressif ESP32-S3 (Xtensa LX7) at 240 MHz with TFLM + ESP-NN kernels",
        "clock_hz": 240e6,
        "macs_per_cycle": {"conv": 0.4, "fully_connected": 0.4, "transpose_conv": 0.06},
        "source": "assumption from the ESP-NN README's ESP32-S3 kernel table (optimised s8 convolution: 0.17 "
                  "MAC/cycle for 3 input channels to 0.89 for a 64-channel 1x1; ANSI C 0.05-0.09): ESP-NN has no "
                  "transposed-convolution kernel (esp-tflite-micro kernels/esp_nn: add, conv, depthwise_conv, "
                  "fully_connected, mul, pooling, softmax), so TRANSPOSE_CONV runs TFLM's portable reference "
                  "kernel. Not measured on hardware.",
    },
}
DEFAULT_TARGET = "cortex-m7"
DEFAULT_MAX_MODEL_BYTES = 204_800  # budget of model_int8.tflite, and of both int8 models together with a classifier


def latency_estimate(macs_by_kind: dict[str, int], target: str) -> dict:
    """Estimated milliseconds per patch on ``target``: sum over kernel classes of MACs / (rate x clock)."""
    t = TARGETS[target]
    per_kind = {k: macs_by_kind.get(k, 0) / (t["macs_per_cycle"][k] * t["clock_hz"]) * 1e3 for k in KINDS}
    total = sum(per_kind.values())
    return {
        "estimate": True,
        "ms_per_patch": round(total, 2),
        "ms_by_kind": {k: round(v, 2) for k, v in per_kind.items()},
        "duty_cycle_at_1_patch_per_s": round(total / 1000.0, 4),
        "clock_hz": t["clock_hz"],
        "assumed_macs_per_cycle": t["macs_per_cycle"],
        "description": t["description"],
        "source": t["source"],
    }
