// Issue #8's mutual TLS on a real local cluster (LocalCluster with peer_tls: one cluster CA directory shared
// like the Kubernetes Secret, every peerd with --peer-tls-dir and its own --peer-addr) on 127.49.<test>.x:
// later pulls come from peers over mTLS, a client without a certificate is refused at the peer port, and a
// peer request on the plaintext HTTP port is refused. PEERD_MEASURE_PEER_TLS=1 also measures peer transfer
// throughput over TLS against plaintext (figures printed, not asserted). Skips unless run as root with
// docker-registry, umoci, skopeo, containerd and ctr installed.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "peerd/daemon/peer_tls.h"
#include "peerd/daemon/tests/local_cluster.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon {
namespace {

using testing::LocalCluster;
using testing::LocalClusterOptions;
using testing::read_text;

constexpr uint32_t kAddressBlock = 49;

#define SKIP_UNLESS_CLUSTER_CAN_RUN()                                                       \
  do {                                                                                      \
    if (const auto missing = LocalCluster::missing_requirement()) GTEST_SKIP() << *missing; \
  } while (false)

LocalClusterOptions mtls_options(uint32_t subnet, uint32_t nodes, bool peer_tls) {
  LocalClusterOptions options;
  options.block = kAddressBlock;
  options.subnet = subnet;
  options.nodes = nodes;
  options.peer_tls = peer_tls;
  return options;
}

// A curl handle for peer-port requests, reused (keep-alive) across calls. With `identity`, it presents that
// client certificate; the cluster CA verifies the server either way.
class PeerClient {
 public:
  PeerClient(const std::string& ca_pem, const PemKeyPair* identity) : curl_(curl_easy_init()) {
    curl_blob cas{const_cast<char*>(ca_pem.data()), ca_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(curl_, CURLOPT_CAINFO_BLOB, &cas);
    if (identity != nullptr) {
      curl_blob cert{const_cast<char*>(identity->cert_pem.data()), identity->cert_pem.size(), CURL_BLOB_COPY};
      curl_blob key{const_cast<char*>(identity->key_pem.data()), identity->key_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(curl_, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(curl_, CURLOPT_SSLKEY_BLOB, &key);
    }
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl_, CURLOPT_BUFFERSIZE, 256L * 1024);  // as UpstreamClient's peer fetches
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_PROXY, "");
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &PeerClient::count);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &bytes_);
  }
  ~PeerClient() { curl_easy_cleanup(curl_); }
  PeerClient(const PeerClient&) = delete;
  PeerClient& operator=(const PeerClient&) = delete;

  // GET `url` with `headers`; the HTTP status, 0 when no response came (refused handshake).
  long get(const std::string& url, const std::vector<std::string>& headers) {
    curl_slist* list = nullptr;
    for (const auto& header : headers) list = curl_slist_append(list, header.c_str());
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, list);
    long status = 0;
    if (curl_easy_perform(curl_) == CURLE_OK) curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    return status;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  static size_t count(char*, size_t size, size_t items, void* user) {
    *static_cast<uint64_t*>(user) += size * items;
    return size * items;
  }
  CURL* curl_;
  uint64_t bytes_ = 0;
};

std::string cluster_ca(const LocalCluster& cluster) {
  return read_text(cluster.peer_tls_dir() / "ca.crt");
}

// A client identity from the cluster CA (what another node holds).
PemKeyPair cluster_identity(const LocalCluster& cluster) {
  const PemKeyPair ca{cluster_ca(cluster), read_text(cluster.peer_tls_dir() / "ca.key")};
  auto leaf = mint_leaf(ca, "test-client", Endpoint::ipv4(127, 49, 0, 1, 0), std::chrono::system_clock::now(),
                        std::chrono::hours(1));
  EXPECT_TRUE(leaf.ok()) << leaf.error();
  return leaf.ok() ? *leaf : PemKeyPair{};
}

std::string peer_url(const LocalCluster& cluster, uint32_t node, const std::string& target) {
  return "https://" + cluster.node_address(node) + ":" + std::to_string(cluster.peer_port()) + target;
}

// Shows the test: node 1 pulls from the registry; nodes 2 and 3 then pull from peers over mutual TLS
// (peer bytes grow, no more registry blob GETs); a client without a certificate gets no HTTP answer from the
// peer port (counted as no_cert), one with a cluster certificate does; a peer request on the plaintext port
// is refused with 403.
TEST(PeerTlsCluster, PeersTransferOverMutualTlsAndRefuseClientsWithoutCertificate) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  LocalCluster cluster(mtls_options(1, 3, true));
  ASSERT_TRUE(cluster.start()) << cluster.error();

  ASSERT_EQ(cluster.pull(1, cluster.small_reference()), 0) << cluster.pull_log(1);
  const size_t blob_gets_after_first_pull = cluster.registry_blob_gets();
  const uint64_t peer_bytes_before = cluster.bytes_fetched(2, "peer") + cluster.bytes_fetched(3, "peer");
  for (const uint32_t node : {2u, 3u}) {
    ASSERT_EQ(cluster.pull(node, cluster.small_reference()), 0) << cluster.pull_log(node);
  }
  EXPECT_EQ(cluster.registry_blob_gets(), blob_gets_after_first_pull)
      << "nodes 2 and 3 fetched blobs from the registry instead of from peers";
  EXPECT_GT(cluster.bytes_fetched(2, "peer") + cluster.bytes_fetched(3, "peer"), peer_bytes_before)
      << cluster.fetched_summary() << cluster.peerd_log(2);
  EXPECT_EQ(cluster.peerd_log(1).find("peer TLS handshake refused"), std::string::npos)
      << "valid peers were refused:\n"
      << cluster.peerd_log(1);

  const std::string ca = cluster_ca(cluster);
  const std::vector<std::string> peer_header = {"X-Peerd-Peer: test"};
  PeerClient anonymous(ca, nullptr);
  EXPECT_EQ(anonymous.get(peer_url(cluster, 1, "/v2/"), peer_header), 0);
  EXPECT_EQ(anonymous.bytes(), 0u);
  EXPECT_GE(cluster.metric(1, "peerd_peer_tls_handshakes_refused_total{reason=\"no_cert\"}"), 1u);

  const PemKeyPair identity = cluster_identity(cluster);
  PeerClient member(ca, &identity);
  EXPECT_EQ(member.get(peer_url(cluster, 1, "/v2/"), peer_header), 200);

  const testing::HttpResult plaintext = testing::http_request(cluster.node_url(1) + "/v2/", peer_header);
  EXPECT_EQ(plaintext.status, 403) << plaintext.body;
  EXPECT_GE(cluster.metric(1, "peerd_peer_plaintext_requests_refused_total"), 1u);
}

// The layer digest of test/big (the registry's manifest).
std::string big_layer_digest(const LocalCluster& cluster, uint64_t& size) {
  const auto manifest =
      testing::http_request("http://" + cluster.registry() + "/v2/test/big/manifests/latest",
                            {"Accept: application/vnd.oci.image.manifest.v1+json"});
  const auto json = nlohmann::json::parse(manifest.body, nullptr, false);
  if (json.is_discarded() || !json.contains("layers") || json["layers"].empty()) return "";
  size = json["layers"][0].value("size", uint64_t{0});
  return json["layers"][0].value("digest", std::string());
}

// Bytes per second of peer chunk GETs (4 MiB Range requests with the peer headers, one keep-alive connection)
// for the whole big layer from node 1, after node 1 cached it through its mirror. Returns 0 on failure.
double measure_peer_throughput(bool peer_tls, uint32_t subnet) {
  LocalClusterOptions options = mtls_options(subnet, 2, peer_tls);
  options.big_image = true;
  options.big_image_bytes = 256ull << 20;
  LocalCluster cluster(options);
  EXPECT_TRUE(cluster.start()) << cluster.error();
  uint64_t size = 0;
  const std::string digest = big_layer_digest(cluster, size);
  EXPECT_FALSE(digest.empty());
  if (digest.empty() || size == 0) return 0;
  const std::string target = "/v2/test/big/blobs/" + digest + "?ns=" + cluster.registry();
  const auto warm = testing::http_request(cluster.node_url(1) + target, {}, false, std::chrono::seconds(120));
  EXPECT_EQ(warm.status, 200);
  EXPECT_EQ(warm.body.size(), size);

  const std::string ca = peer_tls ? cluster_ca(cluster) : "";
  const PemKeyPair identity = peer_tls ? cluster_identity(cluster) : PemKeyPair{};
  PeerClient client(ca, peer_tls ? &identity : nullptr);
  const std::string base = peer_tls ? peer_url(cluster, 1, target) : cluster.node_url(1) + target;
  constexpr uint64_t kChunkBytes = 4ull << 20;
  const auto started = std::chrono::steady_clock::now();
  for (uint64_t offset = 0; offset < size; offset += kChunkBytes) {
    const uint64_t last = std::min(size, offset + kChunkBytes) - 1;
    const long status =
        client.get(base, {"X-Peerd-Peer: measure", "X-Peerd-Content-Length: " + std::to_string(size),
                          "Range: bytes=" + std::to_string(offset) + "-" + std::to_string(last)});
    EXPECT_EQ(status, 206) << "chunk at " << offset;
    if (status != 206) return 0;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(client.bytes(), size);
  const double rate = static_cast<double>(client.bytes()) / seconds;
  std::cout << (peer_tls ? "mTLS" : "plaintext") << " peer transfer: " << client.bytes() << " bytes in "
            << seconds << " s = " << rate / 1e6 << " MB/s\n";
  return rate;
}

TEST(PeerTlsCluster, MeasuresPeerThroughputOverTlsAgainstPlaintext) {
  SKIP_UNLESS_CLUSTER_CAN_RUN();
  const char* wanted = std::getenv("PEERD_MEASURE_PEER_TLS");
  if (wanted == nullptr || std::string(wanted) != "1") GTEST_SKIP() << "set PEERD_MEASURE_PEER_TLS=1";
  const double plaintext = measure_peer_throughput(false, 3);
  const double tls = measure_peer_throughput(true, 2);
  ASSERT_GT(plaintext, 0);
  ASSERT_GT(tls, 0);
  std::cout << "mTLS / plaintext throughput ratio: " << tls / plaintext << "\n";
}

}  // namespace
}  // namespace peerd::daemon
