/*
 * score.c: open a model, print what it takes and returns, score one batch, print the scores.
 *
 *     score [MODEL.ple] [BATCH]      (defaults: examples/models/quickstart.ple, 4)
 *
 * The inputs are synthetic and deterministic, so the output can be checked against another
 * implementation (tests/c_api.rs does, with the Rust API): for input j, sample s and value p,
 *     id    = (7*s + 3*j + 5*p + 1) mod vocab_size
 *     float = ((13*s + 7*j + 3*p) mod 17) / 16 - 0.5
 */
#include <stdio.h>
#include <stdlib.h>

#include "ple.h"

static const char *kind_name(ple_input_kind kind) {
    switch (kind) {
    case PLE_INPUT_KIND_DENSE: return "dense";
    case PLE_INPUT_KIND_SPARSE: return "sparse";
    case PLE_INPUT_KIND_SEQUENCE: return "sequence";
    default: return "?";
    }
}

/* Prints the failure and returns 1 if `status` is not OK. */
static int failed(ple_status status, const char *what) {
    if (status == PLE_STATUS_OK) return 0;
    fprintf(stderr, "score: %s failed: %s: %s\n", what, ple_status_str(status), ple_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "examples/models/quickstart.ple";
    size_t batch = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 4;
    int rc = 1;

    const ple_model *model = NULL;
    ple_session *session = NULL;
    ple_column *columns = NULL;
    float *out = NULL;

    if (failed(ple_model_open(path, 0, &model), "ple_model_open")) return 1;

    size_t n_inputs = ple_model_input_count(model);
    size_t n_outputs = ple_model_output_count(model);
    size_t width = ple_model_output_width(model);
    printf("ple %s (simd %s)\n", ple_version(), ple_model_simd_level(model));
    printf("model %s: %zu inputs, %zu outputs (%zu floats per sample)\n", ple_model_name(model),
           n_inputs, n_outputs, width);
    for (size_t j = 0; j < n_inputs; j++) {
        printf("  input %zu: %-14s %-8s width %zu, %zu values per sample, vocab %zu\n", j,
               ple_model_input_name(model, j), kind_name(ple_model_input_kind(model, j)),
               ple_model_input_width(model, j), ple_model_input_values_per_sample(model, j),
               ple_model_input_vocab_size(model, j));
    }
    for (size_t k = 0; k < n_outputs; k++) {
        printf("  output %zu: %s (offset %zu, %zu floats)\n", k, ple_model_output_name(model, k),
               ple_model_output_offset(model, k), ple_model_output_len(model, k));
    }

    /* One column per input, in the model's order (name = NULL). */
    columns = calloc(n_inputs, sizeof *columns);
    if (!columns) goto done;
    for (size_t j = 0; j < n_inputs; j++) {
        size_t per = ple_model_input_values_per_sample(model, j);
        size_t len = batch * per;
        columns[j].len = len;
        if (ple_model_input_kind(model, j) == PLE_INPUT_KIND_DENSE) {
            float *x = malloc(len * sizeof *x + 1);
            if (!x) goto done;
            for (size_t s = 0; s < batch; s++)
                for (size_t p = 0; p < per; p++)
                    x[s * per + p] = (float)((13 * s + 7 * j + 3 * p) % 17) / 16.0f - 0.5f;
            columns[j].floats = x;
        } else {
            size_t vocab = ple_model_input_vocab_size(model, j);
            int64_t *ids = malloc(len * sizeof *ids + 1);
            if (!ids) goto done;
            for (size_t s = 0; s < batch; s++)
                for (size_t p = 0; p < per; p++)
                    ids[s * per + p] = (int64_t)((7 * s + 3 * j + 5 * p + 1) % vocab);
            columns[j].ids = ids;
        }
    }

    if (failed(ple_session_new(model, batch > 0 ? batch : 1, &session), "ple_session_new"))
        goto done;
    out = malloc(batch * width * sizeof *out + 1);
    if (!out) goto done;
    if (failed(ple_session_run(session, batch, columns, n_inputs, out, batch * width, NULL, 0),
               "ple_session_run")) {
        fprintf(stderr, "score: session says: %s\n", ple_session_last_error(session));
        goto done;
    }

    for (size_t s = 0; s < batch; s++) {
        printf("sample %zu:", s);
        for (size_t k = 0; k < n_outputs; k++) {
            size_t off = ple_model_output_offset(model, k), len = ple_model_output_len(model, k);
            for (size_t e = 0; e < len; e++)
                printf(" %s[%zu]=%.9g", ple_model_output_name(model, k), e, out[s * width + off + e]);
        }
        printf("\n");
    }
    rc = 0;

done:
    if (columns) {
        for (size_t j = 0; j < n_inputs; j++) {
            free((void *)columns[j].floats);
            free((void *)columns[j].ids);
        }
    }
    free(columns);
    free(out);
    ple_session_free(session);
    ple_model_free(model);
    return rc;
}
