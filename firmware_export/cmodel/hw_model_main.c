/* Host test harness for a generated model.c (not for devices, not copied into exports).
 *
 *   hwmodel IN.i8 OUT.i8    IN holds n inputs of the model's input bytes each; writes the n outputs to OUT, prints n
 *
 * Built for one model prefix (check.py passes HWM_HEADER, HWM_INPUT_BYTES, ... for e.g. hw_model or hw_clf_model).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HWM_HEADER
#define HWM_HEADER "hw_model.h"
#define HWM_INPUT_BYTES HW_MODEL_INPUT_BYTES
#define HWM_OUTPUT_BYTES HW_MODEL_OUTPUT_BYTES
#define HWM_INPUT hw_model_input
#define HWM_OUTPUT hw_model_output
#define HWM_INVOKE hw_model_invoke
#endif

#include HWM_HEADER

int main(int argc, char **argv) {
    static int8_t in[HWM_INPUT_BYTES];
    FILE *fi, *fo;
    long n = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: hwmodel IN.i8 OUT.i8\n");
        return 2;
    }
    fi = fopen(argv[1], "rb");
    fo = fopen(argv[2], "wb");
    if (!fi || !fo) {
        perror("open");
        return 2;
    }
    while (fread(in, 1, HWM_INPUT_BYTES, fi) == HWM_INPUT_BYTES) {
        memcpy(HWM_INPUT(), in, HWM_INPUT_BYTES);
        HWM_INVOKE();
        fwrite(HWM_OUTPUT(), 1, HWM_OUTPUT_BYTES, fo);
        n++;
    }
    fclose(fi);
    fclose(fo);
    printf("%ld\n", n);
    return 0;
}
