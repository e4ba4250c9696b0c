#pragma once
// One simulation run: N nodes, each the core's routing::Dht and transfer::Engine over a VirtualChunkStore,
// wired to a Network (packet or flow fidelity) exactly as the daemon wires them to sockets. See cluster.cc.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "simulator/src/network.h"
#include "simulator/src/scenario.h"

namespace peerd::sim {

// One read of the `random` workload as the node issued it (times in microseconds since the measurement start,
// the engine clock's resolution).
struct IssuedRead {
  uint32_t blob_index = 0;
  uint32_t read_index = 0;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  int64_t issued_us = 0;
  int64_t finished_us = -1;  // completed or failed; -1: still running when the run ended
  bool completed = false;
};

struct NodeOutcome {
  bool killed = false;
  bool slow = false;
  bool corrupting = false;
  bool completed = false;          // every read of its workload completed
  bool failed = false;             // some read failed
  uint32_t reads_wrong_bytes = 0;  // completed reads whose bytes were not the truth (must stay 0)
  double arrival_seconds = 0;
  double completion_seconds = 0;         // from arrival to the last read's completion
  uint64_t served_bytes = 0;             // payload this node sent to peers
  uint64_t bytes_requested = 0;          // by the reads its workload issued
  uint64_t bytes_delivered = 0;          // by its reads that completed
  uint64_t dht_datagrams = 0;            // sent during the measurement
  std::vector<IssuedRead> random_reads;  // `random` workload: in the order issued
};

struct EngineTotals {
  uint64_t fetches = 0;
  uint64_t fetches_to_upstream = 0;
  uint64_t fetches_fetch_through = 0;
  uint64_t fetches_failed = 0;
  uint64_t hedges = 0;
  uint64_t resumes = 0;
  uint64_t owner_timeouts = 0;
  uint64_t stalls = 0;
  uint64_t serves = 0;
  uint64_t serves_joined = 0;
  uint64_t serves_refused = 0;      // over serves_inflight_max, or bad requests
  uint64_t owner_busy_retries = 0;  // fetch-through asks repeated after such a refusal
  uint64_t lookups = 0;
  uint64_t provides = 0;
  uint64_t bans = 0;
  uint64_t integrity_failures = 0;
  uint64_t bytes_from_upstream = 0;  // as the engines counted them
  uint64_t bytes_from_peers = 0;
};

struct RunResult {
  std::string scenario;
  std::string mode;
  ModeBase base = ModeBase::kPeerd;
  Fidelity fidelity = Fidelity::kFlow;
  Workload::Kind workload = Workload::Kind::kPull;
  uint64_t seed = 0;
  uint32_t nodes = 0;
  uint64_t image_bytes = 0;
  double upstream_bits_per_second = 0;  // U
  double host_bits_per_second = 0;      // B
  double lower_bound_seconds = 0;       // max(F / U_eff, F / B)
  std::vector<NodeOutcome> outcomes;
  uint64_t upstream_egress_bytes = 0;
  uint64_t bytes_requested = 0;  // by reads of nodes alive at the end
  uint64_t bytes_delivered = 0;  // by those of them that completed
  uint64_t dht_datagrams = 0;    // during the measurement
  uint64_t dht_datagrams_warmup = 0;
  std::vector<std::pair<double, uint64_t>> upstream_timeline;  // (s since start, cumulative bytes)
  EngineTotals engine;
  NetworkStats network;
  double measured_seconds = 0;  // simulated time from the measurement start to the last completion
  uint64_t events = 0;
  bool timed_out = false;  // sim_time_max_s passed before every live node finished
};

// Where a run is, for a person watching a long one. Called now and then from inside the run (every few
// thousand core interactions, not on a clock: the simulation stays deterministic); the caller decides
// whether to show it.
struct RunProgress {
  bool measuring = false;        // false: the nodes are still joining the DHT
  double simulated_seconds = 0;  // since the measurement started (since time 0 while joining)
  uint32_t nodes = 0;
  uint32_t nodes_finished = 0;
  uint64_t events = 0;
};
using ProgressCallback = std::function<void(const RunProgress&)>;

// Runs one mode of a scenario. Deterministic: the same scenario, mode, fidelity and seed give the same
// result.
RunResult run_mode(const Scenario& scenario, const ModeSpec& mode, Fidelity fidelity,
                   const ProgressCallback& progress = {});

}  // namespace peerd::sim
