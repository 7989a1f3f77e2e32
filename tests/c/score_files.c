/*
 * score_files.c: scores inputs read from raw files, through named columns in reverse model order,
 * in chunks of MAX_BATCH samples (run by tests/c_api.rs, which writes the inputs and checks the
 * outputs against the Rust API).
 *
 *     score_files MODEL.ple IN_DIR BATCH MAX_BATCH OUT_DIR
 *
 * IN_DIR/in_<input name>.bin holds the column: little-endian int64 ids or float32 values,
 * BATCH * values_per_sample of them. Writes OUT_DIR/out.bin (BATCH * output_width float32) and
 * OUT_DIR/gates.bin (BATCH * gate_width float32).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ple.h"

static void *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 8);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: score_files MODEL.ple IN_DIR BATCH MAX_BATCH OUT_DIR\n");
        return 2;
    }
    const char *in_dir = argv[2], *out_dir = argv[5];
    size_t batch = (size_t)strtoul(argv[3], NULL, 10);
    size_t max_batch = (size_t)strtoul(argv[4], NULL, 10);
    const ple_model *m = NULL;
    ple_status st = ple_model_open(argv[1], 0, &m);
    if (st != PLE_STATUS_OK) {
        fprintf(stderr, "open: %s: %s\n", ple_status_str(st), ple_last_error());
        return 1;
    }
    size_t n = ple_model_input_count(m), ow = ple_model_output_width(m),
           gw = ple_model_gate_width(m);
    void **data = calloc(n, sizeof *data);
    size_t *per = calloc(n, sizeof *per);
    ple_column *cols = calloc(n, sizeof *cols);
    float *out = malloc((batch * ow + 1) * sizeof *out);
    float *gates = malloc((batch * gw + 1) * sizeof *gates);
    ple_session *s = NULL;
    int rc = 1;

    for (size_t j = 0; j < n; j++) {
        char path[4096];
        size_t len = 0;
        snprintf(path, sizeof path, "%s/in_%s.bin", in_dir, ple_model_input_name(m, j));
        data[j] = read_all(path, &len);
        per[j] = ple_model_input_values_per_sample(m, j);
        size_t elem = ple_model_input_kind(m, j) == PLE_INPUT_KIND_DENSE ? 4 : 8;
        if (!data[j] || len != batch * per[j] * elem) {
            fprintf(stderr, "%s: missing or %zu bytes, expected %zu\n", path, len,
                    batch * per[j] * elem);
            goto done;
        }
    }
    st = ple_session_new(m, max_batch, &s);
    if (st != PLE_STATUS_OK) {
        fprintf(stderr, "session: %s: %s\n", ple_status_str(st), ple_last_error());
        goto done;
    }
    for (size_t start = 0; start < batch; start += max_batch) {
        size_t b = batch - start < max_batch ? batch - start : max_batch;
        for (size_t k = 0; k < n; k++) {
            size_t j = n - 1 - k; /* reverse order, matched by name */
            cols[k].name = ple_model_input_name(m, j);
            cols[k].len = b * per[j];
            if (ple_model_input_kind(m, j) == PLE_INPUT_KIND_DENSE) {
                cols[k].floats = (const float *)data[j] + start * per[j];
                cols[k].ids = NULL;
            } else {
                cols[k].ids = (const int64_t *)data[j] + start * per[j];
                cols[k].floats = NULL;
            }
        }
        st = ple_session_run(s, b, cols, n, out + start * ow, b * ow,
                             gw ? gates + start * gw : NULL, b * gw);
        if (st != PLE_STATUS_OK) {
            fprintf(stderr, "run: %s: %s\n", ple_status_str(st), ple_session_last_error(s));
            goto done;
        }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/out.bin", out_dir);
    if (!write_all(path, out, batch * ow * sizeof *out)) goto done;
    snprintf(path, sizeof path, "%s/gates.bin", out_dir);
    if (!write_all(path, gates, batch * gw * sizeof *gates)) goto done;
    printf("scored %zu samples of %s in chunks of %zu\n", batch, ple_model_name(m), max_batch);
    rc = 0;

done:
    for (size_t j = 0; j < n; j++) free(data[j]);
    free(data);
    free(per);
    free(cols);
    free(out);
    free(gates);
    ple_session_free(s);
    ple_model_free(m);
    return rc;
}
