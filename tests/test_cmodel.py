"""The generated C model (firmware_export/cmodel) against the TensorFlow Lite Micro reference kernels, byte for byte.

Each case builds a tiny Keras model around one op (or a fusion the generator performs), converts it to full-integer
int8 TFLite as the export does, generates model.c, compiles it with the host's gcc (-Werror) and compares every
output byte with the ``tflite_micro`` Python interpreter on random int8 inputs. (The SMLAD path of the kernels is
compared the same way on the Cortex-M7 under QEMU: tests/test_firmware.py.)
Conversion and build take ~1 s per case.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from firmware_export.cmodel import codegen, plan, quant

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
GCC = shutil.which("gcc")
N_INPUTS = 6


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf

    return tf


def _int8_tflite(tf, build, shape: tuple[int, ...], seed: int = 0) -> bytes:
    """A Keras graph ``build(input)`` on inputs of ``shape`` (batch 1) as full-integer int8 TFLite."""
    from firmware_export.quiet import quiet

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input(shape=shape, batch_size=1)
    model = tf.keras.Model(inp, build(inp))
    rng = np.random.default_rng(seed)
    with quiet():
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal((1, *shape)).astype(np.float32)]
                                               for _ in range(24))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        return bytes(conv.convert())


def _cases(tf):
    L = tf.keras.layers
    return {
        "conv_same_relu": ((9, 7, 3), lambda x: L.Conv2D(6, 3, padding="same", activation="relu")(x), {"CONV_2D"}),
        "conv_valid_stride2": ((11, 9, 5), lambda x: L.Conv2D(7, (3, 2), strides=2)(x), {"CONV_2D"}),
        "conv_dilated_relu6": ((10, 10, 4), lambda x: L.Conv2D(4, 3, dilation_rate=2, padding="same",
                                                               activation="relu6")(x), {"CONV_2D"}),
        "pad_folded_into_conv": ((8, 6, 2), lambda x: L.Conv2D(5, 3, strides=2)(L.ZeroPadding2D(((1, 1), (1, 1)))(x)),
                                 {"PAD", "CONV_2D"}),
        "depthwise_mult2": ((8, 8, 3), lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                                                   activation="relu")(x), {"DEPTHWISE_CONV_2D"}),
        "depthwise_stride2": ((9, 9, 4), lambda x: L.DepthwiseConv2D(3, strides=2)(x), {"DEPTHWISE_CONV_2D"}),
        "transpose_conv_same": ((4, 3, 6), lambda x: L.Conv2DTranspose(5, 3, strides=2, padding="same")(x),
                                {"TRANSPOSE_CONV"}),
        "transpose_conv_valid_1ch": ((5, 4, 8), lambda x: L.Conv2DTranspose(1, 3, strides=2)(x), {"TRANSPOSE_CONV"}),
        "transpose_conv_then_slice": ((4, 4, 4), lambda x: L.Conv2DTranspose(4, 3, strides=2)(x)[:, 1:-1, 1:-1, :],
                                      {"TRANSPOSE_CONV", "STRIDED_SLICE"}),
        "fully_connected": ((4, 3, 2), lambda x: L.Dense(9)(L.Dense(12, activation="relu")(L.Flatten()(x))),
                            {"FULLY_CONNECTED"}),
        "pools": ((8, 8, 3), lambda x: L.MaxPooling2D(3, strides=2, padding="same")(
            L.AveragePooling2D(2)(L.Conv2D(4, 1)(x))), {"AVERAGE_POOL_2D", "MAX_POOL_2D"}),
        "average_pool_same": ((7, 5, 2), lambda x: L.AveragePooling2D(3, strides=2, padding="same")(x),
                              {"AVERAGE_POOL_2D"}),
        "mean_and_max": ((6, 4, 5), lambda x: L.Concatenate()([L.Lambda(lambda t: tf.reduce_mean(t, axis=1))(x),
                                                                L.Lambda(lambda t: tf.reduce_max(t, axis=1))(x)]),
                         {"MEAN", "REDUCE_MAX", "CONCATENATION"}),
        "global_average": ((6, 5, 7), lambda x: L.GlobalAveragePooling2D()(L.Conv2D(8, 3)(x)), {"MEAN"}),
        "add_and_relu": ((6, 5, 4), lambda x: L.ReLU()(L.Add()([L.Conv2D(4, 1)(x), L.Conv2D(4, 3, padding="same")(x)])),
                         {"ADD"}),
        "mul_broadcast": ((5, 6, 1), lambda x: L.Multiply()([x, L.Conv2D(1, (5, 1))(x)]), {"MUL"}),
        "concat_channels": ((5, 5, 2), lambda x: L.Concatenate()([L.Conv2D(3, 1)(x),
                                                                   L.Conv2D(2, 3, padding="same")(x)]),
                            {"CONCATENATION"}),
        "transpose_reshape_slice": ((4, 6, 3), lambda x: L.Reshape((18, 4))(L.Permute((2, 1, 3))(x))[:, 1::2, :],
                                    {"TRANSPOSE", "RESHAPE", "STRIDED_SLICE"}),
        "pad_unfused": ((5, 4, 2), lambda x: L.MaxPooling2D(2)(L.ZeroPadding2D(((2, 1), (0, 3)))(x)), {"PAD"}),
    }


CASES = ["conv_same_relu", "conv_valid_stride2", "conv_dilated_relu6", "pad_folded_into_conv", "depthwise_mult2",
         "depthwise_stride2", "transpose_conv_same", "transpose_conv_valid_1ch", "transpose_conv_then_slice",
         "fully_connected", "pools", "average_pool_same", "mean_and_max", "global_average", "add_and_relu",
         "mul_broadcast", "concat_channels", "transpose_reshape_slice", "pad_unfused"]


@pytest.mark.skipif(GCC is None, reason="needs gcc")
@pytest.mark.parametrize("case", CASES)
def test_each_op_is_bit_exact_with_tflm(tf, case, tmp_path):
    from firmware_export.cmodel import check

    shape, build, ops = _cases(tf)[case]
    model = _int8_tflite(tf, build, shape, seed=CASES.index(case))
    cm = codegen.generate(model)
    assert ops <= set(cm.ops), (case, cm.ops)  # the converter produced the op under test
    X = np.random.default_rng(7).integers(-128, 128, (N_INPUTS, *cm.input_shape)).astype(np.int8)
    X[0] = -128  # the extremes
    X[1] = 127
    want = check.tflm_outputs(model, X)
    got = check.run_host(check.build_host(cm, tmp_path), X, int(np.prod(cm.output_shape)))
    assert np.array_equal(got, want), (case, int((got != want).sum()))


def test_each_op_is_bit_exact_with_tflm_on_the_cortex_m7(tf, tmp_path):
    """The same cases built for the Cortex-M7 (the SMLAD path of the kernels) and run under QEMU, all in one go."""
    from firmware_export.cmodel import check
    from firmware_export.firmware import build

    tc, why = build.toolchain()
    if tc is None or tc.qemu is None:
        pytest.skip(why or "qemu-system-arm not found (Debian: apt-get install qemu-system-arm)")
    cases = _cases(tf)
    for k, case in enumerate(CASES):
        shape, make, _ = cases[case]
        model = _int8_tflite(tf, make, shape, seed=k)
        cm = codegen.generate(model)
        d = tmp_path / case
        d.mkdir()
        check.write_sources(cm, d)
        X = np.random.default_rng(7).integers(-128, 128, (N_INPUTS, *cm.input_shape)).astype(np.int8)
        got = build.run_model_only(tc, build.build_model_only(tc, d, d / "fw.elf"), X, int(np.prod(cm.output_shape)),
                                   d / "run")
        want = check.tflm_outputs(model, X)
        assert np.array_equal(got, want), (case, int((got != want).sum()))


def test_fused_rewrites_are_applied(tf):
    """PAD before a conv becomes its padding, a STRIDED_SLICE after a transposed conv its output window, and views
    cost no memory: fewer kernel calls than TFLite ops."""
    L = tf.keras.layers
    m = _int8_tflite(tf, lambda x: L.Conv2DTranspose(4, 3, strides=2)(
        L.Conv2D(4, 3, strides=2)(L.ZeroPadding2D(1)(x)))[:, 1:-1, 1:-1, :], (8, 8, 1))
    cm = codegen.generate(m)
    assert cm.steps == ["PAD+CONV_2D", "TRANSPOSE_CONV+STRIDED_SLICE"]


def test_unsupported_op_is_a_clear_error(tf):
    from firmware_export.errors import ExportError

    m = _int8_tflite(tf, lambda x: tf.keras.layers.Softmax()(tf.keras.layers.Flatten()(x)), (3, 3, 1))
    with pytest.raises(ExportError, match="SOFTMAX .*not supported by the C model generator"):
        codegen.generate(m)


def test_unsupported_op_fails_the_export_gate_with_its_name(tf):
    """In the export (a new detector's graph, say) an op the generator lacks is a failed ``c_model`` gate that names
    the op (exit 3, nothing written), not a crash; the other model's C is still generated and checked."""
    from firmware_export.cmodel.stage import cmodel_stage

    bad = _int8_tflite(tf, lambda x: tf.keras.layers.Softmax()(tf.keras.layers.Flatten()(x)), (3, 3, 1))
    good = _int8_tflite(tf, lambda x: tf.keras.layers.ReLU()(x), (3, 3, 1))
    X = np.zeros((2, 3, 3, 1), np.int8)
    cms = cmodel_stage(bad, X, 0, "test", classifier=good, clf_Xq=X, clf_input_zp=0)
    gates = {g["gate"]: g for g in cms.gates}
    assert not gates["c_model"]["passed"]
    assert "cannot be generated as plain C" in gates["c_model"]["detail"]
    assert "SOFTMAX" in gates["c_model"]["detail"]
    assert cms.sections["model"]["check"]["unsupported"] and "hw_model" not in cms.models
    assert gates["classifier_c_model"]["passed"]  # checked with gcc; "not checked" passes without one
    assert "hw_clf_model" in cms.models


# ---------------------------------------------------------------------------------------------------------------
# pure helpers


def test_quantize_multiplier_round_trips():
    rng = np.random.default_rng(0)
    for m in np.r_[rng.uniform(1e-6, 4.0, 500), 0.5, 1.0, 2.0 ** -20]:
        q, s = quant.quantize_multiplier(float(m))
        assert 1 << 30 <= q < 1 << 31
        assert abs(q * 2.0 ** (s - 31) - m) <= m * 2.0 ** -30


def test_srdhm_equals_a_floor_shift_for_non_negative_multipliers():
    """The kernels' one-line form of SaturatingRoundingDoublingHighMul (hw_kernels.c) is the reference's."""
    rng = np.random.default_rng(1)
    xs = np.r_[rng.integers(-(1 << 31), 1 << 31, 3000), [-(1 << 31), (1 << 31) - 1, 0, -1, 1]]
    ms = np.r_[rng.integers(1 << 30, 1 << 31, 3000), [1 << 30, (1 << 31) - 1, 1 << 30, 1 << 30, 1 << 30]]
    for x, m in zip(xs.tolist(), ms.tolist(), strict=True):
        assert quant.srdhm(x, m) == (x * m + (1 << 30)) >> 31


def test_plan_never_overlaps_live_buffers():
    rng = np.random.default_rng(2)
    bufs = []
    for i in range(60):
        a = int(rng.integers(0, 30))
        bufs.append(plan.Buffer(f"b{i}", int(rng.integers(1, 5000)), a, a + int(rng.integers(0, 5))))
    size = plan.place(bufs)
    plan.check(bufs)
    peak = max(sum(b.size for b in bufs if b.first <= k <= b.last) for k in range(40))
    assert peak <= size < 2 * peak + 16 * len(bufs)
