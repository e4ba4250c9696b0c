// containerd's content store as a source for peers, with real containerd, docker-registry and peerd
// processes (LocalCluster on 127.47.<subnet>.x). Images are put into node 1's containerd with
// `ctr images import` (no peerd involved); other nodes pull through their peerd.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "peerd/daemon/tests/local_cluster.h"

namespace peerd::daemon::testing {
namespace {

constexpr uint32_t kBlock = 47;

struct Options {
  uint32_t subnet = 1;
  uint32_t nodes = 2;
  bool content_root = true;  // sendfile from containerd's blob files; false: gRPC ReadContent streams
};

LocalClusterOptions cluster_options(const Options& options) {
  LocalClusterOptions cluster;
  cluster.block = kBlock;
  cluster.subnet = options.subnet;
  cluster.nodes = options.nodes;
  // ctr works in containerd's "default" namespace.
  cluster.extra_peerd_flags = {"--containerd-namespace=default", "--resolve-tags=ttl:1h",
                               "--containerd-refresh=1m"};
  const bool content_root = options.content_root;
  cluster.node_peerd_flags = [content_root](uint32_t, const std::filesystem::path& dir) {
    std::vector<std::string> flags = {"--containerd-socket=" + (dir / "containerd.sock").string()};
    if (content_root) {
      flags.push_back("--containerd-content-root=" +
                      (dir / "root" / "io.containerd.content.v1.content").string());
    }
    return flags;
  };
  return cluster;
}

// The pushed test/small image: its manifest digest and its config and layer digests.
struct ImageDigests {
  std::string manifest;
  std::vector<std::string> blobs;
};

ImageDigests small_image_digests(LocalCluster& cluster) {
  ImageDigests digests;
  const std::string url = "http://" + cluster.registry() + "/v2/test/small/manifests/latest";
  const HttpResult got = http_request(url, {"Accept: application/vnd.oci.image.manifest.v1+json"});
  if (got.status != 200) return digests;
  digests.manifest = got.header("docker-content-digest");
  const auto json = nlohmann::json::parse(got.body, nullptr, false);
  if (!json.is_object()) return digests;
  digests.blobs.push_back(json["config"]["digest"].get<std::string>());
  for (const auto& layer : json["layers"]) digests.blobs.push_back(layer["digest"].get<std::string>());
  return digests;
}

// `ctr images import` of the cluster's OCI layout (test/small) into `node`'s containerd, named as the
// registry names it ("<registry>/test/small:latest").
::testing::AssertionResult import_small_image(LocalCluster& cluster, uint32_t node) {
  const auto tar = find_binary("tar");
  if (!tar) return ::testing::AssertionFailure() << "tar not installed";
  const auto archive = cluster.dir() / "small-oci.tar";
  if (!std::filesystem::exists(archive)) {
    GroupProcess process;
    if (!process.start(
            {*tar, "-C", (cluster.dir() / "images" / "oci").string(), "-cf", archive.string(), "."},
            cluster.dir() / "logs" / "tar.log") ||
        process.wait_exit(std::chrono::minutes(1)) != 0) {
      return ::testing::AssertionFailure() << "tar failed: " << read_text(cluster.dir() / "logs" / "tar.log");
    }
  }
  const std::string base = cluster.registry() + "/test/small";
  if (cluster.ctr(node, {"images", "import", "--no-unpack", "--base-name", base, archive.string()}) != 0 ||
      cluster.ctr(node, {"images", "tag", base + ":small", base + ":latest"}) != 0 ||
      cluster.ctr(node, {"images", "rm", base + ":small"}) != 0) {
    return ::testing::AssertionFailure()
           << "ctr import failed: " << read_text(cluster.dir() / "logs" / "commands.log");
  }
  return ::testing::AssertionSuccess();
}

// What `node` answers a peer's HEAD for a blob of test/small (200 once it offers it, 404 before/after).
long peer_head_status(LocalCluster& cluster, uint32_t node, const std::string& digest) {
  return http_request(cluster.node_url(node) + "/v2/test/small/blobs/" + digest + "?ns=" + cluster.registry(),
                      {"X-Peerd-Peer: integration-test"}, true)
      .status;
}

// Polls (bounded: 30 s, a guard against hangs) until every blob has `status` at `node`.
bool wait_for_peer_status(LocalCluster& cluster, uint32_t node, const ImageDigests& image, long status) {
  for (int i = 0; i < 300; ++i) {
    bool all = true;
    for (const auto& digest : image.blobs) all = all && peer_head_status(cluster, node, digest) == status;
    all = all && peer_head_status(cluster, node, image.manifest) == status;
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Lets the DHT store the provider records the node just announced (a settle pause, not an assertion).
void let_provides_land() {
  std::this_thread::sleep_for(std::chrono::seconds(1));
}

bool wait_ready(LocalCluster& cluster, uint32_t node, bool ready) {
  for (int i = 0; i < 300; ++i) {  // 30 s guard
    const long status = http_request(cluster.node_url(node) + "/readyz").status;
    if ((status == 200) == ready) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

class ContainerdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto missing = LocalCluster::missing_requirement()) GTEST_SKIP() << *missing;
  }

  // Starts the cluster, imports the small image into node 1's containerd (no peerd involved) and waits until
  // node 1's peerd serves its blobs to peers. Use with ASSERT_NO_FATAL_FAILURE.
  static void start_with_image_on_node_1(LocalCluster& cluster, ImageDigests& image) {
    ASSERT_TRUE(cluster.start()) << cluster.error();
    image = small_image_digests(cluster);
    ASSERT_FALSE(image.manifest.empty());
    ASSERT_TRUE(import_small_image(cluster, 1));
    ASSERT_TRUE(wait_for_peer_status(cluster, 1, image, 200)) << cluster.peerd_log(1);
  }
};

TEST_F(ContainerdStoreTest, PreloadedImageIsServedToPeersFromTheContentStore) {
  LocalCluster cluster(cluster_options({.subnet = 1, .nodes = 2, .content_root = true}));
  ImageDigests image;
  ASSERT_NO_FATAL_FAILURE(start_with_image_on_node_1(cluster, image));
  let_provides_land();

  const size_t registry_gets_before = cluster.registry_blob_gets();
  ASSERT_EQ(cluster.pull(2, cluster.small_reference()), 0) << cluster.pull_log(2) << cluster.peerd_log(2);
  EXPECT_EQ(cluster.registry_blob_gets(), registry_gets_before) << cluster.registry_log();
  EXPECT_GT(cluster.bytes_fetched(2, "peer"), 0u) << cluster.fetched_summary();
  EXPECT_EQ(cluster.bytes_fetched(2, "upstream"), 0u) << cluster.fetched_summary();
  EXPECT_GT(cluster.metric(1, "peerd_containerd_bytes_served_total"), 0u);
  for (const auto& digest : image.blobs) EXPECT_EQ(cluster.content_sha256(2, digest), digest);
}

TEST_F(ContainerdStoreTest, PeersResolveTagsFromTheImageStoreWhileTheRegistryIsDown) {
  LocalCluster cluster(cluster_options({.subnet = 2, .nodes = 2, .content_root = true}));
  ImageDigests image;
  ASSERT_NO_FATAL_FAILURE(start_with_image_on_node_1(cluster, image));
  let_provides_land();

  // Node 1 answers a peer's tag lookup with the digest its image store holds.
  const HttpResult tag =
      http_request(cluster.node_url(1) + "/v2/test/small/manifests/latest?ns=" + cluster.registry(),
                   {"X-Peerd-Peer: integration-test"}, true);
  EXPECT_EQ(tag.status, 200);
  EXPECT_EQ(tag.header("docker-content-digest"), image.manifest);

  cluster.stop_registry();
  ASSERT_EQ(cluster.pull(2, cluster.small_reference()), 0) << cluster.pull_log(2) << cluster.peerd_log(2);
  EXPECT_NE(cluster.peerd_log(2).find("tag resolved by a peer"), std::string::npos) << cluster.peerd_log(2);
  EXPECT_GT(cluster.bytes_fetched(2, "peer"), 0u) << cluster.fetched_summary();
  for (const auto& digest : image.blobs) EXPECT_EQ(cluster.content_sha256(2, digest), digest);
}

TEST_F(ContainerdStoreTest, DeletedImageIsWithdrawnAndPeersFallBackToTheRegistry) {
  LocalCluster cluster(cluster_options({.subnet = 3, .nodes = 3, .content_root = true}));
  ImageDigests image;
  ASSERT_NO_FATAL_FAILURE(start_with_image_on_node_1(cluster, image));

  ASSERT_EQ(cluster.ctr(1, {"images", "rm", "--sync", cluster.small_reference()}), 0);
  // The delete event withdraws the image's blobs at once (the poll is a guard against hangs).
  ASSERT_TRUE(wait_for_peer_status(cluster, 1, image, 404)) << cluster.peerd_log(1);
  EXPECT_NE(cluster.peerd_log(1).find("\"withdrawn\":" + std::to_string(image.blobs.size() + 2)),
            std::string::npos)
      << cluster.peerd_log(1);

  const size_t registry_gets_before = cluster.registry_blob_gets();
  ASSERT_EQ(cluster.pull(3, cluster.small_reference()), 0) << cluster.pull_log(3) << cluster.peerd_log(3);
  // Every blob came from the registry once (node 3 directly, or a chunk owner fetching through for it).
  EXPECT_EQ(cluster.registry_blob_gets(), registry_gets_before + image.blobs.size())
      << cluster.registry_log();
  EXPECT_EQ(cluster.metric(1, "peerd_containerd_bytes_served_total"), 0u);
}

TEST_F(ContainerdStoreTest, SurvivesAContainerdRestartAndServesOverGrpc) {
  LocalCluster cluster(cluster_options({.subnet = 4, .nodes = 2, .content_root = false}));
  ASSERT_TRUE(cluster.start()) << cluster.error();
  const ImageDigests image = small_image_digests(cluster);
  ASSERT_FALSE(image.manifest.empty());
  ASSERT_TRUE(wait_ready(cluster, 1, true)) << cluster.peerd_log(1);
  ASSERT_TRUE(import_small_image(cluster, 1));
  ASSERT_TRUE(wait_for_peer_status(cluster, 1, image, 200)) << cluster.peerd_log(1);

  cluster.stop_containerd(1);
  ASSERT_TRUE(wait_ready(cluster, 1, false)) << cluster.peerd_log(1);
  const HttpResult readyz = http_request(cluster.node_url(1) + "/readyz");
  EXPECT_NE(readyz.body.find("containerd"), std::string::npos) << readyz.body;
  EXPECT_NE(cluster.peerd_log(1).find("containerd connection lost"), std::string::npos)
      << cluster.peerd_log(1);

  ASSERT_TRUE(cluster.restart_containerd(1)) << cluster.error();
  ASSERT_TRUE(wait_ready(cluster, 1, true)) << cluster.peerd_log(1);
  let_provides_land();

  const size_t registry_gets_before = cluster.registry_blob_gets();
  ASSERT_EQ(cluster.pull(2, cluster.small_reference()), 0) << cluster.pull_log(2) << cluster.peerd_log(2);
  EXPECT_EQ(cluster.registry_blob_gets(), registry_gets_before) << cluster.registry_log();
  EXPECT_GT(cluster.bytes_fetched(2, "peer"), 0u) << cluster.fetched_summary();
  EXPECT_GT(cluster.metric(1, "peerd_containerd_bytes_served_total"), 0u);
  for (const auto& digest : image.blobs) EXPECT_EQ(cluster.content_sha256(2, digest), digest);
}

}  // namespace
}  // namespace peerd::daemon::testing
