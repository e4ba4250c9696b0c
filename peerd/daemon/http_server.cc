#include "peerd/daemon/http_server.h"

#include <sys/sendfile.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "peerd/daemon/connection_tracker.h"

namespace peerd::daemon {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

// The first read of a request (ending the idle wait) takes at most this much.
constexpr size_t kFirstReadBytes = 4096;
// sendfile(2) moves at most this much per call; a session yields its thread after this much per turn so that
// one fast reader cannot monopolise an io thread.
constexpr size_t kSendfileCallBytesMax = 4u << 20;
constexpr size_t kSendfileTurnBytesMax = 16u << 20;
// After a response with "Connection: close" the unread rest of the request is drained (so the close does not
// turn into a reset that destroys the response in flight) for at most this long and this many bytes.
constexpr std::chrono::milliseconds kDrainTimeout{1000};
constexpr size_t kDrainBytesMax = 64u << 10;

std::string hex_size(uint64_t value) {
  char text[24];
  const int length = std::snprintf(text, sizeof(text), "%llx", static_cast<unsigned long long>(value));
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace

class Session;

struct HttpServer::State {
  State(net::io_context& io_, HttpServerOptions options_, RequestHandler& handler_, Logger logger_,
        DaemonMetrics* metrics_);

  net::io_context& io;
  const HttpServerOptions options;
  RequestHandler& handler;
  const Logger logger;
  DaemonMetrics* const metrics;
  ConnectionTracker tracker;

  std::mutex mutex;
  std::unordered_map<const void*, std::weak_ptr<Session>> sessions;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  bool stopped = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::State> state)
      : state_(std::move(state)),
        stream_(std::move(socket)),
        stall_timer_(stream_.get_executor()),
        buffer_(state_->options.header_bytes_max + state_->options.request_body_bytes_max + kFirstReadBytes) {
    beast::error_code ec;
    const auto remote = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = from_asio(remote).to_string();
    if (state_->metrics != nullptr) state_->metrics->http_connections.add(1);
  }

  ~Session() {
    state_->tracker.release();
    if (state_->metrics != nullptr) state_->metrics->http_connections.sub(1);
    std::lock_guard lock(state_->mutex);
    state_->sessions.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(state_->mutex);
      state_->sessions.emplace(this, weak_from_this());
    }
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::wait_for_request, shared_from_this()));
  }

  // Any thread: closes the connection if, on its strand, it is still waiting for a request.
  void close_if_idle_async() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_) self->close();
    });
  }

  // Any thread: closes the connection whatever it is doing (server stop).
  void close_async() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  // Any thread: the handler's answer.
  void post_response(Response response) {
    net::post(stream_.get_executor(), [self = shared_from_this(), response = std::move(response)]() mutable {
      self->send(std::move(response));
    });
  }

 private:
  const HttpServerOptions& options() const { return state_->options; }

  // ---- reading ----

  void wait_for_request() {
    if (closed_) return;
    if (buffer_.size() > 0) return read_request();  // a pipelined request is already buffered
    idle_ = true;
    idle_ticket_ = state_->tracker.mark_idle(weak_from_this());
    stream_.expires_after(options().idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            beast::bind_front_handler(&Session::on_first_bytes, shared_from_this()));
  }

  void on_first_bytes(beast::error_code ec, size_t bytes) {
    leave_idle();
    if (ec || closed_) return close();  // idle timeout, eviction, or the client left
    buffer_.commit(bytes);
    read_request();
  }

  void leave_idle() {
    if (!idle_) return;
    idle_ = false;
    state_->tracker.mark_busy(idle_ticket_);
    idle_ticket_ = 0;
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(options().header_bytes_max);
    parser_->body_limit(options().request_body_bytes_max);
    stream_.expires_after(options().request_header_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t /*bytes*/) {
    if (closed_) return;
    if (ec == http::error::end_of_stream) return close();
    if (ec == http::error::header_limit ||
        (ec == http::error::buffer_overflow && !parser_->is_header_done())) {
      return reject(http::status::request_header_fields_too_large, "request header fields too large");
    }
    if (ec == http::error::body_limit || ec == http::error::buffer_overflow) {
      return reject(http::status::payload_too_large, "request body too large");
    }
    if (ec && ec.category() == beast::http::make_error_code(http::error::bad_target).category()) {
      return reject(http::status::bad_request, "malformed HTTP request");
    }
    if (ec) return close();  // timeout (the stream closed the socket already) or a network error
    ++requests_;
    dispatch();
  }

  // Answers a request that could not be parsed, then closes: the byte stream cannot be trusted any more.
  void reject(http::status status, std::string_view message) {
    keep_alive_ = false;
    head_ = false;
    Response response = oci_error(status, "BAD_REQUEST", message);
    response.route = "invalid";
    send(std::move(response));
  }

  void dispatch() {
    Request request{parser_->release(), remote_};
    parser_.reset();
    keep_alive_ = request.message.keep_alive() && requests_ < options().requests_per_connection_max;
    head_ = request.is_head();
    stream_.expires_never();
    try {
      state_->handler.handle(request, make_responder());
    } catch (const std::exception& error) {
      state_->logger.error("request handler threw", {{"error", error.what()}});
      // The responder dropped during unwinding answers 500.
    }
  }

  Respond make_responder() {
    struct Pending {
      explicit Pending(std::shared_ptr<Session> session_) : session(std::move(session_)) {}
      ~Pending() {
        if (!answered.exchange(true)) {
          session->post_response(
              oci_error(http::status::internal_server_error, "UNKNOWN", "request was dropped"));
        }
      }
      std::shared_ptr<Session> session;
      std::atomic<bool> answered{false};
    };
    auto pending = std::make_shared<Pending>(shared_from_this());
    return [pending](Response response) {
      if (!pending->answered.exchange(true)) pending->session->post_response(std::move(response));
    };
  }

  // ---- writing ----

  void send(Response response) {
    if (closed_) {
      if (response.body) response.body->cancel();
      return;
    }
    if (!head_ && !response.body && response.body_bytes.value_or(0) > 0) {
      // A handler bug: a length promised with nothing to send would leave the client waiting forever.
      state_->logger.error("response without its body", {{"route", response.route}});
      response = oci_error(http::status::internal_server_error, "UNKNOWN", "response body missing");
    }
    if (state_->metrics != nullptr)
      state_->metrics->count_request(response.route, response.message.result_int());
    source_ = response.source;
    auto& message = response.message;
    message.version(11);
    message.set(http::field::server, "peerd");
    message.keep_alive(keep_alive_);
    body_ = std::move(response.body);
    body_expected_ = response.body_bytes;
    body_sent_ = 0;
    chunked_ = false;
    if (body_ || body_expected_) {
      if (body_expected_) {
        message.content_length(*body_expected_);
      } else {
        message.chunked(true);
        chunked_ = true;
      }
    } else {
      message.prepare_payload();
    }

    if (!body_ && !head_) {
      small_.emplace(std::move(message));
      stream_.expires_after(options().write_stall_timeout);
      http::async_write(stream_, *small_,
                        beast::bind_front_handler(&Session::on_small_written, shared_from_this()));
      return;
    }
    head_message_.emplace(std::move(message.base()));
    head_serializer_.emplace(*head_message_);
    stream_.expires_after(options().write_stall_timeout);
    http::async_write_header(stream_, *head_serializer_,
                             beast::bind_front_handler(&Session::on_header_written, shared_from_this()));
  }

  void on_small_written(beast::error_code ec, size_t /*bytes*/) {
    if (ec) return close();
    finish_response();
  }

  void on_header_written(beast::error_code ec, size_t /*bytes*/) {
    if (ec) return close();
    if (head_ && body_) body_->cancel();  // HEAD: the body is never read
    if (head_ || !body_) return finish_response();
    pull_body();
  }

  void pull_body() {
    if (closed_) return;
    arm_stall_timer();
    body_->next([self = shared_from_this()](BodyChunk chunk) {
      net::post(self->stream_.get_executor(),
                [self, chunk = std::move(chunk)]() mutable { self->on_body_chunk(std::move(chunk)); });
    });
  }

  bool would_overflow(uint64_t bytes) const { return body_expected_ && body_sent_ + bytes > *body_expected_; }

  void on_body_chunk(BodyChunk chunk) {
    stall_timer_.cancel();
    if (closed_) return;
    switch (chunk.kind) {
      case BodyChunk::Kind::kBytes: {
        if (chunk.bytes.empty()) return pull_body();
        if (would_overflow(chunk.bytes.size()))
          return abort_body("body source sent more than Content-Length");
        count_sent(chunk.bytes.size());
        std::string framed =
            chunked_ ? hex_size(chunk.bytes.size()) + "\r\n" + chunk.bytes + "\r\n" : std::move(chunk.bytes);
        return write_owned(std::move(framed), [this] { pull_body(); });
      }
      case BodyChunk::Kind::kFile: {
        if (chunk.file.length == 0) return pull_body();
        if (would_overflow(chunk.file.length)) return abort_body("body source sent more than Content-Length");
        region_ = std::move(chunk.file);
        region_sent_ = 0;
        if (!chunked_) return send_file_region();
        return write_owned(hex_size(region_.length) + "\r\n", [this] { send_file_region(); });
      }
      case BodyChunk::Kind::kEnd:
        if (body_expected_ && body_sent_ != *body_expected_) return abort_body("body source ended early");
        if (chunked_) return write_owned("0\r\n\r\n", [this] { finish_response(); });
        return finish_response();
      case BodyChunk::Kind::kError:
        return abort_body(chunk.error);
    }
  }

  void abort_body(std::string_view why) {
    state_->logger.warn("response body aborted", {{"remote", remote_}, {"error", std::string(why)}});
    close();
  }

  void count_sent(uint64_t bytes) {
    body_sent_ += bytes;
    if (state_->metrics != nullptr) state_->metrics->bytes_served(source_).inc(bytes);
  }

  // Writes `data` (kept alive in write_buffer_), then runs `then` on success.
  void write_owned(std::string data, std::function<void()> then) {
    write_buffer_ = std::move(data);
    stream_.expires_after(options().write_stall_timeout);
    net::async_write(stream_, net::buffer(write_buffer_),
                     [self = shared_from_this(), then = std::move(then)](beast::error_code ec, size_t) {
                       if (ec || self->closed_) return self->close();
                       then();
                     });
  }

  void send_file_region() {
    if (closed_) return;
    auto& socket = stream_.socket();
    beast::error_code ec;
    if (!socket.native_non_blocking()) socket.native_non_blocking(true, ec);
    if (ec) return close();
    size_t sent_this_turn = 0;
    while (region_sent_ < region_.length) {
      auto offset = static_cast<off_t>(region_.offset + region_sent_);
      const size_t want =
          static_cast<size_t>(std::min<uint64_t>(region_.length - region_sent_, kSendfileCallBytesMax));
      const ssize_t sent = ::sendfile(socket.native_handle(), region_.fd, &offset, want);
      if (sent > 0) {
        region_sent_ += static_cast<uint64_t>(sent);
        count_sent(static_cast<uint64_t>(sent));
        sent_this_turn += static_cast<size_t>(sent);
        if (sent_this_turn >= kSendfileTurnBytesMax && region_sent_ < region_.length) {
          net::post(stream_.get_executor(), [self = shared_from_this()] { self->send_file_region(); });
          return;
        }
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        arm_stall_timer();
        socket.async_wait(tcp::socket::wait_write, [self = shared_from_this()](beast::error_code wait_ec) {
          self->stall_timer_.cancel();
          if (wait_ec || self->closed_) return self->close();
          self->send_file_region();
        });
        return;
      }
      // 0: the file is shorter than the region; < 0: the client went away (EPIPE, ECONNRESET) or a disk
      // error.
      const int error_number = sent < 0 ? errno : 0;
      state_->logger.debug("sendfile stopped", {{"remote", remote_}, {"errno", error_number}});
      return close();
    }
    region_ = FileRegion{};  // unpins the chunk
    if (chunked_) return write_owned("\r\n", [this] { pull_body(); });
    pull_body();
  }

  void arm_stall_timer() {
    stall_timer_.expires_after(options().write_stall_timeout);
    stall_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: progress was made
      self->state_->logger.debug("response stalled", {{"remote", self->remote_}});
      self->close();
    });
  }

  void finish_response() {
    body_.reset();
    small_.reset();
    head_serializer_.reset();
    head_message_.reset();
    if (!keep_alive_) return close_gracefully();
    wait_for_request();
  }

  // Half-closes, then reads and discards what the client still sends, so the kernel does not answer the
  // unread bytes with a reset that could destroy the response the client has not read yet.
  void close_gracefully() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    drained_bytes_ = 0;
    drain();
  }

  void drain() {
    buffer_.clear();
    stream_.expires_after(kDrainTimeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                              self->drained_bytes_ += bytes;
                              if (ec || self->closed_ || self->drained_bytes_ > kDrainBytesMax)
                                return self->close();
                              self->drain();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    leave_idle();
    stall_timer_.cancel();
    if (body_) body_->cancel();
    body_.reset();
    region_ = FileRegion{};
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  std::shared_ptr<HttpServer::State> state_;
  beast::tcp_stream stream_;
  net::steady_timer stall_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_;
  bool idle_ = false;
  uint64_t idle_ticket_ = 0;
  bool closed_ = false;
  uint32_t requests_ = 0;
  size_t drained_bytes_ = 0;

  // The response in flight.
  bool keep_alive_ = false;
  bool head_ = false;
  std::optional<HttpResponse> small_;
  std::optional<http::response<http::empty_body>> head_message_;
  std::optional<http::response_serializer<http::empty_body>> head_serializer_;
  std::shared_ptr<BodySource> body_;
  std::optional<uint64_t> body_expected_;
  uint64_t body_sent_ = 0;
  bool chunked_ = false;
  ByteSource source_ = ByteSource::kCache;
  FileRegion region_;
  uint64_t region_sent_ = 0;
  std::string write_buffer_;
};

HttpServer::State::State(net::io_context& io_, HttpServerOptions options_, RequestHandler& handler_,
                         Logger logger_, DaemonMetrics* metrics_)
    : io(io_),
      options(options_),
      handler(handler_),
      logger(std::move(logger_)),
      metrics(metrics_),
      tracker(options_.connections_max, [](const std::shared_ptr<void>& connection) {
        std::static_pointer_cast<Session>(connection)->close_if_idle_async();
      }) {}

namespace {

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(std::shared_ptr<HttpServer::State> state, std::shared_ptr<tcp::acceptor> acceptor)
      : state_(std::move(state)), acceptor_(std::move(acceptor)), retry_timer_(acceptor_->get_executor()) {}

  void accept() {
    acceptor_->async_accept(net::make_strand(state_->io),
                            beast::bind_front_handler(&Listener::on_accept, shared_from_this()));
  }

 private:
  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_->is_open()) return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning on a listening socket that stays readable.
      state_->logger.warn("accept failed", {{"error", ec.message()}});
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
        if (!wait_ec) self->accept();
      });
      return;
    }
    const auto admission = state_->tracker.admit();
    if (admission == ConnectionTracker::Admission::kRefused) {
      if (state_->metrics != nullptr) state_->metrics->http_connections_refused.inc();
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      if (admission == ConnectionTracker::Admission::kAdmittedByEvicting && state_->metrics != nullptr) {
        state_->metrics->http_connections_evicted.inc();
      }
      std::make_shared<Session>(std::move(socket), state_)->start();
    }
    accept();
  }

  std::shared_ptr<HttpServer::State> state_;
  std::shared_ptr<tcp::acceptor> acceptor_;
  net::steady_timer retry_timer_;
};

}  // namespace

HttpServer::HttpServer(net::io_context& io, HttpServerOptions options, RequestHandler& handler, Logger logger,
                       DaemonMetrics* metrics)
    : state_(std::make_shared<State>(io, options, handler, std::move(logger), metrics)) {
  // sendfile(2) has no MSG_NOSIGNAL: a client that disconnects mid-body would kill the process with SIGPIPE.
  // The EPIPE error is all the session needs.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
}

HttpServer::~HttpServer() {
  stop();
}

Result<tcp::endpoint, std::string> HttpServer::listen(const tcp::endpoint& address) {
  auto acceptor = std::make_shared<tcp::acceptor>(net::make_strand(state_->io));
  beast::error_code ec;
  acceptor->open(address.protocol(), ec);
  if (!ec) acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(address, ec);
  if (!ec) acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail("cannot listen on " + from_asio(address).to_string() + ": " + ec.message());
  }
  const auto bound = acceptor->local_endpoint(ec);
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) return fail(std::string("server is stopped"));
    state_->acceptors.push_back(acceptor);
  }
  std::make_shared<Listener>(state_, acceptor)->accept();
  return bound;
}

void HttpServer::stop() {
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopped = true;
    acceptors.swap(state_->acceptors);
    for (auto& [key, weak] : state_->sessions) {
      if (auto session = weak.lock()) sessions.push_back(std::move(session));
    }
  }
  for (auto& acceptor : acceptors) {
    net::post(acceptor->get_executor(), [acceptor] {
      beast::error_code ignored;
      acceptor->close(ignored);
    });
  }
  for (auto& session : sessions) session->close_async();
}

size_t HttpServer::connection_count() const {
  return state_->tracker.connection_count();
}
size_t HttpServer::idle_connection_count() const {
  return state_->tracker.idle_count();
}

tcp::endpoint to_asio(const Endpoint& endpoint) {
  if (endpoint.family == Endpoint::Family::kIpv4) {
    net::ip::address_v4::bytes_type bytes;
    std::copy_n(endpoint.address.begin(), 4, bytes.begin());
    return tcp::endpoint(net::ip::address_v4(bytes), endpoint.port);
  }
  net::ip::address_v6::bytes_type bytes;
  std::copy_n(endpoint.address.begin(), 16, bytes.begin());
  return tcp::endpoint(net::ip::address_v6(bytes), endpoint.port);
}

Endpoint from_asio(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  if (address.is_v4()) {
    const auto bytes = address.to_v4().to_bytes();
    return Endpoint::ipv4(bytes[0], bytes[1], bytes[2], bytes[3], endpoint.port());
  }
  const auto bytes = address.to_v6().to_bytes();
  std::array<uint8_t, 16> raw{};
  std::copy(bytes.begin(), bytes.end(), raw.begin());
  return Endpoint::ipv6(raw, endpoint.port());
}

}  // namespace peerd::daemon
