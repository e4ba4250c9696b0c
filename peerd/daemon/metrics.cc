#include "peerd/daemon/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>

namespace peerd::daemon {
namespace {

bool is_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

[[maybe_unused]] bool is_label_name(std::string_view name) {
  return is_metric_name(name) && name.find(':') == std::string_view::npos && !name.starts_with("__");
}

Labels sorted(Labels labels) {
  std::sort(labels.begin(), labels.end());
  return labels;
}

std::string format_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string render_labels(const Labels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && extra == nullptr) return "";
  std::string out = "{";
  bool first = true;
  const auto append = [&](const std::pair<std::string, std::string>& label) {
    if (!first) out += ',';
    first = false;
    out += label.first + "=\"" + escape_label_value(label.second) + "\"";
  };
  for (const auto& label : labels) append(label);
  if (extra != nullptr) append(*extra);
  out += '}';
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      bucket_counts_(std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1)) {
  assert(std::is_sorted(upper_bounds_.begin(), upper_bounds_.end()));
  assert(std::adjacent_find(upper_bounds_.begin(), upper_bounds_.end()) == upper_bounds_.end());
}

void Histogram::observe(double value) {
  const auto bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  bucket_counts_[static_cast<size_t>(bucket)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += bucket_counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  // Count is the +Inf bucket so a scrape is self-consistent even while observations race with it.
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> latency_buckets_seconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

MetricsRegistry::MetricsRegistry() {
  series_dropped_ = &counter("peerd_metrics_series_dropped_total",
                             "Label sets refused because their metric family reached its series limit.");
}

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help, Type type,
                                                 const Labels& labels) {
  assert(is_metric_name(name));
  for ([[maybe_unused]] const auto& label : labels) assert(is_label_name(label.first));
  auto it = families_.find(name);
  if (it == families_.end())
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}, {}}).first;
  assert(it->second.type == type);
  return it->second;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, Type::kCounter, labels);
  const Labels key = sorted(labels);
  if (auto it = f.counters.find(key); it != f.counters.end()) return *it->second;
  if (f.series_count() >= kSeriesPerFamilyMax) {
    if (series_dropped_ != nullptr) series_dropped_->inc();
    return *overflow_counters_.emplace_back(std::make_unique<Counter>());
  }
  return *f.counters.emplace(key, std::make_unique<Counter>()).first->second;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, Type::kGauge, labels);
  const Labels key = sorted(labels);
  if (auto it = f.gauges.find(key); it != f.gauges.end()) return *it->second;
  if (f.series_count() >= kSeriesPerFamilyMax) {
    series_dropped_->inc();
    return *overflow_gauges_.emplace_back(std::make_unique<Gauge>());
  }
  return *f.gauges.emplace(key, std::make_unique<Gauge>()).first->second;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      std::span<const double> upper_bounds, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, Type::kHistogram, labels);
  const Labels key = sorted(labels);
  if (auto it = f.histograms.find(key); it != f.histograms.end()) return *it->second;
  std::vector<double> bounds(upper_bounds.begin(), upper_bounds.end());
  if (f.series_count() >= kSeriesPerFamilyMax) {
    series_dropped_->inc();
    return *overflow_histograms_.emplace_back(std::make_unique<Histogram>(std::move(bounds)));
  }
  return *f.histograms.emplace(key, std::make_unique<Histogram>(std::move(bounds))).first->second;
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + escape_help(f.help) + "\n";
    switch (f.type) {
      case Type::kCounter:
        out += "# TYPE " + name + " counter\n";
        for (const auto& [labels, counter] : f.counters) {
          out += name + render_labels(labels) + " " + std::to_string(counter->value()) + "\n";
        }
        break;
      case Type::kGauge:
        out += "# TYPE " + name + " gauge\n";
        for (const auto& [labels, gauge] : f.gauges) {
          out += name + render_labels(labels) + " " + std::to_string(gauge->value()) + "\n";
        }
        break;
      case Type::kHistogram:
        out += "# TYPE " + name + " histogram\n";
        for (const auto& [labels, histogram] : f.histograms) {
          const auto snapshot = histogram->snapshot();
          for (size_t i = 0; i < snapshot.cumulative_counts.size(); ++i) {
            const double bound = i < snapshot.upper_bounds.size() ? snapshot.upper_bounds[i] : INFINITY;
            const std::pair<std::string, std::string> le{"le", format_number(bound)};
            out += name + "_bucket" + render_labels(labels, &le) + " " +
                   std::to_string(snapshot.cumulative_counts[i]) + "\n";
          }
          out += name + "_sum" + render_labels(labels) + " " + format_number(snapshot.sum) + "\n";
          out += name + "_count" + render_labels(labels) + " " + std::to_string(snapshot.count) + "\n";
        }
        break;
    }
  }
  return out;
}

}  // namespace peerd::daemon
