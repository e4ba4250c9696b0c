// Scenario loading: defaults, strictness, and that every shipped scenario loads.
#include "simulator/src/scenario.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace peerd::sim {
namespace {

// A minimal scenario gets the documented cloud defaults (10 Gbit/s NICs, 1 Gbit/s registry, 50 us rack RTT).
TEST(ScenarioTest, MinimalScenarioGetsCloudDefaults) {
  auto scenario = parse_scenario(R"({"nodes": 8, "image": {"layers_mib": [10, 5]}, "modes": ["peerd"]})");
  ASSERT_TRUE(scenario.ok()) << scenario.error();
  EXPECT_EQ(scenario->nodes, 8u);
  EXPECT_EQ(scenario->topology.hosts, 8u);
  EXPECT_EQ(scenario->topology.kind, TopologySpec::Kind::kRacks);
  EXPECT_DOUBLE_EQ(scenario->topology.host_link.rate_bits_per_second, 10e9);
  EXPECT_DOUBLE_EQ(scenario->topology.upstream_link.rate_bits_per_second, 1e9);
  EXPECT_EQ(scenario->topology.path_delay_ns(0, 1) * 2, 50'000);  // the rack RTT
  EXPECT_EQ(scenario->topology.mtu_bytes, 9000u);
  EXPECT_EQ(scenario->image_bytes(), 15u * 1024 * 1024);
  EXPECT_EQ(scenario->fidelity, Fidelity::kFlow);
  EXPECT_EQ(scenario->modes.size(), 1u);
  EXPECT_EQ(scenario->modes[0].base, ModeBase::kPeerd);
}

// Typos and out-of-range values are errors naming the key, never silently ignored.
TEST(ScenarioTest, UnknownKeysAndBadValuesAreErrors) {
  auto typo =
      parse_scenario(R"({"nodes": 8, "image": {"layers_mib": [1]}, "modes": ["peerd"], "arival": {}})");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.error().find("arival"), std::string::npos);
  auto mode = parse_scenario(R"({"nodes": 8, "image": {"layers_mib": [1]}, "modes": ["p2p"]})");
  ASSERT_FALSE(mode.ok());
  EXPECT_NE(mode.error().find("p2p"), std::string::npos);
  auto rate = parse_scenario(
      R"({"nodes": 8, "image": {"layers_mib": [1]}, "modes": ["peerd"], "topology": {"host_link": {"rate_gbps": -1}}})");
  ASSERT_FALSE(rate.ok());
  EXPECT_NE(rate.error().find("rate_gbps"), std::string::npos);
  auto faults = parse_scenario(
      R"({"nodes": 4, "image": {"layers_mib": [1]}, "modes": ["peerd"], "faults": {"kill": [{"count": 4, "at_s": 1}]}})");
  EXPECT_FALSE(faults.ok());
  auto engine = parse_scenario(
      R"({"nodes": 4, "image": {"layers_mib": [1]}, "modes": [{"base": "peerd", "engine": {"warp": 9}}]})");
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().find("warp"), std::string::npos);
  EXPECT_FALSE(parse_scenario("{not json").ok());
}

// Modes may be objects that rename a base design and override engine options.
TEST(ScenarioTest, ModesCanOverrideEngineOptions) {
  auto scenario =
      parse_scenario(R"({"nodes": 3, "image": {"layers_mib": [200]}, "workload": {"kind": "stream",
      "read_kib": 256}, "modes": ["upstream-only", {"name": "p2p+prefetch", "base": "peerd",
      "engine": {"prefetch_workers": 4, "hedge_enabled": false}}]})");
  ASSERT_TRUE(scenario.ok()) << scenario.error();
  ASSERT_EQ(scenario->modes.size(), 2u);
  EXPECT_EQ(scenario->modes[1].name, "p2p+prefetch");
  const EngineOverrides& engine = scenario->modes[1].engine;
  ASSERT_EQ(engine.size(), 2u);
  auto value_of = [&engine](const std::string& key) {
    for (const auto& [name, value] : engine) {
      if (name == key) return value;
    }
    return -1.0;
  };
  EXPECT_EQ(value_of("prefetch_workers"), 4);
  EXPECT_EQ(value_of("hedge_enabled"), 0);
  EXPECT_EQ(scenario->workload.kind, Workload::Kind::kStream);
  EXPECT_EQ(scenario->workload.read_bytes, 256u * 1024);
}

// The random workload takes peerd-random's options under its flags' names; the blobs are the image's layers.
TEST(ScenarioTest, RandomWorkloadTakesPeerdRandomOptions) {
  auto scenario =
      parse_scenario(R"({"nodes": 4, "seed": 7, "image": {"layers_mib": [8, 4]}, "modes": ["peerd"],
      "workload": {"kind": "random", "reads_per_blob": 3, "read_bytes_max": 65536, "jitter_min_ms": 1,
      "jitter_max_ms": 2, "start_delay_max_s": 5, "concurrency": 2, "local_read_mbytes_per_s": 1000}})");
  ASSERT_TRUE(scenario.ok()) << scenario.error();
  const RandomWorkload& random = scenario->workload.random;
  EXPECT_EQ(scenario->workload.kind, Workload::Kind::kRandom);
  EXPECT_EQ(random.seed, 7u);  // the scenario's seed unless given
  EXPECT_EQ(random.seed_of(0), 8u);
  EXPECT_EQ(random.reads_per_blob, 3u);
  EXPECT_EQ(random.read_bytes_max, 65536u);
  EXPECT_EQ(random.jitter_min_ms, 1u);
  EXPECT_EQ(random.jitter_max_ms, 2u);
  EXPECT_EQ(random.start_delay_min_s, 0u);
  EXPECT_EQ(random.start_delay_max_s, 5u);
  EXPECT_EQ(random.concurrency, 2u);
  EXPECT_DOUBLE_EQ(random.local_read_bytes_per_second, 1e9);

  auto jitter = parse_scenario(R"({"nodes": 4, "image": {"layers_mib": [8]}, "modes": ["peerd"],
      "workload": {"kind": "random", "jitter_min_ms": 9, "jitter_max_ms": 2}})");
  ASSERT_FALSE(jitter.ok());
  EXPECT_NE(jitter.error().find("jitter_min_ms"), std::string::npos);
  auto stray = parse_scenario(R"({"nodes": 4, "image": {"layers_mib": [8]}, "modes": ["peerd"],
      "workload": {"kind": "pull", "reads_per_blob": 2}})");
  ASSERT_FALSE(stray.ok());
  EXPECT_NE(stray.error().find("reads_per_blob"), std::string::npos);
  auto zero = parse_scenario(R"({"nodes": 4, "image": {"layers_mib": [8]}, "modes": ["peerd"],
      "workload": {"kind": "random", "concurrency": 0}})");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.error().find("concurrency"), std::string::npos);
}

// Every scenario shipped in simulator/scenarios/ loads.
TEST(ScenarioTest, ShippedScenariosLoad) {
  size_t count = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(PEERD_SOURCE_DIR) + "/simulator/scenarios")) {
    if (entry.path().extension() != ".json") continue;
    ++count;
    auto scenario = load_scenario(entry.path().string());
    EXPECT_TRUE(scenario.ok()) << entry.path() << ": " << scenario.error();
  }
  EXPECT_GE(count, 4u);
}

}  // namespace
}  // namespace peerd::sim
