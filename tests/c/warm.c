/*
 * warm.c: warm-up, locking and residency from C (run by tests/c_api.rs under ASan + UBSan).
 *
 *     warm MODEL.ple            (a model with megabytes of tables)
 *     warm MODEL.ple refused    (run with RLIMIT_MEMLOCK lowered below the model's size)
 *
 * - PLE_OPEN_WARM: every byte resident at once (ple_model_residency); PLE_OPEN_LOCK: locked
 *   (ple_model_is_locked), or, in `refused` mode, PLE_STATUS_SYSTEM with a message naming
 *   RLIMIT_MEMLOCK; unknown flag bits refused;
 * - ple_model_warm: progress from 0 to the file size, increasing; a callback returning nonzero
 *   and a cancel flag set beforehand stop it (PLE_STATUS_CANCELLED, the message says which);
 * - a thread warms the model over and over while this one scores with it: every score is
 *   bit-identical (memcmp) to the score before;
 * - NULL arguments.
 *
 * Prints "N checks, M failures" and exits 1 on any failure.
 */
#define _XOPEN_SOURCE 700

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ple.h"
#include "testing.h"

#define BATCH 64

static const ple_model *model;
static size_t n_inputs, width;
static ple_column columns[64];

static void make_inputs(void) {
    n_inputs = ple_model_input_count(model);
    width = ple_model_output_width(model);
    for (size_t j = 0; j < n_inputs; j++) {
        size_t per = ple_model_input_values_per_sample(model, j), len = BATCH * per;
        columns[j].len = len;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_DENSE) {
            float *x = malloc(len * sizeof *x);
            for (size_t i = 0; i < len; i++) x[i] = (float)((13 * i + 7 * j) % 17) / 16.0f - 0.5f;
            columns[j].floats = x;
        } else {
            size_t vocab = ple_model_input_vocab_size(model, j);
            int64_t *ids = malloc(len * sizeof *ids);
            /* Spread over the whole table, so the rows sit on many pages. */
            for (size_t i = 0; i < len; i++) ids[i] = (int64_t)((7919 * i + 104729 * j) % vocab);
            columns[j].ids = ids;
        }
    }
}

static void free_inputs(void) {
    for (size_t j = 0; j < n_inputs; j++) {
        free((void *)columns[j].floats);
        free((void *)columns[j].ids);
    }
}

static ple_status score(ple_session *s, float *out) {
    return ple_session_run(s, BATCH, columns, n_inputs, out, BATCH * width, NULL, 0);
}

struct progress {
    int calls;
    uint64_t last_done, total;
    int increasing;
    int stop_at; /* return nonzero on this call (0: never) */
};

static int on_progress(void *ctx, uint64_t done, uint64_t total) {
    struct progress *p = ctx;
    p->calls++;
    if (p->calls > 1 && done <= p->last_done) p->increasing = 0;
    p->last_done = done;
    p->total = total;
    return p->stop_at && p->calls == p->stop_at;
}

static atomic_int warming_done, warming_failures;

static void *warm_repeatedly(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++)
        if (ple_model_warm(model, NULL, NULL, NULL) != PLE_STATUS_OK)
            atomic_fetch_add(&warming_failures, 1);
    atomic_store(&warming_done, 1);
    return NULL;
}

static void open_flags(const char *path, int refused) {
    const ple_model *m = NULL;
    STATUS(ple_model_open(path, 32, &m), PLE_STATUS_INVALID_ARGUMENT);
    MESSAGE_HAS("unknown flag bits 0x20");

    STATUS(ple_model_open(path, PLE_OPEN_WARM, &m), PLE_STATUS_OK);
    ple_residency r;
    STATUS(ple_model_residency(m, &r), PLE_STATUS_OK);
    CHECK(r.total_bytes > 4u << 20 && r.resident_bytes == r.total_bytes);
    CHECK(r.table_bytes > 0 && r.table_resident_bytes == r.table_bytes);
    CHECK(!ple_model_is_locked(m));
    ple_model_free(m);

    STATUS(ple_model_open(path, PLE_OPEN_READ_INTO_MEMORY | PLE_OPEN_TABLE_READAHEAD, &m),
           PLE_STATUS_OK);
    ple_model_free(m);

    for (int into_memory = 0; into_memory < 2; into_memory++) {
        uint32_t flags = PLE_OPEN_LOCK | (into_memory ? PLE_OPEN_READ_INTO_MEMORY : 0);
        m = NULL;
        if (refused) {
            STATUS(ple_model_open(path, flags, &m), PLE_STATUS_SYSTEM);
            MESSAGE_HAS("RLIMIT_MEMLOCK is 65536 bytes");
            CHECK(m == NULL);
            printf("lock refused: %s\n", ple_last_error());
        } else {
            STATUS(ple_model_open(path, flags, &m), PLE_STATUS_OK);
            CHECK(ple_model_is_locked(m));
            STATUS(ple_model_residency(m, &r), PLE_STATUS_OK);
            CHECK(r.resident_bytes == r.total_bytes);
            ple_model_free(m);
        }
    }
}

static void warm_calls(void) {
    struct progress p = {0, 0, 0, 1, 0};
    STATUS(ple_model_warm(model, on_progress, &p, NULL), PLE_STATUS_OK);
    CHECK(p.calls >= 2 && p.increasing);
    CHECK(p.last_done == p.total);
    ple_residency r;
    STATUS(ple_model_residency(model, &r), PLE_STATUS_OK);
    CHECK(p.total == r.total_bytes && r.resident_bytes == r.total_bytes);

    struct progress stop = {0, 0, 0, 1, 2};
    STATUS(ple_model_warm(model, on_progress, &stop, NULL), PLE_STATUS_CANCELLED);
    MESSAGE_HAS("the progress callback returned nonzero");
    CHECK(stop.calls == 2);

    int cancel = 1;
    struct progress none = {0, 0, 0, 1, 0};
    STATUS(ple_model_warm(model, on_progress, &none, &cancel), PLE_STATUS_CANCELLED);
    MESSAGE_HAS("its cancel flag was set");
    CHECK(none.calls == 0);
    cancel = 0;
    STATUS(ple_model_warm(model, NULL, NULL, &cancel), PLE_STATUS_OK);

    STATUS(ple_model_warm(NULL, NULL, NULL, NULL), PLE_STATUS_NULL_ARGUMENT);
    MESSAGE_HAS("ple_model_warm: model is NULL");
    STATUS(ple_model_residency(model, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_residency(NULL, &r), PLE_STATUS_NULL_ARGUMENT);
    CHECK(!ple_model_is_locked(NULL));
}

static void warm_while_scoring(void) {
    ple_session *s = NULL;
    STATUS(ple_session_new(model, BATCH, &s), PLE_STATUS_OK);
    float *expected = malloc(BATCH * width * sizeof(float));
    float *got = malloc(BATCH * width * sizeof(float));
    STATUS(score(s, expected), PLE_STATUS_OK);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, warm_repeatedly, NULL) == 0);
    int calls = 0, same = 1;
    while (!atomic_load(&warming_done) || calls < 20) {
        if (score(s, got) != PLE_STATUS_OK || memcmp(got, expected, BATCH * width * sizeof(float)))
            same = 0;
        calls++;
    }
    pthread_join(t, NULL);
    CHECK(same);
    CHECK(atomic_load(&warming_failures) == 0);
    printf("scored %d batches while warming\n", calls);
    free(expected);
    free(got);
    ple_session_free(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: warm MODEL.ple [refused]\n");
        return 2;
    }
    (void)read_file, (void)write_file; /* testing.h's file helpers: not needed here */
    int refused = argc > 2 && !strcmp(argv[2], "refused");
    open_flags(argv[1], refused);
    if (!refused) {
        STATUS(ple_model_open(argv[1], 0, &model), PLE_STATUS_OK);
        make_inputs();
        warm_calls();
        warm_while_scoring();
        free_inputs();
        ple_model_free(model);
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
