/* hw_frontend.h: reference C implementation of the humwatch front end and decision, using only the constants of
 * the generated humwatch_frontend.h (put both on the include path).
 *
 * Written for clarity and testability, not speed: a textbook radix-2 complex FFT in float. On a device use the
 * vendor's real FFT (CMSIS-DSP arm_rfft_fast_f32, ESP-DSP dsps_fft2r_fc32) for step 2 and keep the rest; the test
 * suite (tests/test_export.py) compares this code with the Python front end on golden vectors.
 *
 * Per frame:  hw_frame_log_mel() -> hw_normalise_quantise() -> copy q into row `frame` of the input tensor.
 * Per patch:  for pass k < HW_FORWARD_PASSES: hw_pass_input(q, input, k) -> invoke -> hw_pass_collect(output, y, k);
 *             then hw_score(x, y) -> hw_alarm_update(). (One pass for the plain autoencoder; one per hidden block for a
 *             model trained with the interpolation objective, HW_MASK_FRAMES > 0.)
 */
#ifndef HW_FRONTEND_H
#define HW_FRONTEND_H

#include <stdint.h>

#include "humwatch_frontend.h"

#if !HW_N_FFT_IS_POW2
#error "hw_frontend.c implements a radix-2 FFT: HW_N_FFT must be a power of two"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* FFT work buffers and tables (about 7 KB for a 512-point FFT). */
typedef struct {
    float re[HW_N_FFT];
    float im[HW_N_FFT];
    float cos_tab[HW_N_FFT / 2];
    float sin_tab[HW_N_FFT / 2];
    uint16_t bitrev[HW_N_FFT];
} hw_frontend;

/* Fill the FFT tables (once). */
void hw_frontend_init(hw_frontend *fe);

/* Steps 1-4: HW_WINDOW_LENGTH samples (float, full scale +-1) -> HW_N_MELS log-mel values. */
void hw_frame_log_mel(hw_frontend *fe, const float *samples, float *log_mel);

/* Steps 5-6 for one frame: normalised x[HW_N_MELS] (keep it for hw_score) and its int8 quantisation q. */
void hw_normalise_quantise(const float *log_mel, float *x, int8_t *q);

int8_t hw_quantise(float x);
float hw_dequantise_output(int8_t q);

/* Step 7, pass `pass` (0 .. HW_FORWARD_PASSES - 1) of a patch: the model's input tensor from the patch's int8 input
 * q[HW_PATCH_ELEMENTS] (frame-major): a copy, with the rows of the pass's hidden block set to HW_INPUT_ZERO_POINT
 * (x = 0, the normalised mean) when HW_MASK_FRAMES > 0. */
void hw_pass_input(const int8_t *q, int8_t *input, int pass);

/* After invoking pass `pass`: copy the rows the pass predicted (its hidden block; every row when HW_MASK_FRAMES == 0)
 * from the model's output tensor out_q into y_q[HW_PATCH_ELEMENTS], the assembled output hw_score takes. */
void hw_pass_collect(const int8_t *out_q, int8_t *y_q, int pass);

/* Step 8: the patch score of the float normalised patch x[n] against the dequantised model output out_q[n]: the mean
 * squared error (HW_SCORE_KIND == HW_SCORE_MSE) or the Mahalanobis distance of the log band errors
 * (HW_SCORE_GAUSSIAN, a model trained with --score gaussian). */
float hw_score(const float *x, const int8_t *out_q, int n);

/* Step 9: the site's alarm rule over consecutive patch scores (anomaly.decision; its constants HW_ALARM_* are in
 * humwatch_frontend.h). HW_ALARM_WINDOW_MEAN: the windowed mean of the standardised log score,
 *   z = clamp((log(score) - HW_ALARM_CENTRE) / HW_ALARM_SCALE, +-HW_ALARM_Z_CLAMP) in double (a score <= 0 or NaN
 *   counts as -HW_ALARM_Z_CLAMP), held as the integer q = floor(z * HW_ALARM_Z_SCALE + 0.5); active while the exact
 *   integer sum S of the last HW_ALARM_N values has S > HW_ALARM_LIMIT_Q (or S < -HW_ALARM_LIMIT_Q when
 *   HW_ALARM_SIDES == 2), never before HW_ALARM_N patches were seen.
 * Otherwise the m-of-n rule: active while at least HW_ALARM_M of the last HW_ALARM_N patches are over
 *   HW_SCORE_THRESHOLD. */
typedef struct {
#if defined(HW_ALARM_WINDOW_MEAN)
    int32_t q[HW_ALARM_N];
    long long sum;
    int seen;
#else
    uint8_t over[HW_ALARM_N];
    int count;
#endif
    int pos;
} hw_alarm;

void hw_alarm_init(hw_alarm *a);
/* Add one patch score; returns 1 while the rule is active (an alarm starts where the return value goes from 0 to
 * 1). */
int hw_alarm_update(hw_alarm *a, float score);

#ifdef __cplusplus
}
#endif

#endif /* HW_FRONTEND_H */
