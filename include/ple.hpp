// ple.hpp: header-only C++17 RAII wrapper over the C API in ple.h (hand-written; ple.h's top
// comment states the conventions). `ple::model` and `ple::pool` are shared and thread-safe
// (copying adds a reference), `ple::session` is move-only and per thread, and failures throw
// `ple::error` with the status and the detailed message. Scoring allocates nothing unless it
// throws.
#ifndef PLE_HPP
#define PLE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ple.h"

namespace ple {

/// A failed call: `status()` is the ple_status, `what()` "<status description>: <details>".
class error : public std::runtime_error {
public:
    error(ple_status status, const char *details)
        : std::runtime_error(std::string(ple_status_str(status)) + ": " + (details ? details : "")),
          status_(status) {}
    ple_status status() const noexcept { return status_; }

private:
    ple_status status_;
};

namespace detail {
inline void check(ple_status st) {
    if (st != PLE_STATUS_OK) throw error(st, ple_last_error());
}
inline std::string str(const char *s) { return s ? s : ""; }
}  // namespace detail

/// Column helpers: by position (`name` = nullptr) or by name. A column only points at the data:
/// the vector must outlive the scoring call, so a temporary vector is refused at compile time.
inline ple_column ids(const int64_t *data, size_t len, const char *name = nullptr) {
    return ple_column{name, data, nullptr, len, nullptr, 0};
}
inline ple_column floats(const float *data, size_t len, const char *name = nullptr) {
    return ple_column{name, nullptr, data, len, nullptr, 0};
}
/// A ragged sequence column (TorchRec's jagged form): sample `s` holds
/// `ids[offsets[s] .. offsets[s + 1]]`; `offsets` has batch + 1 entries, from 0 to `len`.
inline ple_column ragged_ids(const int64_t *ids, size_t len, const int64_t *offsets,
                             size_t offsets_len, const char *name = nullptr) {
    return ple_column{name, ids, nullptr, len, offsets, offsets_len};
}
inline ple_column ragged_ids(const std::vector<int64_t> &ids, const std::vector<int64_t> &offsets,
                             const char *name = nullptr) {
    return ragged_ids(ids.data(), ids.size(), offsets.data(), offsets.size(), name);
}
/// Embedding vectors of a sequence, ragged: sample `s` holds vectors `offsets[s] .. offsets[s + 1]`
/// (`width` floats each) of `floats`. (Vectors of a sparse input: `ple::floats`.)
inline ple_column ragged_floats(const float *floats, size_t len, const int64_t *offsets,
                                size_t offsets_len, const char *name = nullptr) {
    return ple_column{name, nullptr, floats, len, offsets, offsets_len};
}
inline ple_column ragged_floats(const std::vector<float> &floats,
                                const std::vector<int64_t> &offsets, const char *name = nullptr) {
    return ragged_floats(floats.data(), floats.size(), offsets.data(), offsets.size(), name);
}
inline ple_column ids(const std::vector<int64_t> &v, const char *name = nullptr) {
    return ids(v.data(), v.size(), name);
}
inline ple_column floats(const std::vector<float> &v, const char *name = nullptr) {
    return floats(v.data(), v.size(), name);
}
ple_column ids(std::vector<int64_t> &&, const char * = nullptr) = delete;
ple_column ids(const std::vector<int64_t> &&, const char * = nullptr) = delete;
ple_column floats(std::vector<float> &&, const char * = nullptr) = delete;
ple_column floats(const std::vector<float> &&, const char * = nullptr) = delete;
ple_column ragged_ids(std::vector<int64_t> &&, const std::vector<int64_t> &,
                      const char * = nullptr) = delete;
ple_column ragged_ids(const std::vector<int64_t> &, std::vector<int64_t> &&,
                      const char * = nullptr) = delete;
ple_column ragged_floats(std::vector<float> &&, const std::vector<int64_t> &,
                         const char * = nullptr) = delete;
ple_column ragged_floats(const std::vector<float> &, std::vector<int64_t> &&,
                         const char * = nullptr) = delete;

/// An immutable, reference-counted model. Copies share it; use it from any thread. A
/// default-constructed (or moved-from, or reset) model is empty: `bool(m)` is false, and its
/// getters return 0 / "" (as the C functions do for a NULL handle).
class model {
public:
    model() noexcept = default;
    static model open(const std::string &path, uint32_t flags = 0) {
        const ple_model *m = nullptr;
        detail::check(ple_model_open(path.c_str(), flags, &m));
        return model(m);
    }
    /// The bytes are copied: `data` may be freed as soon as this returns.
    static model from_memory(const void *data, size_t len, uint32_t flags = 0) {
        const ple_model *m = nullptr;
        detail::check(ple_model_open_memory(data, len, flags, &m));
        return model(m);
    }
    /// Takes over one reference (e.g. `model::adopt(ple_model_clone(p))`).
    static model adopt(const ple_model *m) { return model(m); }

    model(const model &o) : m_(o.m_ ? ple_model_clone(o.m_) : nullptr) {}
    model(model &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    model &operator=(model o) noexcept {
        std::swap(m_, o.m_);
        return *this;
    }
    ~model() { ple_model_free(m_); }

    const ple_model *get() const noexcept { return m_; }
    explicit operator bool() const noexcept { return m_ != nullptr; }
    /// Releases this reference; the model becomes empty.
    void reset() noexcept { ple_model_free(std::exchange(m_, nullptr)); }

    /// Whether the file the model was opened from was replaced or written to since
    /// (`ple_model_file_changed`); false for a model opened from memory, or an empty one.
    bool file_changed() const { return m_ && ple_model_file_changed(m_); }
    /// Checks every checksum again over the bytes the model reads (`ple_model_verify_data`):
    /// throws `ple::error` (PLE_STATUS_CHECKSUM) if a mapped file was written in place.
    void verify_data() const { detail::check(ple_model_verify_data(m_)); }
    /// Brings every page of the model into memory (`ple_model_warm`): run it on a background
    /// thread before switching traffic to a newly opened model. `progress(done, total)` is called
    /// every 8 MiB and returns true to go on; false, or `*cancel` set nonzero by another thread
    /// (an atomic store), stops the warm-up with `ple::error` (PLE_STATUS_CANCELLED). An
    /// exception thrown by `progress` stops it too and is rethrown here (it never crosses the C
    /// API).
    template <class F>
    void warm(F &&progress, const int *cancel = nullptr) const {
        struct context {
            F *f;
            std::exception_ptr thrown;
        } ctx{&progress, nullptr};
        auto call = [](void *c, uint64_t done, uint64_t total) -> int32_t {
            auto *x = static_cast<context *>(c);
            try {
                return (*x->f)(done, total) ? 0 : 1;
            } catch (...) {
                x->thrown = std::current_exception();
                return 1;
            }
        };
        ple_status st = ple_model_warm(m_, call, &ctx, cancel);
        if (ctx.thrown) std::rethrow_exception(ctx.thrown);
        detail::check(st);
    }
    void warm() const { detail::check(ple_model_warm(m_, nullptr, nullptr, nullptr)); }
    /// How much of the model and of its tables is resident in RAM now (`ple_model_residency`).
    ple_residency residency() const {
        ple_residency r{};
        detail::check(ple_model_residency(m_, &r));
        return r;
    }
    /// Whether the model's pages are locked in RAM (opened with PLE_OPEN_LOCK).
    bool is_locked() const { return m_ && ple_model_is_locked(m_); }
    std::string name() const { return detail::str(ple_model_name(m_)); }
    std::string simd_level() const { return detail::str(ple_model_simd_level(m_)); }
    ple_dtype dtype() const { return ple_model_dtype(m_); }
    /// Dense layers, MLP by MLP in file order, with each one's storage precision (F32, F16, I8).
    size_t layer_count() const { return ple_model_layer_count(m_); }
    ple_dtype layer_dtype(size_t i) const { return ple_model_layer_dtype(m_, i); }
    std::string int8_level() const { return detail::str(ple_model_int8_level(m_)); }
    size_t task_count() const { return ple_model_task_count(m_); }

    size_t input_count() const { return ple_model_input_count(m_); }
    std::string input_name(size_t i) const { return detail::str(ple_model_input_name(m_, i)); }
    ple_input_kind input_kind(size_t i) const { return ple_model_input_kind(m_, i); }
    size_t input_width(size_t i) const { return ple_model_input_width(m_, i); }
    size_t input_values_per_sample(size_t i) const {
        return ple_model_input_values_per_sample(m_, i);
    }
    size_t input_vocab_size(size_t i) const { return ple_model_input_vocab_size(m_, i); }
    size_t input_max_len(size_t i) const { return ple_model_input_max_len(m_, i); }
    /// "sum", "mean" or "max" for a sequence input, "" for others.
    std::string input_pooling(size_t i) const {
        return detail::str(ple_model_input_pooling(m_, i));
    }
    /// The padding id of a sequence input, if it has one.
    std::optional<int64_t> input_pad_id(size_t i) const {
        int64_t pad = 0;
        if (ple_model_input_pad_id(m_, i, &pad)) return pad;
        return std::nullopt;
    }
    bool input_ids_through_f32(size_t i) const { return ple_model_input_ids_through_f32(m_, i); }
    /// False for an input whose embedding vectors the caller passes (no table in the file).
    bool input_has_table(size_t i) const { return ple_model_input_has_table(m_, i); }
    /// The embedding vector scoring looks up for `id` of input `i` (input_width floats).
    std::vector<float> input_embedding(size_t i, int64_t id) const {
        std::vector<float> v(ple_model_input_width(m_, i));
        detail::check(ple_model_input_embedding(m_, i, id, v.data(), v.size()));
        return v;
    }
    size_t input_index(const std::string &name) const {
        size_t i = 0;
        detail::check(ple_model_input_index(m_, name.c_str(), &i));
        return i;
    }

    size_t output_width() const { return ple_model_output_width(m_); }
    size_t output_count() const { return ple_model_output_count(m_); }
    std::string output_name(size_t k) const { return detail::str(ple_model_output_name(m_, k)); }
    size_t output_offset(size_t k) const { return ple_model_output_offset(m_, k); }
    size_t output_len(size_t k) const { return ple_model_output_len(m_, k); }

    size_t gate_width() const { return ple_model_gate_width(m_); }
    size_t gate_count() const { return ple_model_gate_count(m_); }
    std::string gate_name(size_t g) const { return detail::str(ple_model_gate_name(m_, g)); }
    size_t gate_offset(size_t g) const { return ple_model_gate_offset(m_, g); }
    size_t gate_len(size_t g) const { return ple_model_gate_len(m_, g); }

private:
    explicit model(const ple_model *m) : m_(m) {}
    const ple_model *m_ = nullptr;
};

/// One task of a job handed to an executor (see `pool::executor`): call it with each index.
class task {
public:
    task(ple_task_fn fn, void *ctx) noexcept : fn_(fn), ctx_(ctx) {}
    void operator()(size_t index) const { fn_(ctx_, index); }

private:
    ple_task_fn fn_;
    void *ctx_;
};

/// Threads that sessions split large batches across (`ple_pool`): reference counted (copies
/// share it) and thread-safe, like a model. Idle threads sleep. A default-constructed (or
/// moved-from, or reset) pool is empty; a session made with an empty pool has none.
class pool {
public:
    pool() noexcept = default;
    /// `threads` threads, the calling thread of each scoring call included (0: one per CPU).
    explicit pool(size_t threads) { detail::check(ple_pool_new(threads, &p_)); }
    /// A pool over the caller's executor. `run(n, task)` must call `task(i)` for every `i` in
    /// `[0, n)`, each exactly once, on any threads (concurrently or not, the calling thread too),
    /// and return when all have returned; it must not throw (it is called from inside the
    /// library: an exception ends the program), and may be called from several threads at once.
    /// `threads` is the most tasks it runs at once. `run` is destroyed when the pool is gone.
    /// For example, with TBB:
    ///     ple::pool::executor(8, [](size_t n, ple::task t) {
    ///         tbb::parallel_for(size_t(0), n, [&](size_t i) { t(i); });
    ///     });
    template <class Run>
    static pool executor(size_t threads, Run run) {
        auto *ctx = new Run(std::move(run));
        const ple_pool *p = nullptr;
        ple_status st = ple_pool_new_executor(threads, &run_executor<Run>, ctx,
                                              &release_executor<Run>, &p);
        if (st != PLE_STATUS_OK) {
            delete ctx;
            throw error(st, ple_last_error());
        }
        return pool(p);
    }
    /// Takes over one reference (e.g. `pool::adopt(ple_pool_clone(p))`).
    static pool adopt(const ple_pool *p) { return pool(p); }

    pool(const pool &o) : p_(o.p_ ? ple_pool_clone(o.p_) : nullptr) {}
    pool(pool &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    pool &operator=(pool o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~pool() { ple_pool_free(p_); }

    const ple_pool *get() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    void reset() noexcept { ple_pool_free(std::exchange(p_, nullptr)); }
    /// The most threads a scoring call runs on; 0 for an empty pool.
    size_t threads() const { return p_ ? ple_pool_threads(p_) : 0; }
    /// How long idle threads spin before sleeping (`ple_pool_set_spin_us`; default 50 µs).
    void set_spin(std::chrono::microseconds spin) {
        auto us = spin.count() < 0 ? 0 : spin.count() > 0xffffffffLL ? 0xffffffffLL : spin.count();
        detail::check(ple_pool_set_spin_us(p_, static_cast<uint32_t>(us)));
    }

private:
    explicit pool(const ple_pool *p) : p_(p) {}
    template <class Run>
    static void run_executor(void *ctx, ple_task_fn fn, void *task_ctx, size_t n) noexcept {
        (*static_cast<Run *>(ctx))(n, task(fn, task_ctx));
    }
    template <class Run>
    static void release_executor(void *ctx) noexcept {
        delete static_cast<Run *>(ctx);
    }
    const ple_pool *p_ = nullptr;
};

/// One thread's scoring state over a model (which it keeps alive). Move-only. A
/// default-constructed (or moved-from) session is empty: `bool(s)` is false and `run` throws.
class session {
public:
    session() noexcept = default;
    session(const model &m, size_t max_batch) {
        detail::check(ple_session_new(m.get(), max_batch, &s_));
    }
    /// Large batches are split across `p`'s threads (`ple_session_new_with_pool`); the session
    /// keeps the pool alive. An empty `p` means no pool.
    session(const model &m, size_t max_batch, const pool &p) {
        detail::check(ple_session_new_with_pool(m.get(), max_batch, p.get(), &s_));
    }
    session(session &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    session &operator=(session &&o) noexcept {
        if (this != &o) {
            ple_session_free(s_);
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    session(const session &) = delete;
    session &operator=(const session &) = delete;
    ~session() { ple_session_free(s_); }

    ple_session *get() const noexcept { return s_; }
    explicit operator bool() const noexcept { return s_ != nullptr; }
    size_t max_batch() const { return ple_session_max_batch(s_); }
    /// The most threads one call runs on (1 without a pool).
    size_t threads() const { return ple_session_threads(s_); }
    /// The smallest batch split across the pool (`ple_session_set_min_parallel_batch`).
    void set_min_parallel_batch(size_t batch) {
        check(ple_session_set_min_parallel_batch(s_, batch));
    }
    /// A new reference to the session's model.
    model get_model() const { return model::adopt(ple_model_clone(ple_session_model(s_))); }

    /// Scores `batch` samples into `out` (`batch * output_width` floats) and, if given, `gates`.
    void run(size_t batch, const ple_column *columns, size_t n_columns, float *out,
             size_t out_len, float *gates = nullptr, size_t gates_len = 0) {
        check(ple_session_run(s_, batch, columns, n_columns, out, out_len, gates, gates_len));
    }
    void run(size_t batch, const std::vector<ple_column> &columns, std::vector<float> &out) {
        run(batch, columns.data(), columns.size(), out.data(), out.size());
    }
    /// Also writes every gate's weights to `gates` (`batch * gate_width` floats).
    void run(size_t batch, const std::vector<ple_column> &columns, std::vector<float> &out,
             std::vector<float> &gates) {
        run(batch, columns.data(), columns.size(), out.data(), out.size(), gates.data(),
            gates.size());
    }
    void run_dense(size_t batch, const float *x, size_t x_len, float *out, size_t out_len,
                   float *gates = nullptr, size_t gates_len = 0) {
        check(ple_session_run_dense(s_, batch, x, x_len, out, out_len, gates, gates_len));
    }

private:
    // The thread's last error: it holds the session's message too, and, unlike the session's, the
    // message of PLE_STATUS_SESSION_BUSY.
    void check(ple_status st) {
        if (st != PLE_STATUS_OK) throw error(st, ple_last_error());
    }
    ple_session *s_ = nullptr;
};

}  // namespace ple

#endif  // PLE_HPP
