#include "peerd/daemon/daemon_metrics.h"

#include <string>

namespace peerd::daemon {
namespace {

constexpr std::string_view kServedHelp = "Bytes sent to HTTP clients, by where the bytes came from.";
constexpr std::string_view kFetchedHelp = "Bytes this node fetched, by source.";

std::vector<double> dht_buckets() {
  return latency_buckets_seconds();
}

}  // namespace

std::string_view to_string(ByteSource source) {
  switch (source) {
    case ByteSource::kPeer:
      return "peer";
    case ByteSource::kUpstream:
      return "upstream";
    case ByteSource::kCache:
      return "cache";
  }
  return "cache";
}

DaemonMetrics::DaemonMetrics(MetricsRegistry& registry_)
    : registry(registry_),
      dht_lookups_found(registry_.counter("peerd_dht_lookups_total", "DHT provider lookups by result.",
                                          {{"result", "found"}})),
      dht_lookups_not_found(registry_.counter("peerd_dht_lookups_total", "DHT provider lookups by result.",
                                              {{"result", "not_found"}})),
      dht_lookups_failed(registry_.counter("peerd_dht_lookups_total", "DHT provider lookups by result.",
                                           {{"result", "failed"}})),
      dht_lookup_seconds(registry_.histogram("peerd_dht_lookup_duration_seconds",
                                             "DHT provider lookup latency.", dht_buckets())),
      cache_bytes(registry_.gauge("peerd_cache_bytes", "Bytes held by the disk chunk cache.")),
      cache_chunks(registry_.gauge("peerd_cache_chunks", "Chunks held by the disk chunk cache.")),
      cache_evictions(
          registry_.counter("peerd_cache_evictions_total", "Chunks evicted to respect --cache-size.")),
      cache_hits(registry_.counter("peerd_cache_lookups_total", "Disk cache lookups by result.",
                                   {{"result", "hit"}})),
      cache_misses(registry_.counter("peerd_cache_lookups_total", "Disk cache lookups by result.",
                                     {{"result", "miss"}})),
      active_transfers(
          registry_.gauge("peerd_active_transfers", "Transfers (peer or upstream) in progress.")),
      http_connections(registry_.gauge("peerd_http_connections", "Open HTTP connections.")),
      http_connections_evicted(registry_.counter("peerd_http_connections_evicted_total",
                                                 "Idle HTTP connections closed to admit new ones.")),
      http_connections_refused(registry_.counter("peerd_http_connections_refused_total",
                                                 "HTTP connections refused at --max-connections.")),
      upstream_requests(registry_.counter("peerd_upstream_requests_total", "Upstream HTTP requests sent.")),
      upstream_retries(registry_.counter("peerd_upstream_retries_total", "Upstream requests retried.")),
      upstream_token_fetches(registry_.counter("peerd_upstream_token_fetches_total",
                                               "Anonymous bearer tokens fetched from registries.")),
      upstream_failures(
          registry_.counter("peerd_upstream_failures_total", "Upstream transfers that failed.")),
      upstream_first_byte_seconds(registry_.histogram(
          "peerd_upstream_first_byte_seconds", "Time to the upstream's response head.", dht_buckets())),
      bootstrap_resolutions(
          registry_.counter("peerd_bootstrap_resolutions_total", "Bootstrap peer resolutions.")),
      bootstrap_failures(
          registry_.counter("peerd_bootstrap_failures_total", "Bootstrap sources that failed to resolve.")),
      bootstrap_peers(
          registry_.gauge("peerd_bootstrap_peers", "Peers found by the last bootstrap resolution.")),
      served_peer_(registry_.counter("peerd_bytes_served_total", kServedHelp, {{"source", "peer"}})),
      served_upstream_(registry_.counter("peerd_bytes_served_total", kServedHelp, {{"source", "upstream"}})),
      served_cache_(registry_.counter("peerd_bytes_served_total", kServedHelp, {{"source", "cache"}})),
      fetched_peer_(registry_.counter("peerd_bytes_fetched_total", kFetchedHelp, {{"source", "peer"}})),
      fetched_upstream_(
          registry_.counter("peerd_bytes_fetched_total", kFetchedHelp, {{"source", "upstream"}})),
      fetched_cache_(registry_.counter("peerd_bytes_fetched_total", kFetchedHelp, {{"source", "cache"}})) {}

void DaemonMetrics::count_request(std::string_view route, unsigned status) {
  registry
      .counter("peerd_requests_total", "HTTP requests by route and status.",
               {{"route", std::string(route)}, {"status", std::to_string(status)}})
      .inc();
}

Counter& DaemonMetrics::bytes_served(ByteSource source) {
  switch (source) {
    case ByteSource::kPeer:
      return served_peer_;
    case ByteSource::kUpstream:
      return served_upstream_;
    case ByteSource::kCache:
      return served_cache_;
  }
  return served_cache_;
}

Counter& DaemonMetrics::bytes_fetched(ByteSource source) {
  switch (source) {
    case ByteSource::kPeer:
      return fetched_peer_;
    case ByteSource::kUpstream:
      return fetched_upstream_;
    case ByteSource::kCache:
      return fetched_cache_;
  }
  return fetched_cache_;
}

}  // namespace peerd::daemon
