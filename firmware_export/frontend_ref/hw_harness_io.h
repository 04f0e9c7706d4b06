/* hw_harness_io.h: file input shared by the test harnesses hw_frontend_main.c and hw_classifier_main.c (not for
 * devices, not copied into exports). */
#ifndef HW_HARNESS_IO_H
#define HW_HARNESS_IO_H

#include <stdio.h>
#include <stdlib.h>

/* The whole file at `path` in a malloc'ed buffer (its byte count in *size); exits with status 2 on failure. */
static void *read_all(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    void *buf;
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(*size > 0 ? (size_t)*size : 1u);
    if (!buf || fread(buf, 1, (size_t)*size, f) != (size_t)*size) { fprintf(stderr, "read %s failed\n", path); exit(2); }
    fclose(f);
    return buf;
}

#endif  /* HW_HARNESS_IO_H */
