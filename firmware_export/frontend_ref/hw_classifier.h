/* hw_classifier.h: reference C implementation of the fault classifier's input and decision, using only the
 * constants of the generated humwatch_classifier.h (put both on the include path).
 *
 * Per frame:  the raw log-mel of hw_frame_log_mel() (hw_frontend.c; microphone offsets included, NOT normalised)
 *             -> hw_clf_quantise_frame() -> copy q into row `frame` of the classifier's input tensor.
 * Per patch:  invoke the classifier -> hw_clf_probabilities(output) -> hw_clf_decide() -> hw_clf_alarm_update().
 * The test suite (tests/test_export_classifier.py) compares this code with the Python export.
 */
#ifndef HW_CLASSIFIER_H
#define HW_CLASSIFIER_H

#include <stdint.h>

#include "humwatch_classifier.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Step 1: one raw log-mel value -> its int8 input code (clamp(roundf(v / scale) + zero point, -128, 127)). */
int8_t hw_clf_quantise(float log_mel);

/* Step 1 for one frame: HW_CLF_N_MELS raw log-mel values -> int8 codes. */
void hw_clf_quantise_frame(const float *log_mel, int8_t *q);

/* Steps 2-3: the int8 output out_q[HW_CLF_N_CLASSES] -> calibrated logits z and probabilities p (either may be
 * NULL if not wanted). */
void hw_clf_probabilities(const int8_t *out_q, float *z, float *p);

/* Step 4: fired[c] = 1 when p[c] >= hw_clf_threshold_prob[c]; returns the number of classes that count. */
int hw_clf_decide(const float *p, uint8_t *fired);

/* Step 5: the m-of-n rule per alarm class (hw_clf_alarm[c] = 1) over consecutive patches. */
typedef struct {
    uint8_t fired[HW_CLF_ALARM_N][HW_CLF_N_CLASSES];
    int pos;
    int count[HW_CLF_N_CLASSES];
} hw_clf_alarm_state;

void hw_clf_alarm_init(hw_clf_alarm_state *a);
/* Add one patch's decisions; active[c] (may be NULL) = 1 while alarm class c counted in at least HW_CLF_ALARM_M of
 * the last HW_CLF_ALARM_N patches (a classifier alarm starts where it goes from 0 to 1); returns how many are. */
int hw_clf_alarm_update(hw_clf_alarm_state *a, const uint8_t *fired, uint8_t *active);

#ifdef __cplusplus
}
#endif

#endif /* HW_CLASSIFIER_H */
