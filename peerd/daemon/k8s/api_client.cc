#include "peerd/daemon/k8s/api_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "peerd/daemon/k8s/kubeconfig.h"

namespace peerd::daemon::k8s {
namespace {

std::optional<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string trim(std::string text) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  return text;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  body->append(data, size * count);
  return size * count;
}

struct HeaderCapture {
  std::optional<long> retry_after_seconds;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* capture = static_cast<HeaderCapture*>(user);
  std::string_view line(data, size * count);
  constexpr std::string_view kRetryAfter = "retry-after:";
  if (line.size() > kRetryAfter.size()) {
    std::string name(line.substr(0, kRetryAfter.size()));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name == kRetryAfter) {
      const std::string value = trim(std::string(line.substr(kRetryAfter.size())));
      char* end = nullptr;
      const long seconds = std::strtol(value.c_str(), &end, 10);
      if (end != value.c_str() && seconds >= 0) capture->retry_after_seconds = seconds;
    }
  }
  return size * count;
}

bool retriable_status(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

}  // namespace

std::optional<std::string> process_environment(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  if (value == nullptr || *value == 0) return std::nullopt;
  return std::string(value);
}

Result<ApiConfig, std::string> in_cluster_config(const Environment& environment,
                                                 std::string_view service_account_dir) {
  const auto host = environment("KUBERNETES_SERVICE_HOST");
  const auto port = environment("KUBERNETES_SERVICE_PORT");
  if (!host || !port) return fail(std::string("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set"));
  const std::filesystem::path dir(service_account_dir);
  ApiConfig config;
  const bool ipv6 = host->find(':') != std::string::npos;
  config.server = "https://" + (ipv6 ? "[" + *host + "]" : *host) + ":" + *port;
  config.token_file = (dir / "token").string();
  if (!read_file(config.token_file))
    return fail("cannot read the service-account token " + config.token_file);
  config.ca_file = (dir / "ca.crt").string();
  if (!std::filesystem::exists(config.ca_file))
    return fail("cannot find the service-account CA bundle " + config.ca_file);
  if (auto name = environment("NAMESPACE")) {
    config.namespace_name = *name;
  } else if (auto text = read_file(dir / "namespace"); text && !trim(*text).empty()) {
    config.namespace_name = trim(*text);
  }
  config.origin = "in-cluster";
  return config;
}

Result<std::optional<ApiConfig>, std::string> find_api_config(const std::string& kubeconfig_path,
                                                              const Environment& environment,
                                                              std::string_view service_account_dir) {
  if (!kubeconfig_path.empty()) {
    auto config = load_kubeconfig(kubeconfig_path);
    if (!config) return fail(config.error());
    if (auto name = environment("NAMESPACE")) config->namespace_name = *name;
    return std::optional<ApiConfig>(std::move(*config));
  }
  if (!environment("KUBERNETES_SERVICE_HOST")) return std::optional<ApiConfig>();
  auto config = in_cluster_config(environment, service_account_dir);
  if (!config) return fail(config.error());
  return std::optional<ApiConfig>(std::move(*config));
}

nlohmann::json ApiResponse::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

std::string ApiResponse::error_message() const {
  const auto parsed = json();
  if (parsed.is_object() && parsed.contains("message") && parsed["message"].is_string())
    return parsed["message"].get<std::string>();
  return body.substr(0, 200);
}

ApiClient::ApiClient(ApiConfig config, ApiClientOptions options, Logger logger)
    : config_(std::move(config)),
      options_(std::move(options)),
      logger_(std::move(logger)),
      jitter_state_(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1) {
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  easy_ = curl_easy_init();
  load_token(true);
}

ApiClient::~ApiClient() {
  if (easy_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(easy_));
}

void ApiClient::cancel() {
  {
    std::lock_guard lock(cancel_mutex_);
    cancelled_ = true;
  }
  cancel_wake_.notify_all();
}

void ApiClient::load_token(bool force) {
  if (config_.token_file.empty()) {
    token_ = config_.token;
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - token_read_at_ < options_.token_reread_interval) return;
  token_read_at_ = now;
  if (auto text = read_file(config_.token_file)) {
    token_ = trim(*text);
  } else {
    logger_.warn("cannot read the service-account token, keeping the previous one",
                 {{"file", config_.token_file}});
  }
}

bool ApiClient::wait_backoff(std::chrono::milliseconds delay) {
  std::unique_lock lock(cancel_mutex_);
  return !cancel_wake_.wait_for(lock, delay, [this] { return cancelled_; });
}

Result<ApiResponse, std::string> ApiClient::get(const std::string& path) {
  return request("GET", path, nullptr, "");
}

Result<ApiResponse, std::string> ApiClient::post(const std::string& path, const nlohmann::json& body) {
  const std::string text = body.dump();
  return request("POST", path, &text, "application/json");
}

Result<ApiResponse, std::string> ApiClient::put(const std::string& path, const nlohmann::json& body) {
  const std::string text = body.dump();
  return request("PUT", path, &text, "application/json");
}

Result<ApiResponse, std::string> ApiClient::merge_patch(const std::string& path, const nlohmann::json& body) {
  const std::string text = body.dump();
  return request("PATCH", path, &text, "application/merge-patch+json");
}

Result<ApiResponse, std::string> ApiClient::request(std::string_view method, const std::string& path,
                                                    const std::string* body, std::string_view content_type) {
  std::chrono::milliseconds backoff = options_.backoff_initial;
  bool token_reloaded = false;
  std::string last_error;
  for (uint32_t attempt = 0; attempt <= options_.retries_max; ++attempt) {
    {
      std::lock_guard lock(cancel_mutex_);
      if (cancelled_) return fail(std::string("cancelled"));
    }
    load_token(false);
    auto answer = perform_once(method, path, body, content_type);
    std::optional<std::chrono::milliseconds> wait;
    if (!answer) {
      last_error = answer.error();
    } else if (answer->status == 401 && !token_reloaded && !config_.token_file.empty()) {
      // A rotated token: read the file again and retry at once (once).
      token_reloaded = true;
      load_token(true);
      wait = std::chrono::milliseconds(0);
      last_error = "401 Unauthorized";
    } else if (retriable_status(answer->status) && attempt < options_.retries_max) {
      last_error = std::to_string(answer->status) + ": " + answer->error_message();
      // The server says when (429 Too Many Requests, 503): believe it, within backoff_max.
      if (answer->retry_after) {
        wait = std::min<std::chrono::milliseconds>(*answer->retry_after, options_.backoff_max);
      }
    } else {
      return answer;
    }
    if (attempt == options_.retries_max) break;
    if (!wait) {
      // Full jitter on the upper half: [backoff/2, backoff].
      jitter_state_ ^= jitter_state_ << 13;
      jitter_state_ ^= jitter_state_ >> 7;
      jitter_state_ ^= jitter_state_ << 17;
      const auto half = std::max<int64_t>(backoff.count() / 2, 1);
      wait =
          std::chrono::milliseconds(half + static_cast<int64_t>(jitter_state_ % static_cast<uint64_t>(half)));
      backoff = std::min(backoff * 2, options_.backoff_max);
    }
    logger_.debug("kubernetes API retry",
                  {{"method", std::string(method)}, {"path", path}, {"error", last_error}});
    if (!wait_backoff(*wait)) return fail(std::string("cancelled"));
  }
  return fail(std::string(method) + " " + path + ": " + last_error);
}

Result<ApiResponse, std::string> ApiClient::perform_once(std::string_view method, const std::string& path,
                                                         const std::string* body,
                                                         std::string_view content_type) {
  auto* easy = static_cast<CURL*>(easy_);
  if (easy == nullptr) return fail(std::string("curl_easy_init failed"));
  curl_easy_reset(easy);
  const std::string url = config_.server + path;
  const std::string method_text(method);
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
  curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method_text.c_str());
  if (method == "GET") curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, config_.insecure_skip_tls_verify ? 0L : 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, config_.insecure_skip_tls_verify ? 0L : 2L);
  curl_blob ca_blob{};
  if (!config_.ca_pem.empty()) {
    ca_blob = curl_blob{const_cast<char*>(config_.ca_pem.data()), config_.ca_pem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &ca_blob);
  } else if (!config_.ca_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_CAINFO, config_.ca_file.c_str());
  }
  curl_blob cert_blob{}, key_blob{};
  if (!config_.client_cert_pem.empty()) {
    cert_blob = {const_cast<char*>(config_.client_cert_pem.data()), config_.client_cert_pem.size(),
                 CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &cert_blob);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
  } else if (!config_.client_cert_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_SSLCERT, config_.client_cert_file.c_str());
  }
  if (!config_.client_key_pem.empty()) {
    key_blob = {const_cast<char*>(config_.client_key_pem.data()), config_.client_key_pem.size(),
                CURL_BLOB_NOCOPY};
    curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &key_blob);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  } else if (!config_.client_key_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_SSLKEY, config_.client_key_file.c_str());
  }

  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: application/json");
  std::string authorization;
  if (!token_.empty()) {
    authorization = "Authorization: Bearer " + token_;
    headers = curl_slist_append(headers, authorization.c_str());
  }
  std::string content_type_header;
  if (body != nullptr) {
    content_type_header = "Content-Type: " + std::string(content_type);
    headers = curl_slist_append(headers, content_type_header.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body->c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);

  ApiResponse response;
  HeaderCapture capture;
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &capture);
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options_.response_bytes_max));

  ++requests_sent_;
  const CURLcode code = curl_easy_perform(easy);
  curl_slist_free_all(headers);
  if (code != CURLE_OK) return fail(std::string(method) + " " + url + ": " + curl_easy_strerror(code));
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  if (capture.retry_after_seconds) response.retry_after = std::chrono::seconds(*capture.retry_after_seconds);
  return response;
}

std::string format_micro_time(std::chrono::system_clock::time_point time) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count() % 1000000;
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[80];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<long>(micros));
  return text;
}

std::string format_time(std::chrono::system_clock::time_point time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace peerd::daemon::k8s
