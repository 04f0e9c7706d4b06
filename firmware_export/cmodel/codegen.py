"""``model.c`` / ``model.h``: the int8 TFLite graph as straight-line C over the kernels of ``hw_kernels.c``.

Each op becomes one kernel call with its constants (weights, int32 biases, per-channel multipliers and shifts, clamp
bounds, shapes) baked in as ``static const`` data; activations live in one static scratch buffer planned at export
(:mod:`firmware_export.cmodel.plan`). Three rewrites keep memory and time down without changing a byte: a PAD in front
of a convolution becomes the convolution's own padding (a padded input equals the zero point and adds nothing), a
STRIDED_SLICE after a transposed convolution becomes its output window, and RESHAPE/SQUEEZE/EXPAND_DIMS are views.

``generate(model_bytes, prefix="hw_model")`` returns a :class:`CModel` with the two texts and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_export.cmodel import plan, quant
from firmware_export.cmodel.graph import FUSED_ACTIVATIONS, PADDINGS, Graph, Op, Tensor, read_graph
from firmware_export.errors import ExportError

MAXD = 5
VIEW_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
SUPPORTED_OPS = {"ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
                 "FULLY_CONNECTED", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "REDUCE_MAX", "RELU", "RELU6", "RESHAPE",
                 "SQUEEZE", "STRIDED_SLICE", "TRANSPOSE", "TRANSPOSE_CONV"}
MAX_TCONV_PHASES = 16  # HWK_MAX_PHASES in hw_kernels.h


@dataclass
class Step:
    """One kernel call: what it reads and writes (tensor indices) and its scratch bytes."""

    op: str  # the TFLite op(s) it implements, e.g. "PAD+CONV_2D"
    reads: list[int]
    writes: list[int]
    call: str  # C statement; {t<i>} stands for the address of tensor i, {scratch} for the step's scratch
    decls: list[str] = field(default_factory=list)
    scratch: int = 0
    macs: int = 0
    stream: tuple | None = None  # (input row bytes, output row bytes, out rows, first input row read by output row r)


@dataclass
class CModel:
    source: str  # model.c
    header: str  # model.h
    scratch_bytes: int
    const_bytes: int  # weights, biases, multipliers, shifts and kernel parameters
    ops: list[str]  # TFLite ops of the model
    steps: list[str]  # kernel calls, in order (fused ops joined with "+")
    macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_quant: tuple[float, int]
    output_quant: tuple[float, int]
    plan: list[dict] = field(default_factory=list)
    prefix: str = "hw_model"  # file stem and symbol prefix (<prefix>.c, <prefix>_invoke, <PREFIX>_SCRATCH_BYTES)

    def figures(self) -> dict:
        return {"scratch_bytes": self.scratch_bytes, "const_bytes": self.const_bytes, "kernel_calls": len(self.steps),
                "macs_per_invoke": self.macs, "steps": self.steps}


# -- helpers ---------------------------------------------------------------------------------------------------------

def _c_ints(values, per_line: int = 24) -> str:
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    return ",\n".join("    " + ", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line))


def _pad_dims(shape: tuple[int, ...], n: int = MAXD) -> list[int]:
    if len(shape) > n:
        raise ExportError(f"tensor of rank {len(shape)}: the C model supports at most {n} dimensions")
    return [1] * (n - len(shape)) + [int(s) for s in shape]


def _strides(dims: list[int]) -> list[int]:
    s, acc = [0] * len(dims), 1
    for k in range(len(dims) - 1, -1, -1):
        s[k] = acc
        acc *= dims[k]
    return s


def _nhwc(t: Tensor) -> tuple[int, int, int]:
    if len(t.shape) != 4 or t.shape[0] != 1:
        raise ExportError(f"tensor {t.name!r} has shape {list(t.shape)}; this kernel needs NHWC with batch 1")
    return t.shape[1], t.shape[2], t.shape[3]


def _same_or_valid_pad(padding: int, in_size: int, k: int, stride: int, dil: int, out_size: int) -> int:
    """Leading padding, as TFLite's ComputePaddingWithOffset (VALID: 0)."""
    if _padding_name(padding) == "VALID":
        return 0
    eff = (k - 1) * dil + 1
    total = max(0, (out_size - 1) * stride + eff - in_size)
    return total // 2


def phase_major(w: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Transposed-conv weights ``[out_c, k_h, k_w, in_c]`` regrouped by output phase (the layout hwk_transpose_conv2d
    reads): for each phase (py, px), for each output channel, the taps ky = py, py + sh, ... x kx = px, px + sw, ..."""
    blocks = [w[:, py::sh, px::sw, :].reshape(w.shape[0], -1) for py in range(sh) for px in range(sw)]
    return np.concatenate([b.ravel() for b in blocks])


def _padding_name(p: int) -> str:
    if int(p) not in PADDINGS:
        raise ExportError(f"padding {p} is neither SAME nor VALID")
    return PADDINGS[int(p)]


def _tconv_pad(padding: int, full: int, k: int, stride: int) -> int:
    """Leading padding of a transposed conv: TFLite computes it from the output size as if that were the input."""
    small = -(-full // stride) if _padding_name(padding) == "SAME" else (full - k + stride) // stride
    return _same_or_valid_pad(padding, full, k, stride, 1, small)


def _act(op: Op) -> int:
    a = int(op.options.get("fusedActivationFunction", 0) or 0)
    if a not in FUSED_ACTIVATIONS:
        raise ExportError(f"op {op.index} ({op.name}) has fused activation {a}, which the C model does not support")
    return a


class _Lowering:
    def __init__(self, g: Graph, prefix: str):
        self.g, self.p = g, prefix
        self.steps: list[Step] = []
        self.const_decls: list[str] = []
        self.const_bytes = 0
        self.alias: dict[int, int] = {}  # view tensor -> tensor whose memory it uses
        self.skip: set[int] = set()  # ops folded into another
        self.pad_for: dict[int, tuple[Op, tuple[int, int]]] = {}  # conv op -> (folded PAD, (top, left))
        self.n = 0

    # constants
    def name(self, what: str) -> str:
        self.n += 1
        return f"{self.p}_{what}{self.n}"

    def const(self, ctype: str, values, what: str, align: int = 16) -> str:
        arr = np.asarray(values).ravel()
        nm = self.name(what)
        self.const_decls.append(f"static const {ctype} {nm}[{max(arr.size, 1)}] HW_ALIGN({align}) = {{\n"
                                f"{_c_ints(arr) if arr.size else '    0'}\n}};\n")
        self.const_bytes += arr.size * {"int8_t": 1, "int32_t": 4}[ctype]
        return nm

    def params(self, ctype: str, fields: dict, what: str) -> str:
        nm = self.name(what)
        body = ", ".join(f".{k} = {v}" for k, v in fields.items())
        self.const_decls.append(f"static const {ctype} {nm} = {{{body}}};\n")
        self.const_bytes += 4 * len(fields)
        return nm

    def root(self, t: int) -> int:
        while t in self.alias:
            t = self.alias[t]
        return t

    def tensor(self, i: int) -> Tensor:
        t = self.g.t(i)
        if t is None:
            raise ExportError("an op input that is required is missing")
        return t

    def act_tensor(self, i: int) -> Tensor:
        t = self.tensor(i)
        if t.is_const:
            raise ExportError(f"constant tensor {t.name!r} used as an activation (constant folding is not supported)")
        if t.dtype is not np.int8:
            raise ExportError(f"tensor {t.name!r} is {np.dtype(t.dtype).name}; the C model runs int8 activations only")
        return t

    def only_consumer(self, tensor: int) -> Op | None:
        cons = self.g.consumers(tensor)
        if len(cons) == 1 and tensor not in self.g.outputs:
            return cons[0]
        return None

    # ---------------------------------------------------------------------------------------------------------
    def find_pad_folds(self) -> None:
        """PAD ops whose only consumer is a convolution, padding rows and columns only with the zero point."""
        for op in self.g.ops:
            if op.name != "PAD" or len(op.inputs) != 2:
                continue
            conv = self.only_consumer(op.outputs[0])
            if conv is None or conv.name not in ("CONV_2D", "DEPTHWISE_CONV_2D") or conv.inputs[0] != op.outputs[0]:
                continue
            pin, pout, pt = self.g.t(op.inputs[0]), self.g.t(op.outputs[0]), self.g.t(op.inputs[1])
            if pt is None or not pt.is_const or pin is None or pin.is_const:
                continue
            pads = np.asarray(pt.data).reshape(-1, 2)
            if (len(pads) == 4 and not pads[0].any() and not pads[3].any() and (pads >= 0).all()
                    and pin.zp == pout.zp and np.array_equal(pin.scale, pout.scale)):
                self.pad_for[conv.index] = (op, (int(pads[1][0]), int(pads[2][0])))
                self.skip.add(op.index)

    def lower(self) -> None:
        self.find_pad_folds()
        for op in self.g.ops:
            if op.index in self.skip:
                continue
            if op.name not in SUPPORTED_OPS:
                raise ExportError(f"op {op.name} (op {op.index}) is not supported by the C model generator; "
                                  f"supported: {', '.join(sorted(SUPPORTED_OPS))}")
            getattr(self, "op_" + op.name.lower())(op)

    # views
    def _view(self, op: Op) -> None:
        src, dst = op.inputs[0], op.outputs[0]
        if self.act_tensor(src).nbytes != self.act_tensor(dst).nbytes:
            raise ExportError(f"{op.name} op {op.index} changes the element count")
        self.alias[dst] = src

    op_reshape = op_squeeze = op_expand_dims = _view

    # convolutions
    def _conv_common(self, op: Op, kind: str) -> None:
        x, w, out = self.act_tensor(op.inputs[0]), self.tensor(op.inputs[1]), self.act_tensor(op.outputs[0])
        b = self.g.t(op.inputs[2]) if len(op.inputs) > 2 else None
        o = op.options
        src, label, pad_extra = x.index, op.name, (0, 0)
        if op.index in self.pad_for:
            # PAD + conv: the conv reads the unpadded input and treats the padded border as zero point
            pad_op, pads = self.pad_for[op.index]
            src, label, pad_extra = pad_op.inputs[0], "PAD+" + op.name, pads
        xin = self.act_tensor(src)
        in_h, in_w, in_c = _nhwc(xin)
        out_h, out_w, out_c = _nhwc(out)
        sh, sw = int(o.get("strideH", 1)), int(o.get("strideW", 1))
        dh, dw = int(o.get("dilationHFactor", 1) or 1), int(o.get("dilationWFactor", 1) or 1)
        if kind == "conv":
            oc_w, k_h, k_w, ic_w = w.shape
            if ic_w != in_c or oc_w != out_c:
                raise ExportError(f"CONV_2D op {op.index}: weights {list(w.shape)} do not fit {in_c} -> {out_c}")
        else:
            _, k_h, k_w, oc_w = w.shape
            if oc_w != out_c:
                raise ExportError(f"DEPTHWISE_CONV_2D op {op.index}: weights {list(w.shape)} for {out_c} channels")
        pt = _same_or_valid_pad(o.get("padding", 1), x.shape[1], k_h, sh, dh, out_h) + pad_extra[0]
        pl = _same_or_valid_pad(o.get("padding", 1), x.shape[2], k_w, sw, dw, out_w) + pad_extra[1]
        if np.any(w.zero_point != 0):
            raise ExportError(f"{op.name} op {op.index}: weights with a non-zero zero point are not supported")
        mult, shift = quant.per_channel(x.s, w.scale, out.s, out_c)
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        taps = k_h * k_w * in_c
        row = -(-taps // 4) * 4 if kind == "conv" else taps
        wdata = w.data
        if row != taps:  # zero-pad each output channel's weights to a multiple of 4 (no scalar tail in the dots)
            wdata = np.concatenate([w.data.reshape(out_c, taps), np.zeros((out_c, row - taps), np.int8)], axis=1)
        fields = dict(in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c, k_h=k_h, k_w=k_w,
                      stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_top=pt, pad_left=pl,
                      depth_multiplier=int(o.get("depthMultiplier", 1) or 1) if kind == "dw" else 1, k_row=row,
                      input_offset=-x.zp, output_offset=out.zp, act_min=lo, act_max=hi,
                      weights=self.const("int8_t", wdata, "w"),
                      bias=self.const("int32_t", b.data, "b") if b is not None and b.is_const else "NULL",
                      multiplier=self.const("int32_t", mult, "m", 4), shift=self.const("int8_t", shift, "s", 1))
        if kind == "dw" and fields["depth_multiplier"] * in_c != out_c:
            fields["depth_multiplier"] = out_c // in_c
        prm = self.params("hwk_conv_params", fields, "conv")
        stream = (in_w * in_c, out_w * out_c, out_h, lambda r: max(0, min(in_h - 1, r * sh - pt)))
        if kind == "conv":
            self.steps.append(Step(label, [src], [out.index], f"hwk_conv2d(&{prm}, {{t{src}}}, {{t{out.index}}}, "
                                   "(int16_t *){scratch});", scratch=2 * row, macs=out_h * out_w * out_c * taps,
                                   stream=stream))
        else:
            self.steps.append(Step(label, [src], [out.index], f"hwk_depthwise_conv2d(&{prm}, {{t{src}}}, "
                                   f"{{t{out.index}}});", macs=out_h * out_w * out_c * k_h * k_w, stream=stream))

    def op_conv_2d(self, op: Op) -> None:
        self._conv_common(op, "conv")

    def op_depthwise_conv_2d(self, op: Op) -> None:
        self._conv_common(op, "dw")

    def op_transpose_conv(self, op: Op) -> None:
        w, x, out = self.tensor(op.inputs[1]), self.act_tensor(op.inputs[2]), self.act_tensor(op.outputs[0])
        b = self.g.t(op.inputs[3]) if len(op.inputs) > 3 else None
        o = op.options
        in_h, in_w, in_c = _nhwc(x)
        full_h, full_w, out_c = _nhwc(out)
        oc_w, k_h, k_w, ic_w = w.shape
        if ic_w != in_c or oc_w != out_c:
            raise ExportError(f"TRANSPOSE_CONV op {op.index}: weights {list(w.shape)} do not fit {in_c} -> {out_c}")
        sh, sw = int(o.get("strideH", 1)), int(o.get("strideW", 1))
        if sh * sw > MAX_TCONV_PHASES:
            raise ExportError(f"TRANSPOSE_CONV op {op.index}: strides {sh}x{sw} give more than {MAX_TCONV_PHASES} "
                              "phases")
        pt = _tconv_pad(o.get("padding", 1), full_h, k_h, sh)
        pl = _tconv_pad(o.get("padding", 1), full_w, k_w, sw)
        dst, label, out_h, out_w = out.index, op.name, full_h, full_w
        nxt = self.only_consumer(out.index)
        win = self._slice_window(nxt, out) if nxt is not None and nxt.name == "STRIDED_SLICE" else None
        if win is not None:
            (y0, x0), (out_h, out_w) = win
            pt, pl = pt + y0, pl + x0
            dst, label = nxt.outputs[0], op.name + "+STRIDED_SLICE"
            self.skip.add(nxt.index)
            if self.act_tensor(dst).zp != out.zp or not np.array_equal(self.act_tensor(dst).scale, out.scale):
                raise ExportError(f"STRIDED_SLICE op {nxt.index} changes the quantisation")
        if np.any(w.zero_point != 0):
            raise ExportError(f"TRANSPOSE_CONV op {op.index}: weights with a non-zero zero point are not supported")
        mult, shift = quant.per_channel(x.s, w.scale, out.s, out_c)
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        fields = dict(in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c, k_h=k_h, k_w=k_w,
                      stride_h=sh, stride_w=sw, dil_h=1, dil_w=1, pad_top=pt, pad_left=pl, depth_multiplier=1,
                      k_row=k_h * k_w * in_c, input_offset=-x.zp, output_offset=out.zp, act_min=lo, act_max=hi,
                      weights=self.const("int8_t", phase_major(w.data, sh, sw), "w"),
                      bias=self.const("int32_t", b.data, "b") if b is not None and b.is_const else "NULL",
                      multiplier=self.const("int32_t", mult, "m", 4), shift=self.const("int8_t", shift, "s", 1))
        prm = self.params("hwk_conv_params", fields, "tconv")
        self.steps.append(Step(label, [x.index], [dst], f"hwk_transpose_conv2d(&{prm}, {{t{x.index}}}, {{t{dst}}}, "
                               "(int16_t *){scratch});", scratch=2 * k_h * k_w * in_c,
                               macs=in_h * in_w * k_h * k_w * in_c * out_c,
                               stream=(in_w * in_c, out_w * out_c, out_h,
                                       lambda r: max(0, min(in_h - 1, -(-(r + pt - k_h + 1) // sh))))))

    def _slice_window(self, sl: Op, full: Tensor):
        """``((y0, x0), (h, w))`` when STRIDED_SLICE ``sl`` keeps a stride-1 window of rows and columns of an NHWC
        tensor and every batch and channel; else None."""
        try:
            start, count, step, out_shape = self._slice(sl)
        except ExportError:
            return None
        n, h, w, c = full.shape
        if (len(start) != 4 or step != [1, 1, 1, 1] or start[0] != 0 or count[0] != n or start[3] != 0
                or count[3] != c or tuple(out_shape) != (n, count[1], count[2], c)):
            return None
        return (start[1], start[2]), (count[1], count[2])

    def op_fully_connected(self, op: Op) -> None:
        x, w, out = self.act_tensor(op.inputs[0]), self.tensor(op.inputs[1]), self.act_tensor(op.outputs[0])
        b = self.g.t(op.inputs[2]) if len(op.inputs) > 2 else None
        out_n, in_n = w.shape
        if x.size % in_n:
            raise ExportError(f"FULLY_CONNECTED op {op.index}: input of {x.size} elements, weights {list(w.shape)}")
        batches = x.size // in_n
        per_channel = w.scale.size > 1
        mult, shift = quant.per_channel(x.s, w.scale, out.s, out_n if per_channel else 1)
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        prm = self.params("hwk_fc_params", dict(
            batches=batches, in_n=in_n, out_n=out_n, input_offset=-x.zp, weight_offset=-int(w.zero_point[0]),
            output_offset=out.zp, act_min=lo, act_max=hi, per_channel=int(per_channel),
            weights=self.const("int8_t", w.data, "w"),
            bias=self.const("int32_t", b.data, "b") if b is not None and b.is_const else "NULL",
            multiplier=self.const("int32_t", mult, "m", 4), shift=self.const("int8_t", shift, "s", 1)), "fc")
        self.steps.append(Step(op.name, [x.index], [out.index], f"hwk_fully_connected(&{prm}, {{t{x.index}}}, "
                               f"{{t{out.index}}}, (int16_t *){{scratch}});", scratch=2 * in_n,
                               macs=batches * in_n * out_n))

    def _pool(self, op: Op, fn: str) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        o = op.options
        in_h, in_w, c = _nhwc(x)
        out_h, out_w, _ = _nhwc(out)
        kh, kw = int(o["filterHeight"]), int(o["filterWidth"])
        sh, sw = int(o.get("strideH", 1)), int(o.get("strideW", 1))
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        prm = self.params("hwk_pool_params", dict(
            in_h=in_h, in_w=in_w, channels=c, out_h=out_h, out_w=out_w, k_h=kh, k_w=kw, stride_h=sh, stride_w=sw,
            pad_top=_same_or_valid_pad(o.get("padding", 1), in_h, kh, sh, 1, out_h),
            pad_left=_same_or_valid_pad(o.get("padding", 1), in_w, kw, sw, 1, out_w), act_min=lo, act_max=hi), "pool")
        pt = _same_or_valid_pad(o.get("padding", 1), in_h, kh, sh, 1, out_h)
        self.steps.append(Step(op.name, [x.index], [out.index], f"{fn}(&{prm}, {{t{x.index}}}, {{t{out.index}}});",
                               stream=(in_w * c, out_w * c, out_h, lambda r: max(0, min(in_h - 1, r * sh - pt)))))

    def op_average_pool_2d(self, op: Op) -> None:
        self._pool(op, "hwk_average_pool2d")

    def op_max_pool_2d(self, op: Op) -> None:
        self._pool(op, "hwk_max_pool2d")

    def _binary(self, op: Op) -> None:
        a, b, out = self.tensor(op.inputs[0]), self.tensor(op.inputs[1]), self.act_tensor(op.outputs[0])
        ptr, reads = [], []
        for t in (a, b):
            if t.is_const:
                if t.dtype is not np.int8:
                    raise ExportError(f"{op.name} op {op.index}: constant operand {t.name!r} is not int8")
                ptr.append(self.const("int8_t", t.data, "k"))
            else:
                self.act_tensor(t.index)
                ptr.append(f"{{t{t.index}}}")
                reads.append(t.index)
        dims = _pad_dims(out.shape)
        strides = []
        for t in (a, b):
            td = _pad_dims(t.shape)
            st = _strides(td)
            if any(td[k] not in (1, dims[k]) for k in range(MAXD)):
                raise ExportError(f"{op.name} op {op.index}: shapes {list(a.shape)} and {list(b.shape)} do not "
                                  "broadcast")
            strides.append([0 if td[k] == 1 and dims[k] > 1 else st[k] for k in range(MAXD)])
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        f = dict(dims="{" + ", ".join(map(str, dims)) + "}", in1_strides="{" + ", ".join(map(str, strides[0])) + "}",
                 in2_strides="{" + ", ".join(map(str, strides[1])) + "}", in1_offset=-a.zp, in2_offset=-b.zp,
                 output_offset=out.zp, act_min=lo, act_max=hi)
        if op.name == "ADD":
            left = 20
            twice_max = 2.0 * float(max(np.float32(a.s), np.float32(b.s)))
            m1, s1 = quant.quantize_multiplier(float(a.s) / twice_max)
            m2, s2 = quant.quantize_multiplier(float(b.s) / twice_max)
            mo, so = quant.quantize_multiplier(twice_max / ((1 << left) * float(out.s)))
            f.update(left_shift=left, in1_multiplier=m1, in1_shift=s1, in2_multiplier=m2, in2_shift=s2,
                     output_multiplier=mo, output_shift=so)
            fn = "hwk_add"
        else:
            mo, so = quant.quantize_multiplier(float(a.s) * float(b.s) / float(out.s))
            f.update(left_shift=0, in1_multiplier=0, in1_shift=0, in2_multiplier=0, in2_shift=0, output_multiplier=mo,
                     output_shift=so)
            fn = "hwk_mul"
        prm = self.params("hwk_binary_params", f, op.name.lower())
        self.steps.append(Step(op.name, reads, [out.index], f"{fn}(&{prm}, {ptr[0]}, {ptr[1]}, {{t{out.index}}});"))

    op_add = op_mul = _binary

    def _const_input(self, op: Op, i: int) -> Tensor:
        if i < 0 or i >= len(op.inputs) or op.inputs[i] < 0:
            raise ExportError(f"{op.name} op {op.index} needs input {i}, which is missing")
        t = self.tensor(op.inputs[i])
        if not t.is_const:
            raise ExportError(f"{op.name} op {op.index}: input {i} must be a constant (it is {t.name!r})")
        return t

    def op_relu(self, op: Op, six: bool = False) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        if six:  # TFLite's RELU6 clamps the raw values to [q(0), q(6)] of the input's scale
            m, s = 1 << 30, 1
            lo = max(-128, x.zp)
            hi = min(127, quant.quantize_value(6.0, x.s, x.zp))
            izp = ozp = 0
        else:
            m, s = quant.quantize_multiplier(float(x.s) / float(out.s))
            lo, hi = max(-128, quant.quantize_value(0.0, out.s, out.zp)), 127
            izp, ozp = x.zp, out.zp
        prm = self.params("hwk_relu_params", dict(n=x.size, input_zp=izp, output_zp=ozp, multiplier=m, shift=s,
                                                  act_min=lo, act_max=hi), "relu")
        if self.only_consumer(x.index) is op and x.index not in self.g.inputs:
            self.alias[out.index] = x.index  # elementwise: in place
        self.steps.append(Step(op.name, [x.index], [out.index], f"hwk_relu(&{prm}, {{t{x.index}}}, {{t{out.index}}});"))

    def op_relu6(self, op: Op) -> None:
        self.op_relu(op, six=True)

    def _copy(self, op: Op, src: int, dst: int, dims, in_strides, out_strides, dst_offset: int = 0,
              src_offset: int = 0) -> Step:
        d = _pad_dims(tuple(dims))
        k = MAXD - len(dims)
        ins = [0] * k + list(in_strides)
        outs = [0] * k + list(out_strides)
        prm = self.params("hwk_copy_params", dict(dims="{" + ", ".join(map(str, d)) + "}",
                                                  in_strides="{" + ", ".join(map(str, ins)) + "}",
                                                  out_strides="{" + ", ".join(map(str, outs)) + "}"), "copy")
        return Step(op.name, [src], [dst], f"hwk_copy(&{prm}, {{t{src}}} + {src_offset}, {{t{dst}}} + {dst_offset});")

    def _same_quant(self, op: Op, a: Tensor, b: Tensor) -> None:
        if a.zp != b.zp or not np.array_equal(a.scale, b.scale):
            raise ExportError(f"{op.name} op {op.index}: input and output quantisation differ ({a.s:g}/{a.zp} vs "
                              f"{b.s:g}/{b.zp}); the C model only moves bytes for this op")

    def _slice(self, op: Op):
        """``(start, count, step, output shape)`` of a STRIDED_SLICE (positive strides), as TFLite resolves it."""
        x = self.act_tensor(op.inputs[0])
        begin, end, strides = (np.asarray(self._const_input(op, i).data).ravel().tolist() for i in (1, 2, 3))
        o = op.options
        if o.get("ellipsisMask", 0) or o.get("newAxisMask", 0):
            raise ExportError(f"STRIDED_SLICE op {op.index}: ellipsis and new-axis masks are not supported")
        start, count, out_shape = [], [], []
        for k, dim in enumerate(x.shape):
            st = int(strides[k]) if k < len(strides) else 1
            if st <= 0:
                raise ExportError(f"STRIDED_SLICE op {op.index}: stride {st} (only positive strides are supported)")
            b = 0 if (o.get("beginMask", 0) >> k) & 1 or k >= len(begin) else int(begin[k])
            b = b + dim if b < 0 else b
            b = min(max(b, 0), dim)
            if (o.get("shrinkAxisMask", 0) >> k) & 1:
                e = b + 1
            elif (o.get("endMask", 0) >> k) & 1 or k >= len(end):
                e = dim
            else:
                e = int(end[k]) + (b if o.get("offset") else 0)
                e = e + dim if e < 0 and not o.get("offset") else e
                e = min(max(e, 0), dim)
            n = max(0, -(-(e - b) // st))
            start.append(b)
            count.append(n)
            if not (o.get("shrinkAxisMask", 0) >> k) & 1:
                out_shape.append(n)
        step = [int(strides[k]) if k < len(strides) else 1 for k in range(len(x.shape))]
        return start, count, step, out_shape

    def op_strided_slice(self, op: Op) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        self._same_quant(op, x, out)
        start, count, step, out_shape = self._slice(op)
        if int(np.prod(count)) != out.size:
            raise ExportError(f"STRIDED_SLICE op {op.index}: resolved {count} elements, output {list(out.shape)}")
        st = _strides(list(x.shape))
        src_off = sum(s * t for s, t in zip(start, st, strict=True))
        self.steps.append(self._copy(op, x.index, out.index, count, [s * t for s, t in zip(step, st, strict=True)],
                                     _strides(count), src_offset=src_off))

    def op_transpose(self, op: Op) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        self._same_quant(op, x, out)
        perm = [int(v) for v in np.asarray(self._const_input(op, 1).data).ravel()]
        st = _strides(list(x.shape))
        self.steps.append(self._copy(op, x.index, out.index, list(out.shape), [st[p] for p in perm],
                                     _strides(list(out.shape))))

    def op_concatenation(self, op: Op) -> None:
        out = self.act_tensor(op.outputs[0])
        axis = int(op.options.get("axis", 0))
        axis = axis + len(out.shape) if axis < 0 else axis
        ost = _strides(list(out.shape))
        at = 0
        lo, hi = quant.activation_range(_act(op), out.s, out.zp)
        if (lo, hi) != (-128, 127):
            raise ExportError(f"CONCATENATION op {op.index}: a fused activation is not supported")
        for i in op.inputs:
            x = self.act_tensor(i)
            self._same_quant(op, x, out)
            s = self._copy(op, x.index, out.index, list(x.shape), _strides(list(x.shape)), ost,
                           dst_offset=at * ost[axis])
            if at:
                s.reads = [x.index, out.index]  # the output is already partly written
            self.steps.append(s)
            at += x.shape[axis]

    def op_pad(self, op: Op) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        self._same_quant(op, x, out)
        pads = np.asarray(self._const_input(op, 1).data).reshape(-1, 2)
        if (pads < 0).any():
            raise ExportError(f"PAD op {op.index}: negative padding")
        ost = _strides(list(out.shape))
        self.steps.append(Step("PAD", [], [out.index], f"hwk_fill({{t{out.index}}}, {out.size}, {out.zp});"))
        s = self._copy(op, x.index, out.index, list(x.shape), _strides(list(x.shape)), ost,
                       dst_offset=int(sum(int(p[0]) * t for p, t in zip(pads, ost, strict=True))))
        s.reads = [x.index, out.index]
        self.steps.append(s)

    def _reduce(self, op: Op, fn: str) -> None:
        x, out = self.act_tensor(op.inputs[0]), self.act_tensor(op.outputs[0])
        axes = sorted({int(a) % len(x.shape) for a in np.asarray(self._const_input(op, 1).data).ravel()})
        xd = _pad_dims(x.shape)
        k0 = MAXD - len(x.shape)
        st = _strides(xd)
        red = {a + k0 for a in axes}
        out_dims = [1 if k in red else xd[k] for k in range(MAXD)]
        red_dims = [xd[k] if k in red else 1 for k in range(MAXD)]
        count = int(np.prod(red_dims))
        if int(np.prod(out_dims)) != out.size:
            raise ExportError(f"{op.name} op {op.index}: {int(np.prod(out_dims))} outputs, tensor {list(out.shape)}")
        m, s = 0, 0
        if op.name == "MEAN":
            m, s = quant.quantize_multiplier(float(x.s) / float(out.s))
            # TFLite folds 1/count into the multiplier: shift up by floor(log2 count), divide, shift back
            sh = min(count.bit_length() - 1, 32, 31 + s)
            m = (m << sh) // count
            s = s - sh
        else:
            self._same_quant(op, x, out)

        def arr(v):
            return "{" + ", ".join(map(str, v)) + "}"

        prm = self.params("hwk_reduce_params", dict(out_dims=arr(out_dims), out_in_strides=arr(st),
                                                    red_dims=arr(red_dims), red_strides=arr(st), count=count,
                                                    input_zp=x.zp, output_zp=out.zp, multiplier=m, shift=s), "reduce")
        self.steps.append(Step(op.name, [x.index], [out.index], f"{fn}(&{prm}, {{t{x.index}}}, {{t{out.index}}});"))

    def op_mean(self, op: Op) -> None:
        self._reduce(op, "hwk_mean")

    def op_reduce_max(self, op: Op) -> None:
        self._reduce(op, "hwk_reduce_max")


def _plan(lw: _Lowering, g: Graph) -> tuple[int, dict[int, int], dict[int, int], list[plan.Buffer]]:
    """Buffers for the tensors the steps touch and for each step's scratch; returns (size, tensor offsets, scratch
    offsets by step, buffers)."""
    end = len(lw.steps)
    life: dict[int, list[int]] = {}
    for k, s in enumerate(lw.steps):
        for t in s.reads + s.writes:
            r = lw.root(t)
            lo_hi = life.setdefault(r, [k, k])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], k), max(lo_hi[1], k)
    for t in g.inputs:
        life.setdefault(lw.root(t), [-1, -1])[0] = -1
    for t in g.outputs:
        life.setdefault(lw.root(t), [end, end])[1] = end
    bufs = [plan.Buffer(f"t{t}", g.tensors[t].nbytes, a, b) for t, (a, b) in life.items()]
    bufs += [plan.Buffer(f"s{k}", s.scratch, k, k) for k, s in enumerate(lw.steps) if s.scratch]
    overlaps = []
    for k, s in enumerate(lw.steps):
        if s.stream is None:
            continue
        src, dst = lw.root(s.reads[0]), lw.root(s.writes[0])
        if src == dst or life[src][1] != k or src in [lw.root(t) for t in g.outputs]:
            continue  # the input is read again later: it must survive
        irow, orow, rows, first_row = s.stream
        gap = max((r + 1) * orow - first_row(r) * irow for r in range(rows))
        overlaps.append(plan.Overlap(f"t{src}", f"t{dst}", gap))
    size = plan.place(bufs, overlaps)
    plan.check(bufs, overlaps)
    offs = {int(b.name[1:]): b.offset for b in bufs if b.name[0] == "t"}
    scr = {int(b.name[1:]): b.offset for b in bufs if b.name[0] == "s"}
    return size, offs, scr, bufs


def generate(model: bytes, prefix: str = "hw_model", banner: str = "") -> CModel:
    """Generate the C model of an int8 TFLite flatbuffer.

    Raises:
        ExportError: an op, tensor type or shape the generator does not support (named in the message).
    """
    g = read_graph(model)
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise ExportError(f"the C model needs one input and one output, the model has {len(g.inputs)} and "
                          f"{len(g.outputs)}")
    lw = _Lowering(g, prefix)
    lw.lower()
    xin, xout = lw.act_tensor(g.inputs[0]), lw.act_tensor(g.outputs[0])
    size, offs, scr, bufs = _plan(lw, g)

    def addr(t: int) -> str:
        return f"({prefix}_scratch + {offs[lw.root(t)]})"

    calls = []
    for k, s in enumerate(lw.steps):
        text = s.call.replace("{scratch}", f"({prefix}_scratch + {scr[k]})" if s.scratch else "NULL")
        for t in set(s.reads + s.writes):
            text = text.replace(f"{{t{t}}}", addr(t))
        calls.append(f"    {text} /* {k}: {s.op} */\n    HW_MODEL_STEP_DONE({k});")
    up = prefix.upper()
    src = f"""/* {prefix}.c: {banner}
 * The int8 network as straight-line C: {len(lw.steps)} kernel calls (hw_kernels.c), constants below, every
 * activation in {prefix}_scratch ({size} bytes, planned at export). No interpreter, no dynamic memory.
 */
#include "{prefix}.h"

#include <stddef.h>

#include "hw_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define HW_ALIGN(n) __attribute__((aligned(n)))
#else
#define HW_ALIGN(n)
#endif

/* HW_MODEL_STEP_DONE(k) runs after kernel call k (for per-layer measurements; nothing by default) */
#ifndef HW_MODEL_STEP_DONE
#define HW_MODEL_STEP_DONE(k) ((void)0)
#endif

static int8_t {prefix}_scratch[{up}_SCRATCH_BYTES] HW_ALIGN(16);

{"".join(lw.const_decls)}
int8_t *{prefix}_input(void) {{ return {addr(xin.index)}; }}

const int8_t *{prefix}_output(void) {{ return {addr(xout.index)}; }}

void {prefix}_invoke(void) {{
{chr(10).join(calls)}
}}
"""
    iq = (float(xin.s), xin.zp)
    oq = (float(xout.s), xout.zp)
    hdr = f"""/* {prefix}.h: {banner}
 * The int8 network without an interpreter: fill {prefix}_input() ({up}_INPUT_BYTES int8, shape
 * {list(xin.shape)}), call {prefix}_invoke(), read {prefix}_output() ({up}_OUTPUT_BYTES int8, shape
 * {list(xout.shape)}). Both point into one static scratch buffer of {up}_SCRATCH_BYTES bytes that the invocation
 * reuses: write the input before every invocation and read the output before writing the next input.
 * TFLite ops: {", ".join(g.op_names)}. Bit-exact with the TensorFlow Lite Micro reference kernels.
 */
#ifndef {up}_H
#define {up}_H

#include <stdint.h>

#define {up}_SCRATCH_BYTES {size}
#define {up}_INPUT_BYTES {xin.size}
#define {up}_OUTPUT_BYTES {xout.size}
#define {up}_INPUT_SCALE {np.format_float_scientific(np.float32(iq[0]), unique=True, trim="-")}f
#define {up}_INPUT_ZERO_POINT {iq[1]}
#define {up}_OUTPUT_SCALE {np.format_float_scientific(np.float32(oq[0]), unique=True, trim="-")}f
#define {up}_OUTPUT_ZERO_POINT {oq[1]}
#define {up}_MACS {sum(s.macs for s in lw.steps)}
#define {up}_STEPS {len(lw.steps)}

#ifdef __cplusplus
extern "C" {{
#endif

int8_t *{prefix}_input(void);
const int8_t *{prefix}_output(void);
void {prefix}_invoke(void);

#ifdef __cplusplus
}}
#endif

#endif /* {up}_H */
"""
    return CModel(source=src, header=hdr, scratch_bytes=size, const_bytes=lw.const_bytes, ops=g.op_names,
                  steps=[s.op for s in lw.steps], macs=sum(s.macs for s in lw.steps), input_shape=tuple(xin.shape),
                  output_shape=tuple(xout.shape), input_quant=iq, output_quant=oq,
                  plan=[{"buffer": b.name, "bytes": b.size, "offset": b.offset, "steps": [b.first, b.last]}
                        for b in bufs], prefix=prefix)
