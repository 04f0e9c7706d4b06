/* hw_telemetry.h: the humwatch fleet telemetry message (schema v1, docs/fleet.md) built on the device, with the
 * constants of the generated humwatch_telemetry.h (put both on the include path).
 *
 * One message per scored patch (HW_TELEMETRY_KIND_PATCH) and one per alarm (HW_TELEMETRY_KIND_ALARM), published at
 * QoS 1 on the topic hw_telemetry_topic() writes: humwatch/v1/<site>/<device>/p (or /a). The bytes are the same as
 * the Python encoder's (calibration/fleet/telemetry.py); tests/test_telemetry.py compares them byte for byte.
 * Portable C99: little-endian fields are written byte by byte, floats through their IEEE-754 bits.
 */
#ifndef HW_TELEMETRY_H
#define HW_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "humwatch_telemetry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t kind;             /* HW_TELEMETRY_KIND_PATCH or HW_TELEMETRY_KIND_ALARM */
    uint8_t flags;            /* HW_TELEMETRY_F_OVER | HW_TELEMETRY_F_INT8 | HW_TELEMETRY_F_DEVICE_RULE */
    uint16_t boot;            /* start counter of the device (kept in flash): sequence numbers restart per boot */
    uint32_t seq;             /* patch counter within this boot (an alarm: its onset patch's) */
    uint32_t t_s;             /* UTC seconds since the Unix epoch (the patch start) */
    uint16_t t_ms;            /* 0..999 */
    float score;              /* the raw score (hw_score) */
    uint8_t state;            /* operating state index, HW_TELEMETRY_NO_STATE when none */
    const char *site;         /* site name, 1..64 characters a-z 0-9 _ - (HW_TELEMETRY_SITE) */
    uint8_t n_classes;        /* class probabilities that follow (0 without a classifier) */
    const float *probs;       /* n_classes probabilities in 0..1 (sent as round(p * 255)) */
    float threshold;          /* alarms: the threshold the score was compared with */
    uint8_t alarm_class;      /* alarms: HW_TELEMETRY_NO_CLASS for the anomaly score's rule, else a class index */
} hw_telemetry_msg;

/* Write the message into buf (cap bytes); returns its length, or 0 when it does not fit or a field is invalid. */
size_t hw_telemetry_encode(const hw_telemetry_msg *m, uint8_t *buf, size_t cap);

/* Write "humwatch/v1/<site>/<device>/<p|a|b>" (NUL-terminated) into buf; returns its length, or 0 if it does not
 * fit. kind: HW_TELEMETRY_KIND_PATCH, HW_TELEMETRY_KIND_ALARM, or 0 for the birth topic (payload HW_TELEMETRY_BIRTH,
 * published retained once after each connection). */
size_t hw_telemetry_topic(char *buf, size_t cap, const char *site, const char *device, uint8_t kind);

#ifdef __cplusplus
}
#endif

#endif /* HW_TELEMETRY_H */
