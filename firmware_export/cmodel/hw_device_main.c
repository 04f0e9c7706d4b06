/* Host test harness for hw_device.c (not for devices, not copied into exports).
 *
 *   hwdevice AUDIO.s16 CHUNK    feeds int16 audio to hw_process() CHUNK samples at a time; prints one line per patch:
 *                               "<patch> <score> <over> <alarm>"
 */
#include <stdio.h>
#include <stdlib.h>

#include "hw_device.h"

void hw_profile_begin(int what) { (void)what; }
void hw_profile_end(int what) { (void)what; }

int main(int argc, char **argv) {
    static hw_device dev;
    static int16_t buf[HW_PATCH_HOP_SAMPLES];
    FILE *f;
    int chunk;
    size_t got;
    if (argc != 3 || (chunk = atoi(argv[2])) <= 0 || chunk > HW_PATCH_HOP_SAMPLES) {
        fprintf(stderr, "usage: hwdevice AUDIO.s16 CHUNK (1..%d)\n", HW_PATCH_HOP_SAMPLES);
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    hw_device_init(&dev);
    while ((got = fread(buf, sizeof(int16_t), (size_t)chunk, f)) > 0) {
        hw_result r;
        if (hw_process(&dev, buf, (int)got, &r)) printf("%ld %.9g %d %d\n", r.patch, (double)r.score, r.over, r.alarm);
    }
    fclose(f);
    return 0;
}
