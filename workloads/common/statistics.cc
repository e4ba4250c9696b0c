#include "workloads/common/statistics.h"

#include <algorithm>
#include <cassert>

namespace peerd::workload {

std::optional<double> percentile_nearest_rank(std::span<const double> values, uint32_t percent) {
  assert(percent >= 1 && percent <= 100);
  if (values.empty()) return std::nullopt;
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  // Integer ceil(percent * count / 100): exact, no floating-point rounding at the rank boundaries.
  const size_t rank = (static_cast<size_t>(percent) * sorted.size() + 99) / 100;
  return sorted[std::max<size_t>(rank, 1) - 1];
}

std::optional<PercentileSummary> summarize(std::span<const double> values) {
  if (values.empty()) return std::nullopt;
  PercentileSummary summary;
  summary.count = values.size();
  for (size_t i = 0; i < kReportedPercentiles.size(); ++i) {
    summary.values[i] = *percentile_nearest_rank(values, kReportedPercentiles[i]);
  }
  return summary;
}

double error_rate(uint64_t failures, uint64_t requests) {
  assert(failures <= requests);
  if (requests == 0) return 0;
  return static_cast<double>(failures) / static_cast<double>(requests);
}

double megabytes_per_second(uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / 1e6 / std::max(seconds, 1e-6);
}

void RequestStats::record_success(uint64_t bytes, double seconds) {
  const double speed = megabytes_per_second(bytes, seconds);
  std::lock_guard lock(mutex_);
  ++data_.requests;
  data_.bytes += bytes;
  data_.speeds_megabytes_per_second.push_back(speed);
}

void RequestStats::record_failure() {
  std::lock_guard lock(mutex_);
  ++data_.requests;
  ++data_.failures;
}

RequestStats::Snapshot RequestStats::snapshot() const {
  std::lock_guard lock(mutex_);
  return data_;
}

}  // namespace peerd::workload
