/*
 * pool.c: sessions on pools, from C (run by tests/c_api.rs under ASan + UBSan).
 *
 *     pool MODEL.ple
 *
 * - ple_pool_new: a pooled session scores every batch from 0 to 600, with and without gate
 *   weights, bit-identically (memcmp) to a session without a pool;
 * - four threads, each with its own session on one shared pool, score at once (the pool serves
 *   one call, the others run on their own threads), and the pool is freed before its sessions;
 * - the caller's executor (ple_pool_new_executor: one pthread per task, the calling thread
 *   running task 0): bit-identical scores, also from four threads at once; `release` is called
 *   exactly once, after the last session using the pool is freed;
 * - an executor that runs no task: PLE_STATUS_EXECUTOR_FAILED;
 * - argument errors: NULL out pointers and run function, impossible thread counts;
 * - an idle pool uses no CPU: getrusage over 1 s of idleness after scoring, < 5% of one core.
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
#include <sys/resource.h>
#include <time.h>

#include "ple.h"
#include "testing.h"

#define MAX_BATCH 600

static const ple_model *model;
static size_t n_inputs, width, gate_width;
static ple_column columns[64];

/* score.c's deterministic inputs for MAX_BATCH samples, in `columns` (by position). */
static void make_inputs(void) {
    n_inputs = ple_model_input_count(model);
    width = ple_model_output_width(model);
    gate_width = ple_model_gate_width(model);
    for (size_t j = 0; j < n_inputs; j++) {
        size_t per = ple_model_input_values_per_sample(model, j), len = MAX_BATCH * per;
        columns[j].len = len;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_DENSE) {
            float *x = malloc(len * sizeof *x);
            for (size_t s = 0; s < MAX_BATCH; s++)
                for (size_t p = 0; p < per; p++)
                    x[s * per + p] = (float)((13 * s + 7 * j + 3 * p) % 17) / 16.0f - 0.5f;
            columns[j].floats = x;
        } else {
            size_t vocab = ple_model_input_vocab_size(model, j);
            int64_t *ids = malloc(len * sizeof *ids);
            for (size_t s = 0; s < MAX_BATCH; s++)
                for (size_t p = 0; p < per; p++)
                    ids[s * per + p] = (int64_t)((7 * s + 3 * j + 5 * p + 1) % vocab);
            columns[j].ids = ids;
        }
    }
}

/* Scores the first `batch` samples (column lengths cut to them). */
static ple_status score(ple_session *s, size_t batch, float *out, float *gates) {
    ple_column cut[64];
    for (size_t j = 0; j < n_inputs; j++) {
        cut[j] = columns[j];
        cut[j].len = columns[j].len / MAX_BATCH * batch;
    }
    return ple_session_run(s, batch, cut, n_inputs, out, batch * width, gates,
                           gates ? batch * gate_width : 0);
}

static float *expected, *expected_gates;

/* Every batch from 0 to MAX_BATCH on `s` must equal the single-threaded scores, bit for bit. */
static void check_bit_identical(ple_session *s, const char *what) {
    float *out = malloc(MAX_BATCH * width * sizeof *out);
    float *gates = malloc(MAX_BATCH * gate_width * sizeof *gates + 1);
    int bad = 0;
    for (size_t batch = 0; batch <= MAX_BATCH; batch += batch < 70 ? 1 : 37) {
        int with_gates = batch % 2 == 0;
        STATUS(score(s, batch, out, with_gates ? gates : NULL), PLE_STATUS_OK);
        if (memcmp(out, expected, batch * width * sizeof *out) != 0 ||
            (with_gates && memcmp(gates, expected_gates, batch * gate_width * sizeof *gates))) {
            if (!bad++) fprintf(stderr, "%s: batch %zu differs from one thread\n", what, batch);
        }
    }
    CHECK(bad == 0);
    free(out);
    free(gates);
}

/* ---- the caller's executor: one pthread per task, task 0 on the calling thread ---------- */

struct executor {
    atomic_int calls, released;
};

struct job {
    ple_task_fn task;
    void *task_ctx;
    size_t index;
};

static void *run_job(void *p) {
    struct job *j = p;
    j->task(j->task_ctx, j->index);
    return NULL;
}

static void pthread_run(void *executor_ctx, ple_task_fn task, void *task_ctx, size_t n) {
    struct executor *e = executor_ctx;
    atomic_fetch_add(&e->calls, 1);
    pthread_t threads[16];
    struct job jobs[16];
    CHECK(n <= 16);
    for (size_t i = 1; i < n && i < 16; i++) {
        jobs[i] = (struct job){task, task_ctx, i};
        CHECK(pthread_create(&threads[i], NULL, run_job, &jobs[i]) == 0);
    }
    if (n > 0) task(task_ctx, 0);
    for (size_t i = 1; i < n && i < 16; i++) pthread_join(threads[i], NULL);
}

static void release_executor(void *executor_ctx) {
    struct executor *e = executor_ctx;
    atomic_fetch_add(&e->released, 1);
}

/* Runs nothing. */
static void lazy_run(void *executor_ctx, ple_task_fn task, void *task_ctx, size_t n) {
    (void)executor_ctx, (void)task, (void)task_ctx, (void)n;
}

/* ---- several threads, one pool -------------------------------------------------------------- */

struct worker {
    const ple_pool *pool;
    int mismatches;
    ple_status status;
};

static void *score_many(void *p) {
    struct worker *w = p;
    ple_session *s = NULL;
    w->status = ple_session_new_with_pool(model, MAX_BATCH, w->pool, &s);
    if (w->status != PLE_STATUS_OK) return NULL;
    float *out = malloc(MAX_BATCH * width * sizeof *out);
    for (size_t i = 0; i < 40; i++) {
        size_t batch = 100 + (i * 131) % (MAX_BATCH - 100);
        ple_status st = score(s, batch, out, NULL);
        if (st != PLE_STATUS_OK) w->status = st;
        if (memcmp(out, expected, batch * width * sizeof *out) != 0) w->mismatches++;
    }
    free(out);
    ple_session_free(s);
    return NULL;
}

static void concurrently(const ple_pool *pool, const char *what) {
    struct worker workers[4];
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        workers[t] = (struct worker){pool, 0, PLE_STATUS_OK};
        CHECK(pthread_create(&threads[t], NULL, score_many, &workers[t]) == 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].status == PLE_STATUS_OK);
        CHECK(workers[t].mismatches == 0);
        if (workers[t].mismatches)
            fprintf(stderr, "%s: thread %d: %d mismatches\n", what, t, workers[t].mismatches);
    }
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec +
           (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    (void)read_file, (void)write_file; /* testing.h's file helpers: not needed here */
    if (argc != 2) {
        fprintf(stderr, "usage: pool MODEL.ple\n");
        return 2;
    }
    STATUS(ple_model_open(argv[1], 0, &model), PLE_STATUS_OK);
    if (!model) return 1;
    make_inputs();

    /* The single-threaded scores. */
    ple_session *single = NULL;
    STATUS(ple_session_new(model, MAX_BATCH, &single), PLE_STATUS_OK);
    CHECK(ple_session_threads(single) == 1);
    expected = malloc(MAX_BATCH * width * sizeof *expected);
    expected_gates = malloc(MAX_BATCH * gate_width * sizeof *expected_gates + 1);
    STATUS(score(single, MAX_BATCH, expected, expected_gates), PLE_STATUS_OK);
    ple_session_free(single);

    /* The library's pool. */
    const ple_pool *pool = NULL;
    STATUS(ple_pool_new(3, &pool), PLE_STATUS_OK);
    CHECK(ple_pool_threads(pool) == 3);
    ple_session *s = NULL;
    STATUS(ple_session_new_with_pool(model, MAX_BATCH, pool, &s), PLE_STATUS_OK);
    CHECK(ple_session_threads(s) == 3);
    check_bit_identical(s, "pool of 3, default threshold");
    /* Split every batch that can be (over 16 samples), not only those over the threshold. */
    STATUS(ple_session_set_min_parallel_batch(s, 0), PLE_STATUS_OK);
    check_bit_identical(s, "pool of 3");
    STATUS(ple_pool_set_spin_us(pool, 0), PLE_STATUS_OK);
    check_bit_identical(s, "pool of 3, no spin");
    STATUS(ple_pool_set_spin_us(pool, 2000), PLE_STATUS_OK);
    check_bit_identical(s, "pool of 3, 2 ms spin");
    STATUS(ple_pool_set_spin_us(pool, 50), PLE_STATUS_OK);
    /* A small max_batch uses fewer threads; NULL pool is a session without one. */
    ple_session *small = NULL;
    STATUS(ple_session_new_with_pool(model, 20, pool, &small), PLE_STATUS_OK);
    CHECK(ple_session_threads(small) == 2);
    ple_session_free(small);
    STATUS(ple_session_new_with_pool(model, 20, NULL, &small), PLE_STATUS_OK);
    CHECK(ple_session_threads(small) == 1);
    ple_session_free(small);
    concurrently(pool, "pool of 3");
    /* A second reference, then every handle freed before the session: the session still works. */
    const ple_pool *again = ple_pool_clone(pool);
    CHECK(again == pool);
    ple_pool_free(pool);
    ple_pool_free(again);
    check_bit_identical(s, "pool freed before its session");
    ple_session_free(s);

    /* The caller's executor. */
    struct executor exec = {0};
    STATUS(ple_pool_new_executor(4, pthread_run, &exec, release_executor, &pool), PLE_STATUS_OK);
    CHECK(ple_pool_threads(pool) == 4);
    STATUS(ple_pool_set_spin_us(pool, 10), PLE_STATUS_OK); /* no effect, no error */
    STATUS(ple_session_new_with_pool(model, MAX_BATCH, pool, &s), PLE_STATUS_OK);
    STATUS(ple_session_set_min_parallel_batch(s, 1), PLE_STATUS_OK);
    check_bit_identical(s, "executor");
    CHECK(atomic_load(&exec.calls) > 0);
    concurrently(pool, "executor");
    ple_pool_free(pool);
    CHECK(atomic_load(&exec.released) == 0); /* the session still holds the pool */
    check_bit_identical(s, "executor, pool handle freed");
    ple_session_free(s);
    CHECK(atomic_load(&exec.released) == 1);

    /* An executor that runs nothing: the call fails, and says why. */
    STATUS(ple_pool_new_executor(2, lazy_run, NULL, NULL, &pool), PLE_STATUS_OK);
    STATUS(ple_session_new_with_pool(model, MAX_BATCH, pool, &s), PLE_STATUS_OK);
    ple_pool_free(pool);
    float *out = malloc(MAX_BATCH * width * sizeof *out);
    STATUS(score(s, 4, out, NULL), PLE_STATUS_OK); /* small batches never reach it */
    STATUS(ple_session_set_min_parallel_batch(s, 0), PLE_STATUS_OK);
    STATUS(score(s, MAX_BATCH, out, NULL), PLE_STATUS_EXECUTOR_FAILED);
    MESSAGE_HAS("returned before every task had run");
    CHECK(strstr(ple_session_last_error(s), "executor") != NULL);
    STATUS(ple_session_set_min_parallel_batch(NULL, 0), PLE_STATUS_NULL_ARGUMENT);
    ple_session_free(s);

    /* Argument errors. */
    STATUS(ple_pool_new(2, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_pool_new(1025, &pool), PLE_STATUS_INVALID_ARGUMENT);
    MESSAGE_HAS("1024");
    STATUS(ple_pool_new_executor(2, NULL, NULL, NULL, &pool), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_pool_new_executor(2, pthread_run, &exec, NULL, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_pool_new_executor(0, pthread_run, &exec, release_executor, &pool),
           PLE_STATUS_INVALID_ARGUMENT);
    CHECK(atomic_load(&exec.released) == 1); /* not called on failure */
    STATUS(ple_pool_set_spin_us(NULL, 0), PLE_STATUS_NULL_ARGUMENT);
    CHECK(ple_pool_threads(NULL) == 0);
    CHECK(ple_pool_clone(NULL) == NULL);
    CHECK(ple_session_threads(NULL) == 0);
    ple_pool_free(NULL);
    STATUS(ple_pool_new(0, &pool), PLE_STATUS_OK); /* one thread per CPU */
    CHECK(ple_pool_threads(pool) >= 1);
    ple_pool_free(pool);

    /* An idle pool costs nothing: score, then measure the process's CPU over 1 s of sleep. */
    STATUS(ple_pool_new(2, &pool), PLE_STATUS_OK);
    STATUS(ple_session_new_with_pool(model, MAX_BATCH, pool, &s), PLE_STATUS_OK);
    for (int i = 0; i < 20; i++) STATUS(score(s, MAX_BATCH, out, NULL), PLE_STATUS_OK);
    struct timespec settle = {0, 100 * 1000 * 1000}, idle = {1, 0};
    nanosleep(&settle, NULL);
    double cpu0 = cpu_seconds();
    nanosleep(&idle, NULL);
    double used = cpu_seconds() - cpu0;
    printf("idle pool: %.3f ms of CPU in 1 s\n", used * 1e3);
    CHECK(used < 0.05);
    ple_session_free(s);
    ple_pool_free(pool);

    free(out);
    free(expected);
    free(expected_gates);
    for (size_t j = 0; j < n_inputs; j++) {
        free((void *)columns[j].floats);
        free((void *)columns[j].ids);
    }
    ple_model_free(model);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
