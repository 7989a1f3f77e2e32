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
 *
 * An alarm ends the program if any call blocks. Prints "N checks, M failures" and exits 1 on any.
 */
#define _XOPEN_SOURCE 700

#include <fcntl.h>
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
        {NULL, user, NULL, 2}, {NULL, item, NULL, 2}, {NULL, cat, NULL, 2},
        {NULL, seq, NULL, 12}, {NULL, NULL, price, 2},
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

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: hardening QUICKSTART.ple TMP_DIR\n");
        return 2;
    }
    /* Whatever blocks (a FIFO opened for reading), this ends it with a failure. */
    alarm(60);
    special_files(argv[2]);
    large_files(argv[1], argv[2]);
    in_place_writes(argv[1], argv[2]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
