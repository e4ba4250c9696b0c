#pragma once
// HTTP(S) client for upstream registries and blob stores, on libcurl's multi interface driven by one thread
// of its own, so transfers never block the Asio threads.
//
// Per transfer: GET or HEAD, optional byte range, extra headers, a streaming body callback. Redirects are
// followed by hand (up to redirects_max) so each hop can be vetted (`allow_redirect`) and credentials never
// follow a redirect to another host (storage URLs carry their own SAS signature). A 401 with
// `WWW-Authenticate: Bearer realm=...` starts the anonymous token flow: fetch a token from the realm, retry
// once with it, and cache it per (realm, service, scope) until 90% of expires_in; later requests for the same
// repository send the cached token at once. When the client passed its own Authorization, it is sent as is
// (to the first host only) and a 401 is returned to the caller. 5xx, 429 and connection-level failures are
// retried up to retries_max times with exponential backoff, but only while no body byte has been delivered.
// TLS peer and host verification stay on. Logs carry redacted URLs only, never headers or tokens.
//
// Requests to other peerd nodes (`to_peer`) use mutual TLS when `peer_tls` is set: https, this node's
// certificate and key as the client identity, and only the cluster CA (no system store) to verify the peer,
// whose certificate must name the peer's IP. Registry requests are unaffected.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/post.hpp>

#include "peerd/core/content/range.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/peer_tls.h"

namespace peerd::daemon {

struct UpstreamOptions {
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // Abort when fewer than 1 byte/s arrives for this long (the useful timeout for multi-GB bodies).
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds total_timeout{0};  // 0: none
  uint32_t retries_max = 3;
  std::chrono::milliseconds retry_backoff_initial{200};  // doubles per retry
  std::chrono::milliseconds retry_backoff_max{std::chrono::seconds(5)};
  uint32_t redirects_max = 5;
  uint32_t transfers_max = 64;              // easy handles running at once
  uint32_t queued_max = 4096;               // waiting beyond transfers_max; more are refused with kOverloaded
  size_t error_body_bytes_max = 64 * 1024;  // kept from non-2xx bodies (and token responses)
  std::string ca_file;                      // empty: the system trust store
  std::string user_agent = "peerd";
  // The current peer TLS material (rotation-aware), or unset for plaintext peers.
  std::function<std::shared_ptr<const PeerTlsMaterial>()> peer_tls;
};

enum class UpstreamMethod { kGet, kHead };

struct UpstreamHead {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case, in arrival order
  std::optional<uint64_t> content_length;

  // The first value of `name` (case-insensitive), or empty.
  std::string header(std::string_view name) const;
};

struct UpstreamRequest {
  UpstreamMethod method = UpstreamMethod::kGet;
  std::string url;
  // "Range: bytes=offset-[offset+length-1]"; an absent length reads to the end.
  std::optional<content::OpenByteRange> range;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Accept
  std::string authorization;                                 // the client's, passed through; never logged
  // Overrides UpstreamOptions::retries_max for this transfer (e.g. 0 for peer fetches: the engine picks
  // another source instead of retrying the same one).
  std::optional<uint32_t> retries_max;
  // Override UpstreamOptions' timeouts for this transfer (peers get shorter ones than registries).
  std::optional<std::chrono::milliseconds> connect_timeout;
  std::optional<std::chrono::milliseconds> total_timeout;
  // Called once with the head of a 2xx response, before any body. Return false to abort.
  std::function<bool(const UpstreamHead&)> on_head;
  // The 2xx body, in order. Return false to abort (the result is then kAborted).
  std::function<bool(std::string_view bytes)> on_body;
  // Vets each redirect target (full URL, query included: never log it). Null allows every http(s) target.
  std::function<bool(std::string_view url)> allow_redirect;
  // A request to another peerd node: with UpstreamOptions::peer_tls it is sent with this node's client
  // certificate and verified against the cluster CA only (the URL must then use peer_scheme()).
  bool to_peer = false;
};

enum class UpstreamError {
  kNone,
  kConnect,   // resolve/connect/TLS handshake failed
  kTimeout,   // connect, stall or total timeout
  kTransfer,  // the connection broke mid-response, or a protocol error
  kTls,       // certificate verification failed
  kTooManyRedirects,
  kRedirectRefused,  // allow_redirect said no, or a non-http(s) Location
  kAborted,          // on_head/on_body returned false
  kOverloaded,       // more than queued_max transfers waiting
  kShutdown,         // the client was destroyed first
  kBadUrl,
};

std::string_view describe(UpstreamError error);

struct UpstreamResult {
  UpstreamError error = UpstreamError::kNone;  // transport-level; HTTP statuses are in head.status
  std::string error_message;                   // safe to log
  UpstreamHead head;                           // the final response's head
  std::string error_body;                      // first error_body_bytes_max bytes of a non-2xx final body
  uint64_t body_bytes = 0;                     // delivered to on_body
  uint32_t attempts = 0;                       // requests sent for this transfer (retries, redirects, token)
  std::vector<std::string> redirect_hosts;     // hosts redirected to, in order (feed AllowedUpstreams)
  std::string final_url_redacted;

  bool ok() const { return error == UpstreamError::kNone && head.status >= 200 && head.status < 300; }
};

class UpstreamClient {
 public:
  using Done = std::function<void(UpstreamResult)>;

  // `metrics` may be null. Starts the transfer thread.
  UpstreamClient(UpstreamOptions options, Logger logger, DaemonMetrics* metrics);
  // Stops the thread; unfinished transfers complete with kShutdown.
  ~UpstreamClient();
  UpstreamClient(const UpstreamClient&) = delete;
  UpstreamClient& operator=(const UpstreamClient&) = delete;

  // Queues a transfer. on_head/on_body/allow_redirect and `done` run on the transfer thread; `done` runs
  // exactly once (inline on the caller's thread only for kOverloaded and kShutdown).
  void start(UpstreamRequest request, Done done);

  // Same, delivering `done` on an Asio executor (e.g. a session strand).
  template <typename Executor>
  void start(UpstreamRequest request, Executor executor, Done done) {
    start(std::move(request), [executor, done = std::move(done)](UpstreamResult result) mutable {
      boost::asio::post(executor, [done = std::move(done), result = std::move(result)]() mutable {
        done(std::move(result));
      });
    });
  }

  // Blocking convenience for tools and tests. Never call it from the transfer thread or an Asio thread.
  UpstreamResult fetch(UpstreamRequest request);

  // Transfers queued or running (for tests and /metrics).
  size_t pending() const;

  // "https" when peers are reached with mutual TLS, else "http".
  std::string_view peer_scheme() const;

  class Engine;

 private:
  std::unique_ptr<Engine> engine_;
};

}  // namespace peerd::daemon
