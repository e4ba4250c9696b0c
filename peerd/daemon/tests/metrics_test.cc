#include "peerd/daemon/metrics.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "peerd/daemon/daemon_metrics.h"

namespace peerd::daemon {
namespace {

// Shows counters and gauges with labels render in the Prometheus text format, sorted, with HELP and TYPE.
TEST(Metrics, CountersAndGaugesRender) {
  MetricsRegistry registry;
  registry.counter("peerd_requests_total", "Requests.", {{"status", "200"}, {"route", "blob"}}).inc(3);
  registry.counter("peerd_requests_total", "Requests.", {{"route", "blob"}, {"status", "404"}}).inc();
  registry.gauge("peerd_cache_bytes", "Cache bytes.").set(42);
  const std::string text = registry.render();
  EXPECT_NE(
      text.find(
          "# HELP peerd_cache_bytes Cache bytes.\n# TYPE peerd_cache_bytes gauge\npeerd_cache_bytes 42\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE peerd_requests_total counter\n"
                      "peerd_requests_total{route=\"blob\",status=\"200\"} 3\n"
                      "peerd_requests_total{route=\"blob\",status=\"404\"} 1\n"),
            std::string::npos)
      << text;
}

// Shows the same name and labels (in any order) return the same series object.
TEST(Metrics, SameLabelsSameSeries) {
  MetricsRegistry registry;
  Counter& a = registry.counter("c_total", "h", {{"a", "1"}, {"b", "2"}});
  Counter& b = registry.counter("c_total", "h", {{"b", "2"}, {"a", "1"}});
  EXPECT_EQ(&a, &b);
}

// Shows histogram buckets are cumulative with +Inf, and _sum/_count follow.
TEST(Metrics, HistogramBucketsAreCumulative) {
  MetricsRegistry registry;
  const std::vector<double> bounds = {0.1, 1};
  Histogram& histogram = registry.histogram("lookup_seconds", "Latency.", bounds, {{"kind", "dht"}});
  histogram.observe(0.05);
  histogram.observe(0.1);
  histogram.observe(0.5);
  histogram.observe(7);
  const std::string text = registry.render();
  EXPECT_NE(text.find("lookup_seconds_bucket{kind=\"dht\",le=\"0.1\"} 2\n"
                      "lookup_seconds_bucket{kind=\"dht\",le=\"1\"} 3\n"
                      "lookup_seconds_bucket{kind=\"dht\",le=\"+Inf\"} 4\n"
                      "lookup_seconds_sum{kind=\"dht\"} 7.65\n"
                      "lookup_seconds_count{kind=\"dht\"} 4\n"),
            std::string::npos)
      << text;
}

// Shows label values are escaped (backslash, quote, newline).
TEST(Metrics, LabelValuesAreEscaped) {
  MetricsRegistry registry;
  registry.counter("x_total", "h", {{"v", "a\"b\\c\nd"}}).inc();
  EXPECT_NE(registry.render().find("x_total{v=\"a\\\"b\\\\c\\nd\"} 1"), std::string::npos);
}

// Shows a family stops growing at its series limit and the refusals are counted.
TEST(Metrics, SeriesPerFamilyIsBounded) {
  MetricsRegistry registry;
  for (size_t i = 0; i < MetricsRegistry::kSeriesPerFamilyMax + 5; ++i) {
    registry.counter("many_total", "h", {{"i", std::to_string(i)}}).inc();
  }
  const std::string text = registry.render();
  EXPECT_EQ(text.find("many_total{i=\"1000\"}"), std::string::npos);
  EXPECT_NE(text.find("many_total{i=\"999\"} 1"), std::string::npos);
  EXPECT_NE(text.find("peerd_metrics_series_dropped_total 5"), std::string::npos);
}

// Shows concurrent increments from several threads are all counted (run under TSan/ASan in CI).
TEST(Metrics, ConcurrentIncrements) {
  MetricsRegistry registry;
  Counter& counter = registry.counter("c_total", "h");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) counter.inc();
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.value(), 40000u);
}

// Shows the daemon's named metrics exist at zero from the start (so dashboards see every series).
TEST(Metrics, DaemonMetricsPreRegistered) {
  MetricsRegistry registry;
  DaemonMetrics metrics(registry);
  metrics.count_request("blob", 206);
  metrics.bytes_served(ByteSource::kPeer).inc(10);
  const std::string text = registry.render();
  for (const char* expected :
       {"peerd_requests_total{route=\"blob\",status=\"206\"} 1",
        "peerd_bytes_served_total{source=\"peer\"} 10", "peerd_bytes_served_total{source=\"upstream\"} 0",
        "peerd_bytes_fetched_total{source=\"upstream\"} 0", "peerd_dht_lookups_total{result=\"found\"} 0",
        "peerd_dht_lookup_duration_seconds_count 0", "peerd_cache_bytes 0", "peerd_cache_evictions_total 0",
        "peerd_active_transfers 0"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected;
  }
}

}  // namespace
}  // namespace peerd::daemon
