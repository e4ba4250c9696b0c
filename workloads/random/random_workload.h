#pragma once
// peerd-random's run: HEAD every blob for its size, plan the reads with the shared pattern generator, replay
// them in each mode on worker threads, and log the speeds, error rates and verification results.
#include <cstdint>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"
#include "peerd/daemon/log.h"
#include "workloads/pattern/read_pattern.h"
#include "workloads/random/random_options.h"

namespace peerd::workload {

// Checks one ranged response against its planned read: 206 with "Content-Range: bytes <first>-<last>/<size>"
// (the size may be "*") and exactly length_bytes of body, or 200 with the whole blob when the read covers all
// of it. The error is one line.
Result<bool, std::string> check_range_response(const PlannedRead& read, uint64_t blob_size_bytes, long status,
                                               std::string_view content_range, uint64_t body_bytes);

// Runs the workload described by `options` (blob_urls already complete) and logs through `logger`. Returns
// kExitPassed or kExitChecksFailed.
int run_random_workload(const RandomOptions& options, const daemon::Logger& logger);

}  // namespace peerd::workload
