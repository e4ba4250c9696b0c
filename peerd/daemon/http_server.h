#pragma once
// The HTTP/1.1 server on Boost.Beast: an acceptor plus one session per connection (Beast's advanced-server
// shape). Limits: request header bytes (larger -> 431), request body bytes (-> 413), an idle timeout between
// requests, a header timeout once a request has started (slow-loris), a write-stall timeout, requests per
// connection, and a connection cap that evicts the longest-idle connection (see ConnectionTracker).
//
// Requests go to a RequestHandler; responses are small (string body) or streamed (BodySource pieces: bytes
// via async_write, file regions via sendfile(2)).
//
// With `tls_context` set the listener speaks TLS only (the peer listener): each connection handshakes with
// the context the function returns at accept time, so a rotated context applies to new connections without a
// restart. File regions then go through the TLS stream from a bounded buffer (sendfile cannot encrypt).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/http_message.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon {

struct HttpServerOptions {
  size_t connections_max = 10000;
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds request_header_timeout{std::chrono::seconds(10)};
  // A response that makes no progress this long (client not reading, or body source silent) is abandoned.
  std::chrono::milliseconds write_stall_timeout{std::chrono::seconds(60)};
  uint32_t header_bytes_max = 8 * 1024;
  uint32_t request_body_bytes_max = 16 * 1024;
  uint32_t requests_per_connection_max = 100000;
  // False: requests carrying the peer header are answered 403 (a plaintext listener while peers use mTLS).
  bool peer_requests_allowed = true;
  // Set: every connection is TLS, made from the context this returns (called once per accepted connection;
  // it must not return null). Refused handshakes are counted in peerd_peer_tls_handshakes_refused_total.
  std::function<std::shared_ptr<boost::asio::ssl::context>()> tls_context;
};

class HttpServer {
 public:
  // `handler`, `metrics` (may be null) and the io_context must outlive the server and its sessions; run the
  // io_context on as many threads as wanted (each session is serialised on its own strand).
  HttpServer(boost::asio::io_context& io, HttpServerOptions options, RequestHandler& handler, Logger logger,
             DaemonMetrics* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts accepting. Port 0 picks a free port; the bound endpoint is returned.
  Result<boost::asio::ip::tcp::endpoint, std::string> listen(const boost::asio::ip::tcp::endpoint& address);
  // Stops accepting and closes every connection (asynchronously, on their strands).
  void stop();

  size_t connection_count() const;
  size_t idle_connection_count() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

boost::asio::ip::tcp::endpoint to_asio(const Endpoint& endpoint);
Endpoint from_asio(const boost::asio::ip::tcp::endpoint& endpoint);

}  // namespace peerd::daemon
