/* startup.c: vector table and reset code of the humwatch reference firmware (Cortex-M7, QEMU mps2-an500).
 * Reset: copy .data from flash, zero .bss, enable the FPU, run main(), then stop the emulator through semihosting
 * (SYS_EXIT) with main's status. Faults stop it with a run-time-error status. */
#include <stdint.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

/* Semihosting SYS_EXIT: 0x20026 = ADP_Stopped_ApplicationExit (status 0), 0x20023 = ADP_Stopped_RunTimeErrorUnknown. */
void hw_semihost_exit(int failed) {
    register uint32_t r0 __asm__("r0") = 0x18u;
    register uint32_t r1 __asm__("r1") = failed ? 0x20023u : 0x20026u;
    __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

void Reset_Handler(void) {
    uint32_t *src = &__etext, *dst = &__data_start__;
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0u;
    SCB_CPACR |= 0xFu << 20; /* CP10, CP11: full access to the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    hw_semihost_exit(main() != 0);
}

static void Fault_Handler(void) {
    hw_semihost_exit(1);
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__StackTop), /* initial stack pointer */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};
