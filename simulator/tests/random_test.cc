// The `random` workload (peerd-random's reads) in the simulator: every node issues exactly the reads
// plan_reads() returns for its seed, with peerd-random's pauses, through the engine, in both fidelities; the
// bytes add up, and the swarm keeps the registry's egress near one copy of what anyone read.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "peerd/core/transfer/engine.h"
#include "simulator/src/cluster.h"
#include "simulator/src/report.h"
#include "simulator/src/scenario.h"
#include "workloads/pattern/read_pattern.h"

namespace peerd::sim {
namespace {

Scenario load(const std::string& name) {
  auto scenario = load_scenario(std::string(PEERD_SOURCE_DIR) + "/simulator/scenarios/" + name);
  EXPECT_TRUE(scenario.ok()) << scenario.error();
  return scenario.value();
}

ModeSpec mode_named(const Scenario& scenario, const std::string& name) {
  for (const ModeSpec& spec : scenario.modes) {
    if (spec.name == name) return spec;
  }
  ADD_FAILURE() << "scenario " << scenario.name << " lacks mode " << name;
  return scenario.modes.front();
}

// What peerd-random computes for node `node` (random_workload.cc builds the same options from its flags).
workload::ReadPattern plan_for(const Scenario& scenario, uint32_t node) {
  const RandomWorkload& random = scenario.workload.random;
  workload::PatternOptions options;
  options.seed = scenario.workload.random.seed + node + 1;  // kind/local: --seed $((KL_SEED + node)), 1-based
  for (const Layer& layer : scenario.layers) options.blob_sizes_bytes.push_back(layer.bytes);
  options.reads_per_blob = random.reads_per_blob;
  options.read_bytes_max = random.read_bytes_max;
  options.jitter_min = Duration::milliseconds(random.jitter_min_ms);
  options.jitter_max = Duration::milliseconds(random.jitter_max_ms);
  options.start_delay_min = Duration::seconds(random.start_delay_min_s);
  options.start_delay_max = Duration::seconds(random.start_delay_max_s);
  auto pattern = workload::plan_reads(options);
  EXPECT_TRUE(pattern.ok());
  return pattern.value();
}

uint64_t chunk_bytes() {
  return transfer::EngineOptions{}.chunk_bytes;
}

// The chunks a read touches, as (blob, chunk index).
void add_chunks(std::set<std::pair<uint32_t, uint64_t>>& chunks, uint32_t blob, uint64_t offset,
                uint64_t length) {
  for (uint64_t chunk = offset / chunk_bytes(); chunk <= (offset + length - 1) / chunk_bytes(); ++chunk) {
    chunks.insert({blob, chunk});
  }
}

uint64_t bytes_of(const Scenario& scenario, const std::set<std::pair<uint32_t, uint64_t>>& chunks) {
  uint64_t total = 0;
  for (const auto& [blob, chunk] : chunks) {
    const uint64_t size = scenario.layers[blob].bytes;
    total += std::min(chunk_bytes(), size - chunk * chunk_bytes());
  }
  return total;
}

// Every node completed every read; each read is the plan's, issued after exactly the plan's pause (a blob's
// first read the run's start delay after arrival when a worker is free for every blob, every later read its
// jitter after the previous read of the blob ended); the bytes add up.
void expect_reads_are_the_plan(const Scenario& scenario, const RunResult& run) {
  const ModeSummary summary = summarize(run);
  EXPECT_FALSE(run.timed_out) << run.mode;
  EXPECT_EQ(summary.nodes_completed, scenario.nodes) << run.mode;
  EXPECT_EQ(summary.nodes_failed, 0u) << run.mode;
  EXPECT_EQ(summary.random_reads_failed, 0u) << run.mode;
  ASSERT_EQ(run.outcomes.size(), scenario.nodes);
  const bool worker_per_blob = scenario.workload.random.concurrency >= scenario.layers.size();
  uint64_t planned_bytes = 0;
  uint64_t planned_reads = 0;
  for (uint32_t node = 0; node < scenario.nodes; ++node) {
    const workload::ReadPattern plan = plan_for(scenario, node);
    const NodeOutcome& outcome = run.outcomes[node];
    ASSERT_EQ(outcome.random_reads.size(), plan.reads.size()) << run.mode << " node " << node;
    // Issue order interleaves blobs (workers run side by side); per blob it is the plan's order.
    std::vector<IssuedRead> issued = outcome.random_reads;
    std::stable_sort(issued.begin(), issued.end(),
                     [](const IssuedRead& a, const IssuedRead& b) { return a.blob_index < b.blob_index; });
    const auto arrival_us = static_cast<int64_t>(std::llround(outcome.arrival_seconds * 1e6));
    for (size_t i = 0; i < plan.reads.size(); ++i) {
      const workload::PlannedRead& want = plan.reads[i];
      const IssuedRead& got = issued[i];
      ASSERT_EQ(got.blob_index, want.blob_index) << "node " << node << " read " << i;
      ASSERT_EQ(got.read_index, want.read_index) << "node " << node << " read " << i;
      ASSERT_EQ(got.offset_bytes, want.offset_bytes) << "node " << node << " read " << i;
      ASSERT_EQ(got.length_bytes, want.length_bytes) << "node " << node << " read " << i;
      EXPECT_TRUE(got.completed);
      EXPECT_GT(got.finished_us, got.issued_us);  // at least the node-local hop
      if (want.read_index > 0) {
        EXPECT_EQ(got.issued_us, issued[i - 1].finished_us + want.start_delay.micros)
            << "node " << node << " read " << i;
      } else if (worker_per_blob) {
        EXPECT_EQ(got.issued_us, arrival_us + want.start_delay.micros) << "node " << node << " read " << i;
      }
      planned_bytes += want.length_bytes;
    }
    planned_reads += plan.reads.size();
    EXPECT_EQ(outcome.bytes_requested, outcome.bytes_delivered);
  }
  EXPECT_EQ(summary.random_reads, planned_reads);
  EXPECT_EQ(run.bytes_requested, planned_bytes) << run.mode;
  EXPECT_EQ(run.bytes_delivered, planned_bytes) << run.mode;
  EXPECT_EQ(run.engine.bytes_from_upstream + run.engine.bytes_from_peers, run.network.payload_bytes_received)
      << run.mode;
  EXPECT_LE(run.network.payload_bytes_received, run.network.payload_bytes_sent) << run.mode;
  EXPECT_TRUE(summary.bytes_conserved) << run.mode;
  ASSERT_TRUE(summary.read_speeds.has_value());
  EXPECT_EQ(summary.read_speeds->count, planned_reads);
}

// random-100.json (flow): 100 nodes x 4 blobs x 5 random reads. Both modes replay the plan exactly. Without
// peers every node fetches each chunk its reads touch once (its later reads hit its own store); with peerd
// the registry sends at most 1.2 x the chunks anyone touched, and the median read is faster.
TEST(SimRandomTest, HundredNodesReplayPlanReads) {
  const Scenario scenario = load("random-100.json");
  ASSERT_EQ(scenario.workload.kind, Workload::Kind::kRandom);
  ASSERT_EQ(scenario.nodes, 100u);
  const RunResult peerd = run_mode(scenario, mode_named(scenario, "peerd"), Fidelity::kFlow);
  const RunResult upstream = run_mode(scenario, mode_named(scenario, "upstream-only"), Fidelity::kFlow);
  expect_reads_are_the_plan(scenario, peerd);
  expect_reads_are_the_plan(scenario, upstream);

  std::set<std::pair<uint32_t, uint64_t>> touched_by_anyone;
  uint64_t touched_per_node_bytes = 0;
  for (uint32_t node = 0; node < scenario.nodes; ++node) {
    std::set<std::pair<uint32_t, uint64_t>> touched;
    for (const workload::PlannedRead& read : plan_for(scenario, node).reads) {
      add_chunks(touched, read.blob_index, read.offset_bytes, read.length_bytes);
    }
    touched_per_node_bytes += bytes_of(scenario, touched);
    touched_by_anyone.insert(touched.begin(), touched.end());
  }
  EXPECT_EQ(upstream.upstream_egress_bytes, touched_per_node_bytes);
  EXPECT_LE(double(peerd.upstream_egress_bytes), 1.2 * double(bytes_of(scenario, touched_by_anyone)));
  EXPECT_GT(peerd.engine.bytes_from_peers, 0u);
  EXPECT_GT(summarize(peerd).read_speeds->values[0], summarize(upstream).read_speeds->values[0]);
}

// The same workload over real ns-3 TCP (packet fidelity), smaller: the reads are still exactly the plan's.
TEST(SimRandomTest, PacketFidelityReplaysPlanReads) {
  Scenario scenario = load("random-100.json");
  scenario.nodes = 8;
  scenario.topology.hosts = 8;
  scenario.topology.rack_size = 4;
  scenario.layers = {Layer{"random/small0", 6u << 20}, Layer{"random/small1", (3u << 20) + 12345}};
  scenario.workload.random.reads_per_blob = 4;
  scenario.workload.random.concurrency = 1;  // one blob after the other, like --concurrency 1
  const RunResult peerd = run_mode(scenario, mode_named(scenario, "peerd"), Fidelity::kPacket);
  expect_reads_are_the_plan(scenario, peerd);
  EXPECT_GT(peerd.network.connections_opened, 0u);
  const RunResult upstream = run_mode(scenario, mode_named(scenario, "upstream-only"), Fidelity::kPacket);
  expect_reads_are_the_plan(scenario, upstream);
  // The JSON carries peerd-random's speed summary, labelled as its log lines are.
  const std::string json = to_json({upstream, peerd});
  EXPECT_NE(json.find("\"read_speeds_mbytes_per_s\""), std::string::npos);
  EXPECT_NE(json.find("\"label\": \"p2p\""), std::string::npos);
  EXPECT_NE(json.find("\"label\": \"upstream\""), std::string::npos);
}

}  // namespace
}  // namespace peerd::sim
