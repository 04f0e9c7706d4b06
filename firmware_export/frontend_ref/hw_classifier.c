/* hw_classifier.c: see hw_classifier.h. C99, no allocation, float math only. */
#include "hw_classifier.h"

#include <math.h>
#include <string.h>

int8_t hw_clf_quantise(float log_mel) {
    float v = roundf(log_mel / HW_CLF_INPUT_SCALE) + (float)HW_CLF_INPUT_ZERO_POINT;
    if (v < -128.0f) v = -128.0f;
    if (v > 127.0f) v = 127.0f;
    return (int8_t)v;
}

void hw_clf_quantise_frame(const float *log_mel, int8_t *q) {
    int m;
    for (m = 0; m < HW_CLF_N_MELS; m++) q[m] = hw_clf_quantise(log_mel[m]);
}

void hw_clf_probabilities(const int8_t *out_q, float *z, float *p) {
    float zz[HW_CLF_N_CLASSES];
    int c;
    for (c = 0; c < HW_CLF_N_CLASSES; c++) {
        zz[c] = (float)((int)out_q[c] - HW_CLF_OUTPUT_ZERO_POINT) * HW_CLF_OUTPUT_SCALE;
        if (z) z[c] = zz[c];
    }
    if (!p) return;
#if HW_CLF_SOFTMAX
    {
        float mx = zz[0], sum = 0.0f;
        for (c = 1; c < HW_CLF_N_CLASSES; c++) if (zz[c] > mx) mx = zz[c];
        for (c = 0; c < HW_CLF_N_CLASSES; c++) {
            p[c] = expf(zz[c] - mx);
            sum += p[c];
        }
        for (c = 0; c < HW_CLF_N_CLASSES; c++) p[c] /= sum;
    }
#else
    for (c = 0; c < HW_CLF_N_CLASSES; c++) p[c] = 1.0f / (1.0f + expf(-zz[c]));
#endif
}

int hw_clf_decide(const float *p, uint8_t *fired) {
    int c, n = 0;
    for (c = 0; c < HW_CLF_N_CLASSES; c++) {
        fired[c] = p[c] >= hw_clf_threshold_prob[c] ? 1u : 0u;
        n += fired[c];
    }
    return n;
}

void hw_clf_alarm_init(hw_clf_alarm_state *a) {
    memset(a, 0, sizeof(*a));
}

int hw_clf_alarm_update(hw_clf_alarm_state *a, const uint8_t *fired, uint8_t *active) {
    int c, n = 0;
    for (c = 0; c < HW_CLF_N_CLASSES; c++) {
        uint8_t f = (fired[c] && hw_clf_alarm[c]) ? 1u : 0u;
        int on;
        a->count[c] += (int)f - (int)a->fired[a->pos][c];
        a->fired[a->pos][c] = f;
        on = hw_clf_alarm[c] && a->count[c] >= HW_CLF_ALARM_M;
        if (active) active[c] = on ? 1u : 0u;
        n += on;
    }
    a->pos = (a->pos + 1) % HW_CLF_ALARM_N;
    return n;
}
