/* hw_device.h: the whole device API of a humwatch export, hw_process(): audio samples in, patch score and alarm out.
 *
 * Streams int16 PCM (HW_SAMPLE_RATE Hz mono) through the C front end (hw_frontend.c: one log-mel frame per
 * HW_HOP_LENGTH samples, normalised and quantised into the model's input as it arrives), runs the generated int8
 * network (hw_model.c; HW_FORWARD_PASSES invocations for an interpolation model) when a patch of HW_PATCH_FRAMES
 * frames is complete, scores it (hw_score) and updates the m-of-n alarm rule. Everything is static: the state below,
 * the model's scratch buffer and the constants; no allocation, no interpreter.
 *
 *     static hw_device dev;
 *     hw_device_init(&dev);
 *     for (;;) {
 *         int16_t pcm[HW_HOP_LENGTH];
 *         hw_result r;
 *         read_microphone(pcm, HW_HOP_LENGTH);
 *         if (hw_process(&dev, pcm, HW_HOP_LENGTH, &r)) report(r.score, r.alarm);
 *     }
 */
#ifndef HW_DEVICE_H
#define HW_DEVICE_H

#include <stdint.h>

#include "hw_frontend.h"
#include "hw_model.h"

#if HW_MODEL_INPUT_BYTES != HW_PATCH_ELEMENTS || HW_MODEL_OUTPUT_BYTES != HW_PATCH_ELEMENTS
#error "hw_model.h and humwatch_frontend.h are not from the same export (patch sizes differ)"
#endif
#if HW_PATCH_HOP != HW_PATCH_FRAMES
#error "hw_device.c streams non-overlapping patches: HW_PATCH_HOP must equal HW_PATCH_FRAMES"
#endif
#if HW_HOP_LENGTH > HW_WINDOW_LENGTH
#error "hw_device.c needs HW_HOP_LENGTH <= HW_WINDOW_LENGTH"
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float score;   /* the patch score (HW_SCORE_KIND), compare with HW_SCORE_THRESHOLD */
    int over;      /* score > HW_SCORE_THRESHOLD */
    int alarm;     /* 1 while at least HW_ALARM_M of the last HW_ALARM_N patches are over */
    long patch;    /* patch index since hw_device_init */
} hw_result;

typedef struct {
    hw_frontend fe;
    float window[HW_WINDOW_LENGTH];   /* the samples of the frame being collected, full scale +-1 */
    int fill;                         /* samples in window */
    int frame;                        /* frames of the current patch so far */
    long patches;
    float x[HW_PATCH_ELEMENTS];       /* float normalised patch, for the score */
#if HW_FORWARD_PASSES > 1
    int8_t q[HW_PATCH_ELEMENTS];      /* int8 patch, re-masked for every pass */
    int8_t y[HW_PATCH_ELEMENTS];      /* assembled output of the passes */
#endif
    hw_alarm alarm;
} hw_device;

void hw_device_init(hw_device *d);

/* Feed n samples (n <= HW_PATCH_HOP_SAMPLES). Returns 1 when they completed a patch (then *r holds its score and the
 * alarm state), else 0. */
int hw_process(hw_device *d, const int16_t *samples, int n, hw_result *r);

/* Optional instrumentation (for measurements, e.g. the reference firmware): compile hw_device.c with
 * -DHW_PROFILE_HOOKS and define these; `what` is one of the HW_PROFILE_* values. */
#define HW_PROFILE_FRONTEND 0 /* one frame: log-mel, normalisation, quantisation */
#define HW_PROFILE_NETWORK 1  /* one invocation of the network (input ready at begin, output at end) */
#define HW_PROFILE_SCORE 2    /* score and alarm rule of one patch */
void hw_profile_begin(int what);
void hw_profile_end(int what);

#ifdef __cplusplus
}
#endif

#endif /* HW_DEVICE_H */
