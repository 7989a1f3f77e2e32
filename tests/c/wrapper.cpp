// wrapper.cpp: the C++ wrapper (include/ple.hpp): exceptions carry status and message, models
// are shared by copy, sessions are move-only and keep their model alive.
//
//     wrapper QUICKSTART.ple
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ple.hpp"

static int checks = 0, failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

static_assert(!std::is_copy_constructible<ple::session>::value, "session is move-only");
static_assert(std::is_nothrow_move_constructible<ple::session>::value, "session moves");
static_assert(std::is_copy_constructible<ple::model>::value, "model is shared by copy");

// Expects `f` to throw ple::error with `status` and a message containing `needle`.
template <class F>
static void expect_error(F f, ple_status status, const char *needle) {
    try {
        f();
        CHECK(false && "no exception");
    } catch (const ple::error &e) {
        CHECK(e.status() == status);
        CHECK(std::strstr(e.what(), needle) != nullptr);
        CHECK(std::strstr(e.what(), ple_status_str(status)) == e.what());
    }
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    const std::string path = argv[1];

    expect_error([] { ple::model::open("/nonexistent/x.ple"); }, PLE_STATUS_IO, "/nonexistent/x.ple");
    const char junk[100] = {0};
    expect_error([&] { ple::model::from_memory(junk, sizeof junk); }, PLE_STATUS_NOT_PLE, "magic");

    ple::model m = ple::model::open(path);
    CHECK(m.name() == "quickstart");
    CHECK(m.input_count() == 5 && m.output_count() == 2 && m.output_width() == 2);
    CHECK(m.input_index("price") == 4);
    CHECK(m.input_kind(m.input_index("recent_items")) == PLE_INPUT_KIND_SEQUENCE);
    expect_error([&] { (void)m.input_index("nope"); }, PLE_STATUS_UNKNOWN_INPUT, "nope");
    expect_error([&] { ple::session(m, 0); }, PLE_STATUS_INVALID_MAX_BATCH, "max_batch");

    // Inputs for 2 samples, by name.
    std::vector<int64_t> u{1, 2}, it{3, 4}, c{5, 6}, seq(12, 1);
    std::vector<float> price{0.5f, -0.5f};
    std::vector<ple_column> cols{ple::ids(u, "user_id"), ple::ids(it, "item_id"),
                                 ple::ids(c, "category"), ple::ids(seq, "recent_items"),
                                 ple::floats(price, "price")};
    std::vector<float> out(4, 0.0f), again(4, 0.0f);

    ple::session s(m, 8);
    s.run(2, cols, out);
    CHECK(out[0] > 0.0f && out[0] < 1.0f);

    // Errors carry the session's detailed message; outputs stay untouched.
    std::vector<float> keep = out;
    u[1] = 64;  // vocab is 64
    expect_error([&] { s.run(2, cols, out); }, PLE_STATUS_ID_OUT_OF_RANGE, "'user_id', sample 1");
    CHECK(out == keep);
    u[1] = 2;
    expect_error([&] { s.run(9, cols, out); }, PLE_STATUS_BATCH_OUT_OF_RANGE, "max_batch of 8");
    std::vector<float> short_out(3);
    expect_error([&] { s.run(2, cols, short_out); }, PLE_STATUS_WRONG_LENGTH, "output");

    // Copies share the model; a moved session keeps working; the model outlives its handles.
    {
        ple::model copy = m;
        CHECK(copy.get() == m.get());
        ple::session moved = std::move(s);
        CHECK(s.get() == nullptr && moved.max_batch() == 8);
        m = ple::model::open(path);  // drops the first reference to the old model
        copy = m;                    // and the last handle to it: only `moved` holds it now
        moved.run(2, cols, again);
        CHECK(again == keep);
        ple::model back = moved.get_model();
        CHECK(back.name() == "quickstart" && back.get() != m.get());
        s = std::move(moved);
    }
    s.run(2, cols, again);
    CHECK(again == keep);

    std::printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
