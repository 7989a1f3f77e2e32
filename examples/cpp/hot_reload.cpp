// hot_reload.cpp: replace the model under running scoring threads without stopping them.
//
//     hot_reload [MODEL.ple] [NEW_MODEL.ple] [THREADS] [SECONDS]
//     (defaults: examples/models/quickstart.ple, the same file, 3, 1)
//
// Worker threads score with their own sessions over the "current" model. Halfway through, the
// main thread opens the new model while the old one is still scoring, checks it, publishes it,
// and drops its reference to the old one. Each worker notices the new generation between two
// requests, creates a session on the new model and destroys its old session: the old model is
// freed when the last session using it is gone, never under a running call.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "ple.hpp"
#include "requests.hpp"

namespace {

// The published model. Readers copy it (one reference count increment) under the lock.
std::mutex current_mutex;
std::unique_ptr<ple::model> current;
std::atomic<unsigned> generation{0};

ple::model get_current(unsigned &gen) {
    std::lock_guard<std::mutex> lock(current_mutex);
    gen = generation.load();
    return *current;
}

}  // namespace

int main(int argc, char **argv) try {
    const char *old_path = argc > 1 ? argv[1] : "examples/models/quickstart.ple";
    const char *new_path = argc > 2 ? argv[2] : old_path;
    const size_t threads = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 3;
    const double seconds = argc > 4 ? std::atof(argv[4]) : 1.0;
    const size_t batch = 16;

    current = std::make_unique<ple::model>(ple::model::open(old_path));

    std::atomic<bool> stop{false};
    std::atomic<unsigned> errors{0}, switched{0};
    std::atomic<uint64_t> on_old{0}, on_new{0};
    std::vector<std::thread> workers;
    for (size_t t = 0; t < threads; t++) {
        workers.emplace_back([&, t] {
            try {
                std::mt19937_64 rng(7 + t);
                unsigned gen = 0;
                ple::model m = get_current(gen);
                ple::session session(m, batch);
                auto r = std::make_unique<request>(m, batch, rng);
                std::vector<float> out(batch * m.output_width());
                while (!stop.load()) {
                    if (generation.load() != gen) {
                        // A new model was published: switch between two requests. Replacing the
                        // session releases this thread's hold on the old model.
                        m = get_current(gen);
                        session = ple::session(m, batch);
                        r = std::make_unique<request>(m, batch, rng);
                        out.assign(batch * m.output_width(), 0.0f);
                        switched++;
                    }
                    session.run(batch, r->columns, out);
                    (gen == 0 ? on_old : on_new)++;
                }
            } catch (const ple::error &e) {
                std::fprintf(stderr, "worker: %s\n", e.what());
                errors++;
            }
        });
    }

    std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 2));

    // Open and check the new model while the workers are still scoring with the old one.
    auto next = std::make_unique<ple::model>(ple::model::open(new_path));
    {
        std::mt19937_64 rng(99);
        request probe(*next, batch, rng);
        std::vector<float> out(batch * next->output_width());
        ple::session(*next, batch).run(batch, probe.columns, out);
        std::printf("opened %s while the old model was scoring; probe score %.6f\n", new_path,
                    out[0]);
    }
    // Publish it, then free the main thread's reference to the old model (ple_model_free).
    // Sessions still using the old model keep it alive until their threads replace them.
    std::unique_ptr<ple::model> old;
    {
        std::lock_guard<std::mutex> lock(current_mutex);
        old = std::exchange(current, std::move(next));
        generation = 1;
    }
    old.reset();
    std::printf("published the new model and freed the old handle\n");

    // Every worker switches at its next request; wait for that (10 s at most), then let them
    // score on the new model for the rest of the time.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (switched < threads && errors == 0 && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 2));
    stop = true;
    for (auto &w : workers) w.join();
    current.reset();

    std::printf("requests on the old model: %llu, on the new model: %llu\n",
                (unsigned long long)on_old.load(), (unsigned long long)on_new.load());
    std::printf("workers switched: %u of %zu, errors: %u\n", switched.load(), threads,
                errors.load());
    const bool ok = errors == 0 && switched == threads && on_new > 0;
    std::printf("%s\n", ok ? "hot reload ok" : "hot reload FAILED");
    return ok ? 0 : 1;
} catch (const ple::error &e) {
    std::fprintf(stderr, "hot_reload: %s\n", e.what());
    return 1;
}
