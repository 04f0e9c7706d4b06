/* Test harness for hw_frontend.c (not for devices).
 *
 *   hwref frontend SAMPLES.f32 OUT      float32 little-endian mono samples -> OUT.logmel.f32, OUT.x.f32, OUT.q.i8
 *                                       ([frames][HW_N_MELS] each); prints the frame count
 *   hwref score X.f32 OUTQ.i8           one patch: float x and int8 model output -> prints the score and whether it
 *                                       is over HW_SCORE_THRESHOLD
 *   hwref alarm S1 S2 ...               prints the alarm state after each score (0/1)
 *   hwref passes Q.i8 OUT               one patch's int8 input -> OUT.inputs.i8, the HW_FORWARD_PASSES model inputs
 *                                       (hw_pass_input); prints the pass count
 *   hwref assemble OUTS.i8 OUT          the HW_FORWARD_PASSES model outputs of one patch -> OUT.y.i8, the assembled
 *                                       output (hw_pass_collect)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hw_frontend.h"
#include "hw_harness_io.h"

static FILE *open_out(const char *prefix, const char *suffix) {
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s%s", prefix, suffix);
    f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    return f;
}

static int cmd_frontend(const char *in, const char *out) {
    static hw_frontend fe;
    long size, n, frames, i;
    float *samples = (float *)read_all(in, &size);
    FILE *f_lm = open_out(out, ".logmel.f32"), *f_x = open_out(out, ".x.f32"), *f_q = open_out(out, ".q.i8");
    n = size / (long)sizeof(float);
    frames = n < HW_WINDOW_LENGTH ? 0 : 1 + (n - HW_WINDOW_LENGTH) / HW_HOP_LENGTH;
    hw_frontend_init(&fe);
    for (i = 0; i < frames; i++) {
        float lm[HW_N_MELS], x[HW_N_MELS];
        int8_t q[HW_N_MELS];
        hw_frame_log_mel(&fe, samples + i * HW_HOP_LENGTH, lm);
        hw_normalise_quantise(lm, x, q);
        fwrite(lm, sizeof(float), HW_N_MELS, f_lm);
        fwrite(x, sizeof(float), HW_N_MELS, f_x);
        fwrite(q, 1, HW_N_MELS, f_q);
    }
    fclose(f_lm); fclose(f_x); fclose(f_q);
    free(samples);
    printf("%ld\n", frames);
    return 0;
}

static int cmd_score(const char *xpath, const char *qpath) {
    long xs, qs;
    float *x = (float *)read_all(xpath, &xs);
    int8_t *q = (int8_t *)read_all(qpath, &qs);
    float s;
    if (xs / (long)sizeof(float) != HW_PATCH_ELEMENTS || qs != HW_PATCH_ELEMENTS) {
        fprintf(stderr, "expected %d elements\n", HW_PATCH_ELEMENTS);
        return 2;
    }
    s = hw_score(x, q, HW_PATCH_ELEMENTS);
    printf("%.9g %d\n", (double)s, s > HW_SCORE_THRESHOLD);
    free(x); free(q);
    return 0;
}

static int cmd_alarm(int argc, char **argv) {
    hw_alarm a;
    int i;
    hw_alarm_init(&a);
    for (i = 0; i < argc; i++) printf("%d%s", hw_alarm_update(&a, (float)atof(argv[i])), i + 1 < argc ? " " : "\n");
    return 0;
}

static int cmd_passes(const char *qpath, const char *out) {
    long qs;
    int8_t *q = (int8_t *)read_all(qpath, &qs);
    static int8_t input[HW_PATCH_ELEMENTS];
    FILE *f = open_out(out, ".inputs.i8");
    int k;
    if (qs != HW_PATCH_ELEMENTS) {
        fprintf(stderr, "expected %d elements\n", HW_PATCH_ELEMENTS);
        return 2;
    }
    for (k = 0; k < HW_FORWARD_PASSES; k++) {
        hw_pass_input(q, input, k);
        fwrite(input, 1, HW_PATCH_ELEMENTS, f);
    }
    fclose(f);
    free(q);
    printf("%d\n", HW_FORWARD_PASSES);
    return 0;
}

static int cmd_assemble(const char *outs_path, const char *out) {
    long size;
    int8_t *outs = (int8_t *)read_all(outs_path, &size);
    static int8_t y[HW_PATCH_ELEMENTS];
    FILE *f;
    int k;
    if (size != (long)HW_FORWARD_PASSES * HW_PATCH_ELEMENTS) {
        fprintf(stderr, "expected %d x %d elements\n", HW_FORWARD_PASSES, HW_PATCH_ELEMENTS);
        return 2;
    }
    for (k = 0; k < HW_FORWARD_PASSES; k++) hw_pass_collect(outs + (long)k * HW_PATCH_ELEMENTS, y, k);
    f = open_out(out, ".y.i8");
    fwrite(y, 1, HW_PATCH_ELEMENTS, f);
    fclose(f);
    free(outs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "frontend") == 0) return cmd_frontend(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "score") == 0) return cmd_score(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "alarm") == 0) return cmd_alarm(argc - 2, argv + 2);
    if (argc == 4 && strcmp(argv[1], "passes") == 0) return cmd_passes(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "assemble") == 0) return cmd_assemble(argv[2], argv[3]);
    fprintf(stderr, "usage: hwref frontend SAMPLES.f32 OUT | score X.f32 OUTQ.i8 | alarm S1 S2 ... | passes Q.i8 OUT "
                    "| assemble OUTS.i8 OUT\n");
    return 2;
}
