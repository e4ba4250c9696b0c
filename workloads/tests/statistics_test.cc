// The reported statistics: nearest-rank percentiles in ascending order (p100 the maximum), error rates over
// issued requests, MB/s with MB = 10^6 bytes, and a collector that loses nothing when threads record at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "workloads/common/statistics.h"

namespace peerd::workload {
namespace {

// Shows the nearest-rank definition on the textbook example {15, 20, 35, 40, 50}, given unsorted.
TEST(Statistics, NearestRankTextbookExample) {
  const std::vector<double> values = {50, 15, 40, 20, 35};
  EXPECT_EQ(percentile_nearest_rank(values, 5), 15);
  EXPECT_EQ(percentile_nearest_rank(values, 30), 20);
  EXPECT_EQ(percentile_nearest_rank(values, 40), 20);
  EXPECT_EQ(percentile_nearest_rank(values, 50), 35);
  EXPECT_EQ(percentile_nearest_rank(values, 100), 50);
}

// Shows the rank boundaries are exact (integer ceil, no floating-point slip) on 1..10 and 1..20.
TEST(Statistics, RankBoundariesAreExact) {
  std::vector<double> ten;
  for (int i = 1; i <= 10; ++i) ten.push_back(i);
  EXPECT_EQ(percentile_nearest_rank(ten, 50), 5);   // rank 5
  EXPECT_EQ(percentile_nearest_rank(ten, 75), 8);   // ceil(7.5)
  EXPECT_EQ(percentile_nearest_rank(ten, 90), 9);   // exactly 9
  EXPECT_EQ(percentile_nearest_rank(ten, 95), 10);  // ceil(9.5)
  EXPECT_EQ(percentile_nearest_rank(ten, 1), 1);
  std::vector<double> twenty;
  for (int i = 1; i <= 20; ++i) twenty.push_back(i);
  EXPECT_EQ(percentile_nearest_rank(twenty, 95), 19);  // exactly 19
}

// Shows one value is every percentile and no values give no percentile.
TEST(Statistics, SingleAndEmpty) {
  const std::vector<double> one = {3.5};
  for (const uint32_t p : kReportedPercentiles) EXPECT_EQ(percentile_nearest_rank(one, p), 3.5);
  EXPECT_FALSE(percentile_nearest_rank({}, 50).has_value());
  EXPECT_FALSE(summarize({}).has_value());
}

// Shows the summary is ascending (p50 <= ... <= p100), p100 is the maximum, and the fields follow
// kReportedPercentiles (the original reported them descending, so its p100 was the slowest read).
TEST(Statistics, SummaryIsAscendingWithMaximumAtP100) {
  std::vector<double> speeds;
  for (int i = 0; i < 37; ++i) speeds.push_back((i * 7919) % 101);
  const auto summary = summarize(speeds);
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(summary->count, 37u);
  for (size_t i = 1; i < summary->values.size(); ++i) EXPECT_LE(summary->values[i - 1], summary->values[i]);
  EXPECT_EQ(summary->values.back(), *std::max_element(speeds.begin(), speeds.end()));
  EXPECT_EQ(summary->values[0], percentile_nearest_rank(speeds, 50));
}

// Shows the error rate counts issued requests only, and is 0 (not NaN) when none was issued.
TEST(Statistics, ErrorRateOverIssuedRequests) {
  EXPECT_EQ(error_rate(0, 0), 0);
  EXPECT_EQ(error_rate(1, 4), 0.25);
  EXPECT_EQ(error_rate(3, 3), 1);
  RequestStats stats;
  stats.record_success(10, 1);
  stats.record_failure();
  const auto snapshot = stats.snapshot();
  EXPECT_EQ(snapshot.requests, 2u);
  EXPECT_EQ(snapshot.failures, 1u);
  EXPECT_EQ(snapshot.error_rate(), 0.5);
  EXPECT_EQ(snapshot.speeds_megabytes_per_second.size(), 1u);  // failures have no speed
}

// Shows MB/s uses 10^6 bytes and clamps a zero duration to one microsecond instead of dividing by zero.
TEST(Statistics, MegabytesPerSecond) {
  EXPECT_DOUBLE_EQ(megabytes_per_second(2'000'000, 1), 2);
  EXPECT_DOUBLE_EQ(megabytes_per_second(500'000, 0.25), 2);
  EXPECT_DOUBLE_EQ(megabytes_per_second(1, 0), 1);
}

// Shows the collector is thread-safe: 8 threads recording 2000 outcomes each lose none.
TEST(Statistics, ConcurrentRecordingLosesNothing) {
  RequestStats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&stats, t] {
      for (int i = 0; i < 2000; ++i) {
        if ((i + t) % 4 == 0) {
          stats.record_failure();
        } else {
          stats.record_success(1000, 0.001);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto snapshot = stats.snapshot();
  EXPECT_EQ(snapshot.requests, 16000u);
  EXPECT_EQ(snapshot.failures, 4000u);
  EXPECT_EQ(snapshot.speeds_megabytes_per_second.size(), 12000u);
  EXPECT_EQ(snapshot.bytes, 12'000'000u);
  EXPECT_DOUBLE_EQ(snapshot.error_rate(), 0.25);
}

}  // namespace
}  // namespace peerd::workload
