// The mutual-TLS peer listener end to end on 127.0.0.180/181: HttpServer with a TLS context, UpstreamClient
// (libcurl) with a client identity. A client without a certificate, or with one from another CA, is refused
// at the handshake (and counted); a valid peer gets file bodies byte-exact through TLS; the client refuses a
// server whose certificate names another IP; a swapped context applies to new connections; a plaintext
// listener answers peer requests 403.
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <fstream>
#include <mutex>
#include <thread>

#include "peerd/daemon/http_server.h"
#include "peerd/daemon/metrics.h"
#include "peerd/daemon/peer_tls.h"
#include "peerd/daemon/tests/test_process.h"
#include "peerd/daemon/upstream_client.h"

namespace peerd::daemon {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

const Endpoint kServerIp = Endpoint::ipv4(127, 0, 0, 180, 0);
const Endpoint kOtherIp = Endpoint::ipv4(127, 0, 0, 181, 0);

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

PemKeyPair make_ca(const std::string& name) {
  auto ca = create_self_signed_ca(name, WallClock::now() - 1h, std::chrono::hours(24 * 30));
  EXPECT_TRUE(ca.ok()) << ca.error();
  return *ca;
}

PemKeyPair make_leaf(const PemKeyPair& ca, const Endpoint& ip) {
  auto leaf = mint_leaf(ca, "node", ip, WallClock::now(), 24h);
  EXPECT_TRUE(leaf.ok()) << leaf.error();
  return *leaf;
}

std::shared_ptr<const PeerTlsMaterial> material(const PemKeyPair& leaf, const std::string& trusted_ca_pem) {
  auto result = std::make_shared<PeerTlsMaterial>();
  result->cert_pem = leaf.cert_pem;
  result->key_pem = leaf.key_pem;
  result->trusted_ca_pem = trusted_ca_pem;
  return result;
}

// Body bytes 0..n-1 are (i * 13 + i / 509) % 256, served as two file regions (the TLS buffer path).
class RegionHandler final : public RequestHandler {
 public:
  explicit RegionHandler(size_t bytes) {
    content_.resize(bytes);
    for (size_t i = 0; i < bytes; ++i) content_[i] = static_cast<char>((i * 13 + i / 509) % 256);
    std::ofstream(dir_.path() / "body.bin", std::ios::binary) << content_;
    fd_ = ::open((dir_.path() / "body.bin").c_str(), O_RDONLY);
  }
  ~RegionHandler() override { ::close(fd_); }

  void handle(const Request& request, Respond respond) override {
    if (request.message.target() != "/file") return respond(text_response(http::status::ok, "small"));
    const uint64_t size = content_.size();
    std::vector<FileRegion> regions = {{fd_, 0, size / 3, nullptr},
                                       {fd_, size / 3, size - size / 3, nullptr}};
    respond(content_response(ContentHead{size, "application/octet-stream", ""}, std::nullopt,
                             std::make_shared<FileRegionsBodySource>(std::move(regions)), ByteSource::kPeer));
  }
  const std::string& content() const { return content_; }

 private:
  testing::TempDir dir_;
  std::string content_;
  int fd_ = -1;
};

class PeerTlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = make_ca("cluster");
    server_leaf_ = make_leaf(ca_, kServerIp);
  }

  // A TLS listener on 127.0.0.180 using whatever context_ holds when a connection arrives.
  void start_tls(const PemKeyPair& server_leaf, const std::string& trusted_ca_pem) {
    set_context(server_leaf, trusted_ca_pem);
    HttpServerOptions options;
    options.tls_context = [this] {
      std::lock_guard lock(context_mutex_);
      return context_;
    };
    start(options);
  }

  void set_context(const PemKeyPair& server_leaf, const std::string& trusted_ca_pem) {
    auto context = make_peer_server_context(server_leaf.cert_pem, server_leaf.key_pem, trusted_ca_pem);
    ASSERT_TRUE(context.ok()) << context.error();
    std::lock_guard lock(context_mutex_);
    context_ = *context;
  }

  void start(HttpServerOptions options) {
    server_ = std::make_unique<HttpServer>(io_, std::move(options), handler_, quiet(), &metrics_);
    auto bound = server_->listen(tcp::endpoint(net::ip::make_address("127.0.0.180"), 0));
    ASSERT_TRUE(bound.ok()) << bound.error();
    port_ = bound->port();
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    work_.reset();
    io_.stop();
    for (auto& thread : threads_) thread.join();
  }

  std::string url(std::string_view scheme, std::string_view target) const {
    return std::string(scheme) + "://127.0.0.180:" + std::to_string(port_) + std::string(target);
  }

  UpstreamResult fetch_as_peer(std::shared_ptr<const PeerTlsMaterial> identity, std::string_view target,
                               std::string* body = nullptr) {
    UpstreamOptions options;
    options.retries_max = 0;
    options.connect_timeout = 5s;
    options.total_timeout = 30s;
    options.peer_tls = [identity] { return identity; };
    UpstreamClient client(options, quiet(), nullptr);
    UpstreamRequest request;
    request.url = url(client.peer_scheme(), target);
    request.to_peer = true;
    request.headers = {{"X-Peerd-Peer", "test"}};
    request.on_body = [body](std::string_view bytes) {
      if (body != nullptr) body->append(bytes);
      return true;
    };
    return client.fetch(std::move(request));
  }

  uint64_t refused(std::string_view reason) {
    return registry_.counter("peerd_peer_tls_handshakes_refused_total", "", {{"reason", std::string(reason)}})
        .value();
  }

  // Polls for up to 10 s (a guard against hangs, not a timing assertion).
  template <typename Condition>
  bool eventually(Condition condition) {
    for (int i = 0; i < 1000 && !condition(); ++i) std::this_thread::sleep_for(10ms);
    return condition();
  }

  PemKeyPair ca_;
  PemKeyPair server_leaf_;
  RegionHandler handler_{5 * 1024 * 1024 + 123};
  MetricsRegistry registry_;
  DaemonMetrics metrics_{registry_};
  net::io_context io_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  std::mutex context_mutex_;
  std::shared_ptr<net::ssl::context> context_;
};

TEST_F(PeerTlsServerTest, ValidPeerGetsFileBodiesByteExactThroughTls) {
  start_tls(server_leaf_, ca_.cert_pem);
  std::string body;
  const auto result = fetch_as_peer(material(make_leaf(ca_, kOtherIp), ca_.cert_pem), "/file", &body);
  ASSERT_TRUE(result.ok()) << result.error_message << " status " << result.head.status;
  EXPECT_EQ(result.head.status, 200);
  EXPECT_TRUE(body == handler_.content()) << "body differs (" << body.size() << " bytes)";
  EXPECT_EQ(metrics_.bytes_served(ByteSource::kPeer).value(), handler_.content().size());
  EXPECT_EQ(refused("no_cert") + refused("bad_cert") + refused("other"), 0u);
}

TEST_F(PeerTlsServerTest, ClientWithoutCertificateIsRefusedAtTheHandshake) {
  start_tls(server_leaf_, ca_.cert_pem);
  CURL* curl = curl_easy_init();
  ASSERT_NE(curl, nullptr);
  const std::string target = url("https", "/small");
  curl_blob cas{const_cast<char*>(ca_.cert_pem.data()), ca_.cert_pem.size(), CURL_BLOB_COPY};
  curl_easy_setopt(curl, CURLOPT_URL, target.c_str());
  curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &cas);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char*, size_t size, size_t count, void*) { return size * count; });
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  EXPECT_NE(code, CURLE_OK);
  EXPECT_EQ(status, 0) << "no HTTP response may reach a client without a certificate";
  EXPECT_TRUE(eventually([&] { return refused("no_cert") == 1; })) << refused("no_cert");
}

TEST_F(PeerTlsServerTest, ClientWithCertificateFromAnotherCaIsRefused) {
  start_tls(server_leaf_, ca_.cert_pem);
  const PemKeyPair foreign_leaf = make_leaf(make_ca("foreign"), kOtherIp);
  const auto result = fetch_as_peer(material(foreign_leaf, ca_.cert_pem), "/small");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.head.status, 0);
  EXPECT_TRUE(eventually([&] { return refused("bad_cert") == 1; })) << refused("bad_cert");
}

TEST_F(PeerTlsServerTest, ClientRefusesAServerWhoseCertificateNamesAnotherIp) {
  start_tls(make_leaf(ca_, kOtherIp), ca_.cert_pem);
  const auto result = fetch_as_peer(material(make_leaf(ca_, kOtherIp), ca_.cert_pem), "/small");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.head.status, 0);
}

TEST_F(PeerTlsServerTest, ClientRefusesAServerFromAnotherCa) {
  const PemKeyPair foreign = make_ca("foreign");
  start_tls(make_leaf(foreign, kServerIp), ca_.cert_pem);
  const auto result = fetch_as_peer(material(make_leaf(ca_, kOtherIp), ca_.cert_pem), "/small");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.error, UpstreamError::kTls) << result.error_message;
}

// Rotation without restart: the listener's context function is read per connection.
TEST_F(PeerTlsServerTest, SwappedContextAppliesToNewConnections) {
  const PemKeyPair new_ca = make_ca("cluster-new");
  start_tls(server_leaf_, ca_.cert_pem);
  const auto new_peer = material(make_leaf(new_ca, kOtherIp), ca_.cert_pem);
  EXPECT_FALSE(fetch_as_peer(new_peer, "/small").ok());

  set_context(server_leaf_, ca_.cert_pem + new_ca.cert_pem);
  const auto result = fetch_as_peer(new_peer, "/small");
  EXPECT_TRUE(result.ok()) << result.error_message;
}

TEST_F(PeerTlsServerTest, PlaintextListenerRefusesPeerRequestsWhenTold) {
  HttpServerOptions options;
  options.peer_requests_allowed = false;
  start(options);
  UpstreamClient client(UpstreamOptions{}, quiet(), nullptr);
  UpstreamRequest peer;
  peer.url = url("http", "/small");
  peer.retries_max = 0;
  peer.headers = {{"X-Peerd-Peer", "test"}};
  const auto refused_result = client.fetch(peer);
  EXPECT_EQ(refused_result.head.status, 403);
  EXPECT_NE(refused_result.error_body.find("DENIED"), std::string::npos) << refused_result.error_body;
  EXPECT_EQ(registry_.counter("peerd_peer_plaintext_requests_refused_total", "").value(), 1u);

  UpstreamRequest local;
  local.url = url("http", "/small");
  local.retries_max = 0;
  EXPECT_EQ(client.fetch(local).head.status, 200) << "containerd's own requests stay plaintext";
}

}  // namespace
}  // namespace peerd::daemon
