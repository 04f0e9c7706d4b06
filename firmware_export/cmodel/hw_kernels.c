/* hw_kernels.c: see hw_kernels.h. */
#include "hw_kernels.h"

#include <string.h>

#if HWK_USE_DSP
#include <arm_acle.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HWK_INLINE static inline __attribute__((always_inline))
#else
#define HWK_INLINE static inline
#endif

#if HWK_USE_DSP
/* SXTB16 of the word rotated by 8 bits (bytes 1 and 3), as one instruction */
HWK_INLINE uint32_t sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#endif

/* ---------------------------------------------------------------------------------------------------------------
 * Requantisation */

/* TFLite's MultiplyByQuantizedMultiplier for the multipliers used here (multiplier >= 0):
 *   high = SaturatingRoundingDoublingHighMul(x << left, multiplier): (x * m + 2^30) / 2^31 with the reference's
 *          nudge of 1 - 2^30 for negative products and truncation toward zero, which is the same integer as
 *          floor((x * m + 2^30) / 2^31) for every product, i.e. one 64-bit add and arithmetic shift;
 *   result = RoundingDivideByPOT(high, right): halves away from zero.
 * (The saturating case INT32_MIN * INT32_MIN cannot occur with a non-negative multiplier.) */
HWK_INLINE int32_t mbqm(int32_t x, int32_t multiplier, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int32_t high = (int32_t)(((int64_t)(int32_t)((uint32_t)x << left) * multiplier + (1 << 30)) >> 31);
    const int32_t mask = (int32_t)((1u << right) - 1u);
    const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
    return (high >> right) + ((high & mask) > threshold ? 1 : 0);
}

int32_t hwk_mbqm(int32_t x, int32_t multiplier, int shift) {
    return mbqm(x, multiplier, shift);
}

HWK_INLINE int8_t requantise(int32_t acc, int32_t multiplier, int shift, int32_t output_offset, int32_t lo,
                                int32_t hi) {
    acc = mbqm(acc, multiplier, shift) + output_offset;
    if (acc < lo) acc = lo;
    if (acc > hi) acc = hi;
    return (int8_t)acc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Columns and dot products.
 *
 * gather16() writes n int8 inputs plus the input offset as int16. With SMLAD each complete group of four is stored as
 * the pairs (x0, x2), (x1, x3): the order in which SXTB16 unpacks four int8 weights (w0, w2) and, rotated by 8 bits,
 * (w1, w3), so dot16x8() multiplies matching elements; an incomplete last group stays in natural order in both. A
 * column is only ever read by dot16x8() with the same n and start as it was gathered with. Without DSP both are the
 * natural order. Either way the int32 sum is the same. */

HWK_INLINE void gather16(int16_t *dst, const int8_t *src, int n, int32_t offset) {
    int i = 0;
#if HWK_USE_DSP
    const uint32_t off2 = ((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset;
    for (; i + 4 <= n; i += 4) {
        uint32_t v, lo, hi;
        memcpy(&v, src + i, 4);
        lo = __sadd16(__sxtb16(v), off2);                      /* (x0, x2) */
        hi = __sadd16(sxtb16_ror8(v), off2);   /* (x1, x3) */
        memcpy(dst + i, &lo, 4);
        memcpy(dst + i + 2, &hi, 4);
    }
#endif
    for (; i < n; i++) dst[i] = (int16_t)(src[i] + offset);
}

HWK_INLINE int32_t dot16x8(const int16_t *col, const int8_t *w, int n, int32_t acc) {
    int i = 0;
#if HWK_USE_DSP
    for (; i + 4 <= n; i += 4) {
        uint32_t wv, x02, x13;
        memcpy(&wv, w + i, 4);
        memcpy(&x02, col + i, 4);
        memcpy(&x13, col + i + 2, 4);
        acc = __smlad(x02, __sxtb16(wv), acc);
        acc = __smlad(x13, sxtb16_ror8(wv), acc); /* ROR 8 */
    }
#endif
    for (; i < n; i++) acc += (int32_t)col[i] * (int32_t)w[i];
    return acc;
}

/* Two output channels at once: the column is loaded once for both weight rows. */
HWK_INLINE void dot16x8_2(const int16_t *col, const int8_t *w0, const int8_t *w1, int n, int32_t *acc0,
                             int32_t *acc1) {
    int32_t a0 = *acc0, a1 = *acc1;
    int i = 0;
#if HWK_USE_DSP
    for (; i + 4 <= n; i += 4) {
        uint32_t v0, v1, x02, x13;
        memcpy(&x02, col + i, 4);
        memcpy(&x13, col + i + 2, 4);
        memcpy(&v0, w0 + i, 4);
        memcpy(&v1, w1 + i, 4);
        a0 = __smlad(x02, __sxtb16(v0), a0);
        a0 = __smlad(x13, sxtb16_ror8(v0), a0);
        a1 = __smlad(x02, __sxtb16(v1), a1);
        a1 = __smlad(x13, sxtb16_ror8(v1), a1);
    }
#endif
    for (; i < n; i++) {
        a0 += (int32_t)col[i] * (int32_t)w0[i];
        a1 += (int32_t)col[i] * (int32_t)w1[i];
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* The same sum straight from int8 inputs (a single output channel, where a column would not be reused). */
HWK_INLINE int32_t dot8x8(const int8_t *x, const int8_t *w, int n, int32_t x_offset, int32_t acc) {
    int i = 0;
#if HWK_USE_DSP
    const uint32_t off2 = ((uint32_t)(uint16_t)x_offset << 16) | (uint16_t)x_offset;
    for (; i + 4 <= n; i += 4) {
        uint32_t xv, wv;
        memcpy(&xv, x + i, 4);
        memcpy(&wv, w + i, 4);
        acc = __smlad(__sadd16(__sxtb16(xv), off2), __sxtb16(wv), acc);
        acc = __smlad(__sadd16(sxtb16_ror8(xv), off2), sxtb16_ror8(wv), acc);
    }
#endif
    for (; i < n; i++) acc += ((int32_t)x[i] + x_offset) * (int32_t)w[i];
    return acc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Convolutions */

/* One tap's in_c inputs into a column that a dot product will read as a whole (length n): whole groups of four per
 * tap when in_c is a multiple of 4 (gather16), else natural order, paired up afterwards by group_pairs(). */
HWK_INLINE void gather_tap(int16_t *dst, const int8_t *src, int in_c, int32_t offset) {
    if ((in_c & 3) == 0) {
        gather16(dst, src, in_c, offset);
    } else {
        int c;
        for (c = 0; c < in_c; c++) dst[c] = (int16_t)(src[c] + offset);
    }
}

#if HWK_USE_DSP
/* Reorder the complete groups of four of a natural-order column into the pairs order of gather16(). */
static void group_pairs(int16_t *col, int n) {
    int i;
    for (i = 0; i + 4 <= n; i += 4) {
        const int16_t x1 = col[i + 1];
        col[i + 1] = col[i + 2];
        col[i + 2] = x1;
    }
}
#endif

/* Requantise an output channel's accumulator with that channel's multiplier and shift (every convolution's store). */
HWK_INLINE int8_t conv_requantise(const hwk_conv_params *p, int32_t acc, int oc) {
    return requantise(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
}

/* One output pixel from its gathered column: the dot products with the out_c weight rows of length len that follow
 * each other from w (two channels at a time, the column loaded once for both), plus bias, requantised and stored.
 * Returns the next output position. */
HWK_INLINE int8_t *conv_pixel(const hwk_conv_params *p, const int16_t *col, const int8_t *w, int len, int8_t *out) {
    const int32_t *bias = p->bias;
    const int out_c = p->out_c;
    int oc;
    for (oc = 0; oc + 2 <= out_c; oc += 2) {
        int32_t a0 = bias ? bias[oc] : 0, a1 = bias ? bias[oc + 1] : 0;
        dot16x8_2(col, w + (long)oc * len, w + (long)(oc + 1) * len, len, &a0, &a1);
        *out++ = conv_requantise(p, a0, oc);
        *out++ = conv_requantise(p, a1, oc + 1);
    }
    for (; oc < out_c; oc++) {
        const int32_t acc = dot16x8(col, w + (long)oc * len, len, bias ? bias[oc] : 0);
        *out++ = conv_requantise(p, acc, oc);
    }
    return out;
}

void hwk_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    const int taps = p->k_h * p->k_w * p->in_c, row = p->k_row, in_c = p->in_c;
    const int32_t in_off = p->input_offset;
    int oy, ox, i;
    for (i = taps; i < row; i++) col[i] = 0; /* the padding of the weight rows */
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const int iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            int ky, kx;
            int16_t *dst = col;
            /* gather the receptive field once: input + offset, 0 where it falls into the padding */
            for (ky = 0; ky < p->k_h; ky++) {
                const int iy = iy0 + ky * p->dil_h;
                const int row_ok = iy >= 0 && iy < p->in_h;
                const int8_t *src = in + (long)iy * p->in_w * in_c;
                for (kx = 0; kx < p->k_w; kx++, dst += in_c) {
                    const int ix = ix0 + kx * p->dil_w;
                    if (row_ok && ix >= 0 && ix < p->in_w)
                        gather_tap(dst, src + (long)ix * in_c, in_c, in_off);
                    else
                        memset(dst, 0, (size_t)in_c * sizeof(int16_t));
                }
            }
#if HWK_USE_DSP
            if (in_c & 3) group_pairs(col, row); /* taps were gathered in natural order: pair them up */
#endif
            out = conv_pixel(p, col, p->weights, row, out);
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
                    out[oc] = conv_requantise(p, acc, oc);
                }
            }
            out += out_c;
        }
    }
}

/* Transposed convolution as a gather, one phase at a time: output (oy, ox) receives input (iy, ix) through tap
 * (ky, kx) when oy + pad_top = iy * stride_h + ky (and the same along x). So the taps that can reach an output pixel
 * depend only on its phase ((oy + pad_top) mod stride_h, (ox + pad_left) mod stride_w): ky = phase_y, phase_y +
 * stride_h, ... The export stores the weights grouped by phase (for each phase, for each output channel, its taps'
 * weights [ky][kx][in_c] contiguous), so each output pixel is an ordinary dot product over one contiguous weight row:
 * no int32 scratch of the output's size, no multiplies by the upsampling zeros. Taps that fall outside the input
 * gather zeros (they add nothing, as in the reference). */
void hwk_transpose_conv2d(const hwk_conv_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    const int sh = p->stride_h, sw = p->stride_w, in_c = p->in_c, out_c = p->out_c;
    const int32_t in_off = p->input_offset;
    long phase_start[HWK_MAX_PHASES];
    int phase_len[HWK_MAX_PHASES];
    int oy, ox, py, px;
    long at = 0;
    for (py = 0; py < sh; py++) {
        for (px = 0; px < sw; px++) {
            const int nky = py < p->k_h ? (p->k_h - py + sh - 1) / sh : 0;
            const int nkx = px < p->k_w ? (p->k_w - px + sw - 1) / sw : 0;
            phase_start[py * sw + px] = at;
            phase_len[py * sw + px] = nky * nkx * in_c;
            at += (long)out_c * nky * nkx * in_c;
        }
    }
    for (oy = 0; oy < p->out_h; oy++) {
        const int ny = oy + p->pad_top;
        py = ny % sh;
        for (ox = 0; ox < p->out_w; ox++) {
            const int nx = ox + p->pad_left, phase = py * sw + nx % sw, len = phase_len[phase];
            const int8_t *w = p->weights + phase_start[phase];
            int16_t *dst = col;
            int ky, kx;
            px = nx % sw;
            if (out_c == 1) { /* one output channel: no column, dot products straight from the input */
                int32_t acc = p->bias ? p->bias[0] : 0;
                for (ky = py; ky < p->k_h; ky += sh) {
                    const int iy = (ny - ky) / sh;
                    const int row_ok = ny >= ky && iy < p->in_h;
                    for (kx = px; kx < p->k_w; kx += sw, w += in_c) {
                        const int ix = (nx - kx) / sw;
                        if (row_ok && nx >= kx && ix < p->in_w)
                            acc = dot8x8(in + ((long)iy * p->in_w + ix) * in_c, w, in_c, in_off, acc);
                    }
                }
                *out++ = conv_requantise(p, acc, 0);
                continue;
            }
            for (ky = py; ky < p->k_h; ky += sh) {
                const int iy = (ny - ky) / sh; /* exact: ny - ky is a multiple of sh (or negative: outside) */
                const int row_ok = ny >= ky && iy < p->in_h;
                for (kx = px; kx < p->k_w; kx += sw, dst += in_c) {
                    const int ix = (nx - kx) / sw;
                    if (row_ok && nx >= kx && ix < p->in_w)
                        gather_tap(dst, in + ((long)iy * p->in_w + ix) * in_c, in_c, in_off);
                    else
                        memset(dst, 0, (size_t)in_c * sizeof(int16_t));
                }
            }
#if HWK_USE_DSP
            if (in_c & 3) group_pairs(col, len);
#endif
            out = conv_pixel(p, col, w, len, out);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Fully connected */

void hwk_fully_connected(const hwk_fc_params *p, const int8_t *in, int8_t *out, int16_t *col) {
    int b, o, i;
    for (b = 0; b < p->batches; b++) {
        int32_t col_sum = 0;
        gather16(col, in + (long)b * p->in_n, p->in_n, p->input_offset);
        for (i = 0; i < p->in_n; i++) col_sum += col[i]; /* any order */
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
        const int32_t s = mbqm(x1, p->in1_multiplier, p->in1_shift) + mbqm(x2, p->in2_multiplier, p->in2_shift);
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
    /* 256 possible inputs: requantise each once, then look up (in place is fine) */
    int8_t table[256];
    int32_t i;
    for (i = 0; i < 256; i++)
        table[i] = requantise(i - 128 - p->input_zp, p->multiplier, p->shift, p->output_zp, p->act_min, p->act_max);
    for (i = 0; i < p->n; i++) out[i] = table[(int32_t)in[i] + 128];
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
        v = mbqm(sum - p->input_zp * p->count, p->multiplier, p->shift) + p->output_zp;
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
