/* hw_kernels.h: int8 kernels for the generated model.c (humwatch export). C99, no allocation, no globals.
 *
 * Written here from the documented TFLite int8 quantisation semantics, so that every output byte equals the
 * TensorFlow Lite Micro reference kernels':
 *   real = scale * (q - zero_point); weights are symmetric (zero point 0, per output channel for convolutions);
 *   products accumulate in int32 as (input + input_offset) * (weight + weight_offset), input_offset = -input zero
 *   point; the int32 bias is added; hwk_mbqm() rescales by a Q31 multiplier and a power-of-two shift precomputed at
 *   export (rounding-doubling high multiply, then a rounding right shift: TFLite's MultiplyByQuantizedMultiplier);
 *   the output zero point is added and the result clamped to the fused activation's range.
 * Tensors are NHWC, batch 1 unless a kernel says otherwise. Convolutions gather the input of one output pixel into an
 * int16 column (input + offset; 0 for padding, which is exact because a padded input equals the zero point) and take
 * dot products with each output channel's weights; with __ARM_FEATURE_DSP (Cortex-M4/M7/M33, ESP32-S3 is not ARM)
 * the dot products use SMLAD on pairs, which gives the same int32 sums and therefore the same bytes.
 */
#ifndef HW_KERNELS_H
#define HW_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(HWK_NO_DSP)
#define HWK_USE_DSP 1
#else
#define HWK_USE_DSP 0
#endif

#define HWK_MAX_DIMS 5
#define HWK_MAX_PHASES 16 /* stride_h * stride_w of a transposed convolution */

/* TFLite's MultiplyByQuantizedMultiplier(x, multiplier, shift). */
int32_t hwk_mbqm(int32_t x, int32_t multiplier, int shift);

/* CONV_2D and DEPTHWISE_CONV_2D (per-channel quantised weights [out_c][k_h][k_w][in_c] for CONV_2D,
 * [1][k_h][k_w][out_c] for DEPTHWISE_CONV_2D) and TRANSPOSE_CONV (TFLite's [out_c][k_h][k_w][in_c] regrouped at export
 * by output phase: for phase (py, px) in row-major order, for each output channel, the weights of the taps
 * ky = py, py + stride_h, ... and kx = px, px + stride_w, ..., each [in_c]; see hwk_transpose_conv2d). */
typedef struct {
    int16_t in_h, in_w, in_c;
    int16_t out_h, out_w, out_c;
    int16_t k_h, k_w;
    int16_t stride_h, stride_w;
    int16_t dil_h, dil_w;
    int16_t pad_top, pad_left; /* transpose conv: padding plus the first output row/column kept (a folded slice) */
    int16_t depth_multiplier;  /* depthwise only */
    int16_t k_row;             /* CONV_2D: weights per output channel, k_h * k_w * in_c rounded up to a multiple of 4
                                  (the export pads each row with zeros, so that dot products need no scalar tail) */
    int16_t input_offset;      /* -input zero point */
    int16_t output_offset;     /* output zero point */
    int16_t act_min, act_max;
    const int8_t *weights;
    const int32_t *bias;       /* NULL: no bias */
    const int32_t *multiplier; /* per output channel */
    const int8_t *shift;       /* per output channel */
} hwk_conv_params;

/* col: scratch of k_row (CONV_2D) or k_h * k_w * in_c (TRANSPOSE_CONV) int16, placed in the model's scratch buffer by
 * the generator. The transposed convolution needs stride_h * stride_w <= HWK_MAX_PHASES. */
void hwk_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col);
void hwk_depthwise_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out);
void hwk_transpose_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col);

/* FULLY_CONNECTED: in [batches][in_n], weights [out_n][in_n] (per-tensor, or per output channel), optional bias. */
typedef struct {
    int16_t batches, in_n, out_n;
    int16_t input_offset, weight_offset, output_offset;
    int16_t act_min, act_max;
    int16_t per_channel;       /* 1: multiplier/shift per output, 0: one of each */
    const int8_t *weights;
    const int32_t *bias;
    const int32_t *multiplier;
    const int8_t *shift;
} hwk_fc_params;

/* col: scratch of in_n int16. */
void hwk_fully_connected(const hwk_fc_params *p, const int8_t *in, int8_t *out, int16_t *col);

/* AVERAGE_POOL_2D / MAX_POOL_2D (same quantisation in and out, as TFLite requires). */
typedef struct {
    int16_t in_h, in_w, channels, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_top, pad_left, act_min, act_max;
} hwk_pool_params;

void hwk_average_pool2d(const hwk_pool_params *p, const int8_t *in, int8_t *out);
void hwk_max_pool2d(const hwk_pool_params *p, const int8_t *in, int8_t *out);

/* ADD and MUL with broadcasting: the output is dims[0..HWK_MAX_DIMS-1] (row-major), each input is read with its
 * own element strides (0 along a broadcast dimension). */
typedef struct {
    int32_t dims[HWK_MAX_DIMS];
    int32_t in1_strides[HWK_MAX_DIMS];
    int32_t in2_strides[HWK_MAX_DIMS];
    int32_t in1_offset, in2_offset, output_offset;
    int32_t left_shift;                            /* ADD: 20 */
    int32_t in1_multiplier, in2_multiplier, output_multiplier;
    int16_t in1_shift, in2_shift, output_shift;
    int16_t act_min, act_max;
} hwk_binary_params;

void hwk_add(const hwk_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void hwk_mul(const hwk_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* RELU / RELU6 as a separate op: out = clamp(output_zp + mbqm(in - input_zp, multiplier, shift)). */
typedef struct {
    int32_t n, input_zp, output_zp, multiplier;
    int16_t shift, act_min, act_max;
} hwk_relu_params;

void hwk_relu(const hwk_relu_params *p, const int8_t *in, int8_t *out);

/* Strided copy of a block of dims[] elements: out[sum i_k * out_strides[k]] = in[sum i_k * in_strides[k]].
 * STRIDED_SLICE, SLICE, TRANSPOSE, CONCATENATION and the interior of PAD are all this copy. */
typedef struct {
    int32_t dims[HWK_MAX_DIMS];
    int32_t in_strides[HWK_MAX_DIMS];
    int32_t out_strides[HWK_MAX_DIMS];
} hwk_copy_params;

void hwk_copy(const hwk_copy_params *p, const int8_t *in, int8_t *out);
void hwk_fill(int8_t *out, int32_t n, int8_t value);

/* MEAN and REDUCE_MAX: the output element o reads the input block at o's base offset (out_dims / out_in_strides)
 * over red_dims / red_strides. MEAN: clamp(output_zp + mbqm(sum - input_zp * count, multiplier, shift)), with the
 * 1/count folded into multiplier and shift as TFLite does; MAX: the largest input value. */
typedef struct {
    int32_t out_dims[HWK_MAX_DIMS];
    int32_t out_in_strides[HWK_MAX_DIMS];
    int32_t red_dims[HWK_MAX_DIMS];
    int32_t red_strides[HWK_MAX_DIMS];
    int32_t count, input_zp, output_zp, multiplier;
    int16_t shift;
} hwk_reduce_params;

void hwk_mean(const hwk_reduce_params *p, const int8_t *in, int8_t *out);
void hwk_reduce_max(const hwk_reduce_params *p, const int8_t *in, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* HW_KERNELS_H */
