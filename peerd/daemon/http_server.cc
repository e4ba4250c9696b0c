#include "peerd/daemon/http_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

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
// TLS sessions cannot use sendfile(2): file regions are read into a buffer of this size (allocated only while
// a region is being sent) and written through the TLS stream.
constexpr size_t kTlsFileBufferBytes = 256u << 10;
// Refused peer handshakes are logged at most once per this interval (a scanner must not flood the log).
constexpr std::chrono::seconds kRefusalLogInterval{10};

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

std::string hex_size(uint64_t value) {
  char text[24];
  const int length = std::snprintf(text, sizeof(text), "%llx", static_cast<unsigned long long>(value));
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace

// What the server and the connection tracker need from a session, whatever its stream.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  // Any thread: closes the connection if, on its strand, it is still waiting for a request.
  virtual void close_if_idle_async() = 0;
  // Any thread: closes the connection whatever it is doing (server stop).
  virtual void close_async() = 0;
};

struct HttpServer::State {
  State(net::io_context& io_, HttpServerOptions options_, RequestHandler& handler_, Logger logger_,
        DaemonMetrics* metrics_);

  net::io_context& io;
  const HttpServerOptions options;
  RequestHandler& handler;
  const Logger logger;
  DaemonMetrics* const metrics;
  ConnectionTracker tracker;

  // TLS listeners: refused handshakes by reason (null without metrics or TLS), and the log rate limit.
  Counter* handshakes_refused_no_cert = nullptr;
  Counter* handshakes_refused_bad_cert = nullptr;
  Counter* handshakes_refused_other = nullptr;
  Counter* peer_requests_refused = nullptr;
  std::atomic<int64_t> refusal_logged_at_s{0};
  std::atomic<uint64_t> refusals_unlogged{0};

  void count_refused_handshake(const beast::error_code& ec, const std::string& remote);

  std::mutex mutex;
  std::unordered_map<const void*, std::weak_ptr<SessionBase>> sessions;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  bool stopped = false;
};

// One connection. `Stream` is beast::tcp_stream (plaintext, bodies from files by sendfile(2)) or TlsStream
// (handshake first, file bodies through a bounded buffer).
template <typename Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // `tls_context` (TLS only) keeps the context the stream was made from alive as long as the session.
  Session(Stream&& stream, std::shared_ptr<HttpServer::State> state,
          std::shared_ptr<boost::asio::ssl::context> tls_context = nullptr)
      : state_(std::move(state)),
        tls_context_(std::move(tls_context)),
        stream_(std::move(stream)),
        stall_timer_(stream_.get_executor()),
        buffer_(state_->options.header_bytes_max + state_->options.request_body_bytes_max + kFirstReadBytes) {
    beast::error_code ec;
    const auto remote = lowest().socket().remote_endpoint(ec);
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
      state_->sessions.emplace(static_cast<SessionBase*>(this), as_base());
    }
    if constexpr (kTls) {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::handshake, shared_from_this()));
    } else {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::wait_for_request, shared_from_this()));
    }
  }

  void close_if_idle_async() override {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_) self->close();
    });
  }

  void close_async() override {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  // Any thread: the handler's answer.
  void post_response(Response response) {
    net::post(stream_.get_executor(), [self = shared_from_this(), response = std::move(response)]() mutable {
      self->send(std::move(response));
    });
  }

 private:
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

  const HttpServerOptions& options() const { return state_->options; }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }
  std::shared_ptr<SessionBase> as_base() { return shared_from_this(); }

  // ---- TLS ----

  void handshake() {
    lowest().expires_after(options().request_header_timeout);
    stream_.async_handshake(boost::asio::ssl::stream_base::server,
                            beast::bind_front_handler(&Session::on_handshake, shared_from_this()));
  }

  void on_handshake(beast::error_code ec) {
    if (closed_) return;
    if (ec) {
      state_->count_refused_handshake(ec, remote_);
      return close();
    }
    wait_for_request();
  }

  // ---- reading ----

  void wait_for_request() {
    if (closed_) return;
    if (buffer_.size() > 0) return read_request();  // a pipelined request is already buffered
    idle_ = true;
    idle_ticket_ = state_->tracker.mark_idle(std::weak_ptr<void>(as_base()));
    lowest().expires_after(options().idle_timeout);
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
    lowest().expires_after(options().request_header_timeout);
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
    lowest().expires_never();
    if (!options().peer_requests_allowed && request.from_peer()) {
      // Peers must come through the mutual-TLS listener; this one serves the node's own containerd.
      if (state_->peer_requests_refused != nullptr) state_->peer_requests_refused->inc();
      Response refused =
          oci_error(http::status::forbidden, "DENIED", "peer requests must use the mutual-TLS peer port");
      refused.route = "other";
      return send(std::move(refused));
    }
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
      lowest().expires_after(options().write_stall_timeout);
      http::async_write(stream_, *small_,
                        beast::bind_front_handler(&Session::on_small_written, shared_from_this()));
      return;
    }
    head_message_.emplace(std::move(message.base()));
    head_serializer_.emplace(*head_message_);
    lowest().expires_after(options().write_stall_timeout);
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
    lowest().expires_after(options().write_stall_timeout);
    net::async_write(stream_, net::buffer(write_buffer_),
                     [self = shared_from_this(), then = std::move(then)](beast::error_code ec, size_t) {
                       if (ec || self->closed_) return self->close();
                       then();
                     });
  }

  void send_file_region() {
    if constexpr (kTls) {
      send_file_region_through_tls();
    } else {
      send_file_region_by_sendfile();
    }
  }

  // The next piece of the region: pread(2) into the session's buffer, then one write through TLS.
  void send_file_region_through_tls() {
    if (closed_) return;
    if (region_sent_ == region_.length) {
      file_buffer_.reset();
      return end_file_region();
    }
    if (!file_buffer_) file_buffer_ = std::make_unique<char[]>(kTlsFileBufferBytes);
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(region_.length - region_sent_, kTlsFileBufferBytes));
    ssize_t got = -1;
    do {
      got = ::pread(region_.fd, file_buffer_.get(), want, static_cast<off_t>(region_.offset + region_sent_));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      // 0: the file is shorter than the region; < 0: a disk error.
      state_->logger.debug("file region read stopped", {{"remote", remote_}, {"errno", got < 0 ? errno : 0}});
      return close();
    }
    lowest().expires_after(options().write_stall_timeout);
    net::async_write(stream_, net::buffer(file_buffer_.get(), static_cast<size_t>(got)),
                     [self = shared_from_this()](beast::error_code ec, size_t written) {
                       if (ec || self->closed_) return self->close();
                       self->region_sent_ += written;
                       self->count_sent(written);
                       self->send_file_region_through_tls();
                     });
  }

  void end_file_region() {
    region_ = FileRegion{};  // unpins the chunk
    if (chunked_) return write_owned("\r\n", [this] { pull_body(); });
    pull_body();
  }

  void send_file_region_by_sendfile() {
    if (closed_) return;
    auto& socket = lowest().socket();
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
          net::post(stream_.get_executor(),
                    [self = shared_from_this()] { self->send_file_region_by_sendfile(); });
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
          self->send_file_region_by_sendfile();
        });
        return;
      }
      // 0: the file is shorter than the region; < 0: the client went away (EPIPE, ECONNRESET) or a disk
      // error.
      const int error_number = sent < 0 ? errno : 0;
      state_->logger.debug("sendfile stopped", {{"remote", remote_}, {"errno", error_number}});
      return close();
    }
    end_file_region();
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
    if constexpr (kTls) {
      // close_notify, and the client's answer (bounded by the timeout); TLS has no half-close to drain
      // behind.
      lowest().expires_after(kDrainTimeout);
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close(); });
      return;
    }
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    drained_bytes_ = 0;
    drain();
  }

  void drain() {
    buffer_.clear();
    lowest().expires_after(kDrainTimeout);
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
    file_buffer_.reset();
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  std::shared_ptr<HttpServer::State> state_;
  std::shared_ptr<boost::asio::ssl::context> tls_context_;
  Stream stream_;
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
  std::unique_ptr<char[]> file_buffer_;  // TLS only, while a region is being sent
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
        std::static_pointer_cast<SessionBase>(connection)->close_if_idle_async();
      }) {
  if (metrics == nullptr) return;
  if (!options.peer_requests_allowed) {
    peer_requests_refused = &metrics->registry.counter(
        "peerd_peer_plaintext_requests_refused_total",
        "Peer requests refused on a plaintext listener (peers must use the mutual-TLS peer port).");
  }
  if (options.tls_context) {
    constexpr std::string_view kHelp = "TLS handshakes refused on the peer listener, by reason.";
    handshakes_refused_no_cert =
        &metrics->registry.counter("peerd_peer_tls_handshakes_refused_total", kHelp, {{"reason", "no_cert"}});
    handshakes_refused_bad_cert = &metrics->registry.counter("peerd_peer_tls_handshakes_refused_total", kHelp,
                                                             {{"reason", "bad_cert"}});
    handshakes_refused_other =
        &metrics->registry.counter("peerd_peer_tls_handshakes_refused_total", kHelp, {{"reason", "other"}});
  }
}

void HttpServer::State::count_refused_handshake(const beast::error_code& ec, const std::string& remote) {
  std::string_view reason = "other";
  Counter* counter = handshakes_refused_other;
  if (ec.category() == net::error::get_ssl_category()) {
    const int code = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (code == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      reason = "no_cert";
      counter = handshakes_refused_no_cert;
    } else if (code == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      reason = "bad_cert";
      counter = handshakes_refused_bad_cert;
    }
  }
  if (counter != nullptr) counter->inc();
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  int64_t logged_at = refusal_logged_at_s.load();
  if (now_s - logged_at < kRefusalLogInterval.count() ||
      !refusal_logged_at_s.compare_exchange_strong(logged_at, now_s)) {
    refusals_unlogged.fetch_add(1);
    return;
  }
  logger.warn("peer TLS handshake refused", {{"remote", remote},
                                             {"reason", std::string(reason)},
                                             {"error", ec.message()},
                                             {"refused_since_last_log", refusals_unlogged.exchange(0)}});
}

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
      start_session(std::move(socket));
    }
    accept();
  }

  void start_session(tcp::socket socket) {
    if (!state_->options.tls_context) {
      std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), state_)->start();
      return;
    }
    // The context current now: a rotated one applies to new connections, never to those in flight.
    std::shared_ptr<boost::asio::ssl::context> context = state_->options.tls_context();
    if (!context) {
      state_->logger.error("no TLS context for a new connection");
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    TlsStream stream(beast::tcp_stream(std::move(socket)), *context);
    std::make_shared<Session<TlsStream>>(std::move(stream), state_, std::move(context))->start();
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
  std::vector<std::shared_ptr<SessionBase>> sessions;
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
