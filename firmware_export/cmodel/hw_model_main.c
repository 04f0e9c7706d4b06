/* Host test harness for a generated model.c (not for devices, not copied into exports).
 *
 *   hwmodel IN.i8 OUT.i8    IN holds n inputs of HW_MODEL_INPUT_BYTES each; writes the n outputs to OUT and prints n
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hw_model.h"

int main(int argc, char **argv) {
    static int8_t in[HW_MODEL_INPUT_BYTES];
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
    while (fread(in, 1, HW_MODEL_INPUT_BYTES, fi) == HW_MODEL_INPUT_BYTES) {
        memcpy(hw_model_input(), in, HW_MODEL_INPUT_BYTES);
        hw_model_invoke();
        fwrite(hw_model_output(), 1, HW_MODEL_OUTPUT_BYTES, fo);
        n++;
    }
    fclose(fi);
    fclose(fo);
    printf("%ld\n", n);
    return 0;
}
