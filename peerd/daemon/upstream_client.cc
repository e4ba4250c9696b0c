#include "peerd/daemon/upstream_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "peerd/daemon/allowed_upstreams.h"
#include "peerd/daemon/bearer_token.h"

namespace peerd::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// The transfer thread wakes at least this often even when curl has nothing scheduled.
constexpr int kPollIntervalMsMax = 1000;
constexpr size_t kScopeHintsMax = 4096;
constexpr long kReceiveBufferBytes = 256 * 1024;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() &&
         (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

// "scheme://host[:port]" lower-cased, the scope of credentials: they are only sent back to where they came.
std::string origin_of(std::string_view url) {
  const auto authority = parse_url_authority(url);
  if (!authority) return {};
  std::string origin = authority->scheme + "://" + authority->host;
  if (authority->port) origin += ":" + std::to_string(*authority->port);
  return origin;
}

UpstreamError map_curl_error(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
      return UpstreamError::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return UpstreamError::kTimeout;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
      return UpstreamError::kTls;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return UpstreamError::kBadUrl;
    default:
      return UpstreamError::kTransfer;
  }
}

bool is_retriable(UpstreamError error) {
  return error == UpstreamError::kConnect || error == UpstreamError::kTimeout ||
         error == UpstreamError::kTransfer;
}

bool is_retriable_status(long status) {
  return status == 429 || (status >= 500 && status != 501);
}

bool is_redirect_status(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace

std::string_view describe(UpstreamError error) {
  switch (error) {
    case UpstreamError::kNone:
      return "ok";
    case UpstreamError::kConnect:
      return "could not connect";
    case UpstreamError::kTimeout:
      return "timed out";
    case UpstreamError::kTransfer:
      return "transfer failed";
    case UpstreamError::kTls:
      return "TLS verification failed";
    case UpstreamError::kTooManyRedirects:
      return "too many redirects";
    case UpstreamError::kRedirectRefused:
      return "redirect refused";
    case UpstreamError::kAborted:
      return "aborted by the caller";
    case UpstreamError::kOverloaded:
      return "too many upstream transfers queued";
    case UpstreamError::kShutdown:
      return "upstream client shut down";
    case UpstreamError::kBadUrl:
      return "bad URL";
  }
  return "unknown error";
}

std::string UpstreamHead::header(std::string_view name) const {
  const std::string wanted = lower(name);
  for (const auto& [key, value] : headers) {
    if (key == wanted) return value;
  }
  return {};
}

struct Transfer {
  enum class Kind { kMain, kToken };
  Kind kind = Kind::kMain;
  UpstreamRequest request;
  UpstreamClient::Done done;
  std::string url;     // current URL (changes with redirects)
  std::string origin;  // origin of the first URL: the only place credentials go
  std::string bearer;  // anonymous registry token to send
  bool token_flow_done = false;
  uint32_t retries = 0;
  uint32_t redirects = 0;
  UpstreamResult result;

  // Token transfers: the challenge they answer.
  BearerChallenge challenge;

  // Read by the static curl callbacks.
  size_t body_bytes_max = 0;
  DaemonMetrics* engine_metrics = nullptr;

  // Per attempt.
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  UpstreamHead head;
  bool head_complete = false;
  bool head_delivered = false;
  bool aborted = false;
  std::string body;  // non-2xx bodies and token responses, bounded
  std::vector<std::string> challenges;
  Clock::time_point attempt_started;

  void reset_attempt() {
    head = UpstreamHead{};
    head_complete = false;
    aborted = false;
    body.clear();
    challenges.clear();
  }
  bool is_2xx() const { return head.status >= 200 && head.status < 300; }
};

class UpstreamClient::Engine {
 public:
  Engine(UpstreamOptions options, Logger logger, DaemonMetrics* metrics)
      : options_(std::move(options)), logger_(std::move(logger)), metrics_(metrics) {
    static std::once_flag global_init;
    std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    multi_ = curl_multi_init();
    curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(options_.transfers_max));
    thread_ = std::thread([this] { run(); });
  }

  ~Engine() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    thread_.join();
    curl_multi_cleanup(multi_);
  }

  void submit(std::unique_ptr<Transfer> transfer) {
    {
      std::lock_guard lock(mutex_);
      if (!stopping_ && pending_ < options_.transfers_max + options_.queued_max) {
        ++pending_;
        incoming_.push_back(std::move(transfer));
        transfer = nullptr;
      }
    }
    if (transfer) {
      const bool stopping = [&] {
        std::lock_guard lock(mutex_);
        return stopping_;
      }();
      UpstreamResult result;
      result.error = stopping ? UpstreamError::kShutdown : UpstreamError::kOverloaded;
      result.error_message = std::string(describe(result.error));
      transfer->done(std::move(result));
      return;
    }
    curl_multi_wakeup(multi_);
  }

  size_t pending() const {
    std::lock_guard lock(mutex_);
    return pending_;
  }

 private:
  // ---- the transfer thread ----

  void run() {
    while (true) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) break;
        while (!incoming_.empty()) {
          prepare_new(*incoming_.front());
          ready_.push_back(std::move(incoming_.front()));
          incoming_.pop_front();
        }
      }
      release_due_retries();
      launch_ready();
      int running = 0;
      curl_multi_perform(multi_, &running);
      collect_completions();
      launch_ready();
      curl_multi_poll(multi_, nullptr, 0, poll_timeout_ms(), nullptr);
    }
    shut_down();
  }

  void prepare_new(Transfer& transfer) {
    transfer.url = transfer.request.url;
    transfer.origin = origin_of(transfer.url);
    if (transfer.kind == Transfer::Kind::kMain && transfer.request.authorization.empty()) {
      // A repository that was challenged before gets its cached token up front, saving the 401 round trip.
      const auto hint = scope_hints_.find(scope_hint_key(transfer.url));
      if (hint != scope_hints_.end()) {
        if (auto token = tokens_.get(hint->second, Clock::now())) transfer.bearer = std::move(*token);
      }
    }
  }

  int poll_timeout_ms() {
    long curl_timeout_ms = -1;
    curl_multi_timeout(multi_, &curl_timeout_ms);
    long timeout_ms =
        curl_timeout_ms < 0 ? kPollIntervalMsMax : std::min<long>(curl_timeout_ms, kPollIntervalMsMax);
    if (!delayed_.empty()) {
      const auto until_due =
          std::chrono::duration_cast<std::chrono::milliseconds>(delayed_.begin()->first - Clock::now());
      timeout_ms = std::min<long>(timeout_ms, std::max<long>(0, static_cast<long>(until_due.count()) + 1));
    }
    if (!ready_.empty() && running_.size() < options_.transfers_max) timeout_ms = 0;
    return static_cast<int>(timeout_ms);
  }

  void release_due_retries() {
    const auto now = Clock::now();
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
      ready_.push_back(std::move(delayed_.begin()->second));
      delayed_.erase(delayed_.begin());
    }
  }

  void launch_ready() {
    while (!ready_.empty() && running_.size() < options_.transfers_max) {
      std::unique_ptr<Transfer> transfer = std::move(ready_.front());
      ready_.pop_front();
      launch(std::move(transfer));
    }
  }

  void launch(std::unique_ptr<Transfer> transfer) {
    Transfer& t = *transfer;
    t.reset_attempt();
    CURL* easy = curl_easy_init();
    if (easy == nullptr)
      return finish(std::move(transfer), UpstreamError::kTransfer, "curl_easy_init failed");
    t.easy = easy;
    const bool same_origin = origin_of(t.url) == t.origin;
    curl_easy_setopt(easy, CURLOPT_URL, t.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(t.request.connect_timeout.value_or(options_.connect_timeout).count()));
    if (const auto total = t.request.total_timeout.value_or(options_.total_timeout); total.count() > 0) {
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(total.count()));
    }
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
                     std::max<long>(1, static_cast<long>(options_.stall_timeout.count() / 1000)));
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (t.request.to_peer && options_.peer_tls) {
      if (!use_peer_identity(easy)) {
        curl_easy_cleanup(easy);
        t.easy = nullptr;
        return finish(std::move(transfer), UpstreamError::kTls, "no peer TLS identity");
      }
    } else if (!options_.ca_file.empty()) {
      curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_file.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, kReceiveBufferBytes);
    // Token endpoints may redirect freely (no credentials are involved); content redirects are vetted here.
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, t.kind == Transfer::Kind::kToken ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, static_cast<long>(options_.redirects_max));
    if (t.request.method == UpstreamMethod::kHead) curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Engine::on_header_line);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Engine::on_body_bytes);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);

    curl_slist* list = nullptr;
    if (t.request.range) {
      const auto& range = *t.request.range;
      std::string value = "Range: bytes=" + std::to_string(range.offset) + "-";
      if (range.length && *range.length > 0) value += std::to_string(range.offset + *range.length - 1);
      list = curl_slist_append(list, value.c_str());
    }
    for (const auto& [name, value] : t.request.headers) {
      if (lower(name) == "authorization") continue;  // only through `authorization`
      list = curl_slist_append(list, (name + ": " + value).c_str());
    }
    if (same_origin && !t.request.authorization.empty()) {
      list = curl_slist_append(list, ("Authorization: " + t.request.authorization).c_str());
    } else if (same_origin && !t.bearer.empty()) {
      list = curl_slist_append(list, ("Authorization: Bearer " + t.bearer).c_str());
    }
    t.header_list = list;
    if (list != nullptr) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);

    ++t.result.attempts;
    if (metrics_ != nullptr) {
      (t.kind == Transfer::Kind::kToken ? metrics_->upstream_token_fetches : metrics_->upstream_requests)
          .inc();
    }
    logger_.debug("upstream request", {{"method", t.request.method == UpstreamMethod::kHead ? "HEAD" : "GET"},
                                       {"url", redact_url(t.url)},
                                       {"attempt", t.result.attempts}});
    t.attempt_started = Clock::now();
    running_.emplace(easy, std::move(transfer));
    curl_multi_add_handle(multi_, easy);
  }

  // Mutual TLS to a peer: the node's certificate and key, and the cluster CA as the only trust anchor (curl
  // copies the blobs, so a rotation between transfers is safe).
  bool use_peer_identity(CURL* easy) {
    const std::shared_ptr<const PeerTlsMaterial> material = options_.peer_tls();
    if (!material) return false;
    const auto blob = [](const std::string& pem) {
      return curl_blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
    };
    curl_blob cert = blob(material->cert_pem);
    curl_blob key = blob(material->key_pem);
    curl_blob cas = blob(material->trusted_ca_pem);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
    curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(easy, CURLOPT_CAINFO, nullptr);
    curl_easy_setopt(easy, CURLOPT_CAPATH, nullptr);  // never the system store for peers
    curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &cas);
    curl_easy_setopt(easy, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    return true;
  }

  static size_t on_header_line(char* data, size_t size, size_t count, void* user) {
    auto& t = *static_cast<Transfer*>(user);
    const size_t bytes = size * count;
    std::string_view line(data, bytes);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line.starts_with("HTTP/")) {
      t.head = UpstreamHead{};
      t.challenges.clear();
      t.head_complete = false;
      const auto space = line.find(' ');
      if (space != std::string_view::npos && line.size() >= space + 4) {
        long status = 0;
        std::from_chars(line.data() + space + 1, line.data() + space + 4, status);
        t.head.status = status;
      }
      return bytes;
    }
    if (line.empty()) {
      if (t.head.status < 200) return bytes;  // 1xx interim response: the real one follows
      t.head_complete = true;
      const std::string length = t.head.header("content-length");
      uint64_t value = 0;
      if (!length.empty() &&
          std::from_chars(length.data(), length.data() + length.size(), value).ec == std::errc()) {
        t.head.content_length = value;
      }
      if (t.engine_metrics != nullptr) {
        t.engine_metrics->upstream_first_byte_seconds.observe(
            std::chrono::duration<double>(Clock::now() - t.attempt_started).count());
      }
      if (t.kind == Transfer::Kind::kMain && t.is_2xx()) return deliver_head(t) ? bytes : 0;
      return bytes;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return bytes;
    std::string name = lower(trim(line.substr(0, colon)));
    std::string value(trim(line.substr(colon + 1)));
    if (name == "www-authenticate") t.challenges.push_back(value);
    t.head.headers.emplace_back(std::move(name), std::move(value));
    return bytes;
  }

  static bool deliver_head(Transfer& t) {
    if (t.head_delivered) return true;
    t.head_delivered = true;
    if (t.request.on_head && !t.request.on_head(t.head)) {
      t.aborted = true;
      return false;
    }
    return true;
  }

  static size_t on_body_bytes(char* data, size_t size, size_t count, void* user) {
    auto& t = *static_cast<Transfer*>(user);
    const size_t bytes = size * count;
    if (t.kind == Transfer::Kind::kToken || !t.is_2xx()) {
      const size_t room = t.body_bytes_max > t.body.size() ? t.body_bytes_max - t.body.size() : 0;
      t.body.append(data, std::min(bytes, room));
      return bytes;
    }
    if (!deliver_head(t)) return 0;
    if (t.request.on_body && !t.request.on_body(std::string_view(data, bytes))) {
      t.aborted = true;
      return 0;  // makes curl fail the transfer with CURLE_WRITE_ERROR
    }
    t.result.body_bytes += bytes;
    return bytes;
  }

  void collect_completions() {
    int left = 0;
    while (CURLMsg* message = curl_multi_info_read(multi_, &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      CURL* easy = message->easy_handle;
      const CURLcode code = message->data.result;
      auto it = running_.find(easy);
      if (it == running_.end()) continue;
      std::unique_ptr<Transfer> transfer = std::move(it->second);
      running_.erase(it);
      std::string location;
      if (char* redirect = nullptr;
          curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect) {
        location = redirect;
      }
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      if (transfer->head.status == 0) transfer->head.status = status;
      release_handle(*transfer);
      if (transfer->kind == Transfer::Kind::kToken) {
        on_token_done(std::move(transfer), code);
      } else {
        on_main_done(std::move(transfer), code, location);
      }
    }
  }

  void release_handle(Transfer& t) {
    if (t.easy != nullptr) {
      curl_multi_remove_handle(multi_, t.easy);
      curl_easy_cleanup(t.easy);
      t.easy = nullptr;
    }
    curl_slist_free_all(t.header_list);
    t.header_list = nullptr;
  }

  void on_main_done(std::unique_ptr<Transfer> transfer, CURLcode code, const std::string& location) {
    Transfer& t = *transfer;
    if (t.aborted) return finish(std::move(transfer), UpstreamError::kAborted, "aborted by the caller");
    if (code != CURLE_OK) {
      const UpstreamError error = map_curl_error(code);
      if (is_retriable(error) && t.result.body_bytes == 0 &&
          t.retries < t.request.retries_max.value_or(options_.retries_max)) {
        return retry_later(std::move(transfer));
      }
      return finish(std::move(transfer), error, curl_easy_strerror(code));
    }
    const long status = t.head.status;
    if (is_redirect_status(status) && !location.empty())
      return follow_redirect(std::move(transfer), location);
    if (status == 401 && t.request.authorization.empty() && !t.token_flow_done &&
        origin_of(t.url) == t.origin) {
      for (const auto& value : t.challenges) {
        if (auto challenge = parse_bearer_challenge(value))
          return start_token_flow(std::move(transfer), *challenge);
      }
    }
    if (is_retriable_status(status) && t.result.body_bytes == 0 &&
        t.retries < t.request.retries_max.value_or(options_.retries_max)) {
      return retry_later(std::move(transfer));
    }
    finish(std::move(transfer), UpstreamError::kNone, "");
  }

  void follow_redirect(std::unique_ptr<Transfer> transfer, const std::string& location) {
    Transfer& t = *transfer;
    if (++t.redirects > options_.redirects_max) {
      return finish(std::move(transfer), UpstreamError::kTooManyRedirects, "too many redirects");
    }
    const auto authority = parse_url_authority(location);
    if (!authority)
      return finish(std::move(transfer), UpstreamError::kRedirectRefused, "redirect to a non-http(s) URL");
    if (t.request.allow_redirect && !t.request.allow_redirect(location)) {
      return finish(std::move(transfer), UpstreamError::kRedirectRefused,
                    "redirect to " + authority->host + " is not allowed");
    }
    t.result.redirect_hosts.push_back(authority->host);
    t.url = location;
    ready_.push_back(std::move(transfer));
  }

  void retry_later(std::unique_ptr<Transfer> transfer) {
    Transfer& t = *transfer;
    ++t.retries;
    if (metrics_ != nullptr) metrics_->upstream_retries.inc();
    auto delay = options_.retry_backoff_initial * (1u << std::min<uint32_t>(t.retries - 1, 16));
    delay = std::min(delay, options_.retry_backoff_max);
    logger_.debug("upstream retry", {{"url", redact_url(t.url)},
                                     {"status", t.head.status},
                                     {"retry", t.retries},
                                     {"delay_ms", static_cast<int64_t>(delay.count())}});
    delayed_.emplace(Clock::now() + delay, std::move(transfer));
  }

  void start_token_flow(std::unique_ptr<Transfer> transfer, const BearerChallenge& challenge) {
    Transfer& t = *transfer;
    t.token_flow_done = true;
    const std::string key = challenge.key();
    remember_scope_hint(scope_hint_key(t.url), key);
    if (auto cached = tokens_.get(key, Clock::now()); cached && *cached != t.bearer) {
      t.bearer = std::move(*cached);
      ready_.push_back(std::move(transfer));
      return;
    }
    auto& waiters = token_waiters_[key];
    waiters.push_back(std::move(transfer));
    if (waiters.size() > 1) return;  // a fetch for this scope is already running

    auto token = std::make_unique<Transfer>();
    token->kind = Transfer::Kind::kToken;
    token->challenge = challenge;
    token->url = token_url(challenge);
    token->origin = origin_of(token->url);
    token->request.url = token->url;
    token->body_bytes_max = options_.error_body_bytes_max;
    token->engine_metrics = metrics_;
    if (!parse_url_authority(token->url)) return on_token_done(std::move(token), CURLE_URL_MALFORMAT);
    ready_.push_back(std::move(token));
  }

  std::string token_url(const BearerChallenge& challenge) const {
    std::string url = challenge.realm;
    char separator = url.find('?') == std::string::npos ? '?' : '&';
    const auto append = [&](std::string_view name, const std::string& value) {
      if (value.empty()) return;
      char* escaped = curl_easy_escape(nullptr, value.c_str(), static_cast<int>(value.size()));
      url += separator;
      url += name;
      url += '=';
      url += escaped != nullptr ? escaped : "";
      curl_free(escaped);
      separator = '&';
    };
    append("service", challenge.service);
    append("scope", challenge.scope);
    return url;
  }

  void remember_scope_hint(const std::string& hint, const std::string& key) {
    if (scope_hints_.size() >= kScopeHintsMax && !scope_hints_.contains(hint)) scope_hints_.clear();
    scope_hints_[hint] = key;
  }

  void on_token_done(std::unique_ptr<Transfer> token, CURLcode code) {
    const std::string key = token->challenge.key();
    std::optional<BearerToken> parsed;
    if (code == CURLE_OK && token->head.status == 200) parsed = parse_token_response(token->body);
    if (parsed) {
      tokens_.put(key, *parsed, Clock::now());
    } else {
      logger_.warn("registry token fetch failed",
                   {{"realm", redact_url(token->challenge.realm)},
                    {"status", token->head.status},
                    {"error", code == CURLE_OK ? "" : curl_easy_strerror(code)}});
    }
    auto node = token_waiters_.extract(key);
    if (node.empty()) return;
    for (auto& waiter : node.mapped()) {
      if (parsed) {
        waiter->bearer = parsed->token;
        ++waiter->result.attempts;  // the token request was sent on this transfer's behalf
        ready_.push_back(std::move(waiter));
      } else {
        finish(std::move(waiter), UpstreamError::kNone, "");  // the caller gets the registry's 401
      }
    }
  }

  void finish(std::unique_ptr<Transfer> transfer, UpstreamError error, std::string message) {
    Transfer& t = *transfer;
    UpstreamResult result = std::move(t.result);
    result.error = error;
    result.error_message = std::move(message);
    result.head = std::move(t.head);
    result.error_body = std::move(t.body);
    result.final_url_redacted = redact_url(t.url);
    if (!result.ok() && metrics_ != nullptr) metrics_->upstream_failures.inc();
    if (error != UpstreamError::kNone && error != UpstreamError::kAborted &&
        error != UpstreamError::kShutdown) {
      logger_.warn("upstream request failed", {{"url", result.final_url_redacted},
                                               {"error", std::string(describe(error))},
                                               {"detail", result.error_message},
                                               {"attempts", result.attempts}});
    } else {
      logger_.debug("upstream response", {{"url", result.final_url_redacted},
                                          {"status", result.head.status},
                                          {"bytes", result.body_bytes},
                                          {"attempts", result.attempts}});
    }
    {
      std::lock_guard lock(mutex_);
      --pending_;
    }
    if (t.done) t.done(std::move(result));
  }

  void shut_down() {
    std::vector<std::unique_ptr<Transfer>> all;
    for (auto& [easy, transfer] : running_) {
      release_handle(*transfer);
      all.push_back(std::move(transfer));
    }
    running_.clear();
    for (auto& transfer : ready_) all.push_back(std::move(transfer));
    ready_.clear();
    for (auto& [due, transfer] : delayed_) all.push_back(std::move(transfer));
    delayed_.clear();
    for (auto& [key, waiters] : token_waiters_) {
      for (auto& waiter : waiters) all.push_back(std::move(waiter));
    }
    token_waiters_.clear();
    {
      std::lock_guard lock(mutex_);
      for (auto& transfer : incoming_) all.push_back(std::move(transfer));
      incoming_.clear();
    }
    for (auto& transfer : all) {
      if (transfer->kind == Transfer::Kind::kToken) continue;  // its waiters are in `all` too
      finish(std::move(transfer), UpstreamError::kShutdown, "upstream client shut down");
    }
  }

  const UpstreamOptions options_;
  const Logger logger_;
  DaemonMetrics* const metrics_;
  CURLM* multi_ = nullptr;
  std::thread thread_;

  mutable std::mutex mutex_;
  bool stopping_ = false;
  size_t pending_ = 0;  // main transfers accepted and not finished
  std::deque<std::unique_ptr<Transfer>> incoming_;

  // Transfer thread only.
  std::deque<std::unique_ptr<Transfer>> ready_;
  std::multimap<Clock::time_point, std::unique_ptr<Transfer>> delayed_;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> running_;
  std::map<std::string, std::vector<std::unique_ptr<Transfer>>> token_waiters_;
  TokenCache tokens_;
  std::map<std::string, std::string> scope_hints_;

  friend class UpstreamClient;
};

UpstreamClient::UpstreamClient(UpstreamOptions options, Logger logger, DaemonMetrics* metrics)
    : engine_(std::make_unique<Engine>(std::move(options), std::move(logger), metrics)) {}

UpstreamClient::~UpstreamClient() = default;

void UpstreamClient::start(UpstreamRequest request, Done done) {
  auto transfer = std::make_unique<Transfer>();
  transfer->request = std::move(request);
  transfer->done = std::move(done);
  transfer->body_bytes_max = engine_->options_.error_body_bytes_max;
  transfer->engine_metrics = engine_->metrics_;
  engine_->submit(std::move(transfer));
}

UpstreamResult UpstreamClient::fetch(UpstreamRequest request) {
  auto promise = std::make_shared<std::promise<UpstreamResult>>();
  auto future = promise->get_future();
  start(std::move(request), [promise](UpstreamResult result) { promise->set_value(std::move(result)); });
  return future.get();
}

size_t UpstreamClient::pending() const {
  return engine_->pending();
}

std::string_view UpstreamClient::peer_scheme() const {
  return engine_->options_.peer_tls ? "https" : "http";
}

}  // namespace peerd::daemon
