/*
 * testing.h: what the C tests share: check macros and file helpers. Each test program includes it
 * once (its functions are static).
 */
#ifndef PLE_TESTS_TESTING_H
#define PLE_TESTS_TESTING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ple.h"

static int checks = 0, failures = 0;
static int seen[64];

#define CHECK(cond)                                                                     \
    do {                                                                                \
        checks++;                                                                       \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

/* `call` must return `want`; records the status as walked. */
#define STATUS(call, want)                                                                   \
    do {                                                                                     \
        ple_status st_ = (call);                                                             \
        checks++;                                                                            \
        if (st_ != (want)) {                                                                 \
            fprintf(stderr, "%s:%d: %s returned %d (%s; %s), expected %s\n", __FILE__,       \
                    __LINE__, #call, (int)st_, ple_status_str(st_), ple_last_error(), #want); \
            failures++;                                                                      \
        } else if ((int)(want) >= 0 && (int)(want) < 64) {                                   \
            seen[(int)(want)] = 1;                                                           \
        }                                                                                    \
    } while (0)

/* The thread's last message must contain `needle`. */
#define MESSAGE_HAS(needle)                                                                  \
    do {                                                                                     \
        checks++;                                                                            \
        if (!strstr(ple_last_error(), (needle))) {                                           \
            fprintf(stderr, "%s:%d: last error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,   \
                    ple_last_error(), (needle));                                             \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int write_file(const char *path, const unsigned char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len;
}

#endif /* PLE_TESTS_TESTING_H */
