#pragma once
// What a run means: per mode, completion time quantiles next to the lower bound, registry egress, fairness of
// the bytes nodes served, DHT messages; as a table (stdout) and as JSON (--json). The JSON holds only
// simulated quantities, so the same scenario and seed give byte-identical files.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "simulator/src/cluster.h"
#include "workloads/common/statistics.h"

namespace peerd::sim {

struct Quantiles {
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};
// Nearest-rank quantiles of the values (zeros when empty).
Quantiles quantiles(std::vector<double> values);

struct ModeSummary {
  std::string mode;
  uint32_t nodes = 0;
  uint32_t nodes_live = 0;
  uint32_t nodes_completed = 0;
  uint32_t nodes_failed = 0;
  uint32_t nodes_killed = 0;
  uint32_t reads_wrong_bytes = 0;  // completed reads holding corrupt bytes (must be 0)
  Quantiles completion_seconds;    // completed live nodes, from arrival
  double lower_bound_seconds = 0;
  double max_over_bound = 0;
  uint64_t upstream_egress_bytes = 0;
  double upstream_over_image = 0;
  double served_min_bytes = 0;
  double served_mean_bytes = 0;
  double served_max_bytes = 0;
  double served_jain = 0;  // Jain's fairness index of bytes served, over live nodes (1 = perfectly even)
  double dht_per_node_mean = 0;
  uint64_t dht_per_node_max = 0;
  double throughput_mean_mbytes_per_second = 0;  // image bytes / completion time, mean over completed nodes
  bool bytes_conserved = false;  // delivered == requested and every payload byte sent was received or aborted
  // `random` workload, over the reads of live nodes, as peerd-random reports them
  // (workloads/common/statistics.h): a read's speed is its bytes / 1e6 over the time from issuing it to its
  // completion; pN is the nearest-rank N-th percentile in ascending order (p100 = the fastest read); the
  // error rate is failed / issued reads.
  uint64_t random_reads = 0;
  uint64_t random_reads_failed = 0;
  std::optional<workload::PercentileSummary> read_speeds;  // nullopt: no read completed
};

// peerd-random's name for a mode's reads: "upstream" for upstream-only, "p2p" for the modes with peers.
std::string_view random_speed_label(ModeBase base);

ModeSummary summarize(const RunResult& run);
// One line per mode, with a header naming the scenario.
std::string format_table(const std::vector<RunResult>& runs);
std::string to_json(const std::vector<RunResult>& runs);

}  // namespace peerd::sim
