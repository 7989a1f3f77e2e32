// requests.hpp: random scoring requests for any model, shared by the C++ examples.
#ifndef PLE_EXAMPLES_REQUESTS_HPP
#define PLE_EXAMPLES_REQUESTS_HPP

#include <cstdint>
#include <random>
#include <vector>

#include "ple.hpp"

/// One request: `batch` samples, one column per model input (in the model's order).
struct request {
    size_t batch = 0;
    std::vector<std::vector<int64_t>> ids;   // per input (empty for dense inputs)
    std::vector<std::vector<float>> floats;  // per input (empty for id inputs)
    std::vector<ple_column> columns;         // views of the above

    request(const ple::model &m, size_t batch_, std::mt19937_64 &rng) : batch(batch_) {
        size_t n = m.input_count();
        ids.resize(n);
        floats.resize(n);
        for (size_t j = 0; j < n; j++) {
            size_t len = batch * m.input_values_per_sample(j);
            if (m.input_kind(j) == PLE_INPUT_KIND_DENSE) {
                std::uniform_real_distribution<float> d(-1.0f, 1.0f);
                for (size_t i = 0; i < len; i++) floats[j].push_back(d(rng));
                columns.push_back(ple::floats(floats[j]));
            } else {
                std::uniform_int_distribution<int64_t> d(0, (int64_t)m.input_vocab_size(j) - 1);
                for (size_t i = 0; i < len; i++) ids[j].push_back(d(rng));
                columns.push_back(ple::ids(ids[j]));
            }
        }
    }
    request(const request &) = delete;  // `columns` points into this object
    request &operator=(const request &) = delete;
};

#endif  // PLE_EXAMPLES_REQUESTS_HPP
