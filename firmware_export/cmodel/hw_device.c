/* hw_device.c: see hw_device.h. C99, no allocation. */
#include "hw_device.h"

#include <string.h>

#ifdef HW_PROFILE_HOOKS
#define PROFILE_BEGIN(w) hw_profile_begin(w)
#define PROFILE_END(w) hw_profile_end(w)
#else
#define PROFILE_BEGIN(w) ((void)0)
#define PROFILE_END(w) ((void)0)
#endif

void hw_device_init(hw_device *d) {
    memset(d, 0, sizeof(*d));
    hw_frontend_init(&d->fe);
    hw_alarm_init(&d->alarm);
}

/* Steps 1-6 for the frame in d->window: its row of the float patch x and of the int8 input. */
static void frame(hw_device *d) {
    float log_mel[HW_N_MELS];
    int8_t *q;
#if HW_FORWARD_PASSES > 1
    q = d->q;
#else
    q = hw_model_input(); /* the input rows are written as frames arrive; the network reads them at the patch end */
#endif
    PROFILE_BEGIN(HW_PROFILE_FRONTEND);
    hw_frame_log_mel(&d->fe, d->window, log_mel);
    hw_normalise_quantise(log_mel, d->x + d->frame * HW_N_MELS, q + d->frame * HW_N_MELS);
    PROFILE_END(HW_PROFILE_FRONTEND);
}

/* Steps 7-9 for a complete patch. */
static void patch(hw_device *d, hw_result *r) {
    const int8_t *y;
#if HW_FORWARD_PASSES > 1
    int k;
    for (k = 0; k < HW_FORWARD_PASSES; k++) {
        hw_pass_input(d->q, hw_model_input(), k);
        PROFILE_BEGIN(HW_PROFILE_NETWORK);
        hw_model_invoke();
        PROFILE_END(HW_PROFILE_NETWORK);
        hw_pass_collect(hw_model_output(), d->y, k);
    }
    y = d->y;
#else
    PROFILE_BEGIN(HW_PROFILE_NETWORK);
    hw_model_invoke();
    PROFILE_END(HW_PROFILE_NETWORK);
    y = hw_model_output();
#endif
    PROFILE_BEGIN(HW_PROFILE_SCORE);
    r->score = hw_score(d->x, y, HW_PATCH_ELEMENTS);
    r->over = r->score > HW_SCORE_THRESHOLD;
    r->alarm = hw_alarm_update(&d->alarm, r->score);
    r->patch = d->patches++;
    PROFILE_END(HW_PROFILE_SCORE);
}

int hw_process(hw_device *d, const int16_t *samples, int n, hw_result *r) {
    int done = 0;
    while (n > 0) {
        int take = HW_WINDOW_LENGTH - d->fill, i;
        if (take > n) take = n;
        for (i = 0; i < take; i++) d->window[d->fill + i] = (float)samples[i] * (1.0f / 32768.0f); /* exact */
        d->fill += take;
        samples += take;
        n -= take;
        if (d->fill < HW_WINDOW_LENGTH) break;
        frame(d);
        /* keep the overlap with the next frame */
        memmove(d->window, d->window + HW_HOP_LENGTH, (HW_WINDOW_LENGTH - HW_HOP_LENGTH) * sizeof(float));
        d->fill = HW_WINDOW_LENGTH - HW_HOP_LENGTH;
        if (++d->frame == HW_PATCH_FRAMES) {
            d->frame = 0;
            patch(d, r);
            done = 1;
        }
    }
    return done;
}
