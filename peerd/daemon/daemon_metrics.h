#pragma once
// The daemon's named metrics (the list), registered once at start-up so every series exists at 0 and
// hot paths hold plain references. Components take a `DaemonMetrics&`; main owns it.
#include <string_view>

#include "peerd/daemon/metrics.h"

namespace peerd::daemon {

enum class ByteSource { kPeer, kUpstream, kCache };
std::string_view to_string(ByteSource source);

struct DaemonMetrics {
  explicit DaemonMetrics(MetricsRegistry& registry);

  MetricsRegistry& registry;

  // peerd_requests_total{route,status}: route is a fixed name ("v2", "manifest", "blob", "file", "metrics",
  // "healthz", "readyz", "other"), never the raw path.
  void count_request(std::string_view route, unsigned status);
  // peerd_bytes_served_total{source}: bytes sent to clients, by where they came from.
  Counter& bytes_served(ByteSource source);
  // peerd_bytes_fetched_total{source}: bytes this node pulled in (peer or upstream).
  Counter& bytes_fetched(ByteSource source);

  Counter& dht_lookups_found;
  Counter& dht_lookups_not_found;
  Counter& dht_lookups_failed;
  Histogram& dht_lookup_seconds;

  Gauge& cache_bytes;
  Gauge& cache_chunks;
  Counter& cache_evictions;
  Counter& cache_hits;
  Counter& cache_misses;

  Gauge& active_transfers;

  Gauge& http_connections;
  Counter& http_connections_evicted;  // idle connections closed to admit new ones at --max-connections
  Counter& http_connections_refused;  // refused at --max-connections with nothing idle to evict

  Counter& upstream_requests;
  Counter& upstream_retries;
  Counter& upstream_token_fetches;
  Counter& upstream_failures;
  Histogram& upstream_first_byte_seconds;

  Counter& bootstrap_resolutions;
  Counter& bootstrap_failures;
  Gauge& bootstrap_peers;

 private:
  Counter& served_peer_;
  Counter& served_upstream_;
  Counter& served_cache_;
  Counter& fetched_peer_;
  Counter& fetched_upstream_;
  Counter& fetched_cache_;
};

}  // namespace peerd::daemon
