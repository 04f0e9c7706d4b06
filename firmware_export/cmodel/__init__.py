"""The int8 TFLite model as plain C: no interpreter, no dynamic memory.

``graph`` reads the ``.tflite`` flatbuffer (schema module of the installed ``ai-edge-litert`` package), ``quant``
precomputes the requantisation constants the way the TFLite Micro reference kernels derive them, ``plan`` places
every intermediate tensor in one static scratch buffer by liveness, ``codegen`` writes ``model.c``/``model.h`` (one
straight-line call per op into ``hw_kernels.c``, the hand-written kernel library here), ``check`` builds the result
with the host's gcc and compares every output byte with the TFLite Micro interpreter. ``hw_device.c`` puts the
front end, the model, the score and the alarm rule behind one call, ``hw_process``.
"""

from pathlib import Path

DIR = Path(__file__).resolve().parent
KERNEL_SOURCES = ("hw_kernels.h", "hw_kernels.c")
DEVICE_SOURCES = ("hw_device.h", "hw_device.c")
HARNESS = "hw_model_main.c"  # host test harness (not copied into exports)
