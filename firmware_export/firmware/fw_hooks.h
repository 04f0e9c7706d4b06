/* fw_hooks.h: included into every source of the test image (-include): the per-step hook of the generated model. */
#ifndef HW_FW_HOOKS_H
#define HW_FW_HOOKS_H
void hw_fw_step_done(int k);
#endif
