/*
 * status.c: walks every status of the C API from C (run by tests/c_api.rs under ASan + UBSan).
 *
 *     status QUICKSTART.ple DENSE_MODEL.ple TMP_DIR
 *
 * QUICKSTART.ple must have sparse, sequence and dense inputs (examples/models/quickstart.ple);
 * DENSE_MODEL.ple must have exactly one dense input and gates (tests/fixtures/dense_ple/model.ple).
 * Bad files are made here by copying the first model and patching bytes (docs/FORMAT.md section 2).
 * Checks that failed calls leave every output untouched, that messages name what was wrong, that
 * handles freed in the "wrong" order stay safe, and that every status except PLE_STATUS_PANIC
 * (which needs an internal bug) was produced. Prints "N checks, M failures" and exits 1 on any.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ple.h"
#include "testing.h"

/* Copies `orig`, applies `patch` at `offset` (if `patch_len` > 0), keeps `len` bytes. */
static unsigned char *patched(const unsigned char *orig, size_t len, size_t offset,
                              const void *patch, size_t patch_len) {
    unsigned char *b = malloc(len + 1);
    memcpy(b, orig, len);
    if (patch_len) memcpy(b + offset, patch, patch_len);
    return b;
}

/* Opens `bytes` both from memory and from a file written under `dir`; both must give `want`. */
static void expect_open(const char *dir, const char *name, const unsigned char *bytes, size_t len,
                        uint32_t flags, ple_status want, const char *needle) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(write_file(path, bytes, len));
    int sentinel = 0;
    const ple_model *m = (const ple_model *)(void *)&sentinel;
    STATUS(ple_model_open_memory(bytes, len, flags, &m), want);
    if (needle) MESSAGE_HAS(needle);
    CHECK(m == (const ple_model *)(void *)&sentinel); /* untouched on failure */
    STATUS(ple_model_open(path, flags, &m), want);
    if (needle) MESSAGE_HAS(needle);
    CHECK(m == (const ple_model *)(void *)&sentinel);
}

/* Synthetic inputs (as in examples/c/score.c). */
typedef struct {
    ple_column *cols;
    size_t n;
} columns_t;

static columns_t make_columns(const ple_model *m, size_t batch, int named) {
    columns_t c;
    c.n = ple_model_input_count(m);
    c.cols = calloc(c.n, sizeof *c.cols);
    for (size_t j = 0; j < c.n; j++) {
        size_t per = ple_model_input_values_per_sample(m, j), len = batch * per;
        c.cols[j].len = len;
        c.cols[j].name = named ? ple_model_input_name(m, j) : NULL;
        if (ple_model_input_kind(m, j) == PLE_INPUT_KIND_DENSE) {
            float *x = malloc(len * sizeof *x + 1);
            for (size_t s = 0; s < batch; s++)
                for (size_t p = 0; p < per; p++)
                    x[s * per + p] = (float)((13 * s + 7 * j + 3 * p) % 17) / 16.0f - 0.5f;
            c.cols[j].floats = x;
        } else {
            size_t vocab = ple_model_input_vocab_size(m, j);
            int64_t *ids = malloc(len * sizeof *ids + 1);
            for (size_t s = 0; s < batch; s++)
                for (size_t p = 0; p < per; p++)
                    ids[s * per + p] = (int64_t)((7 * s + 3 * j + 5 * p + 1) % vocab);
            c.cols[j].ids = ids;
        }
    }
    return c;
}

static void free_columns(columns_t *c) {
    for (size_t j = 0; j < c->n; j++) {
        free((void *)c->cols[j].floats);
        free((void *)c->cols[j].ids);
    }
    free(c->cols);
}

#define SENTINEL 12345.0f

static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = SENTINEL;
}

static int untouched(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != SENTINEL) return 0;
    return 1;
}

static size_t find_kind(const ple_model *m, ple_input_kind kind) {
    for (size_t j = 0; j < ple_model_input_count(m); j++)
        if (ple_model_input_kind(m, j) == kind) return j;
    return (size_t)-1;
}

static void version_and_statuses(void) {
    CHECK(strcmp(ple_version(), PLE_VERSION_STRING) == 0);
    CHECK(ple_version_number() == PLE_VERSION_NUMBER);
    CHECK(PLE_VERSION_NUMBER ==
          PLE_VERSION_MAJOR * 1000000u + PLE_VERSION_MINOR * 1000u + PLE_VERSION_PATCH);
    printf("version %s number %u\n", ple_version(), (unsigned)ple_version_number());
    const char *simd = ple_simd_level();
    CHECK(simd && (!strcmp(simd, "scalar") || !strcmp(simd, "avx2") || !strcmp(simd, "avx512") ||
                   !strcmp(simd, "neon")));

    static const int codes[] = {
        PLE_STATUS_OK,
        PLE_STATUS_NULL_ARGUMENT,
        PLE_STATUS_INVALID_ARGUMENT,
        PLE_STATUS_PANIC,
        PLE_STATUS_SYSTEM,
        PLE_STATUS_CANCELLED,
        PLE_STATUS_IO,
        PLE_STATUS_NOT_PLE,
        PLE_STATUS_UNSUPPORTED_VERSION,
        PLE_STATUS_CHECKSUM,
        PLE_STATUS_INVALID_FILE,
        PLE_STATUS_INVALID_MAX_BATCH,
        PLE_STATUS_BATCH_OUT_OF_RANGE,
        PLE_STATUS_WRONG_INPUT_COUNT,
        PLE_STATUS_WRONG_INPUT_KIND,
        PLE_STATUS_WRONG_LENGTH,
        PLE_STATUS_ID_OUT_OF_RANGE,
        PLE_STATUS_UNKNOWN_INPUT,
        PLE_STATUS_SESSION_BUSY,
        PLE_STATUS_EXECUTOR_FAILED,
        PLE_STATUS_RAGGED_INPUT,
    };
    CHECK(PLE_STATUS_OK == 0);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = ple_status_str(codes[i]);
        CHECK(s && *s && strcmp(s, "unknown status") != 0);
        for (size_t k = 0; k < i; k++) CHECK(strcmp(s, ple_status_str(codes[k])) != 0);
    }
    CHECK(strcmp(ple_status_str(12345), "unknown status") == 0);
    CHECK(strcmp(ple_status_str(-1), "unknown status") == 0);
    CHECK(strcmp(ple_status_str(6), "unknown status") == 0); /* a gap */
}

static void bad_files(const char *path, const char *dir) {
    size_t len = 0;
    unsigned char *orig = read_file(path, &len);
    CHECK(orig != NULL && len > 64);
    if (!orig) return;
    int sentinel = 0;
    const ple_model *m = (const ple_model *)(void *)&sentinel;

    /* Arguments. */
    STATUS(ple_model_open(NULL, 0, &m), PLE_STATUS_NULL_ARGUMENT);
    MESSAGE_HAS("ple_model_open");
    STATUS(ple_model_open(path, 0, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_open(path, 0x80, &m), PLE_STATUS_INVALID_ARGUMENT);
    MESSAGE_HAS("flag");
    STATUS(ple_model_open_memory(NULL, 10, 0, &m), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_open_memory(orig, len, 0, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_open("/nonexistent/dir/model.ple", 0, &m), PLE_STATUS_IO);
    MESSAGE_HAS("/nonexistent/dir/model.ple");
    STATUS(ple_model_open_memory(NULL, 0, 0, &m), PLE_STATUS_NOT_PLE);
    CHECK(m == (const ple_model *)(void *)&sentinel);

    unsigned char *b;
    /* Not a .ple file: wrong magic; too short. */
    b = patched(orig, len, 1, "X", 1);
    expect_open(dir, "bad_magic.ple", b, len, 0, PLE_STATUS_NOT_PLE, "magic");
    free(b);
    expect_open(dir, "short.ple", orig, 10, 0, PLE_STATUS_NOT_PLE, NULL);

    /* Newer major version (u16 at offset 8): rejected before the checksum is looked at. */
    const unsigned char major2[2] = {2, 0};
    b = patched(orig, len, 8, major2, 2);
    expect_open(dir, "major2.ple", b, len, 0, PLE_STATUS_UNSUPPORTED_VERSION, "2.0");
    free(b);

    /* Corrupt metadata (first metadata byte): the header/metadata CRC catches it. */
    b = patched(orig, len, 64, "", 0);
    b[64] ^= 0x5a;
    expect_open(dir, "corrupt_meta.ple", b, len, 0, PLE_STATUS_CHECKSUM, "checksum");
    free(b);

    /* Corrupt data (last byte): found only with PLE_OPEN_VERIFY_DATA. */
    b = patched(orig, len, 0, "", 0);
    b[len - 1] ^= 0x01;
    expect_open(dir, "corrupt_data.ple", b, len, PLE_OPEN_VERIFY_DATA, PLE_STATUS_CHECKSUM, "data");
    {
        const ple_model *ok = NULL;
        STATUS(ple_model_open_memory(b, len, 0, &ok), PLE_STATUS_OK);
        CHECK(ok != NULL);
        ple_model_free(ok);
    }
    free(b);

    /* Truncated (file_size disagrees) and a wrong header_size: invalid files. */
    expect_open(dir, "truncated.ple", orig, len - 1, 0, PLE_STATUS_INVALID_FILE, "truncated");
    const unsigned char hs[4] = {65, 0, 0, 0};
    b = patched(orig, len, 12, hs, 4);
    expect_open(dir, "header_size.ple", b, len, 0, PLE_STATUS_INVALID_FILE, "header_size");
    free(b);

    /* The good file every way. */
    const uint32_t flag_sets[] = {0, PLE_OPEN_VERIFY_DATA, PLE_OPEN_READ_INTO_MEMORY,
                                  PLE_OPEN_VERIFY_DATA | PLE_OPEN_READ_INTO_MEMORY};
    for (size_t i = 0; i < 4; i++) {
        const ple_model *ok = NULL;
        STATUS(ple_model_open(path, flag_sets[i], &ok), PLE_STATUS_OK);
        ple_model_free(ok);
        ok = NULL;
        STATUS(ple_model_open_memory(orig, len, flag_sets[i], &ok), PLE_STATUS_OK);
        ple_model_free(ok);
    }
    /* The memory is copied: the model outlives the caller's buffer. */
    {
        unsigned char *copy = patched(orig, len, 0, "", 0);
        const ple_model *mm = NULL;
        STATUS(ple_model_open_memory(copy, len, 0, &mm), PLE_STATUS_OK);
        memset(copy, 0, len);
        free(copy);
        CHECK(mm && ple_model_input_count(mm) > 0 && ple_model_input_name(mm, 0) != NULL);
        ple_model_free(mm);
    }
    free(orig);
}

static void introspection(const ple_model *m) {
    CHECK(ple_model_name(NULL) == NULL);
    MESSAGE_HAS("NULL");
    CHECK(ple_model_input_count(NULL) == 0);
    CHECK(ple_model_output_width(NULL) == 0);
    CHECK(ple_model_dtype(NULL) == PLE_DTYPE_NONE);
    CHECK(ple_model_simd_level(NULL) == NULL);
    CHECK(ple_model_dtype(m) == PLE_DTYPE_F32);
    CHECK(ple_model_task_count(m) >= 1);
    size_t n = ple_model_input_count(m);
    CHECK(ple_model_input_name(m, n) == NULL);
    MESSAGE_HAS("out of range");
    CHECK(ple_model_input_kind(m, n) == PLE_INPUT_KIND_NONE);
    CHECK(ple_model_input_width(m, n) == 0);
    CHECK(ple_model_output_name(m, ple_model_output_count(m)) == NULL);
    CHECK(ple_model_gate_name(m, ple_model_gate_count(m)) == NULL);

    size_t total = 0;
    for (size_t k = 0; k < ple_model_output_count(m); k++) {
        CHECK(ple_model_output_offset(m, k) == total);
        total += ple_model_output_len(m, k);
    }
    CHECK(total == ple_model_output_width(m));
    total = 0;
    for (size_t g = 0; g < ple_model_gate_count(m); g++) {
        CHECK(ple_model_gate_offset(m, g) == total);
        total += ple_model_gate_len(m, g);
    }
    CHECK(total == ple_model_gate_width(m));

    for (size_t j = 0; j < n; j++) {
        size_t idx = 999;
        STATUS(ple_model_input_index(m, ple_model_input_name(m, j), &idx), PLE_STATUS_OK);
        CHECK(idx == j);
        ple_input_kind kind = ple_model_input_kind(m, j);
        size_t per = ple_model_input_values_per_sample(m, j);
        if (kind == PLE_INPUT_KIND_DENSE) {
            CHECK(per == ple_model_input_width(m, j) && ple_model_input_vocab_size(m, j) == 0);
            CHECK(ple_model_input_pooling(m, j) == NULL);
        } else if (kind == PLE_INPUT_KIND_SPARSE) {
            CHECK(per == 1 && ple_model_input_max_len(m, j) == 1);
            CHECK(ple_model_input_vocab_size(m, j) > 0);
        } else {
            CHECK(kind == PLE_INPUT_KIND_SEQUENCE);
            CHECK(per == ple_model_input_max_len(m, j) && per > 0);
            CHECK(ple_model_input_pooling(m, j) != NULL);
        }
        if (kind != PLE_INPUT_KIND_SEQUENCE) {
            int64_t pad = 77;
            CHECK(!ple_model_input_pad_id(m, j, &pad) && pad == 77);
        }
    }
    /* The quickstart sequence pads with id 0. */
    size_t seq = 0;
    STATUS(ple_model_input_index(m, "recent_items", &seq), PLE_STATUS_OK);
    int64_t pad = -5;
    CHECK(ple_model_input_pad_id(m, seq, &pad) && pad == 0);
    CHECK(!ple_model_input_pad_id(m, seq, NULL));
    CHECK(!ple_model_input_pad_id(NULL, 0, &pad));
    CHECK(!ple_model_input_pad_id(m, n, &pad));

    size_t idx = 7;
    STATUS(ple_model_input_index(m, "no_such_input", &idx), PLE_STATUS_UNKNOWN_INPUT);
    MESSAGE_HAS("no_such_input");
    CHECK(idx == 7);
    STATUS(ple_model_input_index(m, NULL, &idx), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_input_index(NULL, "x", &idx), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_model_input_index(m, "x", NULL), PLE_STATUS_NULL_ARGUMENT);

    /* Clone: the same handle, one more reference. */
    CHECK(ple_model_clone(NULL) == NULL);
    const ple_model *c = ple_model_clone(m);
    CHECK(c == m);
    ple_model_free(c);
    ple_model_free(NULL);
    ple_session_free(NULL);
}

static void scoring(const ple_model *m) {
    const size_t max_batch = 8, batch = 5;
    const size_t width = ple_model_output_width(m), gw = ple_model_gate_width(m);
    const size_t n = ple_model_input_count(m);
    int sentinel = 0;
    ple_session *s = (ple_session *)(void *)&sentinel;

    STATUS(ple_session_new(NULL, max_batch, &s), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_session_new(m, max_batch, NULL), PLE_STATUS_NULL_ARGUMENT);
    STATUS(ple_session_new(m, 0, &s), PLE_STATUS_INVALID_MAX_BATCH);
    MESSAGE_HAS("max_batch");
    STATUS(ple_session_new(m, SIZE_MAX, &s), PLE_STATUS_INVALID_MAX_BATCH);
    CHECK(s == (ple_session *)(void *)&sentinel);
    s = NULL;
    STATUS(ple_session_new(m, max_batch, &s), PLE_STATUS_OK);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(ple_session_max_batch(s) == max_batch);
    CHECK(ple_session_max_batch(NULL) == 0);
    CHECK(ple_session_model(s) == m);
    CHECK(ple_session_model(NULL) == NULL);
    CHECK(strcmp(ple_session_last_error(s), "") == 0);
    CHECK(ple_session_last_error(NULL) != NULL);

    columns_t cols = make_columns(m, batch, 0);
    const size_t out_len = batch * width, gates_len = batch * gw;
    /* out has room for out_len + gates_len floats, so that "gates = out + 1" is a valid buffer. */
    const size_t out_cap = out_len + gates_len + 1;
    float *out = malloc(out_cap * sizeof *out);
    float *gates = malloc((gates_len + 1) * sizeof *gates);
    float *ref = malloc(out_len * sizeof *ref);
    float *ref_gates = malloc((gates_len + 1) * sizeof *ref_gates);

    STATUS(ple_session_run(s, batch, cols.cols, n, ref, out_len, ref_gates, gates_len), PLE_STATUS_OK);
    for (size_t i = 0; i < out_len; i++) CHECK(ref[i] > 0.0f && ref[i] < 1.0f);
    if (gw > 0) {
        /* Each gate's weights are a softmax: they sum to 1. */
        for (size_t g = 0; g < ple_model_gate_count(m); g++) {
            float sum = 0;
            for (size_t e = 0; e < ple_model_gate_len(m, g); e++)
                sum += ref_gates[ple_model_gate_offset(m, g) + e];
            CHECK(fabsf(sum - 1.0f) < 1e-4f);
        }
    }

    /* Every failure leaves out and gates untouched, and the session and thread messages agree. */
#define FAILS(call, want, needle)                                                  \
    do {                                                                           \
        fill(out, out_cap);                                                        \
        fill(gates, gates_len + 1);                                                \
        STATUS(call, want);                                                        \
        MESSAGE_HAS(needle);                                                       \
        CHECK(strcmp(ple_session_last_error(s), ple_last_error()) == 0);           \
        CHECK(untouched(out, out_cap) && untouched(gates, gates_len + 1));         \
    } while (0)

    /* A NULL session has no message of its own: only the thread's. */
    STATUS(ple_session_run(NULL, batch, cols.cols, n, out, out_len, NULL, 0),
           PLE_STATUS_NULL_ARGUMENT);
    MESSAGE_HAS("session is NULL");
    /* Batch 0 is a no-op that succeeds and writes nothing (every buffer is then empty). */
    {
        columns_t none = make_columns(m, 0, 0);
        fill(out, out_cap);
        STATUS(ple_session_run(s, 0, none.cols, n, out, 0, NULL, 0), PLE_STATUS_OK);
        CHECK(untouched(out, out_cap));
        FAILS(ple_session_run(s, 0, cols.cols, n, out, 0, NULL, 0),
              PLE_STATUS_WRONG_LENGTH, "expected 0 for this batch");
        free_columns(&none);
    }
    FAILS(ple_session_run(s, max_batch + 1, cols.cols, n, out, out_len, NULL, 0),
          PLE_STATUS_BATCH_OUT_OF_RANGE, "max_batch of 8");
    FAILS(ple_session_run(s, batch, NULL, n, out, out_len, NULL, 0), PLE_STATUS_NULL_ARGUMENT,
          "columns");
    FAILS(ple_session_run(s, batch, cols.cols, n, NULL, out_len, NULL, 0),
          PLE_STATUS_NULL_ARGUMENT, "out");
    FAILS(ple_session_run(s, batch, cols.cols, n, out, out_len - 1, NULL, 0),
          PLE_STATUS_WRONG_LENGTH, "output");
    FAILS(ple_session_run(s, batch, cols.cols, n, out, out_len + 1, NULL, 0),
          PLE_STATUS_WRONG_LENGTH, "output");
    FAILS(ple_session_run(s, batch, cols.cols, n, out, out_len, gates, gates_len + 1),
          PLE_STATUS_WRONG_LENGTH, "gate");
    FAILS(ple_session_run(s, batch, cols.cols, n, out, out_len, NULL, gates_len),
          PLE_STATUS_NULL_ARGUMENT, "gates");
    FAILS(ple_session_run(s, batch, cols.cols, n - 1, out, out_len, NULL, 0),
          PLE_STATUS_WRONG_INPUT_COUNT, "input columns");
    FAILS(ple_session_run(s, batch, cols.cols, 0, out, out_len, NULL, 0),
          PLE_STATUS_WRONG_INPUT_COUNT, "");
    /* out overlapping gates. */
    FAILS(ple_session_run(s, batch, cols.cols, n, out, out_len, out + 1, gates_len),
          PLE_STATUS_INVALID_ARGUMENT, "overlap");

    size_t sp = find_kind(m, PLE_INPUT_KIND_SPARSE);
    size_t sq = find_kind(m, PLE_INPUT_KIND_SEQUENCE);
    size_t dn = find_kind(m, PLE_INPUT_KIND_DENSE);
    CHECK(sp != (size_t)-1 && sq != (size_t)-1 && dn != (size_t)-1);
    if (sp == (size_t)-1 || sq == (size_t)-1 || dn == (size_t)-1) goto done;
    {
        ple_column *c = cols.cols;
        const char *sp_name = ple_model_input_name(m, sp);
        ple_column saved;
        int64_t *ids = (int64_t *)(void *)c[sp].ids;
        int64_t *seq = (int64_t *)(void *)c[sq].ids;

        /* A column one element short names its input. */
        saved = c[sq];
        c[sq].len -= 1;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_WRONG_LENGTH,
              ple_model_input_name(m, sq));
        c[sq] = saved;

        /* Floats for a sparse input are its embedding vectors (batch x width): one float per
         * sample is a length error; ids for a dense input are the wrong kind. */
        saved = c[sp];
        c[sp].ids = NULL;
        c[sp].floats = c[dn].floats;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_WRONG_LENGTH,
              sp_name);
        c[sp] = saved;
        saved = c[dn];
        c[dn].floats = NULL;
        c[dn].ids = ids;
        c[dn].len = batch;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_WRONG_INPUT_KIND,
              ple_model_input_name(m, dn));
        c[dn] = saved;

        /* Both pointers set; neither set with a length. */
        saved = c[sp];
        c[sp].floats = c[dn].floats;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_INVALID_ARGUMENT,
              "both");
        c[sp].floats = NULL;
        c[sp].ids = NULL;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_NULL_ARGUMENT,
              sp_name);
        c[sp].len = 0; /* (NULL, 0) is an empty column: then its length is wrong */
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_WRONG_LENGTH,
              sp_name);
        c[sp] = saved;

        /* Ids out of range: == vocab, negative, and in the last sample of a sequence. */
        size_t vocab = ple_model_input_vocab_size(m, sp);
        int64_t keep = ids[batch - 1];
        ids[batch - 1] = (int64_t)vocab;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_ID_OUT_OF_RANGE,
              sp_name);
        MESSAGE_HAS("sample 4");
        ids[batch - 1] = -1;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_ID_OUT_OF_RANGE,
              "id -1");
        ids[batch - 1] = keep;
        size_t last = c[sq].len - 1;
        keep = seq[last];
        seq[last] = (int64_t)ple_model_input_vocab_size(m, sq) + 100;
        FAILS(ple_session_run(s, batch, c, n, out, out_len, NULL, 0), PLE_STATUS_ID_OUT_OF_RANGE,
              ple_model_input_name(m, sq));
        seq[last] = keep;

        /* Dense-only entry point on a model with several inputs. */
        FAILS(ple_session_run_dense(s, batch, c[dn].floats, c[dn].len, out, out_len, NULL, 0),
              PLE_STATUS_WRONG_INPUT_COUNT, "");
    }

    /* By name: same scores in the model's order and reversed. */
    {
        columns_t named = make_columns(m, batch, 1);
        ple_column *rev = malloc(n * sizeof *rev);
        for (size_t j = 0; j < n; j++) rev[j] = named.cols[n - 1 - j];
        fill(out, out_len);
        STATUS(ple_session_run(s, batch, named.cols, n, out, out_len, NULL, 0), PLE_STATUS_OK);
        CHECK(memcmp(out, ref, out_len * sizeof *out) == 0);
        fill(out, out_len);
        fill(gates, gates_len);
        STATUS(ple_session_run(s, batch, rev, n, out, out_len, gates, gates_len), PLE_STATUS_OK);
        CHECK(memcmp(out, ref, out_len * sizeof *out) == 0);
        CHECK(memcmp(gates, ref_gates, gates_len * sizeof *gates) == 0);

        const char *keep = rev[0].name;
        rev[0].name = "no_such_input";
        FAILS(ple_session_run(s, batch, rev, n, out, out_len, NULL, 0), PLE_STATUS_UNKNOWN_INPUT,
              "no_such_input");
        rev[0].name = rev[1].name;
        FAILS(ple_session_run(s, batch, rev, n, out, out_len, NULL, 0),
              PLE_STATUS_INVALID_ARGUMENT, "twice");
        rev[0].name = NULL;
        FAILS(ple_session_run(s, batch, rev, n, out, out_len, NULL, 0),
              PLE_STATUS_INVALID_ARGUMENT, "name every column or none");
        rev[0].name = keep;
        rev[1].name = NULL;
        FAILS(ple_session_run(s, batch, rev, n, out, out_len, NULL, 0),
              PLE_STATUS_INVALID_ARGUMENT, "column 1");
        free(rev);
        free_columns(&named);
    }

    /* A smaller batch in the same session; then the session still works after all failures. */
    {
        columns_t one = make_columns(m, 1, 0);
        STATUS(ple_session_run(s, 1, one.cols, n, out, width, NULL, 0), PLE_STATUS_OK);
        CHECK(memcmp(out, ref, width * sizeof *out) == 0); /* sample 0 has the same inputs */
        free_columns(&one);
    }
    fill(out, out_len);
    STATUS(ple_session_run(s, batch, cols.cols, n, out, out_len, NULL, 0), PLE_STATUS_OK);
    CHECK(memcmp(out, ref, out_len * sizeof *out) == 0);

done:
#undef FAILS
    free(out);
    free(gates);
    free(ref);
    free(ref_gates);
    free_columns(&cols);
    ple_session_free(s);
}

static void dense_model(const char *path) {
    const ple_model *m = NULL;
    STATUS(ple_model_open(path, 0, &m), PLE_STATUS_OK);
    if (!m) return;
    CHECK(ple_model_input_count(m) == 1 && ple_model_input_kind(m, 0) == PLE_INPUT_KIND_DENSE);
    const size_t batch = 3, w = ple_model_input_width(m, 0), ow = ple_model_output_width(m),
                 gw = ple_model_gate_width(m);
    CHECK(gw > 0);
    ple_session *s = NULL;
    STATUS(ple_session_new(m, 4, &s), PLE_STATUS_OK);
    float *x = malloc(batch * w * sizeof *x);
    for (size_t i = 0; i < batch * w; i++) x[i] = (float)(i % 7) / 8.0f - 0.4f;
    float *out1 = calloc(batch * ow, sizeof *out1), *out2 = calloc(batch * ow, sizeof *out2);
    float *g1 = calloc(batch * gw, sizeof *g1), *g2 = calloc(batch * gw, sizeof *g2);

    STATUS(ple_session_run_dense(s, batch, x, batch * w, out1, batch * ow, g1, batch * gw),
           PLE_STATUS_OK);
    ple_column col = {NULL, NULL, x, batch * w, NULL, 0};
    STATUS(ple_session_run(s, batch, &col, 1, out2, batch * ow, g2, batch * gw), PLE_STATUS_OK);
    CHECK(memcmp(out1, out2, batch * ow * sizeof *out1) == 0);
    CHECK(memcmp(g1, g2, batch * gw * sizeof *g1) == 0);
    STATUS(ple_session_run_dense(s, batch, x, batch * w - 1, out1, batch * ow, NULL, 0),
           PLE_STATUS_WRONG_LENGTH);
    STATUS(ple_session_run_dense(s, batch, NULL, batch * w, out1, batch * ow, NULL, 0),
           PLE_STATUS_NULL_ARGUMENT);
    /* An input overlapping the output. */
    float *both = calloc(w + ow, sizeof *both);
    STATUS(ple_session_run_dense(s, 1, both, w, both + 1, ow, NULL, 0), PLE_STATUS_INVALID_ARGUMENT);
    MESSAGE_HAS("overlap");
    free(both);
    printf("dense %s: out[0] = %.9g, gates[0] = %.9g\n", ple_model_name(m), out1[0], g1[0]);

    free(x);
    free(out1);
    free(out2);
    free(g1);
    free(g2);
    ple_session_free(s);
    ple_model_free(m);
}

/* Handles released in the "wrong" order stay safe: sessions keep their model alive. */
static void lifetimes(const char *path) {
    const ple_model *m = NULL;
    STATUS(ple_model_open(path, 0, &m), PLE_STATUS_OK);
    if (!m) return;
    ple_session *a = NULL, *b = NULL;
    STATUS(ple_session_new(m, 4, &a), PLE_STATUS_OK);
    STATUS(ple_session_new(m, 2, &b), PLE_STATUS_OK);
    const ple_model *c = ple_model_clone(m);
    const size_t n = ple_model_input_count(m), w = ple_model_output_width(m);
    columns_t cols = make_columns(m, 2, 0);
    float out[64];
    ple_model_free(m); /* the caller's reference; the clone and both sessions remain */
    ple_model_free(c); /* now only the sessions hold the model */
    const ple_model *borrowed = ple_session_model(a);
    CHECK(borrowed != NULL && ple_model_input_count(borrowed) == n);
    CHECK(ple_model_input_name(borrowed, 0) != NULL);
    STATUS(ple_session_run(a, 2, cols.cols, n, out, 2 * w, NULL, 0), PLE_STATUS_OK);
    ple_session_free(a);
    STATUS(ple_session_run(b, 2, cols.cols, n, out, 2 * w, NULL, 0), PLE_STATUS_OK);
    ple_session_free(b); /* the model is destroyed here */
    free_columns(&cols);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: status QUICKSTART.ple DENSE_MODEL.ple TMP_DIR\n");
        return 2;
    }
    version_and_statuses();
    bad_files(argv[1], argv[3]);
    const ple_model *m = NULL;
    STATUS(ple_model_open(argv[1], 0, &m), PLE_STATUS_OK);
    if (m) {
        introspection(m);
        scoring(m);
        ple_model_free(m);
    }
    dense_model(argv[2]);
    lifetimes(argv[1]);

    int missing = 0;
    const int walked[] = {
        PLE_STATUS_OK,
        PLE_STATUS_NULL_ARGUMENT,
        PLE_STATUS_INVALID_ARGUMENT,
        PLE_STATUS_IO,
        PLE_STATUS_NOT_PLE,
        PLE_STATUS_UNSUPPORTED_VERSION,
        PLE_STATUS_CHECKSUM,
        PLE_STATUS_INVALID_FILE,
        PLE_STATUS_INVALID_MAX_BATCH,
        PLE_STATUS_BATCH_OUT_OF_RANGE,
        PLE_STATUS_WRONG_INPUT_COUNT,
        PLE_STATUS_WRONG_INPUT_KIND,
        PLE_STATUS_WRONG_LENGTH,
        PLE_STATUS_ID_OUT_OF_RANGE,
        PLE_STATUS_UNKNOWN_INPUT,
    };
    for (size_t i = 0; i < sizeof walked / sizeof walked[0]; i++) {
        if (!seen[walked[i]]) {
            fprintf(stderr, "status %d (%s) was never produced\n", walked[i],
                    ple_status_str(walked[i]));
            missing++;
        }
    }
    printf("statuses walked: %zu of 21 (PLE_STATUS_PANIC needs an internal bug, "
           "PLE_STATUS_SYSTEM a thread the system refuses or a refused lock: warm.c; "
           "PLE_STATUS_CANCELLED: warm.c; PLE_STATUS_SESSION_BUSY two threads: "
           "hardening.c; PLE_STATUS_EXECUTOR_FAILED: pool.c; PLE_STATUS_RAGGED_INPUT: "
           "ragged.c)\n",
           sizeof walked / sizeof walked[0] - (size_t)missing);
    printf("%d checks, %d failures\n", checks, failures + missing);
    return failures + missing ? 1 : 0;
}
