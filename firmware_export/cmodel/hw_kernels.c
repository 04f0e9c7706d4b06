/* hw_kernels.c: see hw_kernels.h. */
#include "hw_kernels.h"

#include <string.h>

#if HWK_USE_DSP
#include <arm_acle.h>
#endif

/* ---------------------------------------------------------------------------------------------------------------
 * Requantisation */

static int32_t srdhm(int32_t a, int32_t b) {
    /* saturating rounding doubling high multiply: round(a * b / 2^31), halves away from zero */
    int64_t ab, v;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    v = ab + (ab >= 0 ? (1 << 30) : (1 - (1 << 30)));
    /* the reference divides by 2^31, truncating toward zero */
    return (int32_t)(v >= 0 ? (v >> 31) : -((-v) >> 31));
}

static int32_t rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t hwk_mbqm(int32_t x, int32_t multiplier, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

static int8_t requantise(int32_t acc, int32_t multiplier, int shift, int32_t output_offset, int32_t lo, int32_t hi) {
    acc = hwk_mbqm(acc, multiplier, shift) + output_offset;
    if (acc < lo) acc = lo;
    if (acc > hi) acc = hi;
    return (int8_t)acc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Dot products of an int16 column with int8 weights.
 *
 * With SMLAD the column is stored so that each group of four elements reads as the pairs (x0, x2), (x1, x3): the
 * order in which SXTB16 unpacks four weight bytes (w0, w2) and, rotated by 8, (w1, w3). col_index() gives that
 * storage position; an incomplete last group stays in natural order. Either way the sum is the same integer. */

static int col_index(int j, int n) {
#if HWK_USE_DSP
    static const unsigned char perm[4] = {0, 2, 1, 3};
    if ((j & ~3) + 4 <= n) return (j & ~3) + perm[j & 3];
#else
    (void)n;
#endif
    return j;
}

static int32_t dot16x8(const int16_t *col, const int8_t *w, int n, int32_t acc) {
    int i = 0;
#if HWK_USE_DSP
    for (; i + 4 <= n; i += 4) {
        uint32_t wv, x02, x13;
        memcpy(&wv, w + i, 4);
        memcpy(&x02, col + i, 4);
        memcpy(&x13, col + i + 2, 4);
        acc = __smlad(x02, __sxtb16(wv), acc);
        acc = __smlad(x13, __sxtb16(__ror(wv, 8)), acc);
    }
#endif
    for (; i < n; i++) acc += (int32_t)col[i] * (int32_t)w[i];
    return acc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Convolutions */

void hwk_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    const int taps = p->k_h * p->k_w * p->in_c;
    int oy, ox, oc;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            int ky, kx, c, j = 0;
            /* gather the receptive field once: input + offset, 0 where it falls into the padding */
            for (ky = 0; ky < p->k_h; ky++) {
                const int iy = iy0 + ky * p->dil_h;
                for (kx = 0; kx < p->k_w; kx++) {
                    const int ix = ix0 + kx * p->dil_w;
                    const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                    const int8_t *src = in + ((long)iy * p->in_w + ix) * p->in_c;
                    for (c = 0; c < p->in_c; c++, j++)
                        col[col_index(j, taps)] = inside ? (int16_t)(src[c] + p->input_offset) : 0;
                }
            }
            for (oc = 0; oc < p->out_c; oc++) {
                int32_t acc = p->bias ? p->bias[oc] : 0;
                acc = dot16x8(col, p->weights + (long)oc * taps, taps, acc);
                *out++ = requantise(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
            }
        }
    }
}

void hwk_depthwise_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out) {
    const int out_c = p->out_c;
    int oy, ox, ic, m;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            for (ic = 0; ic < p->in_c; ic++) {
                for (m = 0; m < p->depth_multiplier; m++) {
                    const int oc = ic * p->depth_multiplier + m;
                    int32_t acc = p->bias ? p->bias[oc] : 0;
                    int ky, kx;
                    for (ky = 0; ky < p->k_h; ky++) {
                        const int iy = iy0 + ky * p->dil_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (kx = 0; kx < p->k_w; kx++) {
                            const int ix = ix0 + kx * p->dil_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += ((int32_t)in[((long)iy * p->in_w + ix) * p->in_c + ic] + p->input_offset) *
                                   (int32_t)p->weights[(ky * p->k_w + kx) * out_c + oc];
                        }
                    }
                    out[oc] = requantise(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min,
                                         p->act_max);
                }
            }
            out += out_c;
        }
    }
}

/* Transposed convolution as a gather: output (oy, ox) receives input (iy, ix) through tap (ky, kx) when
 * oy + pad_top = iy * stride_h + ky (and the same along x). Only the taps that hit an input pixel are gathered, so no
 * int32 scratch of the output's size is needed and no multiply is spent on the zeros between upsampled inputs. */
void hwk_transpose_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    const int in_c = p->in_c, taps_per_oc = p->k_h * p->k_w * in_c;
    int oy, ox, oc;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int tap_offset[64]; /* weight offset of each valid tap within one output channel's weights */
            int n_taps = 0, ky, kx, c, t;
            for (ky = 0; ky < p->k_h; ky++) {
                const int ny = oy + p->pad_top - ky;
                int iy;
                if (ny < 0 || ny % p->stride_h) continue;
                iy = ny / p->stride_h;
                if (iy >= p->in_h) continue;
                for (kx = 0; kx < p->k_w; kx++) {
                    const int nx = ox + p->pad_left - kx;
                    int ix;
                    const int8_t *src;
                    int16_t *dst;
                    if (nx < 0 || nx % p->stride_w) continue;
                    ix = nx / p->stride_w;
                    if (ix >= p->in_w) continue;
                    src = in + ((long)iy * p->in_w + ix) * in_c;
                    dst = col + n_taps * in_c;
                    for (c = 0; c < in_c; c++) dst[col_index(c, in_c)] = (int16_t)(src[c] + p->input_offset);
                    tap_offset[n_taps++] = (ky * p->k_w + kx) * in_c;
                }
            }
            for (oc = 0; oc < p->out_c; oc++) {
                const int8_t *w = p->weights + (long)oc * taps_per_oc;
                int32_t acc = p->bias ? p->bias[oc] : 0;
                for (t = 0; t < n_taps; t++) acc = dot16x8(col + t * in_c, w + tap_offset[t], in_c, acc);
                *out++ = requantise(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Fully connected */

void hwk_fully_connected(const hwk_fc_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    int b, o, i;
    for (b = 0; b < p->batches; b++) {
        int32_t col_sum = 0;
        for (i = 0; i < p->in_n; i++) {
            const int16_t v = (int16_t)(in[(long)b * p->in_n + i] + p->input_offset);
            col[col_index(i, p->in_n)] = v;
            col_sum += v;
        }
        for (o = 0; o < p->out_n; o++) {
            /* sum (x + x_off) * (w + w_off) = sum (x + x_off) * w + w_off * sum (x + x_off) */
            int32_t acc = dot16x8(col, p->weights + (long)o * p->in_n, p->in_n, 0) + p->weight_offset * col_sum;
            const int k = p->per_channel ? o : 0;
            if (p->bias) acc += p->bias[o];
            out[(long)b * p->out_n + o] = requantise(acc, p->multiplier[k], p->shift[k], p->output_offset, p->act_min,
                                                     p->act_max);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Pooling */

void hwk_average_pool2d(const hwk_pool_params *p, const int8_t *in, int8_t *out) {
    int oy, ox, c;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            const int ky0 = iy0 < 0 ? -iy0 : 0, kx0 = ix0 < 0 ? -ix0 : 0;
            const int ky1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            const int kx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
            const int32_t count = (ky1 - ky0) * (kx1 - kx0);
            for (c = 0; c < p->channels; c++) {
                int32_t acc = 0;
                int ky, kx;
                for (ky = ky0; ky < ky1; ky++)
                    for (kx = kx0; kx < kx1; kx++) acc += in[((long)(iy0 + ky) * p->in_w + ix0 + kx) * p->channels + c];
                /* rounded division, halves away from zero (as the reference) */
                if (count > 0) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                if (acc < p->act_min) acc = p->act_min;
                if (acc > p->act_max) acc = p->act_max;
                *out++ = (int8_t)acc;
            }
        }
    }
}

void hwk_max_pool2d(const hwk_pool_params *p, const int8_t *in, int8_t *out) {
    int oy, ox, c;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            const int ky0 = iy0 < 0 ? -iy0 : 0, kx0 = ix0 < 0 ? -ix0 : 0;
            const int ky1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            const int kx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
            for (c = 0; c < p->channels; c++) {
                int32_t mx = -128;
                int ky, kx;
                for (ky = ky0; ky < ky1; ky++)
                    for (kx = kx0; kx < kx1; kx++) {
                        const int32_t v = in[((long)(iy0 + ky) * p->in_w + ix0 + kx) * p->channels + c];
                        if (v > mx) mx = v;
                    }
                if (mx < p->act_min) mx = p->act_min;
                if (mx > p->act_max) mx = p->act_max;
                *out++ = (int8_t)mx;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Elementwise */

/* Walk the output of a broadcast binary op in row-major order, with the two input offsets alongside. */
#define HWK_FOR_EACH_BROADCAST(p, body)                                                                          \
    do {                                                                                                          \
        int32_t i0, i1, i2, i3, i4;                                                                               \
        long o = 0;                                                                                               \
        for (i0 = 0; i0 < (p)->dims[0]; i0++)                                                                     \
            for (i1 = 0; i1 < (p)->dims[1]; i1++)                                                                 \
                for (i2 = 0; i2 < (p)->dims[2]; i2++)                                                             \
                    for (i3 = 0; i3 < (p)->dims[3]; i3++)                                                         \
                        for (i4 = 0; i4 < (p)->dims[4]; i4++, o++) {                                              \
                            const long a = (long)i0 * (p)->in1_strides[0] + (long)i1 * (p)->in1_strides[1] +      \
                                           (long)i2 * (p)->in1_strides[2] + (long)i3 * (p)->in1_strides[3] +      \
                                           (long)i4 * (p)->in1_strides[4];                                        \
                            const long b = (long)i0 * (p)->in2_strides[0] + (long)i1 * (p)->in2_strides[1] +      \
                                           (long)i2 * (p)->in2_strides[2] + (long)i3 * (p)->in2_strides[3] +      \
                                           (long)i4 * (p)->in2_strides[4];                                        \
                            body                                                                                  \
                        }                                                                                         \
    } while (0)

void hwk_add(const hwk_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
    HWK_FOR_EACH_BROADCAST(p, {
        const int32_t x1 = (int32_t)((uint32_t)(in1[a] + p->in1_offset) << p->left_shift);
        const int32_t x2 = (int32_t)((uint32_t)(in2[b] + p->in2_offset) << p->left_shift);
        const int32_t s = hwk_mbqm(x1, p->in1_multiplier, p->in1_shift) + hwk_mbqm(x2, p->in2_multiplier, p->in2_shift);
        out[o] = requantise(s, p->output_multiplier, p->output_shift, p->output_offset, p->act_min, p->act_max);
    });
}

void hwk_mul(const hwk_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
    HWK_FOR_EACH_BROADCAST(p, {
        const int32_t prod = (in1[a] + p->in1_offset) * (in2[b] + p->in2_offset);
        out[o] = requantise(prod, p->output_multiplier, p->output_shift, p->output_offset, p->act_min, p->act_max);
    });
}

void hwk_relu(const hwk_relu_params *p, const int8_t *in, int8_t *out) {
    int32_t i;
    for (i = 0; i < p->n; i++)
        out[i] = requantise((int32_t)in[i] - p->input_zp, p->multiplier, p->shift, p->output_zp, p->act_min,
                            p->act_max);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Data movement */

void hwk_copy(const hwk_copy_params *p, const int8_t *in, int8_t *out) {
    int32_t i0, i1, i2, i3;
    const int32_t n4 = p->dims[4], s4 = p->in_strides[4], d4 = p->out_strides[4];
    for (i0 = 0; i0 < p->dims[0]; i0++)
        for (i1 = 0; i1 < p->dims[1]; i1++)
            for (i2 = 0; i2 < p->dims[2]; i2++)
                for (i3 = 0; i3 < p->dims[3]; i3++) {
                    const int8_t *src = in + (long)i0 * p->in_strides[0] + (long)i1 * p->in_strides[1] +
                                        (long)i2 * p->in_strides[2] + (long)i3 * p->in_strides[3];
                    int8_t *dst = out + (long)i0 * p->out_strides[0] + (long)i1 * p->out_strides[1] +
                                  (long)i2 * p->out_strides[2] + (long)i3 * p->out_strides[3];
                    if (s4 == 1 && d4 == 1) {
                        memcpy(dst, src, (size_t)n4);
                    } else {
                        int32_t i4;
                        for (i4 = 0; i4 < n4; i4++) dst[(long)i4 * d4] = src[(long)i4 * s4];
                    }
                }
}

void hwk_fill(int8_t *out, int32_t n, int8_t value) {
    memset(out, value, (size_t)n);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Reductions */

static long reduce_base(const hwk_reduce_params *p, long o) {
    /* input offset of output element o (row-major over out_dims) */
    long base = 0;
    int k;
    for (k = HWK_MAX_DIMS - 1; k >= 0; k--) {
        base += (o % p->out_dims[k]) * p->out_in_strides[k];
        o /= p->out_dims[k];
    }
    return base;
}

#define HWK_FOR_EACH_REDUCED(p, body)                                                                              \
    do {                                                                                                           \
        int32_t r0, r1, r2, r3, r4;                                                                                \
        for (r0 = 0; r0 < (p)->red_dims[0]; r0++)                                                                  \
            for (r1 = 0; r1 < (p)->red_dims[1]; r1++)                                                              \
                for (r2 = 0; r2 < (p)->red_dims[2]; r2++)                                                          \
                    for (r3 = 0; r3 < (p)->red_dims[3]; r3++)                                                      \
                        for (r4 = 0; r4 < (p)->red_dims[4]; r4++) {                                                \
                            const long r = (long)r0 * (p)->red_strides[0] + (long)r1 * (p)->red_strides[1] +       \
                                           (long)r2 * (p)->red_strides[2] + (long)r3 * (p)->red_strides[3] +       \
                                           (long)r4 * (p)->red_strides[4];                                         \
                            body                                                                                   \
                        }                                                                                          \
    } while (0)

static long out_count(const hwk_reduce_params *p) {
    long n = 1;
    int k;
    for (k = 0; k < HWK_MAX_DIMS; k++) n *= p->out_dims[k];
    return n;
}

void hwk_mean(const hwk_reduce_params *p, const int8_t *in, int8_t *out) {
    const long n = out_count(p);
    long o;
    for (o = 0; o < n; o++) {
        const int8_t *src = in + reduce_base(p, o);
        int32_t sum = 0, v;
        HWK_FOR_EACH_REDUCED(p, { sum += src[r]; });
        v = hwk_mbqm(sum - p->input_zp * p->count, p->multiplier, p->shift) + p->output_zp;
        out[o] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
}

void hwk_reduce_max(const hwk_reduce_params *p, const int8_t *in, int8_t *out) {
    const long n = out_count(p);
    long o;
    for (o = 0; o < n; o++) {
        const int8_t *src = in + reduce_base(p, o);
        int8_t mx = -128;
        HWK_FOR_EACH_REDUCED(p, { if (src[r] > mx) mx = src[r]; });
        out[o] = mx;
    }
}
