/* hw_telemetry.c: see hw_telemetry.h. */
#include "hw_telemetry.h"

#include <math.h>
#include <string.h>

static uint8_t *put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 4;
}

static uint8_t *put_f32(uint8_t *p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return put_u32(p, bits);
}

static int valid_site(const char *s, size_t n) {
    if (n < 1 || n > HW_TELEMETRY_MAX_SITE) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '-' || c == '_'));
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static uint8_t prob_byte(float p) {
    double q = floor((double)p * 255.0 + 0.5);
    return (uint8_t)(q < 0.0 ? 0.0 : (q > 255.0 ? 255.0 : q));
}

size_t hw_telemetry_encode(const hw_telemetry_msg *m, uint8_t *buf, size_t cap) {
    size_t site_len = m->site ? strlen(m->site) : 0;
    size_t tail = m->kind == HW_TELEMETRY_KIND_ALARM ? HW_TELEMETRY_ALARM_TAIL_BYTES : 0;
    size_t n = HW_TELEMETRY_HEADER_BYTES + site_len + tail + m->n_classes;
    if ((m->kind != HW_TELEMETRY_KIND_PATCH && m->kind != HW_TELEMETRY_KIND_ALARM) || !valid_site(m->site, site_len)
        || m->n_classes > HW_TELEMETRY_MAX_CLASSES || m->t_ms > 999 || n > cap) {
        return 0;
    }
    uint8_t *p = buf;
    *p++ = HW_TELEMETRY_VERSION;
    *p++ = m->kind;
    *p++ = m->flags;
    *p++ = m->n_classes;
    p = put_u16(p, m->boot);
    p = put_u16(p, m->t_ms);
    p = put_u32(p, m->seq);
    p = put_u32(p, m->t_s);
    p = put_f32(p, m->score);
    *p++ = m->state;
    *p++ = (uint8_t)site_len;
    memcpy(p, m->site, site_len);
    p += site_len;
    if (tail) {
        p = put_f32(p, m->threshold);
        *p++ = m->alarm_class;
    }
    for (uint8_t i = 0; i < m->n_classes; i++) {
        *p++ = prob_byte(m->probs[i]);
    }
    return (size_t)(p - buf);
}

size_t hw_telemetry_topic(char *buf, size_t cap, const char *site, const char *device, uint8_t kind) {
    const char *suffix = kind == HW_TELEMETRY_KIND_PATCH ? "p" : (kind == HW_TELEMETRY_KIND_ALARM ? "a" : "b");
    size_t n = strlen(HW_TELEMETRY_TOPIC_PREFIX) + 1 + strlen(site) + 1 + strlen(device) + 2;
    if (n + 1 > cap) {
        return 0;
    }
    buf[0] = '\0';
    strcat(buf, HW_TELEMETRY_TOPIC_PREFIX);
    strcat(buf, "/");
    strcat(buf, site);
    strcat(buf, "/");
    strcat(buf, device);
    strcat(buf, "/");
    strcat(buf, suffix);
    return n;
}
