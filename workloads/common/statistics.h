#pragma once
// Statistics the workloads report, defined precisely (the original Azure/peerd `random` test sorted speeds
// descending, so its "p90" was a slow read and its "p100" the slowest; it divided failures by the number of
// URLs; and it appended to shared slices from several goroutines). Here:
//   - pN is the N-th percentile of the values in ascending order, by the nearest-rank method: the value at
//     1-based rank ceil(N/100 * count). p100 is therefore the maximum and p50 the lower median. For speeds a
//     higher percentile is a faster read.
//   - The error rate is failed requests / requests actually issued (a request that could not even be issued,
//     such as a blob whose size is unknown, is reported separately, not hidden in the rate).
//   - Speeds are in MB/s with MB = 10^6 bytes.
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace peerd::workload {

// The percentiles every "speeds (MB/s)" line reports, in this order.
inline constexpr std::array<uint32_t, 5> kReportedPercentiles = {50, 75, 90, 95, 100};

// Nearest-rank percentile of `values` (any order). `percent` in [1, 100]; nullopt when `values` is empty.
std::optional<double> percentile_nearest_rank(std::span<const double> values, uint32_t percent);

struct PercentileSummary {
  size_t count = 0;
  std::array<double, kReportedPercentiles.size()> values{};  // matches kReportedPercentiles
};
std::optional<PercentileSummary> summarize(std::span<const double> values);

// failures / requests; 0 when no request was issued (callers report the request count beside it).
double error_rate(uint64_t failures, uint64_t requests);

// Bytes per second in MB/s (10^6 bytes). Durations shorter than one microsecond count as one microsecond.
double megabytes_per_second(uint64_t bytes, double seconds);

// Outcomes of one mode's requests, recorded from many threads.
class RequestStats {
 public:
  struct Snapshot {
    uint64_t requests = 0;
    uint64_t failures = 0;
    uint64_t bytes = 0;                               // bytes of successful requests
    std::vector<double> speeds_megabytes_per_second;  // one per successful request
    double error_rate() const { return workload::error_rate(failures, requests); }
  };

  void record_success(uint64_t bytes, double seconds);
  void record_failure();
  Snapshot snapshot() const;

 private:
  mutable std::mutex mutex_;
  Snapshot data_;
};

}  // namespace peerd::workload
