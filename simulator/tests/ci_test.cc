// The simulator's CI experiments (ctest label `sim`): a 20-node packet-fidelity pull, a 200-node
// flow-fidelity pull, packet/flow calibration, determinism, and faults. Each runs the real peerd core over
// ns-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "simulator/src/cluster.h"
#include "simulator/src/ns3_endpoint_memo.h"
#include "simulator/src/report.h"
#include "simulator/src/scenario.h"

namespace peerd::sim {
namespace {

Scenario load(const std::string& name) {
  auto scenario = load_scenario(std::string(PEERD_SOURCE_DIR) + "/simulator/scenarios/" + name);
  EXPECT_TRUE(scenario.ok()) << scenario.error();
  return scenario.value();
}

const ModeSpec& mode(const Scenario& scenario, ModeBase base) {
  for (const ModeSpec& spec : scenario.modes) {
    if (spec.base == base && spec.engine.empty()) return spec;
  }
  ADD_FAILURE() << "scenario " << scenario.name << " lacks mode " << describe(base);
  return scenario.modes.front();
}

// Every live node completed, and the bytes add up: reads delivered what they requested, clients received what
// the engines counted, and no more than servers sent.
void expect_complete_and_conserved(const RunResult& run) {
  const ModeSummary summary = summarize(run);
  EXPECT_FALSE(run.timed_out) << run.mode;
  EXPECT_EQ(summary.nodes_completed, summary.nodes_live) << run.mode;
  EXPECT_EQ(summary.nodes_failed, 0u) << run.mode;
  EXPECT_EQ(summary.reads_wrong_bytes, 0u) << run.mode;
  EXPECT_EQ(run.bytes_delivered, run.bytes_requested) << run.mode;
  EXPECT_EQ(run.bytes_requested, uint64_t{summary.nodes_live} * run.image_bytes) << run.mode;
  EXPECT_EQ(run.engine.bytes_from_upstream + run.engine.bytes_from_peers, run.network.payload_bytes_received)
      << run.mode;
  EXPECT_LE(run.network.payload_bytes_received, run.network.payload_bytes_sent) << run.mode;
  EXPECT_TRUE(summary.bytes_conserved) << run.mode;
}

double relative_difference(double a, double b) {
  return std::fabs(a - b) / std::max(a, b);
}

// 20 nodes pull at once over real ns-3 TCP: all complete with bytes conserved; peerd costs the registry about
// one image (<= 1.5 x F) while upstream-only costs exactly N x F. The same scenario in flow fidelity agrees
// with the packet run within 15 % on p50 and max completion (the calibration of the fluid model).
TEST(SimCiTest, PacketTwentyNodesAndCalibration) {
  const Scenario scenario = load("ci-packet-20.json");
  ASSERT_EQ(scenario.nodes, 20u);
  const RunResult peerd = run_mode(scenario, mode(scenario, ModeBase::kPeerd), Fidelity::kPacket);
  const RunResult upstream = run_mode(scenario, mode(scenario, ModeBase::kUpstreamOnly), Fidelity::kPacket);
  expect_complete_and_conserved(peerd);
  expect_complete_and_conserved(upstream);
  const double image = double(scenario.image_bytes());
  EXPECT_LE(double(peerd.upstream_egress_bytes), 1.5 * image);
  EXPECT_GE(peerd.upstream_egress_bytes, scenario.image_bytes());
  EXPECT_EQ(upstream.upstream_egress_bytes, uint64_t{scenario.nodes} * scenario.image_bytes());
  EXPECT_GT(peerd.network.connections_opened, 0u);   // real TCP carried the chunks
  EXPECT_GT(peerd.network.datagrams_delivered, 0u);  // and real UDP the DHT

  const RunResult flow = run_mode(scenario, mode(scenario, ModeBase::kPeerd), Fidelity::kFlow);
  expect_complete_and_conserved(flow);
  const Quantiles packet_times = summarize(peerd).completion_seconds;
  const Quantiles flow_times = summarize(flow).completion_seconds;
  EXPECT_LE(relative_difference(packet_times.p50, flow_times.p50), 0.15)
      << "packet p50 " << packet_times.p50 << " s, flow p50 " << flow_times.p50 << " s";
  EXPECT_LE(relative_difference(packet_times.max, flow_times.max), 0.15)
      << "packet max " << packet_times.max << " s, flow max " << flow_times.max << " s";
}

// 200 nodes pull a 248 MiB image at once (flow fidelity): every node completes with bytes conserved; peerd
// costs the registry <= 1.5 x F and completes within 1.3 x the lower bound max(F/U, F/B); upstream-only and
// peerd-classic (which never fetches through and advertises only verified blobs) cost N x F.
TEST(SimCiTest, FlowTwoHundredNodes) {
  const Scenario scenario = load("ci-flow-200.json");
  ASSERT_EQ(scenario.nodes, 200u);
  const double image = double(scenario.image_bytes());
  const RunResult peerd = run_mode(scenario, mode(scenario, ModeBase::kPeerd), Fidelity::kFlow);
  expect_complete_and_conserved(peerd);
  EXPECT_LE(double(peerd.upstream_egress_bytes), 1.5 * image);
  EXPECT_LE(summarize(peerd).completion_seconds.max, 1.3 * peerd.lower_bound_seconds);
  EXPECT_GT(peerd.engine.fetches_fetch_through, 0u);

  const RunResult upstream = run_mode(scenario, mode(scenario, ModeBase::kUpstreamOnly), Fidelity::kFlow);
  expect_complete_and_conserved(upstream);
  EXPECT_EQ(upstream.upstream_egress_bytes, uint64_t{scenario.nodes} * scenario.image_bytes());
  EXPECT_EQ(upstream.dht_datagrams, 0u);  // no peers: the DHT never talks

  const RunResult classic = run_mode(scenario, mode(scenario, ModeBase::kPeerdClassic), Fidelity::kFlow);
  expect_complete_and_conserved(classic);
  EXPECT_EQ(classic.engine.fetches_fetch_through, 0u);
  // A cold simultaneous pull: nobody holds a verified blob before it has pulled it all from the registry.
  EXPECT_GE(double(classic.upstream_egress_bytes), 0.9 * double(scenario.nodes) * image);
}

// The same scenario and seed give byte-identical JSON (flow and packet); another seed gives different JSON.
TEST(SimCiTest, SameSeedSameJson) {
  Scenario scenario = load("ci-flow-200.json");
  scenario.nodes = 60;
  scenario.topology.hosts = 60;
  scenario.layers.resize(2);
  const ModeSpec& peerd = mode(scenario, ModeBase::kPeerd);
  const std::string first = to_json({run_mode(scenario, peerd, Fidelity::kFlow)});
  const std::string second = to_json({run_mode(scenario, peerd, Fidelity::kFlow)});
  EXPECT_EQ(first, second);
  Scenario reseeded = scenario;
  reseeded.seed = scenario.seed + 1;
  EXPECT_NE(first, to_json({run_mode(reseeded, peerd, Fidelity::kFlow)}));

  Scenario small = load("ci-packet-20.json");
  small.nodes = 6;
  small.topology.hosts = 6;
  small.topology.rack_size = 3;
  small.layers = {Layer{"det/layer0", 8u << 20}};
  const ModeSpec& packet_mode = mode(small, ModeBase::kPeerd);
  EXPECT_EQ(to_json({run_mode(small, packet_mode, Fidelity::kPacket)}),
            to_json({run_mode(small, packet_mode, Fidelity::kPacket)}));
}

// ns3_endpoint_memo.cc answers ns-3's TCP endpoint lookups from a memo; a run with it must be the very run
// ns-3's own linear scan gives, connection churn and dying nodes included.
TEST(SimCiTest, EndpointMemoChangesNoResult) {
  Scenario scenario = load("ci-packet-20.json");
  scenario.layers = {Layer{"memo/layer0", 24u << 20}};
  scenario.faults.kills = {KillFault{3, 0.05}};
  const ModeSpec& peerd = mode(scenario, ModeBase::kPeerd);
  struct MemoOn {
    ~MemoOn() { set_endpoint_memo_enabled(true); }
  } restore;
  set_endpoint_memo_enabled(false);
  const RunResult scan = run_mode(scenario, peerd, Fidelity::kPacket);
  set_endpoint_memo_enabled(true);
  const EndpointMemoStats before = endpoint_memo_stats();
  const RunResult memo = run_mode(scenario, peerd, Fidelity::kPacket);
  const EndpointMemoStats after = endpoint_memo_stats();
  EXPECT_EQ(to_json({scan}), to_json({memo}));
  EXPECT_EQ(summarize(memo).nodes_killed, 3u);
  // The memo answered most segments (each connection misses once per direction, then hits).
  EXPECT_GT(after.hits - before.hits, 10 * (after.misses - before.misses));
}

// Nodes die mid-pull: the survivors all complete (the engine moves to the next-ranked owners and the member
// list drops the dead), with bytes conserved and the registry still paying about one image.
TEST(SimCiTest, SurvivorsCompleteWhenNodesDie) {
  Scenario scenario = load("node-failures-200.json");
  scenario.nodes = 100;
  scenario.topology.hosts = 100;
  scenario.faults.kills = {KillFault{10, 0.6}};
  scenario.layers = {Layer{"fail/layer0", 192u << 20}};
  const RunResult run = run_mode(scenario, mode(scenario, ModeBase::kPeerd), Fidelity::kFlow);
  EXPECT_EQ(summarize(run).nodes_killed, 10u);
  expect_complete_and_conserved(run);
  EXPECT_LE(double(run.upstream_egress_bytes), 2.0 * double(scenario.image_bytes()));
}

// Slow and corrupting nodes: nobody completes a blob that fails its digest (the engine verifies, audits and
// bans), every node still completes, and the corrupting nodes are banned by someone.
TEST(SimCiTest, CorruptingNodesAreCaughtAndSlowNodesTolerated) {
  Scenario scenario = load("slow-and-corrupt-100.json");
  scenario.nodes = 40;
  scenario.topology.hosts = 40;
  scenario.layers = {Layer{"faulty/layer0", 96u << 20}};
  const RunResult run = run_mode(scenario, mode(scenario, ModeBase::kPeerd), Fidelity::kFlow);
  expect_complete_and_conserved(run);
  EXPECT_GT(run.engine.integrity_failures, 0u);
  EXPECT_GT(run.engine.bans, 0u);
  size_t corrupting = 0, slow = 0;
  for (const NodeOutcome& outcome : run.outcomes) {
    corrupting += outcome.corrupting;
    slow += outcome.slow;
  }
  EXPECT_EQ(corrupting, 2u);
  EXPECT_EQ(slow, 5u);
}

}  // namespace
}  // namespace peerd::sim
