// server.cpp: N threads share one model, each scores random requests with its own session for a
// while, and every result is compared with a single-threaded run of the same request.
//
//     server [MODEL.ple] [THREADS] [SECONDS] [MAX_BATCH]
//     (defaults: examples/models/quickstart.ple, 4, 3, 64)
//
// Prints throughput and "mismatches: 0"; exits 1 on any mismatch or error.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "ple.hpp"
#include "requests.hpp"

int main(int argc, char **argv) try {
    const char *path = argc > 1 ? argv[1] : "examples/models/quickstart.ple";
    const size_t threads = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 4;
    const double seconds = argc > 3 ? std::atof(argv[3]) : 3.0;
    const size_t max_batch = argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 64;

    const ple::model model = ple::model::open(path);
    const size_t width = model.output_width();
    std::printf("model %s (simd %s), %zu threads, %.2f s, max_batch %zu\n", model.name().c_str(),
                model.simd_level().c_str(), threads, seconds, max_batch);

    // A pool of requests of random sizes, and their scores from one single-threaded session.
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<size_t> sizes(1, max_batch);
    std::vector<std::unique_ptr<request>> pool;
    std::vector<std::vector<float>> expected;
    {
        ple::session single(model, max_batch);
        for (int i = 0; i < 64; i++) {
            pool.push_back(std::make_unique<request>(model, sizes(rng), rng));
            expected.emplace_back(pool.back()->batch * width);
            single.run(pool.back()->batch, pool.back()->columns, expected.back());
        }
    }

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> requests{0}, samples{0}, mismatches{0}, errors{0};
    std::vector<std::thread> workers;
    const auto start = std::chrono::steady_clock::now();
    for (size_t t = 0; t < threads; t++) {
        workers.emplace_back([&, t] {
            try {
                ple::session session(model, max_batch);   // one per thread
                std::vector<float> out(max_batch * width);  // allocated once
                std::mt19937_64 pick(1000 + t);
                uint64_t n = 0, s = 0;
                while (!stop.load(std::memory_order_relaxed)) {
                    size_t i = pick() % pool.size();
                    const request &r = *pool[i];
                    session.run(r.batch, r.columns.data(), r.columns.size(), out.data(),
                                r.batch * width);
                    if (std::memcmp(out.data(), expected[i].data(), r.batch * width * sizeof(float)))
                        mismatches++;
                    n++;
                    s += r.batch;
                }
                requests += n;
                samples += s;
            } catch (const ple::error &e) {
                std::fprintf(stderr, "thread %zu: %s\n", t, e.what());
                errors++;
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto &w : workers) w.join();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::printf("requests: %llu, samples: %llu, %.0f samples/s, %.0f requests/s\n",
                (unsigned long long)requests, (unsigned long long)samples, samples / elapsed,
                requests / elapsed);
    std::printf("mismatches: %llu, errors: %llu\n", (unsigned long long)mismatches,
                (unsigned long long)errors);
    return mismatches == 0 && errors == 0 && requests > 0 ? 0 : 1;
} catch (const ple::error &e) {
    std::fprintf(stderr, "server: %s\n", e.what());
    return 1;
}
