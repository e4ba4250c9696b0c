#pragma once
// A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered in the text
// exposition format 0.0.4. Registration takes a lock; the returned references are stable for the registry's
// lifetime and updating them is lock-free (hot paths keep the reference).
//
// Cardinality is bounded: a family holds at most `series_per_family_max` label sets; further label sets get a
// detached series that is never rendered, and peerd_metrics_series_dropped_total counts them.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace peerd::daemon {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(uint64_t amount = 1) { value_.fetch_add(amount, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(int64_t value) { value_.store(value, std::memory_order_relaxed); }
  void add(int64_t amount) { value_.fetch_add(amount, std::memory_order_relaxed); }
  void sub(int64_t amount) { value_.fetch_sub(amount, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class Histogram {
 public:
  // `upper_bounds` strictly increasing; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;  // per bucket (not cumulative), last is +Inf
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Latency buckets in seconds (1 ms .. 30 s).
std::vector<double> latency_buckets_seconds();

class MetricsRegistry {
 public:
  static constexpr size_t kSeriesPerFamilyMax = 1000;

  MetricsRegistry();

  // Same name + labels returns the same object. A name registered with another type is a programming error
  // (asserted). Names and label names must be valid Prometheus identifiers (asserted).
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, std::span<const double> upper_bounds,
                       const Labels& labels = {});

  // Prometheus text format, families sorted by name, series by labels.
  std::string render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
    size_t series_count() const { return counters.size() + gauges.size() + histograms.size(); }
  };

  Family& family(std::string_view name, std::string_view help, Type type, const Labels& labels);

  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
  // Detached series handed out when a family is full; kept alive but never rendered.
  std::vector<std::unique_ptr<Counter>> overflow_counters_;
  std::vector<std::unique_ptr<Gauge>> overflow_gauges_;
  std::vector<std::unique_ptr<Histogram>> overflow_histograms_;
  Counter* series_dropped_ = nullptr;
};

// Escapes a label value for the text format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

}  // namespace peerd::daemon
