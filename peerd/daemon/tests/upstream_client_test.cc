// UpstreamClient against an in-process Beast server (peerd's own HttpServer with a scripted handler) on
// 127.0.0.1 and 127.0.0.2: the registry token flow, redirects to a storage host, retries, ranges, timeouts.
#include "peerd/daemon/upstream_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <map>
#include <mutex>
#include <thread>

#include "peerd/daemon/http_server.h"

namespace peerd::daemon {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::string_view kBlob = "0123456789abcdefghij";

// A scripted registry + storage service. Everything it sees is recorded for the assertions.
class FakeRegistry final : public RequestHandler {
 public:
  void handle(const Request& request, Respond respond) override {
    const std::string target(request.message.target());
    const std::string authorization(request.message[http::field::authorization]);
    {
      std::lock_guard lock(mutex);
      seen.push_back({target, authorization});
      ++hits[target.substr(0, target.find('?'))];
    }
    if (target.starts_with("/token")) {
      ++token_fetches;
      last_token_query = target.substr(target.find('?') + 1);
      return respond(json_response(http::status::ok, {{"token", "TOKEN-XYZZY"}, {"expires_in", 300}}));
    }
    if (target.starts_with("/v2/repo/")) {
      if (authorization != "Bearer TOKEN-XYZZY" && authorization != "Basic dXNlcjpwdw==") {
        Response challenge = oci_error(http::status::unauthorized, "UNAUTHORIZED", "auth required");
        challenge.message.set(
            http::field::www_authenticate,
            "Bearer realm=\"" + origin + "/token\",service=\"fake\",scope=\"repository:repo:pull\"");
        return respond(std::move(challenge));
      }
      Response redirect = text_response(http::status::temporary_redirect, "");
      redirect.message.set(http::field::location, storage_origin + "/storage/blob?sig=SECRETSIG");
      return respond(std::move(redirect));
    }
    if (target.starts_with("/storage/")) return respond(serve_blob(request));
    if (target == "/flaky") {
      if (++flaky_calls <= 2)
        return respond(oci_error(http::status::service_unavailable, "UNAVAILABLE", "busy"));
      return respond(text_response(http::status::ok, "finally"));
    }
    if (target == "/always503")
      return respond(oci_error(http::status::service_unavailable, "UNAVAILABLE", "busy"));
    if (target == "/loop") {
      Response redirect = text_response(http::status::found, "");
      redirect.message.set(http::field::location, "/loop");
      return respond(std::move(redirect));
    }
    if (target == "/hang") {
      std::lock_guard lock(mutex);
      hung.push_back(std::move(respond));  // answered at teardown
      return;
    }
    respond(oci_error(http::status::not_found, "NOT_FOUND", "no"));
  }

  Response serve_blob(const Request& request) {
    const ContentHead head{kBlob.size(), "application/octet-stream", ""};
    std::optional<content::ByteRange> range;
    if (auto field = request.message.find(http::field::range); field != request.message.end()) {
      auto parsed = content::parse_range(field->value(), kBlob.size());
      if (!parsed) return range_not_satisfiable(kBlob.size());
      range = *parsed;
    }
    Response response = content_response(head, range, nullptr, ByteSource::kCache);
    const auto offset = range ? range->offset : 0;
    const auto length = range ? range->length : kBlob.size();
    response.message.body() = std::string(kBlob.substr(offset, length));
    response.body_bytes.reset();
    return response;
  }

  struct Seen {
    std::string target;
    std::string authorization;
  };
  std::mutex mutex;
  std::vector<Seen> seen;
  std::map<std::string, int> hits;
  std::vector<Respond> hung;
  std::atomic<int> token_fetches{0};
  std::atomic<int> flaky_calls{0};
  std::string last_token_query;
  std::string origin;          // http://127.0.0.1:port
  std::string storage_origin;  // http://127.0.0.2:port
};

class UpstreamClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<HttpServer>(io_, HttpServerOptions{}, registry_,
                                           Logger(LogLevel::kError, [](std::string_view) {}), nullptr);
    auto registry_endpoint = server_->listen(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    ASSERT_TRUE(registry_endpoint.ok());
    auto storage_endpoint = server_->listen(tcp::endpoint(net::ip::make_address("127.0.0.2"), 0));
    ASSERT_TRUE(storage_endpoint.ok());
    registry_.origin = "http://127.0.0.1:" + std::to_string(registry_endpoint->port());
    registry_.storage_origin = "http://127.0.0.2:" + std::to_string(storage_endpoint->port());
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    {
      std::lock_guard lock(registry_.mutex);
      for (auto& respond : registry_.hung) respond(text_response(http::status::ok, "late"));
      registry_.hung.clear();
    }
    client_.reset();
    server_->stop();
    work_.reset();
    io_.stop();
    thread_.join();
  }

  UpstreamClient& client(UpstreamOptions options = fast_options()) {
    client_ = std::make_unique<UpstreamClient>(options,
                                               Logger(LogLevel::kDebug,
                                                      [this](std::string_view line) {
                                                        std::lock_guard lock(log_mutex_);
                                                        log_ += line;
                                                      }),
                                               &metrics_);
    return *client_;
  }

  static UpstreamOptions fast_options() {
    UpstreamOptions options;
    options.retry_backoff_initial = std::chrono::milliseconds(5);
    options.retry_backoff_max = std::chrono::milliseconds(20);
    options.connect_timeout = std::chrono::seconds(5);
    return options;
  }

  // Collects the body of a GET.
  UpstreamResult get(UpstreamClient& client, std::string url, std::string* body,
                     std::optional<content::OpenByteRange> range = std::nullopt,
                     std::string authorization = "") {
    UpstreamRequest request;
    request.url = std::move(url);
    request.range = range;
    request.authorization = std::move(authorization);
    request.on_body = [body](std::string_view bytes) {
      body->append(bytes);
      return true;
    };
    return client.fetch(std::move(request));
  }

  std::string log() {
    std::lock_guard lock(log_mutex_);
    return log_;
  }

  FakeRegistry registry_;
  MetricsRegistry metrics_registry_;
  DaemonMetrics metrics_{metrics_registry_};
  net::io_context io_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_{io_.get_executor()};
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::unique_ptr<UpstreamClient> client_;
  std::mutex log_mutex_;
  std::string log_;
};

// Shows the anonymous token flow: 401 challenge, token fetched with service and scope, retried with the
// token, then a redirect to the storage host that receives no Authorization; the token is cached so the
// next request for the repository goes straight through.
TEST_F(UpstreamClientTest, BearerTokenFlowAndRedirectToStorage) {
  auto& upstream = client();
  std::string body;
  const auto result = get(upstream, registry_.origin + "/v2/repo/blobs/sha256:x", &body);
  ASSERT_TRUE(result.ok()) << describe(result.error) << " " << result.head.status;
  EXPECT_EQ(body, kBlob);
  EXPECT_EQ(result.attempts, 4u);  // 401, token, 307, storage
  ASSERT_EQ(result.redirect_hosts.size(), 1u);
  EXPECT_EQ(result.redirect_hosts[0], "127.0.0.2");
  EXPECT_EQ(registry_.token_fetches.load(), 1);
  EXPECT_EQ(registry_.last_token_query, "service=fake&scope=repository%3Arepo%3Apull");
  {
    std::lock_guard lock(registry_.mutex);
    for (const auto& seen : registry_.seen) {
      if (seen.target.starts_with("/storage/")) {
        EXPECT_TRUE(seen.authorization.empty()) << seen.authorization;
      }
    }
  }

  std::string again;
  const auto second = get(upstream, registry_.origin + "/v2/repo/blobs/sha256:y", &again);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second.attempts, 2u);  // cached token: 307, storage
  EXPECT_EQ(registry_.token_fetches.load(), 1);
  EXPECT_EQ(metrics_.upstream_token_fetches.value(), 1u);

  const std::string lines = log();
  EXPECT_EQ(lines.find("SECRETSIG"), std::string::npos);
  EXPECT_EQ(lines.find("TOKEN-XYZZY"), std::string::npos);
  EXPECT_NE(lines.find("/storage/blob\""), std::string::npos);  // the redacted URL is logged
}

// Shows a client Authorization is passed through (no token flow) and a rejected one returns the 401.
TEST_F(UpstreamClientTest, ClientAuthorizationIsPassedThrough) {
  auto& upstream = client();
  std::string body;
  const auto accepted = get(upstream, registry_.origin + "/v2/repo/manifests/latest", &body, std::nullopt,
                            "Basic dXNlcjpwdw==");
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(body, kBlob);
  std::string ignored;
  const auto rejected =
      get(upstream, registry_.origin + "/v2/repo/manifests/latest", &ignored, std::nullopt, "Basic bad");
  EXPECT_EQ(rejected.error, UpstreamError::kNone);
  EXPECT_EQ(rejected.head.status, 401);
  EXPECT_NE(rejected.error_body.find("UNAUTHORIZED"), std::string::npos);
  EXPECT_TRUE(ignored.empty());
  EXPECT_EQ(registry_.token_fetches.load(), 0);
  EXPECT_EQ(log().find("dXNlcjpwdw"), std::string::npos);
}

// Shows byte ranges: a closed range gives 206 with those bytes, an open one reads to the end.
TEST_F(UpstreamClientTest, RangesAreSent) {
  auto& upstream = client();
  std::string middle;
  const auto closed =
      get(upstream, registry_.storage_origin + "/storage/blob", &middle, content::OpenByteRange{2, 4});
  EXPECT_EQ(closed.head.status, 206);
  EXPECT_EQ(middle, "2345");
  EXPECT_EQ(closed.head.content_length, 4u);
  std::string tail;
  const auto open =
      get(upstream, registry_.storage_origin + "/storage/blob", &tail, content::OpenByteRange{17, {}});
  EXPECT_EQ(open.head.status, 206);
  EXPECT_EQ(tail, "hij");
  EXPECT_EQ(open.head.header("Content-Range"), "bytes 17-19/20");
}

// Shows HEAD reports the length and calls on_head but never on_body.
TEST_F(UpstreamClientTest, HeadReportsLength) {
  auto& upstream = client();
  UpstreamRequest request;
  request.method = UpstreamMethod::kHead;
  request.url = registry_.storage_origin + "/storage/blob";
  int heads = 0;
  request.on_head = [&](const UpstreamHead& head) {
    ++heads;
    return head.status == 200;
  };
  request.on_body = [](std::string_view) {
    ADD_FAILURE() << "HEAD delivered a body";
    return false;
  };
  const auto result = upstream.fetch(std::move(request));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(heads, 1);
  EXPECT_EQ(result.head.content_length, kBlob.size());
  EXPECT_EQ(result.body_bytes, 0u);
}

// Shows 503s are retried with backoff until success, and retries stop at retries_max.
TEST_F(UpstreamClientTest, RetriesServerErrors) {
  auto& upstream = client();
  std::string body;
  const auto result = get(upstream, registry_.origin + "/flaky", &body);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(body, "finally");
  EXPECT_EQ(result.attempts, 3u);
  std::string ignored;
  const auto exhausted = get(upstream, registry_.origin + "/always503", &ignored);
  EXPECT_EQ(exhausted.head.status, 503);
  EXPECT_EQ(exhausted.attempts, 4u);  // 1 + retries_max (3)
  EXPECT_TRUE(ignored.empty());       // error bodies never reach on_body
  EXPECT_EQ(metrics_.upstream_retries.value(), 5u);

  UpstreamRequest once;
  once.url = registry_.origin + "/always503";
  once.retries_max = 0;  // per-request override, as for peer fetches
  EXPECT_EQ(upstream.fetch(std::move(once)).attempts, 1u);
}

// Shows a refused connection is retried and then reported as kConnect.
TEST_F(UpstreamClientTest, ConnectionRefusedIsReported) {
  auto& upstream = client();
  // A port that was free a moment ago: bind, read the port, close.
  net::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  acceptor.close();
  std::string body;
  const auto result = get(upstream, "http://127.0.0.1:" + std::to_string(port) + "/x", &body);
  EXPECT_EQ(result.error, UpstreamError::kConnect);
  EXPECT_EQ(result.attempts, 4u);
}

// Shows redirect vetting: a refused redirect stops with kRedirectRefused, a loop with kTooManyRedirects.
TEST_F(UpstreamClientTest, RedirectPolicy) {
  auto& upstream = client();
  UpstreamRequest request;
  request.url = registry_.origin + "/v2/repo/blobs/sha256:z";
  request.authorization = "Basic dXNlcjpwdw==";
  std::string refused_url;
  request.allow_redirect = [&](std::string_view url) {
    refused_url = std::string(url);
    return false;
  };
  const auto refused = upstream.fetch(std::move(request));
  EXPECT_EQ(refused.error, UpstreamError::kRedirectRefused);
  EXPECT_NE(refused_url.find("127.0.0.2"), std::string::npos);

  std::string body;
  const auto loop = get(upstream, registry_.origin + "/loop", &body);
  EXPECT_EQ(loop.error, UpstreamError::kTooManyRedirects);
}

// Shows on_body returning false aborts the transfer without retries.
TEST_F(UpstreamClientTest, CallerCanAbort) {
  auto& upstream = client();
  UpstreamRequest request;
  request.url = registry_.storage_origin + "/storage/blob";
  request.on_body = [](std::string_view) { return false; };
  const auto result = upstream.fetch(std::move(request));
  EXPECT_EQ(result.error, UpstreamError::kAborted);
  EXPECT_EQ(result.attempts, 1u);
}

// Shows a server that never answers hits the total timeout (set short here) instead of hanging.
TEST_F(UpstreamClientTest, TimeoutWhenServerHangs) {
  UpstreamOptions options = fast_options();
  options.total_timeout = std::chrono::milliseconds(300);
  options.retries_max = 0;
  auto& upstream = client(options);
  std::string body;
  const auto result = get(upstream, registry_.origin + "/hang", &body);
  EXPECT_EQ(result.error, UpstreamError::kTimeout);
}

// Shows `done` can be delivered on an Asio executor, and many concurrent transfers all complete.
TEST_F(UpstreamClientTest, DeliversOnExecutorAndRunsConcurrently) {
  UpstreamOptions options = fast_options();
  options.transfers_max = 4;
  auto& upstream = client(options);
  net::io_context delivery;
  auto delivery_work = net::make_work_guard(delivery);
  std::atomic<int> completed{0};
  std::thread::id delivery_thread;
  bool all_on_delivery_thread = true;
  for (int i = 0; i < 20; ++i) {
    UpstreamRequest request;
    request.url = registry_.storage_origin + "/storage/blob";
    upstream.start(std::move(request), delivery.get_executor(), [&](UpstreamResult result) {
      EXPECT_TRUE(result.ok());
      all_on_delivery_thread = all_on_delivery_thread && std::this_thread::get_id() == delivery_thread;
      ++completed;
    });
  }
  delivery_thread = std::this_thread::get_id();
  while (completed.load() < 20) delivery.run_one();
  EXPECT_TRUE(all_on_delivery_thread);
  EXPECT_EQ(upstream.pending(), 0u);
}

// Shows a full queue refuses new transfers at once with kOverloaded.
TEST_F(UpstreamClientTest, BoundedQueue) {
  UpstreamOptions options = fast_options();
  options.transfers_max = 1;
  options.queued_max = 1;
  options.total_timeout = std::chrono::seconds(5);
  auto& upstream = client(options);
  std::atomic<int> done{0};
  for (int i = 0; i < 2; ++i) {
    UpstreamRequest request;
    request.url = registry_.origin + "/hang";
    upstream.start(std::move(request), [&](UpstreamResult) { ++done; });
  }
  UpstreamRequest third;
  third.url = registry_.origin + "/hang";
  std::optional<UpstreamError> refused;
  upstream.start(std::move(third), [&](UpstreamResult result) { refused = result.error; });
  ASSERT_TRUE(refused.has_value());  // inline: nothing was queued
  EXPECT_EQ(*refused, UpstreamError::kOverloaded);
  client_.reset();  // completes the two hanging transfers (kShutdown) while `done` is still in scope
  EXPECT_EQ(done.load(), 2);
}

}  // namespace
}  // namespace peerd::daemon
