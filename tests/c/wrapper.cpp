// wrapper.cpp: the C++ wrapper (include/ple.hpp): exceptions carry status and message, models
// and pools are shared by copy, sessions are move-only and keep their model and pool alive, a
// caller's executor plugs in as a lambda.
//
//     wrapper QUICKSTART.ple
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <optional>
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
static_assert(std::is_nothrow_default_constructible<ple::model>::value, "a model can be empty");
static_assert(std::is_nothrow_default_constructible<ple::session>::value, "a session can be empty");
static_assert(std::is_copy_constructible<ple::pool>::value, "pool is shared by copy");
static_assert(std::is_nothrow_move_constructible<ple::pool>::value, "pool moves");

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

    // The same sequences ragged: recent_items pads with 0, so [1 x6], [1 1 0 0 0 0] and
    // [1 x6], [1 1] score alike, bit for bit.
    {
        std::vector<int64_t> padded_seq(12, 1), values(8, 1), offsets{0, 6, 8};
        std::fill(padded_seq.begin() + 8, padded_seq.end(), 0);
        std::vector<ple_column> pc = cols, rc = cols;
        pc[3] = ple::ids(padded_seq, "recent_items");
        rc[3] = ple::ragged_ids(values, offsets, "recent_items");
        std::vector<float> a(4), b(4);
        s.run(2, pc, a);
        s.run(2, rc, b);
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
        // The same as embedding vectors of the real ids (recent_items' table, 4 floats each).
        size_t q = m.input_index("recent_items");
        CHECK(m.input_has_table(q) && !m.input_has_table(m.input_index("price")));
        std::vector<float> vec;
        for (size_t k = 0; k < 8; k++) {
            std::vector<float> e = m.input_embedding(q, values[k]);
            vec.insert(vec.end(), e.begin(), e.end());
        }
        std::vector<ple_column> vc = cols;
        vc[3] = ple::ragged_floats(vec, offsets, "recent_items");
        std::vector<float> c(4);
        s.run(2, vc, c);
        CHECK(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) == 0);
        expect_error([&] { (void)m.input_embedding(q, 64); }, PLE_STATUS_ID_OUT_OF_RANGE,
                     "recent_items");
        offsets[1] = 7;  // sample 0 then holds 7 ids, over max_len 6
        offsets[2] = 8;
        expect_error([&] { s.run(2, rc, b); }, PLE_STATUS_RAGGED_INPUT,
                     "'recent_items', sample 0: 7 ids, more than the input's max_len of 6");
    }

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

    // Every introspection getter of the C API, through the wrapper.
    CHECK(m.task_count() == 2);
    const size_t seq_i = m.input_index("recent_items"), user = m.input_index("user_id");
    CHECK(m.input_max_len(seq_i) == 6 && m.input_max_len(user) == 1);
    CHECK(m.input_pooling(seq_i) == "mean" && m.input_pooling(user).empty());
    CHECK(m.input_pad_id(seq_i) == std::optional<int64_t>(0));
    CHECK(!m.input_pad_id(user).has_value());
    CHECK(!m.input_ids_through_f32(user));
    CHECK(m.gate_count() > 0);
    size_t gate_floats = 0;
    for (size_t g = 0; g < m.gate_count(); g++) {
        CHECK(!m.gate_name(g).empty());
        CHECK(m.gate_offset(g) == gate_floats);
        gate_floats += m.gate_len(g);
    }
    CHECK(gate_floats == m.gate_width());
    CHECK(m.gate_name(m.gate_count()).empty());  // out of range: "" (C: NULL)

    // Scores with gate weights, into vectors.
    std::vector<float> with_gates(4), gates(2 * m.gate_width(), -1.0f);
    s.run(2, cols, with_gates, gates);
    CHECK(with_gates == keep);
    for (float g : gates) CHECK(g >= 0.0f && g <= 1.0f);
    std::vector<float> short_gates(1);
    expect_error([&] { s.run(2, cols, with_gates, short_gates); }, PLE_STATUS_WRONG_LENGTH, "gate");

    // The file has not changed; its checksums hold.
    CHECK(!m.file_changed());
    m.verify_data();

    // Warm-up: progress up to the file size, resident afterwards; a progress function that
    // returns false or throws stops it (the exception comes back here, not through the C API).
    uint64_t last = 0, total = 0;
    m.warm([&](uint64_t done, uint64_t all) {
        last = done;
        total = all;
        return true;
    });
    ple_residency r = m.residency();
    CHECK(last == total && total == r.total_bytes && r.resident_bytes == r.total_bytes);
    CHECK(!m.is_locked());
    expect_error([&] { m.warm([](uint64_t, uint64_t) { return false; }); }, PLE_STATUS_CANCELLED,
                 "progress callback");
    bool caught = false;
    try {
        m.warm([](uint64_t, uint64_t) -> bool { throw std::logic_error("from progress"); });
    } catch (const std::logic_error &e) {
        caught = std::strcmp(e.what(), "from progress") == 0;
    }
    CHECK(caught);
    int cancel = 1;
    expect_error([&] { m.warm([](uint64_t, uint64_t) { return true; }, &cancel); },
                 PLE_STATUS_CANCELLED, "cancel flag");
    m.warm();

    // Empty handles: a model member can wait for its first load (hot reload), and reset.
    ple::model empty;
    CHECK(!empty && empty.get() == nullptr);
    CHECK(empty.input_count() == 0 && empty.name().empty() && !empty.file_changed());
    ple::model copy_of_empty = empty;
    CHECK(!copy_of_empty);
    expect_error([&] { ple::session(empty, 4); }, PLE_STATUS_NULL_ARGUMENT, "model");
    expect_error([&] { empty.verify_data(); }, PLE_STATUS_NULL_ARGUMENT, "model is NULL");
    expect_error([&] { empty.warm(); }, PLE_STATUS_NULL_ARGUMENT, "model is NULL");
    expect_error([&] { empty.residency(); }, PLE_STATUS_NULL_ARGUMENT, "NULL");
    CHECK(!empty.is_locked());
    empty = m;
    CHECK(empty && empty.get() == m.get());
    empty.reset();
    CHECK(!empty && m.name() == "quickstart");
    ple::session none;
    CHECK(!none);
    expect_error([&] { none.run(2, cols, out); }, PLE_STATUS_NULL_ARGUMENT, "session is NULL");

    // Pools: shared by copy, kept alive by their sessions; the caller's executor (std::thread),
    // destroyed with the pool. Scores equal those of a session without a pool.
    {
        const size_t big = 300;
        std::vector<int64_t> bu(big), bi(big), bc(big), bseq(big * 6);
        std::vector<float> bprice(big);
        for (size_t i = 0; i < big; i++) {
            bu[i] = int64_t(i * 7 % 64), bi[i] = int64_t(i * 3 % 64), bc[i] = int64_t(i % 8);
            bprice[i] = float(i % 17) / 16.0f;
        }
        for (size_t i = 0; i < bseq.size(); i++) bseq[i] = int64_t(i * 5 % 64);
        std::vector<ple_column> bcols{ple::ids(bu, "user_id"), ple::ids(bi, "item_id"),
                                      ple::ids(bc, "category"), ple::ids(bseq, "recent_items"),
                                      ple::floats(bprice, "price")};
        std::vector<float> one(big * 2), pooled(big * 2, -1.0f);
        ple::session(m, big).run(big, bcols, one);

        ple::pool p(2);
        CHECK(p && p.threads() == 2);
        ple::pool shared = p;
        CHECK(shared.get() == p.get());
        p.set_spin(std::chrono::microseconds(0));
        ple::session ps(m, big, p);
        CHECK(ps.threads() == 2);
        ps.set_min_parallel_batch(1);  // this small model's own threshold is above `big`
        p.reset();
        shared.reset();
        ps.run(big, bcols, pooled);
        CHECK(pooled == one);

        struct counts {
            std::atomic<int> runs{0}, destroyed{0};
        } n;
        struct run_threads {
            counts *n;
            void operator()(size_t tasks, ple::task t) const {
                n->runs++;
                std::vector<std::thread> threads;
                for (size_t i = 1; i < tasks; i++) threads.emplace_back([=] { t(i); });
                if (tasks > 0) t(0);
                for (auto &th : threads) th.join();
            }
        };
        {
            ple::pool e = ple::pool::executor(3, [r = run_threads{&n}, guard = std::shared_ptr<int>(
                                                     new int(0), [&](int *x) {
                                                         n.destroyed++;
                                                         delete x;
                                                     })](size_t tasks, ple::task t) {
                r(tasks, t);
            });
            CHECK(e.threads() == 3);
            e.set_spin(std::chrono::microseconds(5));  // no effect on an executor, no error
            ple::session es(m, big, e);
            CHECK(es.threads() == 3);
            es.set_min_parallel_batch(1);
            e.reset();
            std::fill(pooled.begin(), pooled.end(), -1.0f);
            es.run(big, bcols, pooled);
            CHECK(pooled == one);
            CHECK(n.runs > 0);
            CHECK(n.destroyed == 0);  // the session holds the pool
        }
        CHECK(n.destroyed == 1);
        expect_error([&] { ple::pool::executor(0, run_threads{&n}); }, PLE_STATUS_INVALID_ARGUMENT,
                     "threads");
        expect_error([] { ple::pool(100000); }, PLE_STATUS_INVALID_ARGUMENT, "1024");
        ple::pool empty_pool;
        CHECK(!empty_pool && empty_pool.threads() == 0);
        expect_error([&] { empty_pool.set_spin(std::chrono::microseconds(1)); },
                     PLE_STATUS_NULL_ARGUMENT, "pool is NULL");
        ple::session no_pool(m, big, empty_pool);
        CHECK(no_pool.threads() == 1);
    }

    std::printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
