"""A ``.tflite`` flatbuffer as a small graph: tensors (shape, dtype, quantisation, constant data) and ops in execution
order, read with the schema module that the installed ``ai-edge-litert`` package ships (no TensorFlow import)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_export.errors import ExportError

# TensorType enum values of the TFLite schema that can appear here, and their numpy dtypes
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
FUSED_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
PADDINGS = {0: "SAME", 1: "VALID"}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    scale: np.ndarray  # float32 [1] or per channel; empty when not quantised
    zero_point: np.ndarray  # int64, same length as scale
    quantized_dimension: int
    data: np.ndarray | None  # constant tensors only

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def zp(self) -> int:
        return int(self.zero_point[0]) if self.zero_point.size else 0

    @property
    def s(self) -> float:
        """The per-tensor scale (float32, as TFLite stores it)."""
        if self.scale.size != 1:
            raise ExportError(f"tensor {self.name!r} has {self.scale.size} scales, expected one")
        return float(self.scale[0])


@dataclass
class Op:
    index: int
    name: str  # builtin operator name, e.g. CONV_2D
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def t(self, i: int) -> Tensor | None:
        return self.tensors[i] if i >= 0 else None

    def consumers(self, tensor: int) -> list[Op]:
        return [op for op in self.ops if tensor in op.inputs]

    @property
    def op_names(self) -> list[str]:
        return sorted({op.name for op in self.ops})


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor(schema, i: int, t, buffers) -> Tensor:
    if t.type not in _DTYPES:
        raise ExportError(f"tensor {i} ({t.name!r}) has TFLite type {t.type}, which the C model does not support")
    dtype = _DTYPES[t.type]
    q = t.quantization
    scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
    zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
    qdim = int(q.quantizedDimension) if q is not None else 0
    shape = tuple(int(s) for s in (t.shape if t.shape is not None else []))
    data = None
    buf = buffers[t.buffer] if 0 <= t.buffer < len(buffers) else None
    if buf is not None and buf.data is not None and len(buf.data):
        raw = np.asarray(buf.data, np.uint8).tobytes()
        data = np.frombuffer(raw, dtype=dtype).reshape(shape if shape else ())
    elif buf is not None and getattr(buf, "size", 0):
        raise ExportError(f"tensor {i} ({t.name!r}) keeps its data outside the flatbuffer (offset/size buffers are "
                          "not supported)")
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")
    return Tensor(i, name, shape, dtype, scale, zp, qdim, data)


def _options(op) -> dict:
    o = op.builtinOptions
    if o is None:
        return {}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(o).items()}


def read_graph(model: bytes) -> Graph:
    """Parse a TFLite flatbuffer with one subgraph.

    Raises:
        ExportError: more than one subgraph, custom ops, or tensor types the C model does not support.
    """
    schema = _schema()
    try:
        m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as e:  # a corrupt flatbuffer raises anything from struct.error to IndexError
        raise ExportError(f"cannot parse the TFLite model: {type(e).__name__}: {e}") from None
    if not m.subgraphs or len(m.subgraphs) != 1:
        raise ExportError(f"the C model needs exactly one subgraph, the model has {len(m.subgraphs or [])}")
    names = _op_names(schema)
    g = m.subgraphs[0]
    tensors = [_tensor(schema, i, t, m.buffers) for i, t in enumerate(g.tensors)]
    ops = []
    for k, op in enumerate(g.operators):
        oc = m.operatorCodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            raise ExportError(f"op {k} is a custom op ({oc.customCode!r}); the C model supports builtins only")
        ops.append(Op(k, name, [int(i) for i in op.inputs], [int(o) for o in op.outputs], _options(op)))
    return Graph(tensors, ops, [int(i) for i in g.inputs], [int(o) for o in g.outputs])
