/*
 * ragged.c: ragged sequence columns from C (run by tests/c_api.rs under ASan + UBSan).
 *
 *     ragged MODEL.ple
 *
 * The model needs a sequence input with a pad id (quickstart.ple: recent_items, pad id 0).
 * - every sequence input given ragged (`offsets`, batch + 1 of them; lengths 0..max_len, pad ids
 *   also inside rows) scores bit-identically (memcmp, outputs and gate weights) to the padded
 *   form, on one thread and split across a pool, for batches 0 to MAX_BATCH;
 * - each malformed column fails with its status, a message naming the input and the sample, and
 *   the outputs untouched: offsets[0] != 0, decreasing offsets, the last offset != len, a sample
 *   over max_len, offsets_len != batch + 1, NULL offsets with a length, ragged vectors of the
 *   wrong size, an id out of range, ragged ids for a sparse input;
 * - embedding vectors (ple_model_input_embedding) instead of ids, sparse and ragged sequence,
 *   score bit-identically to the ids; the lookup's errors.
 *
 * Prints "N checks, M failures" and exits 1 on any failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ple.h"
#include "testing.h"

#define MAX_BATCH 150

static const ple_model *model;
static size_t n_inputs, width, gate_width;
static ple_column padded[64], ragged[64];

static uint64_t rng = 12345;
static uint64_t below(uint64_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (rng >> 33) % n;
}

/* Deterministic inputs for MAX_BATCH samples in both forms (by position). */
static void make_inputs(void) {
    n_inputs = ple_model_input_count(model);
    width = ple_model_output_width(model);
    gate_width = ple_model_gate_width(model);
    for (size_t j = 0; j < n_inputs; j++) {
        size_t per = ple_model_input_values_per_sample(model, j), len = MAX_BATCH * per;
        padded[j].len = len;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_DENSE) {
            float *x = malloc(len * sizeof *x);
            for (size_t i = 0; i < len; i++) x[i] = (float)below(1000) / 500.0f - 1.0f;
            padded[j].floats = x;
            ragged[j] = padded[j];
            continue;
        }
        size_t vocab = ple_model_input_vocab_size(model, j);
        int64_t *ids = malloc(len * sizeof *ids);
        int64_t pad = 0;
        if (ple_model_input_kind(model, j) != PLE_INPUT_KIND_SEQUENCE ||
            !ple_model_input_pad_id(model, j, &pad)) {
            for (size_t i = 0; i < len; i++) ids[i] = (int64_t)below(vocab);
            padded[j].ids = ids;
            ragged[j] = padded[j];
            continue;
        }
        int64_t *values = malloc(len * sizeof *values);
        int64_t *offsets = malloc((MAX_BATCH + 1) * sizeof *offsets);
        size_t n = 0;
        offsets[0] = 0;
        for (size_t s = 0; s < MAX_BATCH; s++) {
            size_t l = (size_t)below(per + 1);
            for (size_t p = 0; p < per; p++) {
                /* One id in four is the pad id: ignored wherever it is. */
                int64_t id = below(4) == 0 ? pad : (int64_t)below(vocab);
                ids[s * per + p] = p < l ? id : pad;
                if (p < l) values[n++] = id;
            }
            offsets[s + 1] = (int64_t)n;
        }
        padded[j].ids = ids;
        ragged[j].ids = values;
        ragged[j].len = n;
        ragged[j].offsets = offsets;
        ragged[j].offsets_len = MAX_BATCH + 1;
    }
}

/* The first `batch` samples of `cols` (lengths and offsets cut to them). */
static void cut(const ple_column *cols, size_t batch, ple_column *into) {
    for (size_t j = 0; j < n_inputs; j++) {
        into[j] = cols[j];
        if (cols[j].offsets) {
            into[j].len = (size_t)cols[j].offsets[batch];
            into[j].offsets_len = batch + 1;
        } else {
            into[j].len = cols[j].len / MAX_BATCH * batch;
        }
    }
}

static int same_forms(ple_session *s) {
    static float out_a[MAX_BATCH * 64], out_b[MAX_BATCH * 64];
    static float gates_a[MAX_BATCH * 64], gates_b[MAX_BATCH * 64];
    ple_column a[64], b[64];
    int ok = 1;
    for (size_t batch = 0; batch <= MAX_BATCH; batch += 1 + batch / 4) {
        cut(padded, batch, a);
        cut(ragged, batch, b);
        memset(out_b, 0xff, sizeof out_b);
        STATUS(ple_session_run(s, batch, a, n_inputs, out_a, batch * width, gates_a,
                               batch * gate_width),
               PLE_STATUS_OK);
        STATUS(ple_session_run(s, batch, b, n_inputs, out_b, batch * width, gates_b,
                               batch * gate_width),
               PLE_STATUS_OK);
        int same = memcmp(out_a, out_b, batch * width * sizeof *out_a) == 0 &&
                   memcmp(gates_a, gates_b, batch * gate_width * sizeof *gates_a) == 0;
        CHECK(same);
        ok &= same;
    }
    return ok;
}

/* Scores `cols` (batch `batch`) expecting `want` and a message containing `needle`, with the
 * outputs untouched. */
static void refused(ple_session *s, const ple_column *cols, size_t batch, ple_status want,
                    const char *needle, int line) {
    static float out[MAX_BATCH * 64], gates[MAX_BATCH * 64];
    for (size_t i = 0; i < MAX_BATCH * 64; i++) out[i] = gates[i] = -7.0f;
    ple_status st = ple_session_run(s, batch, cols, n_inputs, out, batch * width, gates,
                                    batch * gate_width);
    checks++;
    if (st != want || !strstr(ple_session_last_error(s), needle)) {
        fprintf(stderr, "ragged.c:%d: status %d (%s), message \"%s\"; expected %d and \"%s\"\n",
                line, (int)st, ple_status_str(st), ple_session_last_error(s), (int)want, needle);
        failures++;
    }
    int untouched = 1;
    for (size_t i = 0; i < batch * width; i++) untouched &= out[i] == -7.0f;
    for (size_t i = 0; i < batch * gate_width; i++) untouched &= gates[i] == -7.0f;
    CHECK(untouched);
}

static void malformed(ple_session *s) {
    size_t q = n_inputs, sparse = n_inputs;
    for (size_t j = 0; j < n_inputs; j++) {
        if (ragged[j].offsets && q == n_inputs) q = j;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_SPARSE) sparse = j;
    }
    CHECK(q < n_inputs);
    if (q == n_inputs) return;
    char name[300];
    snprintf(name, sizeof name, "input '%s'", ple_model_input_name(model, q));
    size_t batch = 4, max_len = ple_model_input_max_len(model, q);
    int64_t ids[64] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t offsets[5] = {0, 2, 4, 6, 8};
    ple_column cols[64];
    char needle[400];

    cut(ragged, batch, cols);
    cols[q].ids = ids;
    cols[q].len = 8;
    cols[q].offsets = offsets;
    cols[q].offsets_len = batch + 1;
    {
        float out[64 * 4], gates[64 * 4];
        STATUS(ple_session_run(s, batch, cols, n_inputs, out, batch * width, gates,
                               batch * gate_width),
               PLE_STATUS_OK);
    }

    offsets[0] = 1;
    snprintf(needle, sizeof needle, "%s, sample 0: offsets[0] is 1, it must be 0", name);
    refused(s, cols, batch, PLE_STATUS_RAGGED_INPUT, needle, __LINE__);
    offsets[0] = 0;

    offsets[2] = 1;
    snprintf(needle, sizeof needle, "%s, sample 1: its offsets decrease (start 2, end 1)", name);
    refused(s, cols, batch, PLE_STATUS_RAGGED_INPUT, needle, __LINE__);
    offsets[2] = 4;

    cols[q].len = 9;
    snprintf(needle, sizeof needle, "%s, sample 3: the last offset is 8 but the column holds 9",
             name);
    refused(s, cols, batch, PLE_STATUS_RAGGED_INPUT, needle, __LINE__);
    cols[q].len = 8;

    /* Sample 2 holds max_len + 1 ids. */
    int64_t long_offsets[5] = {0, 0, 0, (int64_t)max_len + 1, (int64_t)max_len + 1};
    cols[q].offsets = long_offsets;
    cols[q].len = max_len + 1;
    snprintf(needle, sizeof needle, "%s, sample 2: %zu ids, more than the input's max_len of %zu",
             name, max_len + 1, max_len);
    refused(s, cols, batch, PLE_STATUS_RAGGED_INPUT, needle, __LINE__);
    cols[q].offsets = offsets;
    cols[q].len = 8;

    cols[q].offsets_len = batch;
    refused(s, cols, batch, PLE_STATUS_WRONG_LENGTH, "offsets of", __LINE__);
    cols[q].offsets_len = batch + 1;

    cols[q].offsets = NULL;
    refused(s, cols, batch, PLE_STATUS_NULL_ARGUMENT, "offsets is NULL", __LINE__);
    cols[q].offsets = offsets;

    cols[q].ids = NULL;
    refused(s, cols, batch, PLE_STATUS_NULL_ARGUMENT, "ids and floats are both NULL", __LINE__);
    cols[q].ids = ids;

    float some_floats[8] = {0};
    cols[q].floats = some_floats;
    refused(s, cols, batch, PLE_STATUS_INVALID_ARGUMENT, "sets both ids and floats", __LINE__);
    cols[q].ids = NULL; /* ragged vectors: 8 floats are not 8 vectors */
    snprintf(needle, sizeof needle, "%s, sample 3: the last offset is 8 vectors but the column "
             "holds 8 floats", name);
    refused(s, cols, batch, PLE_STATUS_RAGGED_INPUT, needle, __LINE__);
    cols[q].ids = ids;
    cols[q].floats = NULL;

    ids[5] = 1000000;
    snprintf(needle, sizeof needle, "%s, sample 2, position 1: id 1000000 is out of range", name);
    refused(s, cols, batch, PLE_STATUS_ID_OUT_OF_RANGE, needle, __LINE__);
    ids[5] = 6;

    if (sparse < n_inputs) {
        ple_column saved = cols[sparse];
        cols[sparse].ids = ids;
        cols[sparse].len = 4;
        int64_t ones[5] = {0, 1, 2, 3, 4};
        cols[sparse].offsets = ones;
        cols[sparse].offsets_len = 5;
        refused(s, cols, batch, PLE_STATUS_WRONG_INPUT_KIND, "ragged columns are for sequences",
                __LINE__);
        cols[sparse] = saved;
    }
}

/* Embedding vectors instead of ids (ple_model_input_embedding gives them): sparse inputs as
 * `floats`, sequences as ragged vectors; scores bit-identical to the ids. Then the lookup's
 * errors. */
static void vectors(ple_session *s) {
    enum { B = 40 };
    ple_column a[64], v[64];
    cut(ragged, B, a);
    float *owned[64] = {0};
    int64_t *owned_offsets[64] = {0};
    for (size_t j = 0; j < n_inputs; j++) {
        v[j] = a[j];
        int kind = ple_model_input_kind(model, j);
        if (kind == PLE_INPUT_KIND_DENSE) continue;
        CHECK(ple_model_input_has_table(model, j));
        size_t w = ple_model_input_width(model, j);
        size_t n = a[j].len; /* ids: B for sparse; ragged ids for sequences here */
        int64_t pad = -1;
        int has_pad = kind == PLE_INPUT_KIND_SEQUENCE && ple_model_input_pad_id(model, j, &pad);
        float *f = malloc((n + 1) * w * sizeof *f);
        int64_t *off = malloc((B + 1) * sizeof *off);
        size_t m = 0;
        off[0] = 0;
        for (size_t smp = 0; smp < B; smp++) {
            size_t from = a[j].offsets ? (size_t)a[j].offsets[smp] : smp;
            size_t to = a[j].offsets ? (size_t)a[j].offsets[smp + 1] : smp + 1;
            for (size_t k = from; k < to; k++) {
                if (has_pad && a[j].ids[k] == pad) continue; /* vectors of the real ids only */
                STATUS(ple_model_input_embedding(model, j, a[j].ids[k], f + m * w, w),
                       PLE_STATUS_OK);
                m++;
            }
            off[smp + 1] = (int64_t)m;
        }
        v[j].ids = NULL;
        v[j].floats = f;
        v[j].len = m * w;
        if (a[j].offsets) {
            v[j].offsets = off;
            v[j].offsets_len = B + 1;
        }
        owned[j] = f;
        owned_offsets[j] = off;
    }
    static float out_a[B * 64], out_b[B * 64], gates_a[B * 64], gates_b[B * 64];
    STATUS(ple_session_run(s, B, a, n_inputs, out_a, B * width, gates_a, B * gate_width),
           PLE_STATUS_OK);
    STATUS(ple_session_run(s, B, v, n_inputs, out_b, B * width, gates_b, B * gate_width),
           PLE_STATUS_OK);
    int same = memcmp(out_a, out_b, B * width * sizeof *out_a) == 0 &&
               memcmp(gates_a, gates_b, B * gate_width * sizeof *gates_a) == 0;
    CHECK(same);
    printf("embedding vectors and ids bit-identical: %s\n", same ? "yes" : "NO");

    float row[64];
    size_t w0 = 0, sparse = n_inputs, dense = n_inputs;
    for (size_t j = 0; j < n_inputs; j++) {
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_SPARSE && sparse == n_inputs) sparse = j;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_DENSE) dense = j;
    }
    if (sparse < n_inputs) {
        w0 = ple_model_input_width(model, sparse);
        STATUS(ple_model_input_embedding(model, sparse, 1000000, row, w0),
               PLE_STATUS_ID_OUT_OF_RANGE);
        STATUS(ple_model_input_embedding(model, sparse, 0, row, w0 + 1), PLE_STATUS_WRONG_LENGTH);
        STATUS(ple_model_input_embedding(model, sparse, 0, NULL, w0), PLE_STATUS_NULL_ARGUMENT);
        STATUS(ple_model_input_embedding(NULL, sparse, 0, row, w0), PLE_STATUS_NULL_ARGUMENT);
        STATUS(ple_model_input_embedding(model, n_inputs, 0, row, w0), PLE_STATUS_UNKNOWN_INPUT);
    }
    if (dense < n_inputs) {
        CHECK(!ple_model_input_has_table(model, dense));
        STATUS(ple_model_input_embedding(model, dense, 0, row, 1), PLE_STATUS_WRONG_INPUT_KIND);
    }
    for (size_t j = 0; j < n_inputs; j++) {
        free(owned[j]);
        free(owned_offsets[j]);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ragged MODEL.ple\n");
        return 2;
    }
    (void)read_file, (void)write_file; /* testing.h's file helpers: not needed here */
    STATUS(ple_model_open(argv[1], 0, &model), PLE_STATUS_OK);
    if (!model) return 1;
    make_inputs();

    ple_session *alone = NULL, *pooled = NULL;
    const ple_pool *pool = NULL;
    STATUS(ple_session_new(model, MAX_BATCH, &alone), PLE_STATUS_OK);
    STATUS(ple_pool_new(2, &pool), PLE_STATUS_OK);
    STATUS(ple_session_new_with_pool(model, MAX_BATCH, pool, &pooled), PLE_STATUS_OK);
    STATUS(ple_session_set_min_parallel_batch(pooled, 1), PLE_STATUS_OK);
    int ok = same_forms(alone) & same_forms(pooled);
    printf("ragged and padded forms bit-identical, batches 0..%d, 1 and 2 threads: %s\n",
           MAX_BATCH, ok ? "yes" : "NO");
    malformed(alone);
    vectors(alone);

    ple_session_free(alone);
    ple_session_free(pooled);
    ple_pool_free(pool);
    ple_model_free(model);
    for (size_t j = 0; j < n_inputs; j++) {
        if (ragged[j].offsets) {
            free((void *)ragged[j].ids);
            free((void *)ragged[j].offsets);
        }
        free((void *)padded[j].ids);
        free((void *)padded[j].floats);
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
