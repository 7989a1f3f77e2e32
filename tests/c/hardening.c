/*
 * hardening.c: what a production server can meet, from C (run by tests/c_api.rs under ASan +
 * UBSan). docs/ROBUSTNESS.md describes each behaviour.
 *
 *     hardening QUICKSTART.ple TMP_DIR
 *
 * - Paths that are not regular files (devices, a FIFO, a directory) are refused at once, in every
 *   open mode, without reading them (a FIFO used to block forever, /dev/zero to read until memory
 *   ran out).
 * - A 1 GiB file that is not a model, opened with PLE_OPEN_READ_INTO_MEMORY, is refused quickly
 *   and with bounded memory; so are a model with 1 GiB appended and a header claiming 1 GiB whose
 *   metadata checksum fails (the data are never read). The 1 GiB files are sparse: no disk used.
 * - A model file overwritten in place: ple_model_file_changed notices; ple_model_verify_data
 *   notices that a mapped model's bytes changed and that its file was truncated, while a model
 *   read into memory keeps its own copy and its scores.
 * - One session used by two threads at once (a contract violation that is easy to make): the
 *   call that finds the session busy fails with PLE_STATUS_SESSION_BUSY and writes nothing, and
 *   every call that succeeds gives exactly the single-threaded scores.
 *
 * An alarm ends the program if any call blocks. Prints "N checks, M failures" and exits 1 on any.
 */
#define _XOPEN_SOURCE 700

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ple.h"
#include "testing.h"

#define GIB (1024L * 1024L * 1024L)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Peak resident memory of this process so far, in MiB. */
static long peak_rss_mib(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024;
}

/* Writes `data` to `path`, then extends the file (sparse, no disk used) to `size` bytes. */
static int write_sparse(const char *path, const unsigned char *data, size_t len, off_t size) {
    return write_file(path, data, len) && truncate(path, size) == 0;
}

static uint64_t u64_at(const unsigned char *b, size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[at + (size_t)i];
    return v;
}

static void put_u64(unsigned char *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) b[at + (size_t)i] = (unsigned char)(v >> (8 * i));
}

/* Opening `path` fails with `want` and a message containing `needle`, fast, in every mode. */
static void refused(const char *path, ple_status want, const char *needle) {
    const uint32_t modes[] = {0, PLE_OPEN_READ_INTO_MEMORY, PLE_OPEN_VERIFY_DATA,
                              PLE_OPEN_READ_INTO_MEMORY | PLE_OPEN_VERIFY_DATA};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        const ple_model *m = NULL;
        double t0 = now();
        STATUS(ple_model_open(path, modes[i], &m), want);
        double took = now() - t0;
        CHECK(m == NULL);
        CHECK(took < 2.0);
        if (needle && !strstr(ple_last_error(), needle)) {
            fprintf(stderr, "%s (flags %u): \"%s\" lacks \"%s\"\n", path, modes[i],
                    ple_last_error(), needle);
            failures++;
        }
        ple_model_free(m);
    }
}

static void special_files(const char *dir) {
    refused("/dev/zero", PLE_STATUS_IO, "a character device, not a regular file");
    refused("/dev/urandom", PLE_STATUS_IO, "a character device, not a regular file");
    refused("/dev/null", PLE_STATUS_IO, "a character device, not a regular file");
    refused(dir, PLE_STATUS_IO, "a directory, not a regular file");

    char fifo[4096];
    snprintf(fifo, sizeof fifo, "%s/model.fifo", dir);
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    /* Opening a FIFO for reading blocks until a writer appears: the library must not open it. */
    refused(fifo, PLE_STATUS_IO, "a FIFO (named pipe), not a regular file");
    unlink(fifo);

    /* A procfs file: regular, reported as 0 bytes long, yet readable. At most 64 bytes are read. */
    refused("/proc/self/status", PLE_STATUS_NOT_PLE, "not a .ple file");
}

/* Opening `path` with read-into-memory fails with `want`, quickly and without reading the 1 GiB. */
static void refused_cheaply(const char *path, ple_status want, const char *needle) {
    long before = peak_rss_mib();
    const ple_model *m = NULL;
    double t0 = now();
    STATUS(ple_model_open(path, PLE_OPEN_READ_INTO_MEMORY, &m), want);
    double took = now() - t0;
    long grew = peak_rss_mib() - before;
    printf("%s: refused in %.3f ms, peak memory +%ld MiB (%s)\n", strrchr(path, '/') + 1,
           took * 1e3, grew, ple_last_error());
    CHECK(m == NULL);
    CHECK(took < 2.0);
    CHECK(grew < 64);
    CHECK(strstr(ple_last_error(), needle) != NULL);
    /* Mapped, the same answer. */
    STATUS(ple_model_open(path, 0, &m), want);
    CHECK(m == NULL);
}

static void large_files(const char *quickstart, const char *dir) {
    char path[4096];
    size_t len = 0;
    unsigned char *orig = read_file(quickstart, &len);
    CHECK(orig != NULL);
    if (!orig) return;

    /* 1 GiB of zeros: the magic bytes are wrong. */
    snprintf(path, sizeof path, "%s/zeros_1gib.bin", dir);
    CHECK(write_sparse(path, (const unsigned char *)"", 0, GIB));
    refused_cheaply(path, PLE_STATUS_NOT_PLE, "magic");
    unlink(path);

    /* A model with 1 GiB appended: its header gives its true length. */
    snprintf(path, sizeof path, "%s/appended_1gib.ple", dir);
    CHECK(write_sparse(path, orig, len, (off_t)len + GIB));
    refused_cheaply(path, PLE_STATUS_INVALID_FILE, "appended");
    unlink(path);

    /* A header claiming 1 GiB (sizes consistent), over a file that long: the metadata checksum
     * (it covers the header) fails, so the data are never read. */
    unsigned char *big = malloc(len);
    memcpy(big, orig, len);
    uint64_t data_offset = u64_at(big, 40);
    put_u64(big, 16, (uint64_t)GIB);              /* file_size */
    put_u64(big, 48, (uint64_t)GIB - data_offset); /* data_size */
    snprintf(path, sizeof path, "%s/claims_1gib.ple", dir);
    CHECK(write_sparse(path, big, len, GIB));
    refused_cheaply(path, PLE_STATUS_CHECKSUM, "header/metadata checksum");
    unlink(path);
    free(big);
    free(orig);
}

/* Scores the same two samples of the quickstart model (5 inputs, 2 outputs) into out[4]. */
static ple_status score(const ple_model *m, float out[4]) {
    static const int64_t user[2] = {1, 2}, item[2] = {3, 4}, cat[2] = {5, 6};
    static const int64_t seq[12] = {1, 2, 3, 0, 0, 0, 4, 5, 0, 0, 0, 0};
    static const float price[2] = {0.5f, -0.5f};
    const ple_column cols[5] = {
        {NULL, user, NULL, 2, NULL, 0},  {NULL, item, NULL, 2, NULL, 0},
        {NULL, cat, NULL, 2, NULL, 0},   {NULL, seq, NULL, 12, NULL, 0},
        {NULL, NULL, price, 2, NULL, 0},
    };
    ple_session *s = NULL;
    ple_status st = ple_session_new(m, 2, &s);
    if (st == PLE_STATUS_OK) st = ple_session_run(s, 2, cols, 5, out, 4, NULL, 0);
    ple_session_free(s);
    return st;
}

static void in_place_writes(const char *quickstart, const char *dir) {
    char live[4096], next[4096];
    snprintf(live, sizeof live, "%s/live.ple", dir);
    snprintf(next, sizeof next, "%s/live.ple.new", dir);
    size_t len = 0;
    unsigned char *orig = read_file(quickstart, &len);
    CHECK(orig != NULL);
    if (!orig) return;
    CHECK(write_file(live, orig, len));
    /* Date the file an hour back, as a deployed model would be, so that the write below changes
     * its modification time whatever the file system's timestamp granularity. */
    struct timespec old[2];
    clock_gettime(CLOCK_REALTIME, &old[0]);
    old[0].tv_sec -= 3600;
    old[1] = old[0];
    CHECK(utimensat(AT_FDCWD, live, old, 0) == 0);

    const ple_model *mapped = NULL, *copied = NULL, *memory = NULL;
    STATUS(ple_model_open(live, 0, &mapped), PLE_STATUS_OK);
    STATUS(ple_model_open(live, PLE_OPEN_READ_INTO_MEMORY, &copied), PLE_STATUS_OK);
    STATUS(ple_model_open_memory(orig, len, 0, &memory), PLE_STATUS_OK);
    if (!mapped || !copied || !memory) return;
    float before[4], after[4];
    STATUS(score(mapped, before), PLE_STATUS_OK);
    CHECK(!ple_model_file_changed(mapped));
    CHECK(!ple_model_file_changed(copied));
    CHECK(!ple_model_file_changed(memory));
    STATUS(ple_model_verify_data(mapped), PLE_STATUS_OK);

    /* Overwrite the tensor data in place with zeros, same size (what `cp` over the file does). */
    uint64_t data_offset = u64_at(orig, 40);
    FILE *f = fopen(live, "r+b");
    CHECK(f != NULL);
    if (f) {
        unsigned char *zeros = calloc(1, len - data_offset);
        fseek(f, (long)data_offset, SEEK_SET);
        CHECK(fwrite(zeros, 1, len - data_offset, f) == len - data_offset);
        CHECK(fclose(f) == 0);
        free(zeros);
    }
    CHECK(ple_model_file_changed(mapped));
    CHECK(ple_model_file_changed(copied));
    CHECK(!ple_model_file_changed(memory));
    /* The mapped model reads the new bytes: its scores silently change (documented), and
     * verify_data notices. The copy read into memory is unaffected. */
    STATUS(score(mapped, after), PLE_STATUS_OK);
    CHECK(memcmp(before, after, sizeof before) != 0);
    STATUS(ple_model_verify_data(mapped), PLE_STATUS_CHECKSUM);
    CHECK(strstr(ple_last_error(), "tensor data checksum") != NULL);
    STATUS(score(copied, after), PLE_STATUS_OK);
    CHECK(memcmp(before, after, sizeof before) == 0);
    STATUS(ple_model_verify_data(copied), PLE_STATUS_OK);

    /* Truncated under the map: verify_data reports it instead of crashing on the missing pages. */
    CHECK(truncate(live, (off_t)(len / 2)) == 0);
    STATUS(ple_model_verify_data(mapped), PLE_STATUS_INVALID_FILE);
    CHECK(strstr(ple_last_error(), "truncated") != NULL);
    ple_model_free(mapped);

    /* The deploy pattern: write a new file, rename it over. A model opened from the old path
     * sees the change; one opened after the rename does not, until the next one. */
    CHECK(write_file(next, orig, len));
    CHECK(rename(next, live) == 0);
    CHECK(ple_model_file_changed(copied));
    const ple_model *fresh = NULL;
    STATUS(ple_model_open(live, 0, &fresh), PLE_STATUS_OK);
    CHECK(!ple_model_file_changed(fresh));
    CHECK(write_file(next, orig, len));
    CHECK(rename(next, live) == 0);
    CHECK(ple_model_file_changed(fresh));
    unlink(live);
    CHECK(ple_model_file_changed(fresh));
    CHECK(!ple_model_file_changed(NULL));
    CHECK(strstr(ple_last_error(), "ple_model_file_changed: model is NULL") != NULL);
    STATUS(ple_model_verify_data(NULL), PLE_STATUS_NULL_ARGUMENT);

    ple_model_free(fresh);
    ple_model_free(copied);
    ple_model_free(memory);
    free(orig);
}

enum { SHARED_BATCH = 64, SHARED_OUT = 2 * SHARED_BATCH };

/* One thread's side of the shared-session test: its own inputs, expected scores and counts. */
typedef struct {
    ple_session *session; /* shared by both threads */
    int64_t ids[4][SHARED_BATCH * 6];
    float price[SHARED_BATCH];
    ple_column cols[5];
    float expected[SHARED_OUT];
    long ok, busy, wrong, other, touched;
    volatile int *stop;
} sharer;

static void sharer_init(sharer *t, int seed) {
    /* user_id, item_id, category (16 rows), recent_items (6 per sample) */
    for (int i = 0; i < SHARED_BATCH * 6; i++)
        for (int j = 0; j < 4; j++) t->ids[j][i] = (seed * 7 + i * (j + 3)) % (j == 2 ? 16 : 64);
    for (int i = 0; i < SHARED_BATCH; i++) t->price[i] = (float)((seed + i) % 9) / 8.0f - 0.5f;
    const ple_column cols[5] = {
        {NULL, t->ids[0], NULL, SHARED_BATCH, NULL, 0},
        {NULL, t->ids[1], NULL, SHARED_BATCH, NULL, 0},
        {NULL, t->ids[2], NULL, SHARED_BATCH, NULL, 0},
        {NULL, t->ids[3], NULL, SHARED_BATCH * 6, NULL, 0},
        {NULL, NULL, t->price, SHARED_BATCH, NULL, 0},
    };
    memcpy(t->cols, cols, sizeof cols);
}

static void *sharer_run(void *arg) {
    sharer *t = arg;
    float out[SHARED_OUT];
    while (!*t->stop) {
        for (int i = 0; i < SHARED_OUT; i++) out[i] = -7.0f;
        ple_status st =
            ple_session_run(t->session, SHARED_BATCH, t->cols, 5, out, SHARED_OUT, NULL, 0);
        if (st == PLE_STATUS_OK) {
            t->ok++;
            if (memcmp(out, t->expected, sizeof out) != 0) t->wrong++;
        } else if (st == PLE_STATUS_SESSION_BUSY &&
                   strstr(ple_last_error(), "in use by another thread")) {
            t->busy++;
            for (int i = 0; i < SHARED_OUT; i++) t->touched += out[i] != -7.0f;
        } else {
            t->other++;
        }
        /* A pause of 20-120 us between calls, as a server has between requests, lets each
         * thread find the session free (and the other inside a call) often, even on one core. */
        struct timespec pause = {0, 20000 + 1000 * ((t->ok + t->busy) * 37 % 101)};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void two_threads_one_session(const char *quickstart) {
    const ple_model *m = NULL;
    STATUS(ple_model_open(quickstart, 0, &m), PLE_STATUS_OK);
    if (!m) return;
    static sharer t[2];
    volatile int stop = 0;
    ple_session *shared = NULL;
    STATUS(ple_session_new(m, SHARED_BATCH, &shared), PLE_STATUS_OK);
    for (int k = 0; k < 2; k++) {
        sharer_init(&t[k], k + 1);
        t[k].session = shared;
        t[k].stop = &stop;
        /* The expected scores, from a session of its own. */
        ple_session *own = NULL;
        STATUS(ple_session_new(m, SHARED_BATCH, &own), PLE_STATUS_OK);
        STATUS(ple_session_run(own, SHARED_BATCH, t[k].cols, 5, t[k].expected, SHARED_OUT, NULL,
                               0),
               PLE_STATUS_OK);
        ple_session_free(own);
    }
    CHECK(memcmp(t[0].expected, t[1].expected, sizeof t[0].expected) != 0);
    pthread_t th[2];
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&th[k], NULL, sharer_run, &t[k]) == 0);
    /* Until the threads have met each other inside a call 20 times and each has scored 20
     * times (well under a second), 60 s at most. */
    double t0 = now();
    while (now() - t0 < 60.0 && !(t[0].busy + t[1].busy >= 20 && t[0].ok >= 20 && t[1].ok >= 20)) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    stop = 1;
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    printf("two threads on one session, %.2f s: %ld + %ld calls scored, %ld + %ld found it busy, "
           "%ld wrong results, %ld other errors, %ld output floats written by refused calls\n",
           now() - t0, t[0].ok, t[1].ok, t[0].busy, t[1].busy, t[0].wrong + t[1].wrong,
           t[0].other + t[1].other, t[0].touched + t[1].touched);
    CHECK(t[0].busy + t[1].busy >= 20);
    CHECK(t[0].ok >= 20 && t[1].ok >= 20);
    CHECK(t[0].wrong + t[1].wrong == 0);
    CHECK(t[0].other + t[1].other == 0);
    CHECK(t[0].touched + t[1].touched == 0);
    /* The session is fine afterwards. */
    float out[SHARED_OUT];
    STATUS(ple_session_run(shared, SHARED_BATCH, t[0].cols, 5, out, SHARED_OUT, NULL, 0),
           PLE_STATUS_OK);
    CHECK(memcmp(out, t[0].expected, sizeof out) == 0);
    ple_session_free(shared);
    ple_model_free(m);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: hardening QUICKSTART.ple TMP_DIR\n");
        return 2;
    }
    /* Whatever blocks (a FIFO opened for reading), this ends it with a failure. */
    alarm(120);
    special_files(argv[2]);
    large_files(argv[1], argv[2]);
    in_place_writes(argv[1], argv[2]);
    two_threads_one_session(argv[1]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
