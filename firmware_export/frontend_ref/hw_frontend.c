/* hw_frontend.c: see hw_frontend.h. C99, float arithmetic, no allocation. */
#include "hw_frontend.h"

#include <math.h>
#include <string.h>

void hw_frontend_init(hw_frontend *fe) {
    const double two_pi = 6.283185307179586476925286766559;
    int bits = 0, i;
    while ((1 << bits) < HW_N_FFT) bits++;
    for (i = 0; i < HW_N_FFT / 2; i++) {
        /* tables in double, rounded once to float: the FFT's error then comes from the butterflies only */
        fe->cos_tab[i] = (float)cos(two_pi * i / HW_N_FFT);
        fe->sin_tab[i] = (float)sin(two_pi * i / HW_N_FFT);
    }
    for (i = 0; i < HW_N_FFT; i++) {
        unsigned r = 0, v = (unsigned)i;
        int b;
        for (b = 0; b < bits; b++) {
            r = (r << 1) | (v & 1u);
            v >>= 1;
        }
        fe->bitrev[i] = (uint16_t)r;
    }
}

/* In-place iterative radix-2 decimation-in-time FFT of fe->re/fe->im (forward, e^{-2 pi i k n / N}). */
static void fft(hw_frontend *fe) {
    float *re = fe->re, *im = fe->im;
    int i, len;
    for (i = 0; i < HW_N_FFT; i++) {
        int j = fe->bitrev[i];
        if (j > i) {
            float t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (len = 2; len <= HW_N_FFT; len <<= 1) {
        int half = len >> 1, step = HW_N_FFT / len, start, k;
        for (start = 0; start < HW_N_FFT; start += len) {
            for (k = 0; k < half; k++) {
                float wr = fe->cos_tab[k * step], wi = -fe->sin_tab[k * step];
                int a = start + k, b = a + half;
                float xr = re[b] * wr - im[b] * wi;
                float xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
    }
}

void hw_frame_log_mel(hw_frontend *fe, const float *samples, float *log_mel) {
    float spec[HW_N_FREQS];
    int i, m;
    for (i = 0; i < HW_WINDOW_LENGTH; i++) {
        fe->re[i] = samples[i] * hw_window[i];
        fe->im[i] = 0.0f;
    }
    for (; i < HW_N_FFT; i++) {
        fe->re[i] = 0.0f;
        fe->im[i] = 0.0f;
    }
    fft(fe);
    for (i = 0; i < HW_N_FREQS; i++) {
        float p = fe->re[i] * fe->re[i] + fe->im[i] * fe->im[i];
        spec[i] = (HW_POWER == 1.0f) ? sqrtf(p) : p;
    }
    for (m = 0; m < HW_N_MELS; m++) {
        const float *w = &hw_mel_weights[hw_mel_weight_start[m]];
        const float *s = &spec[hw_mel_first_bin[m]];
        float acc = 0.0f;
        int j;
        for (j = 0; j < hw_mel_bin_count[m]; j++) acc += w[j] * s[j];
        log_mel[m] = logf(acc + HW_LOG_OFFSET) + hw_mic_offsets[m];
    }
}

int8_t hw_quantise(float x) {
    float v = roundf(x / HW_INPUT_SCALE) + (float)HW_INPUT_ZERO_POINT;
    if (v < -128.0f) v = -128.0f;
    if (v > 127.0f) v = 127.0f;
    return (int8_t)v;
}

float hw_dequantise_output(int8_t q) {
    return (float)((int)q - HW_OUTPUT_ZERO_POINT) * HW_OUTPUT_SCALE;
}

void hw_normalise_quantise(const float *log_mel, float *x, int8_t *q) {
    int m;
    for (m = 0; m < HW_N_MELS; m++) {
        x[m] = (log_mel[m] - hw_norm_mean[m]) * hw_norm_inv_std[m];
        q[m] = hw_quantise(x[m]);
    }
}

#if HW_MASK_FRAMES > 0
#if HW_PATCH_FRAMES % HW_MASK_FRAMES != 0 || HW_FORWARD_PASSES * HW_MASK_FRAMES != HW_PATCH_FRAMES
#error "HW_MASK_FRAMES must divide HW_PATCH_FRAMES into HW_FORWARD_PASSES blocks"
#endif
#define HW_PASS_ROWS HW_MASK_FRAMES
#else
#define HW_PASS_ROWS HW_PATCH_FRAMES
#endif

void hw_pass_input(const int8_t *q, int8_t *input, int pass) {
    memcpy(input, q, HW_PATCH_ELEMENTS);
#if HW_MASK_FRAMES > 0
    memset(input + pass * HW_PASS_ROWS * HW_N_MELS, HW_INPUT_ZERO_POINT, HW_PASS_ROWS * HW_N_MELS);
#else
    (void)pass;
#endif
}

void hw_pass_collect(const int8_t *out_q, int8_t *y_q, int pass) {
    int off = pass * HW_PASS_ROWS * HW_N_MELS;
    memcpy(y_q + off, out_q + off, HW_PASS_ROWS * HW_N_MELS);
}

#if HW_SCORE_KIND == HW_SCORE_GAUSSIAN
float hw_score(const float *x, const int8_t *out_q, int n) {
    /* n = frames * HW_N_MELS, frame-major. Band errors accumulate per band in float (96 terms); the quadratic form
     * over 64 x 64 terms with mixed signs accumulates in double (4096 multiply-adds a patch, also fine in software). */
    float band[HW_N_MELS];
    double z[HW_N_MELS], total = 0.0;
    int frames = n / HW_N_MELS, t, m, j;
    for (m = 0; m < HW_N_MELS; m++) band[m] = 0.0f;
    for (t = 0; t < frames; t++) {
        for (m = 0; m < HW_N_MELS; m++) {
            float d = x[t * HW_N_MELS + m] - hw_dequantise_output(out_q[t * HW_N_MELS + m]);
            band[m] += d * d;
        }
    }
    if (frames <= 0) return 0.0f;
    for (m = 0; m < HW_N_MELS; m++)
        z[m] = (double)logf(band[m] / (float)frames + HW_BAND_ERROR_EPS) - (double)hw_score_mean[m];
    for (m = 0; m < HW_N_MELS; m++) {
        double row = 0.0;
        for (j = 0; j < HW_N_MELS; j++) row += (double)hw_score_precision[m * HW_N_MELS + j] * z[j];
        total += z[m] * row;
    }
    return (float)total;
}
#else
float hw_score(const float *x, const int8_t *out_q, int n) {
    /* row-wise partial sums keep the float accumulation error near 1e-6 relative for 6144 elements */
    float total = 0.0f;
    int i = 0;
    while (i < n) {
        float row = 0.0f;
        int end = i + HW_N_MELS < n ? i + HW_N_MELS : n;
        for (; i < end; i++) {
            float d = x[i] - hw_dequantise_output(out_q[i]);
            row += d * d;
        }
        total += row;
    }
    return n > 0 ? total / (float)n : 0.0f;
}
#endif

void hw_alarm_init(hw_alarm *a) {
    memset(a, 0, sizeof(*a));
}

#if defined(HW_ALARM_WINDOW_MEAN)
int hw_alarm_update(hw_alarm *a, float score) {
    double s = (double)score, z;
    int32_t q;
    if (!(s > 0.0)) {
        z = -HW_ALARM_Z_CLAMP; /* 0, negative or NaN */
    } else {
        z = (log(s) - HW_ALARM_CENTRE) / HW_ALARM_SCALE;
        if (z > HW_ALARM_Z_CLAMP) z = HW_ALARM_Z_CLAMP;
        if (z < -HW_ALARM_Z_CLAMP) z = -HW_ALARM_Z_CLAMP;
    }
    q = (int32_t)floor(z * HW_ALARM_Z_SCALE + 0.5);
    if (a->seen >= HW_ALARM_N) a->sum -= a->q[a->pos];
    else a->seen++;
    a->q[a->pos] = q;
    a->sum += q;
    a->pos = (a->pos + 1) % HW_ALARM_N;
    if (a->seen < HW_ALARM_N) return 0;
    return a->sum > HW_ALARM_LIMIT_Q || (HW_ALARM_SIDES == 2 && a->sum < -HW_ALARM_LIMIT_Q);
}
#else
int hw_alarm_update(hw_alarm *a, float score) {
    uint8_t over = score > HW_SCORE_THRESHOLD ? 1u : 0u;
    a->count += (int)over - (int)a->over[a->pos];
    a->over[a->pos] = over;
    a->pos = (a->pos + 1) % HW_ALARM_N;
    return a->count >= HW_ALARM_M;
}
#endif
