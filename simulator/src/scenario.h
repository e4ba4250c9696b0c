#pragma once
// Scenario files (simulator/scenarios/*.json): the cluster, the image, the workload, how nodes arrive, the
// modes to compare, faults and the seed. Loading is strict: unknown keys and out-of-range values are errors
// that name the offending key, so a typo never silently runs the default. See simulator/README.md.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "peerd/core/common/result.h"
#include "simulator/src/network.h"
#include "workloads/pattern/read_pattern.h"

namespace peerd::sim {

enum class Fidelity : uint8_t { kPacket, kFlow };
std::string_view describe(Fidelity fidelity);
std::optional<Fidelity> parse_fidelity(std::string_view text);

// The three designs, all configurations of the same core (see cluster.cc, mode_options()):
//   upstream-only  no peers: no DHT neighbours, no membership, every chunk from the registry
//   peerd-classic  advertise only complete (verified) blobs, never fetch through an owner
//   peerd          this project's swarm: rendezvous owners fetch through, chunk lookups, blob providers
enum class ModeBase : uint8_t { kUpstreamOnly, kPeerdClassic, kPeerd };
std::string_view describe(ModeBase base);
std::optional<ModeBase> parse_mode_base(std::string_view text);

// Engine options a scenario or a mode may override, by name (value as a number; booleans as 0/1).
using EngineOverrides = std::vector<std::pair<std::string, double>>;
bool is_engine_override_key(std::string_view key);

struct ModeSpec {
  std::string name;  // the table's row label
  ModeBase base = ModeBase::kPeerd;
  EngineOverrides engine;
};

struct Layer {
  std::string name;
  uint64_t bytes = 0;
};

// The `random` workload: peerd-random's options (workloads/random/random_options.h, same names as its flags);
// the blobs are the image's layers. Node i issues exactly the reads plan_reads() (workloads/pattern) returns
// for seed + i + 1, i.e. what `peerd-random --seed <seed + i + 1>` issues on node i + 1 of kind/local with
// KL_SEED = seed, reading `concurrency` blobs at a time like its worker threads.
// peerd-random's settings: the read pattern's (the base), its concurrency and seed.
struct RandomWorkload : workload::PatternSettings {
  uint64_t seed = 0;  // default: the scenario's seed
  uint32_t concurrency = 8;
  // The node-local hop from peerd to peerd-random (HTTP on the node): a read ends no sooner than its bytes
  // could cross it after being issued, so reads of chunks the node already holds are not infinitely fast.
  // Default: the daemon's /blobs/ read speed measured on loopback (400 MB/s).
  double local_read_bytes_per_second = 400e6;

  uint64_t seed_of(uint32_t node) const { return seed + node + 1; }
};

struct Workload {
  enum class Kind : uint8_t { kPull, kStream, kRandom };
  Kind kind = Kind::kPull;
  uint32_t concurrent_layers = 3;  // pull: layers read at once (containerd's max_concurrent_downloads)
  uint64_t read_bytes = 0;         // stream: size of each sequential range read
  RandomWorkload random;           // random
};

struct Arrival {
  enum class Pattern : uint8_t { kSimultaneous, kRolling, kPoisson };
  Pattern pattern = Pattern::kSimultaneous;
  double interval_seconds = 0;  // rolling
  double rate_per_second = 0;   // poisson
};

struct KillFault {
  uint32_t count = 0;
  double at_seconds = 0;  // after the measurement starts
};

struct Faults {
  std::vector<KillFault> kills;
  uint32_t slow_count = 0;
  double slow_bandwidth_factor = 0.1;
  double slow_latency_factor = 10;
  uint32_t corrupt_count = 0;
};

struct Scenario {
  std::string name;
  std::string description;
  uint64_t seed = 1;
  uint32_t nodes = 0;
  TopologySpec topology;  // hosts = nodes; slow-node factors are filled in per run
  std::string image_name = "image";
  std::vector<Layer> layers;  // pull: the image's layers; stream: one file
  Workload workload;
  Arrival arrival;
  std::vector<ModeSpec> modes;
  Faults faults;
  Fidelity fidelity = Fidelity::kFlow;
  FlowOptions flow;
  PacketOptions packet;
  EngineOverrides engine;  // for every mode, before the mode's own
  // Node lifecycle.
  double join_interval_seconds = 0.001;  // DHT joins during warm-up, one node after the other
  double settle_seconds = 2;             // after the last join, before the measurement starts
  double membership_delay_seconds = 2;   // the member list drops a dead node after this
  double verify_bytes_per_second = 2e9;  // sha256 of a completed blob
  double sim_time_max_seconds = 3600;    // after the measurement starts

  uint64_t image_bytes() const;
};

Result<Scenario, std::string> parse_scenario(std::string_view json_text);
Result<Scenario, std::string> load_scenario(const std::string& path);

}  // namespace peerd::sim
