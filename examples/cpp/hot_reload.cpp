// hot_reload.cpp: reload the model when its file is replaced, under running scoring threads and
// without stopping them.
//
//     hot_reload [MODEL.ple] [NEW_MODEL.ple] [THREADS] [SECONDS]
//     (defaults: examples/models/quickstart.ple, the same file, 3, 1)
//
// The example serves a copy of MODEL from a temporary file. Worker threads score with their own
// sessions over the "current" model. The main thread watches the served file as a server would:
// `file_changed()` every 10 ms (one stat). Halfway through, a deployer thread replaces the file the
// safe way: it writes NEW_MODEL next to it and renames it over (a mapped model must never be
// written in place). The watcher notices, opens the new file while the old model is still
// scoring, warms it (every page read into memory, so the first requests on it are as fast as the
// rest), checks it, publishes it and drops its reference to the old one. Each worker notices the
// new generation between two requests, creates a session on the new model and destroys its old
// session: the old model is freed when the last session using it is gone, never under a call.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "ple.hpp"
#include "requests.hpp"

namespace fs = std::filesystem;

namespace {

// The published model. Readers copy it (one reference count increment) under the lock.
std::mutex current_mutex;
ple::model current;
std::atomic<unsigned> generation{0};

ple::model get_current(unsigned &gen) {
    std::lock_guard<std::mutex> lock(current_mutex);
    gen = generation.load();
    return current;
}

}  // namespace

int main(int argc, char **argv) try {
    const char *old_path = argc > 1 ? argv[1] : "examples/models/quickstart.ple";
    const char *new_path = argc > 2 ? argv[2] : old_path;
    const size_t threads = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 3;
    const double seconds = argc > 4 ? std::atof(argv[4]) : 1.0;
    const size_t batch = 16;

    const fs::path served =
        fs::temp_directory_path() / ("ple_hot_reload_" + std::to_string(getpid()) + ".ple");
    fs::copy_file(old_path, served, fs::copy_options::overwrite_existing);
    current = ple::model::open(served.string());

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

    // The deployment, as a pipeline would do it: a new file in the same directory, renamed over
    // the served one (atomic; the old file lives on, unchanged, for the model that maps it).
    std::thread deployer([&] {
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 2));
        fs::path next = served;
        next += ".new";
        fs::copy_file(new_path, next, fs::copy_options::overwrite_existing);
        fs::rename(next, served);
        std::printf("deployed %s over the served file\n", new_path);
    });

    // The watcher: poll the served model's file and reload when it was replaced. It runs for
    // SECONDS, and longer (10 s at most) if the deployment has not been noticed by then.
    unsigned reloads = 0;
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    const auto give_up = end + std::chrono::seconds(10);
    for (auto t = start; errors == 0 && (t < end || (reloads == 0 && t < give_up));
         t = std::chrono::steady_clock::now()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ple::model serving;
        {
            std::lock_guard<std::mutex> lock(current_mutex);
            serving = current;
        }
        if (!serving.file_changed()) continue;
        // Open, warm and check the new file while the workers still score with the old model.
        // Warming reads every page of it now, here, so that the workers' first requests on the
        // new model find their table rows in memory instead of each waiting for a page fault (on
        // a large model just copied to a cold disk, a disk read per cold row).
        ple::model next = ple::model::open(served.string());
        const auto warm_start = std::chrono::steady_clock::now();
        next.warm([](uint64_t, uint64_t) { return true; });
        const ple_residency resident = next.residency();
        std::printf("warmed the new model in %.1f ms: %llu of %llu bytes resident\n",
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                              warm_start)
                        .count(),
                    (unsigned long long)resident.resident_bytes,
                    (unsigned long long)resident.total_bytes);
        std::mt19937_64 rng(99);
        request probe(next, batch, rng);
        std::vector<float> out(batch * next.output_width());
        ple::session(next, batch).run(batch, probe.columns, out);
        std::printf("the served file changed: opened the new one while the old model was scoring; "
                    "probe score %.6f\n", out[0]);
        // Publish it; the old handle is freed here, the old model when its last session goes.
        {
            std::lock_guard<std::mutex> lock(current_mutex);
            current = std::move(next);
            generation++;
        }
        reloads++;
    }
    deployer.join();
    // Every worker switches at its next request; wait for that (10 s at most).
    const auto give_up_switch = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (switched < threads && errors == 0 && std::chrono::steady_clock::now() < give_up_switch)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop = true;
    for (auto &w : workers) w.join();
    current.reset();
    fs::remove(served);

    std::printf("requests on the old model: %llu, on the new model: %llu\n",
                (unsigned long long)on_old.load(), (unsigned long long)on_new.load());
    std::printf("reloads: %u, workers switched: %u of %zu, errors: %u\n", reloads,
                switched.load(), threads, errors.load());
    const bool ok = errors == 0 && reloads == 1 && switched == threads && on_new > 0;
    std::printf("%s\n", ok ? "hot reload ok" : "hot reload FAILED");
    return ok ? 0 : 1;
} catch (const std::exception &e) {
    std::fprintf(stderr, "hot_reload: %s\n", e.what());
    return 1;
}
