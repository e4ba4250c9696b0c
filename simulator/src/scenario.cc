#include "simulator/src/scenario.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "workloads/pattern/read_pattern.h"

namespace peerd::sim {

namespace {

using Json = nlohmann::json;

constexpr uint32_t kNodesMax = 100000;
constexpr size_t kLayersMax = 1000;
constexpr size_t kModesMax = 16;
constexpr uint64_t kMebibyte = 1024 * 1024;
constexpr uint32_t kRandomConcurrencyMax = 256;  // peerd-random's --concurrency limit

constexpr std::array<std::string_view, 21> kEngineKeys = {
    "chunk_kib",
    "fetches_inflight_max",
    "per_peer_fetches_max",
    "upstream_fetches_max",
    "prefetch_workers",
    "read_window_chunks",
    "members_per_window_chunk",
    "read_window_chunks_max",
    "owner_ranks_max",
    "balanced_owners_from_members",
    "fetch_attempts_max",
    "hedge_enabled",
    "lookup_before_upstream",
    "advertise_upstream_chunks",
    "owner_answer_timeout_ms",
    "owner_fetch_timeout_ms",
    "stall_timeout_ms",
    "hedge_floor_ms",
    "lookup_timeout_ms",
    "providers_ttl_s",
    "serves_inflight_max",
};

// Errors carry the JSON path of the offending value.
struct Error {
  std::string text;
};

void expect_keys(const Json& object, const std::string& where, std::initializer_list<std::string_view> keys) {
  if (!object.is_object()) throw Error{where + ": expected an object"};
  for (const auto& [key, value] : object.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end())
      throw Error{where + ": unknown key \"" + key + "\""};
  }
}

double number(const Json& object, const std::string& where, const char* key, double fallback, double low,
              double high) {
  if (!object.contains(key)) return fallback;
  const Json& value = object.at(key);
  if (!value.is_number()) throw Error{where + "." + key + ": expected a number"};
  const double result = value.get<double>();
  if (!(result >= low && result <= high)) {
    std::ostringstream text;
    text << where << "." << key << ": " << result << " is outside [" << low << ", " << high << "]";
    throw Error{text.str()};
  }
  return result;
}

uint64_t integer(const Json& object, const std::string& where, const char* key, uint64_t fallback,
                 uint64_t low, uint64_t high) {
  const double value = number(object, where, key, double(fallback), double(low), double(high));
  if (value != std::floor(value)) throw Error{where + "." + key + ": expected an integer"};
  return static_cast<uint64_t>(value);
}

std::string text(const Json& object, const std::string& where, const char* key, std::string fallback) {
  if (!object.contains(key)) return fallback;
  if (!object.at(key).is_string()) throw Error{where + "." + key + ": expected a string"};
  return object.at(key).get<std::string>();
}

LinkSpec link(const Json& object, const std::string& where, LinkSpec fallback) {
  expect_keys(object, where, {"rate_gbps", "delay_us"});
  LinkSpec spec;
  spec.rate_bits_per_second =
      number(object, where, "rate_gbps", fallback.rate_bits_per_second / 1e9, 1e-6, 1e4) * 1e9;
  spec.delay_ns = static_cast<int64_t>(
      std::llround(number(object, where, "delay_us", double(fallback.delay_ns) / 1e3, 0, 1e7) * 1e3));
  return spec;
}

void parse_topology(const Json& json, Scenario& scenario) {
  const std::string where = "topology";
  expect_keys(json, where,
              {"kind", "rack_size", "host_link", "uplink", "upstream", "mtu_bytes", "queue_packets"});
  TopologySpec& topology = scenario.topology;
  const std::string kind = text(json, where, "kind", "racks");
  if (kind == "racks") {
    topology.kind = TopologySpec::Kind::kRacks;
  } else if (kind == "star") {
    topology.kind = TopologySpec::Kind::kStar;
  } else {
    throw Error{where + ".kind: expected \"racks\" or \"star\""};
  }
  topology.rack_size = static_cast<uint32_t>(integer(json, where, "rack_size", 40, 1, 4096));
  if (json.contains("host_link"))
    topology.host_link = link(json.at("host_link"), where + ".host_link", topology.host_link);
  // A non-blocking fabric by default: the uplink carries every host of its rack at full rate.
  topology.uplink.rate_bits_per_second = topology.host_link.rate_bits_per_second * topology.rack_size;
  if (json.contains("uplink")) topology.uplink = link(json.at("uplink"), where + ".uplink", topology.uplink);
  if (json.contains("upstream")) {
    topology.upstream_link = link(json.at("upstream"), where + ".upstream", topology.upstream_link);
  }
  topology.mtu_bytes = static_cast<uint32_t>(integer(json, where, "mtu_bytes", 9000, 576, 65535));
  topology.queue_packets = static_cast<uint32_t>(integer(json, where, "queue_packets", 4000, 1, 1000000));
}

EngineOverrides parse_engine(const Json& json, const std::string& where) {
  if (!json.is_object()) throw Error{where + ": expected an object"};
  EngineOverrides overrides;
  for (const auto& [key, value] : json.items()) {
    if (!is_engine_override_key(key)) throw Error{where + ": unknown engine option \"" + key + "\""};
    double number_value;
    if (value.is_boolean()) {
      number_value = value.get<bool>() ? 1 : 0;
    } else if (value.is_number()) {
      number_value = value.get<double>();
    } else {
      throw Error{where + "." + key + ": expected a number or a boolean"};
    }
    if (!(number_value >= 0 && number_value <= 1e9)) throw Error{where + "." + key + ": out of range"};
    overrides.emplace_back(key, number_value);
  }
  return overrides;
}

void parse_image(const Json& json, Scenario& scenario) {
  const std::string where = "image";
  expect_keys(json, where, {"name", "layers_mib", "layers_bytes", "concurrent_layers"});
  scenario.image_name = text(json, where, "name", "image");
  const bool mib = json.contains("layers_mib");
  const bool bytes = json.contains("layers_bytes");
  if (mib == bytes) throw Error{where + ": give exactly one of layers_mib and layers_bytes"};
  const Json& list = json.at(mib ? "layers_mib" : "layers_bytes");
  if (!list.is_array() || list.empty() || list.size() > kLayersMax) {
    throw Error{where + ": the layer list must hold 1 to 1000 sizes"};
  }
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_number() || !(list[i].get<double>() > 0))
      throw Error{where + ": layer sizes must be positive"};
    const double size = list[i].get<double>() * (mib ? double(kMebibyte) : 1.0);
    if (size > 1e13) throw Error{where + ": a layer is larger than 10 TB"};
    scenario.layers.push_back(
        Layer{scenario.image_name + "/layer" + std::to_string(i), static_cast<uint64_t>(size)});
  }
  scenario.workload.concurrent_layers =
      static_cast<uint32_t>(integer(json, where, "concurrent_layers", 3, 1, 1000));
}

// peerd-random's options, with its flags' names and limits (workloads/random/random_options.cc).
void parse_random(const Json& json, Scenario& scenario) {
  const std::string where = "workload";
  RandomWorkload& random = scenario.workload.random;
  random.seed = integer(json, where, "seed", scenario.seed, 0, uint64_t{1} << 53);
  random.reads_per_blob =
      static_cast<uint32_t>(integer(json, where, "reads_per_blob", 5, 1, workload::kPatternReadsPerBlobMax));
  random.read_bytes_max = integer(json, where, "read_bytes_max", 0, 0, uint64_t{1} << 53);
  const auto delay_ms_max = static_cast<uint64_t>(workload::kPatternDelayMax.micros / 1000);
  random.jitter_min_ms = static_cast<uint32_t>(integer(json, where, "jitter_min_ms", 3, 0, delay_ms_max));
  random.jitter_max_ms = static_cast<uint32_t>(integer(json, where, "jitter_max_ms", 25, 0, delay_ms_max));
  random.start_delay_min_s =
      static_cast<uint32_t>(integer(json, where, "start_delay_min_s", 0, 0, delay_ms_max / 1000));
  random.start_delay_max_s =
      static_cast<uint32_t>(integer(json, where, "start_delay_max_s", 0, 0, delay_ms_max / 1000));
  random.concurrency =
      static_cast<uint32_t>(integer(json, where, "concurrency", 8, 1, kRandomConcurrencyMax));
  random.local_read_bytes_per_second = number(json, where, "local_read_mbytes_per_s", 400, 1, 1e6) * 1e6;
  if (random.jitter_min_ms > random.jitter_max_ms)
    throw Error{where + ": jitter_min_ms is above jitter_max_ms"};
  if (random.start_delay_min_s > random.start_delay_max_s) {
    throw Error{where + ": start_delay_min_s is above start_delay_max_s"};
  }
  if (uint64_t{random.reads_per_blob} * scenario.layers.size() > workload::kPatternReadsMax) {
    throw Error{where + ": reads_per_blob x blobs is above " + std::to_string(workload::kPatternReadsMax)};
  }
}

void parse_workload(const Json& json, Scenario& scenario) {
  const std::string where = "workload";
  const std::string kind = text(json, where, "kind", "pull");
  if (kind == "pull") {
    expect_keys(json, where, {"kind"});
    scenario.workload.kind = Workload::Kind::kPull;
  } else if (kind == "stream") {
    expect_keys(json, where, {"kind", "read_kib"});
    scenario.workload.kind = Workload::Kind::kStream;
    scenario.workload.read_bytes = integer(json, where, "read_kib", 64, 1, 1 << 20) * 1024;
  } else if (kind == "random") {
    expect_keys(json, where,
                {"kind", "seed", "reads_per_blob", "read_bytes_max", "jitter_min_ms", "jitter_max_ms",
                 "start_delay_min_s", "start_delay_max_s", "concurrency", "local_read_mbytes_per_s"});
    scenario.workload.kind = Workload::Kind::kRandom;
    parse_random(json, scenario);
  } else {
    throw Error{where + ".kind: expected \"pull\", \"stream\" or \"random\""};
  }
}

void parse_arrival(const Json& json, Scenario& scenario) {
  const std::string where = "arrival";
  expect_keys(json, where, {"pattern", "interval_ms", "rate_per_s"});
  const std::string pattern = text(json, where, "pattern", "simultaneous");
  Arrival& arrival = scenario.arrival;
  if (pattern == "simultaneous") {
    arrival.pattern = Arrival::Pattern::kSimultaneous;
  } else if (pattern == "rolling") {
    arrival.pattern = Arrival::Pattern::kRolling;
    if (!json.contains("interval_ms")) throw Error{where + ": rolling needs interval_ms"};
    arrival.interval_seconds = number(json, where, "interval_ms", 0, 0, 1e9) / 1e3;
  } else if (pattern == "poisson") {
    arrival.pattern = Arrival::Pattern::kPoisson;
    if (!json.contains("rate_per_s")) throw Error{where + ": poisson needs rate_per_s"};
    arrival.rate_per_second = number(json, where, "rate_per_s", 1, 1e-6, 1e9);
  } else {
    throw Error{where + ".pattern: expected \"simultaneous\", \"rolling\" or \"poisson\""};
  }
}

void parse_modes(const Json& json, Scenario& scenario) {
  if (!json.is_array() || json.empty() || json.size() > kModesMax)
    throw Error{"modes: expected 1 to 16 modes"};
  std::set<std::string> names;
  for (size_t i = 0; i < json.size(); ++i) {
    const std::string where = "modes[" + std::to_string(i) + "]";
    ModeSpec mode;
    std::string base;
    if (json[i].is_string()) {
      base = json[i].get<std::string>();
      mode.name = base;
    } else {
      expect_keys(json[i], where, {"name", "base", "engine"});
      base = text(json[i], where, "base", "");
      mode.name = text(json[i], where, "name", base);
      if (json[i].contains("engine")) mode.engine = parse_engine(json[i].at("engine"), where + ".engine");
    }
    const auto parsed = parse_mode_base(base);
    if (!parsed) throw Error{where + ": unknown mode \"" + base + "\" (upstream-only, peerd-classic, peerd)"};
    mode.base = *parsed;
    if (mode.name.empty() || !names.insert(mode.name).second)
      throw Error{where + ": mode names must be unique"};
    scenario.modes.push_back(std::move(mode));
  }
}

void parse_faults(const Json& json, Scenario& scenario) {
  const std::string where = "faults";
  expect_keys(json, where, {"kill", "slow", "corrupt"});
  Faults& faults = scenario.faults;
  uint64_t chosen = 0;
  if (json.contains("kill")) {
    const Json& kills = json.at("kill");
    if (!kills.is_array()) throw Error{where + ".kill: expected a list of {count, at_s}"};
    for (size_t i = 0; i < kills.size(); ++i) {
      const std::string item = where + ".kill[" + std::to_string(i) + "]";
      expect_keys(kills[i], item, {"count", "at_s"});
      KillFault kill;
      kill.count = static_cast<uint32_t>(integer(kills[i], item, "count", 1, 1, kNodesMax));
      kill.at_seconds = number(kills[i], item, "at_s", 0, 0, 1e7);
      chosen += kill.count;
      faults.kills.push_back(kill);
    }
  }
  if (json.contains("slow")) {
    const Json& slow = json.at("slow");
    expect_keys(slow, where + ".slow", {"count", "bandwidth_factor", "latency_factor"});
    faults.slow_count = static_cast<uint32_t>(integer(slow, where + ".slow", "count", 1, 0, kNodesMax));
    faults.slow_bandwidth_factor = number(slow, where + ".slow", "bandwidth_factor", 0.1, 1e-4, 1);
    faults.slow_latency_factor = number(slow, where + ".slow", "latency_factor", 10, 1, 1e4);
    chosen += faults.slow_count;
  }
  if (json.contains("corrupt")) {
    const Json& corrupt = json.at("corrupt");
    expect_keys(corrupt, where + ".corrupt", {"count"});
    faults.corrupt_count =
        static_cast<uint32_t>(integer(corrupt, where + ".corrupt", "count", 1, 0, kNodesMax));
    chosen += faults.corrupt_count;
  }
  if (chosen >= scenario.nodes) throw Error{where + ": faults need fewer nodes than the cluster has"};
}

void parse_options(const Json& json, Scenario& scenario) {
  if (json.contains("flow")) {
    const Json& flow = json.at("flow");
    expect_keys(flow, "flow", {"quantum_us", "progress_interval_ms", "share_tolerance"});
    scenario.flow.share_tolerance = number(flow, "flow", "share_tolerance", 0.01, 0, 0.5);
    scenario.flow.recompute_quantum_ns =
        static_cast<int64_t>(number(flow, "flow", "quantum_us", 0, 0, 1e6) * 1e3);
    scenario.flow.progress_interval_ns =
        static_cast<int64_t>(number(flow, "flow", "progress_interval_ms", 2000, 1, 1e6) * 1e6);
  }
  if (json.contains("packet")) {
    const Json& packet = json.at("packet");
    expect_keys(packet, "packet",
                {"tcp_min_rto_ms", "socket_buffer_kib", "idle_connections_max", "delayed_ack_segments"});
    scenario.packet.delayed_ack_segments =
        static_cast<uint32_t>(integer(packet, "packet", "delayed_ack_segments", 4, 1, 64));
    scenario.packet.tcp_min_rto_seconds = number(packet, "packet", "tcp_min_rto_ms", 200, 1, 10000) / 1e3;
    scenario.packet.socket_buffer_bytes =
        static_cast<uint32_t>(integer(packet, "packet", "socket_buffer_kib", 4096, 16, 1 << 20) * 1024);
    scenario.packet.idle_connections_max =
        static_cast<uint32_t>(integer(packet, "packet", "idle_connections_max", 2, 0, 100000));
  }
  if (json.contains("node")) {
    const Json& node = json.at("node");
    expect_keys(node, "node", {"join_interval_ms", "settle_s", "membership_delay_s", "verify_gbytes_per_s"});
    scenario.join_interval_seconds = number(node, "node", "join_interval_ms", 1, 0, 1e4) / 1e3;
    scenario.settle_seconds = number(node, "node", "settle_s", 2, 0, 1e4);
    scenario.membership_delay_seconds = number(node, "node", "membership_delay_s", 2, 0, 1e4);
    scenario.verify_bytes_per_second = number(node, "node", "verify_gbytes_per_s", 2, 1e-3, 1e3) * 1e9;
  }
}

Scenario parse_root(const Json& root) {
  expect_keys(root, "scenario",
              {"name", "description", "seed", "nodes", "topology", "image", "workload", "arrival", "modes",
               "faults", "fidelity", "flow", "packet", "node", "engine", "sim_time_max_s"});
  Scenario scenario;
  scenario.name = text(root, "scenario", "name", "unnamed");
  scenario.description = text(root, "scenario", "description", "");
  scenario.seed = integer(root, "scenario", "seed", 1, 0, uint64_t{1} << 53);
  if (!root.contains("nodes")) throw Error{"scenario: \"nodes\" is required"};
  scenario.nodes = static_cast<uint32_t>(integer(root, "scenario", "nodes", 0, 1, kNodesMax));
  scenario.sim_time_max_seconds = number(root, "scenario", "sim_time_max_s", 3600, 1, 1e8);
  parse_topology(root.value("topology", Json::object()), scenario);
  scenario.topology.hosts = scenario.nodes;
  if (!root.contains("image")) throw Error{"scenario: \"image\" is required"};
  parse_image(root.at("image"), scenario);
  parse_workload(root.value("workload", Json::object()), scenario);
  if (scenario.workload.kind == Workload::Kind::kStream && scenario.layers.size() != 1) {
    throw Error{"workload: a stream reads one file: give image.layers_mib with one size"};
  }
  parse_arrival(root.value("arrival", Json::object()), scenario);
  if (!root.contains("modes")) throw Error{"scenario: \"modes\" is required"};
  parse_modes(root.at("modes"), scenario);
  parse_faults(root.value("faults", Json::object()), scenario);
  const std::string fidelity = text(root, "scenario", "fidelity", "flow");
  const auto parsed = parse_fidelity(fidelity);
  if (!parsed) throw Error{"scenario.fidelity: expected \"packet\" or \"flow\""};
  scenario.fidelity = *parsed;
  if (root.contains("engine")) scenario.engine = parse_engine(root.at("engine"), "engine");
  parse_options(root, scenario);
  const std::string topology_error = scenario.topology.validate();
  if (!topology_error.empty()) throw Error{"topology: " + topology_error};
  return scenario;
}

}  // namespace

std::string_view describe(Fidelity fidelity) {
  return fidelity == Fidelity::kPacket ? "packet" : "flow";
}

std::optional<Fidelity> parse_fidelity(std::string_view text) {
  if (text == "packet") return Fidelity::kPacket;
  if (text == "flow") return Fidelity::kFlow;
  return std::nullopt;
}

std::string_view describe(ModeBase base) {
  switch (base) {
    case ModeBase::kUpstreamOnly:
      return "upstream-only";
    case ModeBase::kPeerdClassic:
      return "peerd-classic";
    case ModeBase::kPeerd:
      return "peerd";
  }
  return "?";
}

std::optional<ModeBase> parse_mode_base(std::string_view text) {
  for (ModeBase base : {ModeBase::kUpstreamOnly, ModeBase::kPeerdClassic, ModeBase::kPeerd}) {
    if (describe(base) == text) return base;
  }
  return std::nullopt;
}

bool is_engine_override_key(std::string_view key) {
  return std::find(kEngineKeys.begin(), kEngineKeys.end(), key) != kEngineKeys.end();
}

uint64_t Scenario::image_bytes() const {
  uint64_t total = 0;
  for (const Layer& layer : layers) total += layer.bytes;
  return total;
}

Result<Scenario, std::string> parse_scenario(std::string_view json_text) {
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& error) {
    return fail(std::string("not valid JSON: ") + error.what());
  }
  try {
    return parse_root(root);
  } catch (const Error& error) {
    return fail(error.text);
  } catch (const nlohmann::json::exception& error) {
    return fail(std::string(error.what()));
  }
}

Result<Scenario, std::string> load_scenario(const std::string& path) {
  std::ifstream file(path);
  if (!file) return fail("cannot read " + path);
  std::stringstream content;
  content << file.rdbuf();
  return parse_scenario(content.str());
}

}  // namespace peerd::sim
