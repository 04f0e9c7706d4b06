/* Test harness for hw_classifier.c (not for devices).
 *
 *   hwclf quantise LOGMEL.f32 OUT.i8   raw log-mel values (float32) -> int8 input codes; prints the count
 *   hwclf decide OUTQ.i8               one patch's int8 output [HW_CLF_N_CLASSES] -> prints one line per class:
 *                                      name logit probability fired alarm
 *   hwclf alarm F1 F2 ...              per patch a string of HW_CLF_N_CLASSES 0/1 decisions ("0101") -> prints the
 *                                      active alarm classes after each patch (a 0/1 string)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hw_classifier.h"
#include "hw_harness_io.h"

int main(int argc, char **argv) {
    long size, i, n;
    if (argc == 4 && strcmp(argv[1], "quantise") == 0) {
        float *lm = (float *)read_all(argv[2], &size);
        FILE *f = fopen(argv[3], "wb");
        n = size / (long)sizeof(float);
        if (!f) { perror(argv[3]); return 2; }
        for (i = 0; i < n; i++) {
            int8_t q = hw_clf_quantise(lm[i]);
            fwrite(&q, 1, 1, f);
        }
        fclose(f);
        free(lm);
        printf("%ld\n", n);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "decide") == 0) {
        int8_t *q = (int8_t *)read_all(argv[2], &size);
        float z[HW_CLF_N_CLASSES], p[HW_CLF_N_CLASSES];
        uint8_t fired[HW_CLF_N_CLASSES];
        int c;
        if (size != HW_CLF_N_CLASSES) { fprintf(stderr, "expected %d bytes\n", HW_CLF_N_CLASSES); return 2; }
        hw_clf_probabilities(q, z, p);
        hw_clf_decide(p, fired);
        for (c = 0; c < HW_CLF_N_CLASSES; c++)
            printf("%s %.9g %.9g %d %d\n", hw_clf_class_names[c], z[c], p[c], fired[c], hw_clf_alarm[c]);
        free(q);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "alarm") == 0) {
        static hw_clf_alarm_state st;
        int k, c;
        hw_clf_alarm_init(&st);
        for (k = 2; k < argc; k++) {
            uint8_t fired[HW_CLF_N_CLASSES], active[HW_CLF_N_CLASSES];
            if ((int)strlen(argv[k]) != HW_CLF_N_CLASSES) { fprintf(stderr, "bad pattern %s\n", argv[k]); return 2; }
            for (c = 0; c < HW_CLF_N_CLASSES; c++) fired[c] = argv[k][c] == '1' ? 1u : 0u;
            hw_clf_alarm_update(&st, fired, active);
            for (c = 0; c < HW_CLF_N_CLASSES; c++) putchar(active[c] ? '1' : '0');
            putchar('\n');
        }
        return 0;
    }
    fprintf(stderr, "usage: hwclf quantise LOGMEL.f32 OUT.i8 | hwclf decide OUTQ.i8 | hwclf alarm F1 F2 ...\n");
    return 2;
}
