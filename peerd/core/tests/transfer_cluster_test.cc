// Cluster tests of the transfer engine on the deterministic harness: every node runs the real DHT and a
// transfer::Engine; chunk transfers share modelled links; bytes are virtual and checked on arrival and at the
// end. The sizes (100 nodes x 512 MiB) run by default; PEERD_TEST_SCALE=small shrinks them for
// sanitizer builds. Figures are printed so they can be quoted.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "peerd/core/harness/transfer_cluster.h"

namespace peerd::harness {
namespace {

using content::ContentId;
using content::Digest;

constexpr uint64_t kMiB = 1024 * 1024;

struct Scale {
  size_t nodes;
  uint64_t blob_bytes;
  const char* name;
};

Scale scale() {
  const char* value = std::getenv("PEERD_TEST_SCALE");
  if (value != nullptr && std::string(value) == "small") return Scale{20, 64 * kMiB, "small"};
  return Scale{100, 512 * kMiB, "full"};
}

// PEERD_TEST_SEED=n shifts every test's seed by n (replays a printed seed, or explores others).
uint64_t seed(uint64_t base) {
  const char* value = std::getenv("PEERD_TEST_SEED");
  return base + (value == nullptr ? 0 : std::strtoull(value, nullptr, 10));
}

TransferClusterOptions options_for(const Scale& scale, uint64_t base_seed) {
  TransferClusterOptions options;
  options.seed = seed(base_seed);
  options.nodes = scale.nodes;
  return options;
}

// For failure messages: the internal state of every node with an unfinished read.
std::string stuck(TransferCluster& cluster) {
  std::string text;
  for (const auto& read : cluster.reads()) {
    if (read.completed || read.failed) continue;
    text += "\n  node " + std::to_string(read.node) + ": " + cluster.engine(read.node).debug_summary();
  }
  return text;
}

void print(const std::string& title, const TransferCluster& cluster, const TransferReport& report) {
  std::cout << "[transfer] " << title << " (" << cluster.seed_text() << ", " << scale().name << " scale)\n  "
            << report.summary() << std::endl;
}

constexpr size_t kStepsMax = size_t{1} << 36;

// N nodes pull one blob at the same instant through a capped upstream: every node completes with verified,
// correct bytes and the upstream sends the blob about once (issue bound: <= 1.5 x blob size), where designs
// that advertise only complete content send it N times.
TEST(TransferCluster, ColdPullFetchesEachChunkFromUpstreamAboutOnce) {
  const Scale s = scale();
  TransferCluster cluster(options_for(s, 1));
  const ContentId blob = ContentId::blob(Digest::of_bytes("cold-pull"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t node = 0; node < cluster.size(); ++node) cluster.read_whole_at(start, node, blob);
  ASSERT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(3600), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport report = cluster.report();
  print("cold pull, all nodes at once", cluster, report);
  EXPECT_EQ(report.reads_completed, cluster.size());
  EXPECT_EQ(report.reads_bad_bytes, 0u);
  EXPECT_EQ(report.reads_unverified, 0u);
  EXPECT_EQ(report.pieces_corrupt, 0u);
  EXPECT_LE(report.upstream_ratio, 1.5);
  for (size_t node = 0; node < cluster.size(); ++node) EXPECT_TRUE(cluster.holds_true_copy(node, blob));
}

// The same cold pull without a swarm (no member list, no per-chunk lookups or advertisements: content is
// found only once some node holds all of it, as in today's peerd and Spegel): every node goes to the
// upstream, which is the figure the swarm is measured against.
TEST(TransferCluster, BaselineWithoutSwarmSendsTheBlobOncePerNode) {
  const Scale s = scale();
  TransferClusterOptions options = options_for(s, 2);
  options.swarm_membership = false;
  options.engine.lookup_before_upstream = false;
  options.engine.advertise_upstream_chunks = false;
  TransferCluster cluster(options);
  const ContentId blob = ContentId::blob(Digest::of_bytes("baseline"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t node = 0; node < cluster.size(); ++node) cluster.read_whole_at(start, node, blob);
  ASSERT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(36000), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport report = cluster.report();
  print("baseline without swarm (advertise only complete blobs)", cluster, report);
  EXPECT_EQ(report.reads_completed, cluster.size());
  EXPECT_EQ(report.reads_bad_bytes, 0u);
  EXPECT_GE(report.upstream_ratio, 0.9 * double(cluster.size()));
}

// 20 % of the nodes die in the middle of a cold pull (streams from them go silent, connections to them fail,
// the member list drops them after a delay): every survivor still completes with verified, correct bytes.
TEST(TransferCluster, ColdPullSurvivesTwentyPercentKilledMidPull) {
  const Scale s = scale();
  TransferCluster cluster(options_for(s, 3));
  const ContentId blob = ContentId::blob(Digest::of_bytes("cold-pull-kill"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t node = 0; node < cluster.size(); ++node) cluster.read_whole_at(start, node, blob);
  // Mid-pull: the undisturbed pull takes about blob / upstream cap.
  const Duration pull = Duration::microseconds(int64_t(double(s.blob_bytes) / 125e6 * 1e6));
  size_t killed = 0;
  for (size_t node = 1; node < cluster.size(); node += 5, ++killed) cluster.kill_at(start + pull / 2, node);
  ASSERT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(3600), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport report = cluster.report();
  print("cold pull, 20% of nodes killed mid-pull", cluster, report);
  EXPECT_EQ(report.reads_killed, killed);
  EXPECT_EQ(report.reads_completed, cluster.size() - killed);
  EXPECT_EQ(report.reads_failed, 0u);
  EXPECT_EQ(report.reads_bad_bytes, 0u);
  EXPECT_EQ(report.reads_unverified, 0u);
  for (size_t node = 0; node < cluster.size(); ++node) {
    if (cluster.is_alive(node)) {
      EXPECT_TRUE(cluster.holds_true_copy(node, blob)) << "node " << node;
    }
  }
}

// One node flips every byte it serves: the digest check catches it at every node it supplied, the repair
// pins it down by comparing chunk fingerprints against another source and the upstream, every node that
// received bytes from it bans it (and no honest node is banned), and all nodes end with verified, correct
// bytes.
TEST(TransferCluster, CorruptingNodeIsBannedByEveryoneItTouched) {
  const Scale s = scale();
  TransferCluster cluster(options_for(s, 4));
  const ContentId blob = ContentId::blob(Digest::of_bytes("cold-pull-corrupt"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  // The liar: the node owning the most chunks (rendezvous), so it serves every other node.
  std::vector<size_t> owned(cluster.size());
  for (uint64_t chunk = 0; chunk * content::kDefaultChunkBytes < s.blob_bytes; ++chunk) {
    const NodeId owner = cluster.engine(0).owners_of(content::ChunkKey{blob, chunk}, 1).at(0);
    for (size_t node = 0; node < cluster.size(); ++node) owned[node] += cluster.peer(node).id == owner;
  }
  const size_t liar = size_t(std::max_element(owned.begin(), owned.end()) - owned.begin());
  cluster.set_corrupting(liar, true);
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t node = 0; node < cluster.size(); ++node) cluster.read_whole_at(start, node, blob);
  ASSERT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(3600), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport report = cluster.report();
  print("cold pull with one corrupting node", cluster, report);
  EXPECT_EQ(report.reads_completed, cluster.size());
  EXPECT_EQ(report.reads_bad_bytes, 0u);
  EXPECT_EQ(report.reads_unverified, 0u);
  EXPECT_GT(report.pieces_corrupt, 0u);
  size_t touched = 0;
  for (size_t node = 0; node < cluster.size(); ++node) {
    EXPECT_TRUE(cluster.holds_true_copy(node, blob)) << "node " << node;
    if (cluster.received_from(node, liar)) {
      ++touched;
      EXPECT_TRUE(cluster.banned_by(node, liar)) << "node " << node << " received from the liar";
    }
    for (size_t other = 0; other < cluster.size(); ++other) {
      if (other != liar) {
        EXPECT_FALSE(cluster.banned_by(node, other)) << node << " banned honest " << other;
      }
    }
  }
  std::cout << "  the corrupting node supplied " << touched << " nodes; all of them banned it" << std::endl;
  EXPECT_GT(touched, cluster.size() / 2);
}

// Nodes pull one after another, each after the previous one finished: once the first pull brought every chunk
// into the cluster, later pulls are served by peers and the upstream sends nothing more.
TEST(TransferCluster, RollingPullLaterNodesFetchNothingUpstream) {
  const Scale s = scale();
  TransferCluster cluster(options_for(s, 5));
  const ContentId blob = ContentId::blob(Digest::of_bytes("rolling"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  cluster.read_whole_at(cluster.now() + Duration::milliseconds(1), 0, blob);
  ASSERT_TRUE(cluster.run_until_reads_done(cluster.now() + Duration::seconds(600), kStepsMax));
  const TransferReport first = cluster.report();
  print("rolling pull: the first node", cluster, first);
  ASSERT_EQ(first.reads_completed, 1u);
  EXPECT_LE(first.upstream_ratio, 1.05);
  cluster.begin_measurement();
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t node = 1; node < cluster.size(); ++node) {
    cluster.read_whole_at(start + Duration::seconds(2) * int64_t(node - 1), node, blob);
  }
  ASSERT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(3600), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport later = cluster.report();
  print("rolling pull: every later node, one every 2 s", cluster, later);
  EXPECT_EQ(later.reads_completed, cluster.size() - 1);
  EXPECT_EQ(later.reads_bad_bytes, 0u);
  EXPECT_EQ(later.upstream_egress_bytes, 0u);
}

// Nodes join the cluster one after another and pull as they join, so each newcomer becomes the rendezvous
// owner of chunks it does not hold: the owner path finds the holders through the DHT, and after the first
// pull the upstream still sends nothing.
TEST(TransferCluster, RollingJoinLaterNodesFetchNothingUpstream) {
  Scale s = scale();
  s.nodes = std::min<size_t>(s.nodes, 40);
  TransferCluster cluster(options_for(s, 6));
  const ContentId blob = ContentId::blob(Digest::of_bytes("rolling-join"));
  cluster.add_content(blob, s.blob_bytes);
  cluster.start();
  for (size_t node = 1; node < cluster.size(); ++node) cluster.set_member(node, false);
  cluster.read_whole_at(cluster.now() + Duration::milliseconds(1), 0, blob);
  ASSERT_TRUE(cluster.run_until_reads_done(cluster.now() + Duration::seconds(600), kStepsMax));
  cluster.begin_measurement();
  for (size_t node = 1; node < cluster.size(); ++node) {
    cluster.set_member(node, true);
    cluster.read_whole_at(cluster.now() + Duration::milliseconds(1), node, blob);
    ASSERT_TRUE(cluster.run_until_reads_done(cluster.now() + Duration::seconds(600), kStepsMax))
        << stuck(cluster);
  }
  const TransferReport later = cluster.report();
  print("rolling join: nodes join and pull one at a time", cluster, later);
  EXPECT_EQ(later.reads_completed, cluster.size() - 1);
  EXPECT_EQ(later.reads_bad_bytes, 0u);
  EXPECT_EQ(later.upstream_egress_bytes, 0u);
}

struct HedgeRun {
  Duration p50;
  Duration p99;
  uint64_t hedges = 0;
  size_t completed = 0;
};

// Four seeds hold a blob (pulled long ago), eight readers pull it at once over links with 5-10 ms one-way
// latency; optionally seed 0 is 10x slower (latency), optionally hedging is off.
HedgeRun hedge_run(const Scale& s, bool slow_seed, bool hedging) {
  TransferClusterOptions options;
  options.seed = seed(7);
  options.nodes = 12;
  options.latency_min = Duration::milliseconds(5);
  options.latency_max = Duration::milliseconds(10);
  options.engine.hedge_enabled = hedging;
  options.engine.per_peer_fetches_max = 8;
  options.engine.fetches_inflight_max = 16;
  TransferCluster cluster(options);
  const ContentId blob = ContentId::blob(Digest::of_bytes("hedging"));
  cluster.add_content(blob, s.blob_bytes / 4);
  if (slow_seed) cluster.set_slow(0, 10.0, 1.0);
  cluster.start();
  for (size_t seed = 0; seed < 4; ++seed) cluster.seed_content(seed, blob);
  cluster.run_until(cluster.now() + Duration::seconds(5), kStepsMax);
  cluster.begin_measurement();
  const Instant start = cluster.now() + Duration::milliseconds(1);
  for (size_t reader = 4; reader < cluster.size(); ++reader) cluster.read_whole_at(start, reader, blob);
  EXPECT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(600), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  const TransferReport report = cluster.report();
  EXPECT_EQ(report.reads_bad_bytes, 0u);
  EXPECT_EQ(report.upstream_egress_bytes, 0u);  // holders are preferred over (cold) owners
  return HedgeRun{report.chunk_wait_p50, report.chunk_wait_p99, report.hedges, report.reads_completed};
}

// One seed with 10x the latency of the others does not raise the p99 chunk fetch latency by more than 2x
// over the same run without it: requests that wait too long for a first byte are hedged at another seed.
// The run without hedging is printed for contrast.
TEST(TransferCluster, HedgingBoundsTheTailUnderOneSlowPeer) {
  const Scale s = scale();
  const HedgeRun fast = hedge_run(s, false, true);
  const HedgeRun slow = hedge_run(s, true, true);
  const HedgeRun unhedged = hedge_run(s, true, false);
  std::cout << "[transfer] hedging, 4 seeds -> 8 readers, one seed 10x latency (seed=" << seed(7) << ", "
            << scale().name << " scale)\n"
            << "  no slow seed:           chunk fetch p50=" << fast.p50.as_milliseconds()
            << " ms p99=" << fast.p99.as_milliseconds() << " ms hedges=" << fast.hedges << "\n"
            << "  slow seed, hedging:     chunk fetch p50=" << slow.p50.as_milliseconds()
            << " ms p99=" << slow.p99.as_milliseconds() << " ms hedges=" << slow.hedges << "\n"
            << "  slow seed, no hedging:  chunk fetch p50=" << unhedged.p50.as_milliseconds()
            << " ms p99=" << unhedged.p99.as_milliseconds() << " ms" << std::endl;
  EXPECT_EQ(fast.completed, 8u);
  EXPECT_EQ(slow.completed, 8u);
  EXPECT_GT(slow.hedges, 0u);
  EXPECT_LE(slow.p99.micros, 2 * fast.p99.micros);
}

// Range reads through the whole stack: one byte, the last byte, the whole item and a range across a chunk
// boundary deliver exactly the right bytes (digest blob and file blob); an empty range and ranges beyond the
// end are refused with typed errors.
TEST(TransferCluster, RangeReadsDeliverExactBytesAndTypedErrors) {
  TransferClusterOptions options;
  options.seed = seed(8);
  options.nodes = 8;
  TransferCluster cluster(options);
  const uint64_t blob_size = 5 * kMiB + 123;
  const uint64_t file_size = 3 * kMiB + 7;
  const ContentId blob = ContentId::blob(Digest::of_bytes("ranges"));
  const ContentId file = ContentId::file("https://files.example.com/data.bin");
  cluster.add_content(blob, blob_size);
  cluster.add_content(file, file_size);
  cluster.start();
  Instant at = cluster.now() + Duration::milliseconds(1);
  struct Case {
    ContentId id;
    uint64_t offset;
    uint64_t length;
    std::optional<transfer::ReadError> error;
  };
  const std::vector<Case> cases{
      {blob, 0, 1, {}},
      {blob, blob_size - 1, 1, {}},
      {blob, kMiB - 10, 20, {}},
      {blob, 0, blob_size, {}},
      {file, 0, 1, {}},
      {file, file_size - 1, 1, {}},
      {file, 0, file_size, {}},
      {blob, 0, 0, transfer::ReadError::kEmptyRange},
      {blob, blob_size, 1, transfer::ReadError::kBeyondEnd},
      {blob, blob_size - 1, 2, transfer::ReadError::kBeyondEnd},
      {file, 5, UINT64_MAX - 2, transfer::ReadError::kBeyondEnd},
  };
  for (const Case& c : cases) {
    cluster.read_at(at, 3, c.id, c.offset, c.length);
    at += Duration::seconds(1);  // one at a time, so each read's own fetches are visible
  }
  ASSERT_TRUE(cluster.run_until_reads_done(at + Duration::seconds(60), kStepsMax))
      << cluster.seed_text() << stuck(cluster);
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& read = cluster.reads()[i];
    SCOPED_TRACE("case " + std::to_string(i));
    if (cases[i].error) {
      EXPECT_FALSE(read.accepted);
      ASSERT_TRUE(read.error.has_value());
      EXPECT_EQ(*read.error, *cases[i].error);
      continue;
    }
    EXPECT_TRUE(read.completed);
    EXPECT_TRUE(read.bytes_ok);
  }
  EXPECT_TRUE(cluster.reads()[3].verified);   // the whole digest blob is verified before it completes
  EXPECT_FALSE(cluster.reads()[6].verified);  // a file blob has no digest to verify against
}

// One seed replays one run: two clusters built with the same seed produce the same figures and the same DHT
// state fingerprint.
TEST(TransferCluster, SameSeedReplaysTheSameRun) {
  auto run = [](uint64_t seed) {
    TransferClusterOptions options;
    options.seed = seed;
    options.nodes = 16;
    TransferCluster cluster(options);
    const ContentId blob = ContentId::blob(Digest::of_bytes("replay"));
    cluster.add_content(blob, 32 * kMiB);
    cluster.start();
    const Instant start = cluster.now() + Duration::milliseconds(1);
    for (size_t node = 0; node < cluster.size(); ++node) cluster.read_whole_at(start, node, blob);
    cluster.kill_at(start + Duration::milliseconds(100), 5);
    EXPECT_TRUE(cluster.run_until_reads_done(start + Duration::seconds(600), kStepsMax));
    const TransferReport report = cluster.report();
    return std::make_tuple(report.summary(), cluster.dht().fingerprint(), cluster.now().micros_since_epoch);
  };
  EXPECT_EQ(run(seed(11)), run(seed(11)));
  EXPECT_NE(std::get<1>(run(seed(11))), std::get<1>(run(seed(12))));
}
}  // namespace
}  // namespace peerd::harness
