/* fw_main.c: the reference firmware's test harness under QEMU (semihosting I/O through newlib's rdimon).
 *
 * Reads audio.s16 (int16 PCM at HW_SAMPLE_RATE) from the emulator's working directory, feeds it to hw_process() one
 * hop at a time, and prints one line per patch:
 *     patch <k> score <float> over <0|1> alarm <0|1> frontend <ticks> network <ticks> score_rule <ticks> stack <bytes>
 * where ticks are of the CMSDK APB timer 0 (25 MHz); with `-icount shift=0` the emulator advances virtual time by 1 ns
 * per executed instruction, so ticks x (instructions per tick, measured by the calibration loop below) count
 * instructions (not cycles). stack is the deepest stack hw_process() used (painted before each call, checked after).
 * Writes io.bin: per patch the float patch x, then per network pass the int8 input and output, for the host to
 * compare with TFLite Micro. Exits 0 when the audio is consumed.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hw_device.h"

#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)
#define PAINT 0xC0FFEE11u

extern void initialise_monitor_handles(void);
extern uint32_t __StackLimit;

static hw_device dev;
static uint32_t t_begin, ticks[3], t_step, step_ticks[HW_MODEL_STEPS];

/* per kernel call of the network (model.c calls this after each step; the first step starts at network begin) */
void hw_fw_step_done(int k) {
    uint32_t t = TIMER0_VALUE;
    step_ticks[k] += t_step - t;
    t_step = TIMER0_VALUE;
}
static FILE *io;

static uint32_t now(void) {
    return TIMER0_VALUE; /* counts down */
}

void hw_profile_begin(int what) {
    if (what == HW_PROFILE_NETWORK && io) fwrite(hw_model_input(), 1, HW_MODEL_INPUT_BYTES, io);
    t_begin = now();
    t_step = t_begin;
}

void hw_profile_end(int what) {
    ticks[what] += t_begin - now();
    if (what == HW_PROFILE_NETWORK && io) fwrite(hw_model_output(), 1, HW_MODEL_OUTPUT_BYTES, io);
}

/* 2 instructions per iteration */
static __attribute__((noinline)) void spin(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

static __attribute__((noinline)) uint32_t *stack_pointer(void) {
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static __attribute__((noinline)) void paint_stack(void) {
    uint32_t *p = &__StackLimit, *end = stack_pointer() - 16;
    while (p < end) *p++ = PAINT;
}

static uint32_t stack_used(const uint32_t *top) {
    const uint32_t *p = &__StackLimit;
    while (p < top && *p == PAINT) p++;
    return (uint32_t)((const char *)top - (const char *)p);
}

int main(void) {
    static int16_t pcm[HW_HOP_LENGTH];
    uint32_t t0, calib, stack_peak = 0;
    const uint32_t calib_iterations = 1000000u;
    FILE *audio;
    size_t got;
    initialise_monitor_handles();
    TIMER0_CTRL = 0;
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1;
    t0 = now();
    spin(calib_iterations);
    calib = t0 - now();
    printf("calibration instructions %lu ticks %lu\n", (unsigned long)(2u * calib_iterations), (unsigned long)calib);
    audio = fopen("audio.s16", "rb");
    io = fopen("io.bin", "wb");
    if (!audio || !io) {
        printf("error: cannot open audio.s16 / io.bin\n");
        return 1;
    }
    hw_device_init(&dev);
    printf("device bytes %lu scratch %d\n", (unsigned long)sizeof(dev), HW_MODEL_SCRATCH_BYTES);
    while ((got = fread(pcm, sizeof(int16_t), HW_HOP_LENGTH, audio)) > 0) {
        hw_result r;
        uint32_t *top, used;
        int done;
        top = stack_pointer();
        paint_stack();
        done = hw_process(&dev, pcm, (int)got, &r);
        used = stack_used(top);
        if (used > stack_peak) stack_peak = used;
        if (done) {
            fwrite(dev.x, sizeof(float), HW_PATCH_ELEMENTS, io);
            printf("patch %ld score %.9g over %d alarm %d frontend %lu network %lu score_rule %lu stack %lu\n", r.patch,
                   (double)r.score, r.over, r.alarm, (unsigned long)ticks[0], (unsigned long)ticks[1],
                   (unsigned long)ticks[2], (unsigned long)stack_peak);
            memset(ticks, 0, sizeof ticks);
        }
    }
    fclose(audio);
    fclose(io);
    for (got = 0; got < HW_MODEL_STEPS; got++)
        printf("step %lu ticks %lu\n", (unsigned long)got, (unsigned long)step_ticks[got]);
    printf("done stack_peak %lu\n", (unsigned long)stack_peak);
    return 0;
}
