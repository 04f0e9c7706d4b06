/* fw_model_main.c: the generated network alone on the target (kernel tests): reads in.i8 (n inputs of
 * HW_MODEL_INPUT_BYTES) through semihosting, invokes the model on each, writes out.i8, prints "done <n>". */
#include <stdio.h>
#include <string.h>

#include "hw_model.h"

extern void initialise_monitor_handles(void);

int main(void) {
    static int8_t buf[HW_MODEL_INPUT_BYTES];
    FILE *fi, *fo;
    long n = 0;
    initialise_monitor_handles();
    fi = fopen("in.i8", "rb");
    fo = fopen("out.i8", "wb");
    if (!fi || !fo) {
        printf("error: cannot open in.i8 / out.i8\n");
        return 1;
    }
    while (fread(buf, 1, HW_MODEL_INPUT_BYTES, fi) == HW_MODEL_INPUT_BYTES) {
        memcpy(hw_model_input(), buf, HW_MODEL_INPUT_BYTES);
        hw_model_invoke();
        fwrite(hw_model_output(), 1, HW_MODEL_OUTPUT_BYTES, fo);
        n++;
    }
    fclose(fi);
    fclose(fo);
    printf("done %ld\n", n);
    return 0;
}
