// Issue #4's scenarios on a real local cluster (LocalCluster: docker-registry, images built with umoci and
// pushed with skopeo, N x (peerd + containerd) on 127.44.<test>.x): later pulls come from peers and survive
// the registry going away, a pull survives the peer serving it being killed, containerd falls back to the
// registry when peerd is down, and /blobs/ Range reads are byte-exact and shared between peers. Each test has
// its own address block and free ports, so they may run in parallel. Skips unless run as root with
// docker-registry, umoci, skopeo, containerd and ctr (and nginx for /blobs/) installed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <iostream>
#include <set>
#include <string>
#include <thread>

#include "peerd/daemon/tests/local_cluster.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon {
namespace {

using testing::GroupProcess;
using testing::LocalCluster;
using testing::LocalClusterOptions;

#define SKIP_UNLESS_CLUSTER_CAN_RUN()                                                       \
  do {                                                                                      \
    if (const auto missing = LocalCluster::missing_requirement()) GTEST_SKIP() << *missing; \
  } while (false)

LocalClusterOptions cluster_options(uint32_t subnet, uint32_t nodes) {
  LocalClusterOptions options;
  options.subnet = subnet;
  options.nodes = nodes;
  return options;
}

// Every node in `nodes` holds the same blobs as the first, and each hashes (ctr content get) to its digest.
void expect_same_verified_content(LocalCluster& cluster, std::initializer_list<uint32_t> nodes) {
  const std::set<std::string> reference = cluster.content_digests(*nodes.begin());
  EXPECT_FALSE(reference.empty()) << "node " << *nodes.begin() << " holds no content";
  for (const uint32_t node : nodes) {
    EXPECT_EQ(cluster.content_digests(node), reference) << "node " << node << " vs node " << *nodes.begin();
    for (const auto& digest : reference) {
      EXPECT_EQ(cluster.content_sha256(node, digest), digest) << "node " << node;
    }
  }
}

// Shows the main flow: node 1 pulls from the registry, nodes 2 and 3 then pull without one more blob
// GET reaching the registry (its access log) and hold byte-identical content, and with the registry stopped,
// node 4 pulls the image by digest from its peers alone.
TEST(Cluster, LaterPullsComeFromPeersEvenWithoutTheRegistry) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  LocalCluster cluster(cluster_options(1, 4));
  ASSERT_TRUE(cluster.start()) << cluster.error();
  const std::string by_digest = cluster.digest_reference("small");
  ASSERT_FALSE(by_digest.empty());

  ASSERT_EQ(cluster.pull(1, cluster.small_reference()), 0) << cluster.pull_log(1);
  const size_t blob_gets_after_first_pull = cluster.registry_blob_gets();
  EXPECT_GT(blob_gets_after_first_pull, 0u) << cluster.registry_log();
  // Nodes 2 and 3 may already hold chunks they fetched for node 1 (a cold pull is shared out), so only their
  // peer bytes during their own pulls, together, must be positive.
  const uint64_t peer_bytes_before = cluster.bytes_fetched(2, "peer") + cluster.bytes_fetched(3, "peer");
  for (const uint32_t node : {2u, 3u}) {
    ASSERT_EQ(cluster.pull(node, cluster.small_reference()), 0) << cluster.pull_log(node);
  }
  EXPECT_EQ(cluster.registry_blob_gets(), blob_gets_after_first_pull)
      << "nodes 2 and 3 fetched blobs from the registry instead of from peers";
  EXPECT_GT(cluster.bytes_fetched(2, "peer") + cluster.bytes_fetched(3, "peer"), peer_bytes_before)
      << cluster.fetched_summary();
  expect_same_verified_content(cluster, {1, 2, 3});

  cluster.stop_registry();
  ASSERT_EQ(cluster.pull(4, by_digest), 0) << "pull of " << by_digest << " with the registry stopped:\n"
                                           << cluster.pull_log(4);
  expect_same_verified_content(cluster, {1, 4});
}

// Shows a pull survives the death of the peer serving it: nodes 1 and 2 hold the 200 MB image, node 3 pulls
// it, and whichever of nodes 1 and 2 is first seen sending bytes (peerd_bytes_served_total) gets SIGKILL
// while the pull runs; the pull completes and every blob on node 3 hashes to its digest.
TEST(Cluster, PullSurvivesTheServingPeerBeingKilled) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  LocalClusterOptions options = cluster_options(2, 3);
  options.big_image = true;
  LocalCluster cluster(options);
  ASSERT_TRUE(cluster.start()) << cluster.error();
  for (const uint32_t node : {1u, 2u}) {
    ASSERT_EQ(cluster.pull(node, cluster.big_reference()), 0) << cluster.pull_log(node);
  }
  const uint64_t served_before[] = {cluster.bytes_served(1), cluster.bytes_served(2)};

  GroupProcess pull;
  ASSERT_TRUE(cluster.start_pull(pull, 3, cluster.big_reference()));
  uint32_t killed = 0;
  for (int poll = 0; poll < 60000 && killed == 0 && pull.running(); ++poll) {  // 2 min guard at 2 ms a poll
    for (const uint32_t node : {1u, 2u}) {
      if (cluster.bytes_served(node) > served_before[node - 1]) {
        cluster.peerd(node).kill_now();
        killed = node;
        break;
      }
    }
    if (killed == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const int status = pull.wait_exit(LocalCluster::kPullTimeout);
  std::cout << "killed node " << killed << "'s peerd while node 3 pulled\n" << cluster.fetched_summary();
  EXPECT_NE(killed, 0u) << "no peer served node 3 while it pulled (all bytes came from elsewhere)";
  ASSERT_EQ(status, 0) << "pull on node 3 after killing node " << killed << "'s peerd:\n"
                       << cluster.pull_log(3);
  expect_same_verified_content(cluster, {1, 3});
}

// Shows containerd falls back to the registry when the node's peerd is down: node 1 pulls, peerd on node 2 is
// stopped, and node 2's pull still succeeds, with its blobs served by the registry (its access log grows).
TEST(Cluster, PullFallsBackToTheRegistryWhenPeerdIsDown) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  LocalCluster cluster(cluster_options(3, 2));
  ASSERT_TRUE(cluster.start()) << cluster.error();
  ASSERT_EQ(cluster.pull(1, cluster.small_reference()), 0) << cluster.pull_log(1);
  cluster.peerd(2).stop();
  const size_t blob_gets_before = cluster.registry_blob_gets();
  ASSERT_EQ(cluster.pull(2, cluster.small_reference()), 0) << cluster.pull_log(2);
  EXPECT_GT(cluster.registry_blob_gets(), blob_gets_before);
  expect_same_verified_content(cluster, {1, 2});
}

// Deterministic ranges for the /blobs/ test (splitmix64; the seed is fixed so a failure replays).
class RangeSequence {
 public:
  explicit RangeSequence(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

struct RangeRead {
  std::string header;  // "bytes=…"
  uint64_t first = 0;  // expected bytes [first, last]
  uint64_t last = 0;
};

// 24 random ranges up to 2 MiB (most cross 1 MiB chunk boundaries), an open-ended one, a suffix one and the
// last byte.
std::vector<RangeRead> range_reads(uint64_t size_bytes, uint64_t seed) {
  RangeSequence random(seed);
  std::vector<RangeRead> reads;
  for (int i = 0; i < 24; ++i) {
    const uint64_t first = random.next() % size_bytes;
    const uint64_t last = std::min(size_bytes - 1, first + random.next() % (2u << 20));
    reads.push_back({"bytes=" + std::to_string(first) + "-" + std::to_string(last), first, last});
  }
  const uint64_t open_first = size_bytes - 1 - random.next() % (3u << 20);
  reads.push_back({"bytes=" + std::to_string(open_first) + "-", open_first, size_bytes - 1});
  reads.push_back({"bytes=-100000", size_bytes - 100000, size_bytes - 1});
  reads.push_back({"bytes=" + std::to_string(size_bytes - 1) + "-", size_bytes - 1, size_bytes - 1});
  return reads;
}

// Shows /blobs/ serves byte-exact reads of a plain HTTP file (nginx) on three nodes, and that once node 1 has
// read the whole file, later reads come from peers: node 1 reads it all, then every node does 27 seeded Range
// reads compared byte for byte with the file; nginx's access log gets no further GET, and node 2's
// peerd_bytes_fetched_total grows for peers and not for upstream.
TEST(Cluster, BlobsRangeReadsAreExactAndSharedBetweenPeers) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  if (!testing::find_binary("nginx")) GTEST_SKIP() << "nginx not installed";
  LocalClusterOptions options = cluster_options(4, 3);
  options.file_server = true;
  LocalCluster cluster(options);
  ASSERT_TRUE(cluster.start()) << cluster.error();
  constexpr uint64_t kFileBytes = 48ull << 20;
  testing::write_pseudo_random_file(cluster.files_dir() / "file.bin", kFileBytes, 4);
  const std::string file = testing::read_text(cluster.files_dir() / "file.bin");
  ASSERT_EQ(file.size(), kFileBytes);
  const auto blob_url = [&](uint32_t node) {
    return cluster.node_url(node) + "/blobs/" + cluster.file_server_url() + "/file.bin";
  };

  const testing::HttpResult whole = testing::http_request(blob_url(1));
  ASSERT_EQ(whole.status, 200) << whole.body.substr(0, 300);
  ASSERT_TRUE(whole.body == file) << "node 1's whole read differs (" << whole.body.size() << " bytes)";
  // Node 2 may hold chunks it fetched for node 1 (a cold read is shared out): compare its counters from here.
  const size_t origin_gets_after_first_read = cluster.file_server_gets("/file.bin");
  EXPECT_GT(origin_gets_after_first_read, 0u) << "nginx's access log shows no GET";
  const uint64_t node2_peer_before = cluster.bytes_fetched(2, "peer");
  const uint64_t node2_upstream_before = cluster.bytes_fetched(2, "upstream");

  for (const uint32_t node : {1u, 2u, 3u}) {
    size_t wrong = 0;
    std::string first_wrong;
    for (const RangeRead& read : range_reads(kFileBytes, 100 + node)) {
      const testing::HttpResult response = testing::http_request(blob_url(node), {"Range: " + read.header});
      const std::string expected = file.substr(read.first, read.last - read.first + 1);
      const std::string content_range = "bytes " + std::to_string(read.first) + "-" +
                                        std::to_string(read.last) + "/" + std::to_string(kFileBytes);
      const bool exact = response.status == 206 && response.body == expected &&
                         response.header("content-range") == content_range;
      if (!exact && wrong++ == 0) {
        first_wrong = read.header + " -> " + std::to_string(response.status) + " " +
                      std::to_string(response.body.size()) + " bytes, Content-Range '" +
                      response.header("content-range") + "'";
      }
    }
    EXPECT_EQ(wrong, 0u) << "node " << node << ": first wrong read " << first_wrong;
  }
  EXPECT_EQ(cluster.file_server_gets("/file.bin"), origin_gets_after_first_read)
      << "range reads reached the origin although node 1 holds the whole file";
  EXPECT_GT(cluster.bytes_fetched(2, "peer"), node2_peer_before) << cluster.fetched_summary();
  EXPECT_EQ(cluster.bytes_fetched(2, "upstream"), node2_upstream_before)
      << "node 2 went upstream although node 1 holds the whole file\n"
      << cluster.fetched_summary();
}

}  // namespace
}  // namespace peerd::daemon
