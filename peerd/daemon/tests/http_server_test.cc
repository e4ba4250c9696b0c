// Real-socket tests of the Beast HTTP server on 127.0.0.1 with an ephemeral port.
#include "peerd/daemon/http_server.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

namespace peerd::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

// A file whose byte i is (i * 7 + i / 251) % 256, so any misplaced range shows.
class PatternFile {
 public:
  explicit PatternFile(size_t bytes) {
    char path_template[] = "/tmp/peerd-http-test-XXXXXX";
    fd_ = ::mkstemp(path_template);
    path_ = path_template;
    content_.resize(bytes);
    for (size_t i = 0; i < bytes; ++i) content_[i] = static_cast<char>((i * 7 + i / 251) % 256);
    EXPECT_EQ(::write(fd_, content_.data(), bytes), static_cast<ssize_t>(bytes));
  }
  ~PatternFile() {
    ::close(fd_);
    std::filesystem::remove(path_);
  }
  int fd() const { return fd_; }
  const std::string& content() const { return content_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::string content_;
};

// Runs work on detached threads, like a network-backed source or a late responder would, and lets the fixture
// wait for them: their closures hold sessions, whose last reference must drop while the io_context still
// exists.
class DetachedThreads {
 public:
  void spawn(std::function<void()> work) {
    live_.fetch_add(1);
    std::thread([this, work = std::move(work)]() mutable {
      work();
      work = nullptr;  // drops the captured session before the fixture may go away
      live_.fetch_sub(1);
    }).detach();
  }
  bool idle() const { return live_.load() == 0; }

 private:
  std::atomic<int> live_{0};
};

// Delivers its pieces from another thread, one per next() call.
class ThreadedBodySource final : public BodySource {
 public:
  ThreadedBodySource(DetachedThreads& threads, std::vector<BodyChunk> chunks)
      : threads_(threads), chunks_(std::move(chunks)) {}
  void next(std::function<void(BodyChunk)> deliver) override {
    BodyChunk chunk = index_ < chunks_.size() ? chunks_[index_++] : BodyChunk::end();
    threads_.spawn(
        [deliver = std::move(deliver), chunk = std::move(chunk)]() mutable { deliver(std::move(chunk)); });
  }

 private:
  DetachedThreads& threads_;
  std::vector<BodyChunk> chunks_;
  size_t index_ = 0;
};

class TestHandler final : public RequestHandler {
 public:
  TestHandler(const PatternFile& file, DetachedThreads& threads) : file_(file), threads_(threads) {}

  void handle(const Request& request, Respond respond) override {
    const std::string target(request.message.target());
    const ContentHead head{file_.content().size(), "application/octet-stream", ""};
    if (target == "/small") return respond(text_response(http::status::ok, "hello"));
    if (target == "/file") {
      // Whole file as three regions: exercises region boundaries with sendfile.
      const uint64_t size = file_.content().size();
      std::vector<FileRegion> regions = {{file_.fd(), 0, 1000, nullptr},
                                         {file_.fd(), 1000, size / 2 - 1000, nullptr},
                                         {file_.fd(), size / 2, size - size / 2, nullptr}};
      return respond(content_response(head, std::nullopt,
                                      std::make_shared<FileRegionsBodySource>(std::move(regions)),
                                      ByteSource::kCache));
    }
    if (target == "/range") {
      auto range = content::parse_range(request.message[http::field::range], file_.content().size());
      if (!range) return respond(range_not_satisfiable(file_.content().size()));
      std::vector<FileRegion> regions = {{file_.fd(), range->offset, range->length, nullptr}};
      return respond(content_response(
          head, *range, std::make_shared<FileRegionsBodySource>(std::move(regions)), ByteSource::kPeer));
    }
    if (target == "/chunked") {
      std::vector<BodyChunk> chunks = {BodyChunk::data("abc"),
                                       BodyChunk::region({file_.fd(), 0, 10, nullptr}), BodyChunk::data(""),
                                       BodyChunk::data("xyz")};
      Response response = text_response(http::status::ok, "");
      response.body = std::make_shared<ThreadedBodySource>(threads_, std::move(chunks));
      return respond(std::move(response));
    }
    if (target == "/short") {
      Response response = text_response(http::status::ok, "");
      response.body = std::make_shared<ThreadedBodySource>(
          threads_, std::vector<BodyChunk>{BodyChunk::data("0123456789")});
      response.body_bytes = 100;
      return respond(std::move(response));
    }
    if (target == "/later") {
      threads_.spawn([respond] { respond(text_response(http::status::ok, "later")); });
      return;
    }
    if (target == "/drop") return;  // never answers: the session must answer 500 itself
    if (target == "/nobody") {      // promises a length but no body: a handler bug, answered 500
      return respond(content_response(head, std::nullopt, nullptr, ByteSource::kCache));
    }
    respond(oci_error(http::status::not_found, "NOT_FOUND", "no"));
  }

 private:
  const PatternFile& file_;
  DetachedThreads& threads_;
};

void raise_open_files_limit(rlim_t wanted) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < wanted) GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << limit.rlim_max << " is too low";
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions options = {}) {
    server_ = std::make_unique<HttpServer>(io_, options, handler_,
                                           Logger(LogLevel::kError, [](std::string_view) {}), &metrics_);
    auto bound = server_->listen(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    ASSERT_TRUE(bound.ok()) << bound.error();
    endpoint_ = *bound;
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    EXPECT_TRUE(eventually([this] { return detached_.idle(); }));
    work_.reset();
    io_.stop();
    for (auto& thread : threads_) thread.join();
  }

  tcp::socket connect() {
    tcp::socket socket(client_io_);
    socket.connect(endpoint_);
    return socket;
  }

  http::response<http::string_body> request(tcp::socket& socket, std::string_view target,
                                            http::verb method = http::verb::get,
                                            std::vector<std::pair<std::string, std::string>> headers = {}) {
    http::request<http::empty_body> request{method, target, 11};
    request.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    http::write(socket, request);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    if (method == http::verb::head) parser.skip(true);
    http::read(socket, buffer_, parser);
    return parser.release();
  }

  http::response<http::string_body> get(std::string_view target, http::verb method = http::verb::get,
                                        std::vector<std::pair<std::string, std::string>> headers = {}) {
    tcp::socket socket = connect();
    return request(socket, target, method, std::move(headers));
  }

  // Polls `condition` for up to 10 s (a guard against hangs, not a timing assertion).
  template <typename Condition>
  bool eventually(Condition condition) {
    for (int i = 0; i < 1000; ++i) {
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  }

  PatternFile file_{3 * 1024 * 1024 + 17};
  DetachedThreads detached_;
  TestHandler handler_{file_, detached_};
  MetricsRegistry registry_;
  DaemonMetrics metrics_{registry_};
  net::io_context io_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
  std::unique_ptr<HttpServer> server_;
  tcp::endpoint endpoint_;
  net::io_context client_io_;
  beast::flat_buffer buffer_;
};

// Shows a small response and a keep-alive second request on the same connection.
TEST_F(HttpServerTest, SmallResponsesWithKeepAlive) {
  start();
  tcp::socket socket = connect();
  for (int i = 0; i < 3; ++i) {
    const auto response = request(socket, "/small");
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(response.body(), "hello");
    EXPECT_TRUE(response.keep_alive());
    EXPECT_EQ(response[http::field::server], "peerd");
  }
  EXPECT_EQ(server_->connection_count(), 1u);
}

// Shows a whole file streamed as three regions via sendfile arrives intact and is counted as cache bytes.
TEST_F(HttpServerTest, FileRegionsArriveIntact) {
  start();
  const auto response = get("/file");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_length], std::to_string(file_.content().size()));
  EXPECT_TRUE(response.body() == file_.content());
  EXPECT_EQ(metrics_.bytes_served(ByteSource::kCache).value(), file_.content().size());
}

// Shows Range reads: 206 with Content-Range for a middle range and containerd's open-ended resume, 416 for
// a range past the end.
TEST_F(HttpServerTest, RangeReads) {
  start();
  const auto middle = get("/range", http::verb::get, {{"Range", "bytes=1000-1999999"}});
  EXPECT_EQ(middle.result(), http::status::partial_content);
  EXPECT_EQ(middle[http::field::content_range],
            "bytes 1000-1999999/" + std::to_string(file_.content().size()));
  EXPECT_TRUE(middle.body() == file_.content().substr(1000, 1999000));

  const uint64_t resume_at = file_.content().size() - 12345;
  const auto resume = get("/range", http::verb::get, {{"Range", "bytes=" + std::to_string(resume_at) + "-"}});
  EXPECT_EQ(resume.result(), http::status::partial_content);
  EXPECT_TRUE(resume.body() == file_.content().substr(resume_at));

  const auto past = get("/range", http::verb::get, {{"Range", "bytes=99999999-"}});
  EXPECT_EQ(past.result(), http::status::range_not_satisfiable);
  EXPECT_EQ(past[http::field::content_range], "bytes */" + std::to_string(file_.content().size()));
}

// Shows HEAD of a streamed body sends Content-Length and no body, and the connection stays usable.
TEST_F(HttpServerTest, HeadSendsLengthWithoutBody) {
  start();
  tcp::socket socket = connect();
  const auto head = request(socket, "/file", http::verb::head);
  EXPECT_EQ(head.result(), http::status::ok);
  EXPECT_EQ(head[http::field::content_length], std::to_string(file_.content().size()));
  EXPECT_TRUE(head.body().empty());
  EXPECT_EQ(request(socket, "/small").body(), "hello");
}

// Shows a body of unknown length from another thread is sent chunked, mixing bytes and a file region.
TEST_F(HttpServerTest, UnknownLengthIsChunked) {
  start();
  const auto response = get("/chunked");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_TRUE(response.chunked());
  EXPECT_EQ(response.body(), "abc" + file_.content().substr(0, 10) + "xyz");
}

// Shows a body source that ends before Content-Length makes the server cut the connection (the client sees
// a short body, never a silently truncated "complete" response).
TEST_F(HttpServerTest, ShortBodyClosesConnection) {
  start();
  tcp::socket socket = connect();
  http::request<http::empty_body> request{http::verb::get, "/short", 11};
  http::write(socket, request);
  http::response_parser<http::string_body> parser;
  beast::error_code ec;
  http::read(socket, buffer_, parser, ec);
  EXPECT_EQ(ec, http::error::partial_message);
}

// Shows answers from another thread arrive, and a dropped responder or a missing body becomes a 500.
TEST_F(HttpServerTest, LateAndDroppedAnswers) {
  start();
  EXPECT_EQ(get("/later").body(), "later");
  EXPECT_EQ(get("/drop").result(), http::status::internal_server_error);
  EXPECT_EQ(get("/nobody").result(), http::status::internal_server_error);
  EXPECT_EQ(get("/nobody", http::verb::head).result(), http::status::ok);  // HEAD needs only the length
}

// Shows request headers over the limit get 431 and a closed connection; a body over the limit 413.
TEST_F(HttpServerTest, HeaderAndBodyLimits) {
  HttpServerOptions options;
  options.header_bytes_max = 8 * 1024;
  options.request_body_bytes_max = 1024;
  start(options);
  {
    tcp::socket socket = connect();
    const auto response = request(socket, "/small", http::verb::get, {{"X-Big", std::string(9000, 'a')}});
    EXPECT_EQ(response.result(), http::status::request_header_fields_too_large);
    EXPECT_FALSE(response.keep_alive());
    char byte;
    beast::error_code ec;
    net::read(socket, net::buffer(&byte, 1), ec);
    EXPECT_EQ(ec, net::error::eof);
  }
  {
    tcp::socket socket = connect();
    http::request<http::string_body> request{http::verb::post, "/small", 11};
    request.body() = std::string(4096, 'b');
    request.prepare_payload();
    http::write(socket, request);
    http::response<http::string_body> response;
    http::read(socket, buffer_, response);
    EXPECT_EQ(response.result(), http::status::payload_too_large);
  }
  EXPECT_EQ(get("/small", http::verb::get, {{"X-Fits", std::string(6000, 'a')}}).result(), http::status::ok);
}

// Shows garbage on the wire gets a 400 JSON answer.
TEST_F(HttpServerTest, MalformedRequestIs400) {
  start();
  tcp::socket socket = connect();
  net::write(socket, net::buffer(std::string("GET /small HTTP/1.1\r\nBad Header\r\n\r\n")));
  http::response<http::string_body> response;
  http::read(socket, buffer_, response);
  EXPECT_EQ(response.result(), http::status::bad_request);
  EXPECT_NE(response.body().find("\"errors\""), std::string::npos);
}

// Shows two pipelined requests in one write get two responses in order.
TEST_F(HttpServerTest, PipelinedRequests) {
  start();
  tcp::socket socket = connect();
  net::write(socket, net::buffer(std::string(
                         "GET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /later HTTP/1.1\r\nHost: x\r\n\r\n")));
  http::response<http::string_body> first;
  http::response<http::string_body> second;
  http::read(socket, buffer_, first);
  http::read(socket, buffer_, second);
  EXPECT_EQ(first.body(), "hello");
  EXPECT_EQ(second.body(), "later");
}

// Shows an idle keep-alive connection is closed by the server after the idle timeout.
TEST_F(HttpServerTest, IdleConnectionsTimeOut) {
  HttpServerOptions options;
  options.idle_timeout = std::chrono::milliseconds(100);
  start(options);
  tcp::socket socket = connect();
  EXPECT_EQ(request(socket, "/small").body(), "hello");
  char byte;
  beast::error_code ec;
  net::read(socket, net::buffer(&byte, 1), ec);  // blocks until the server closes
  EXPECT_EQ(ec, net::error::eof);
}

// Shows 1000 idle connections do not starve a real request at a 100-connection cap: the longest-idle ones
// are evicted to admit new ones, and the request is served.
TEST_F(HttpServerTest, ThousandIdleConnectionsDoNotStarveARequest) {
  raise_open_files_limit(4096);
  if (IsSkipped()) return;
  HttpServerOptions options;
  options.connections_max = 100;
  start(options);
  std::vector<tcp::socket> idle;
  idle.reserve(1000);
  for (int i = 0; i < 1000; ++i) idle.push_back(connect());
  ASSERT_TRUE(eventually([&] { return metrics_.http_connections_evicted.value() >= 900; }))
      << metrics_.http_connections_evicted.value();
  EXPECT_TRUE(eventually([&] { return server_->connection_count() <= 101; })) << server_->connection_count();

  const auto response = get("/small");
  EXPECT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response.body(), "hello");
  EXPECT_EQ(metrics_.http_connections_refused.value(), 0u);
}

// Shows 1000 accepted idle connections (all held open, none evicted) leave a real request served.
TEST_F(HttpServerTest, ThousandIdleConnectionsWithinTheCap) {
  raise_open_files_limit(4096);
  if (IsSkipped()) return;
  start();
  std::vector<tcp::socket> idle;
  idle.reserve(1000);
  for (int i = 0; i < 1000; ++i) idle.push_back(connect());
  ASSERT_TRUE(eventually([&] { return server_->idle_connection_count() >= 1000; }))
      << server_->idle_connection_count();
  EXPECT_EQ(get("/small").body(), "hello");
  EXPECT_EQ(metrics_.http_connections_evicted.value(), 0u);
}

// Shows request and byte metrics are recorded per route and status.
TEST_F(HttpServerTest, RequestsAreCounted) {
  start();
  get("/small");
  get("/nope");
  const std::string text = registry_.render();
  EXPECT_NE(text.find("peerd_requests_total{route=\"other\",status=\"200\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("peerd_requests_total{route=\"other\",status=\"404\"} 1"), std::string::npos) << text;
}

}  // namespace
}  // namespace peerd::daemon
