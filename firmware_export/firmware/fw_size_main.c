/* fw_size_main.c: the device image whose flash and RAM the export reports: startup + hw_process (front end, network,
 * score, alarm rule) + constants, fed a synthetic tone (no I/O library). Runs two patches and exits. */
#include <stdint.h>

#include "hw_device.h"

static hw_device dev;
volatile float hw_last_score;
volatile int hw_last_alarm;

void hw_profile_begin(int what) { (void)what; }
void hw_profile_end(int what) { (void)what; }

int main(void) {
    int16_t pcm[HW_HOP_LENGTH];
    uint32_t phase = 0;
    long hops;
    hw_device_init(&dev);
    for (hops = 0; hops < 2L * HW_PATCH_HOP_SAMPLES / HW_HOP_LENGTH + 4; hops++) {
        hw_result r;
        int i;
        for (i = 0; i < HW_HOP_LENGTH; i++, phase += 0x0A3D70A4u) /* a 1 kHz-ish sawtooth at low level */
            pcm[i] = (int16_t)((int32_t)(phase >> 20) - 2048);
        if (hw_process(&dev, pcm, HW_HOP_LENGTH, &r)) {
            hw_last_score = r.score;
            hw_last_alarm = r.alarm;
        }
    }
    return 0;
}
