#pragma once
// A small Kubernetes API client over libcurl: one blocking easy handle, used by one worker thread (the lease
// elector or the event recorder; nothing on the data path waits on it). Configured in-cluster
// (service-account token, CA bundle, namespace, KUBERNETES_SERVICE_HOST/PORT) or from a kubeconfig file.
//
// Retries (bounded, exponential backoff with jitter): connection errors, timeouts, 429 (honouring
// Retry-After) and 500/502/503/504. 401 re-reads the token file once (the kubelet rotates projected tokens)
// and retries. 403 and 409 come back to the caller at once: a missing RBAC rule or a resourceVersion conflict
// are decisions for the caller, not for a retry loop.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "peerd/core/common/result.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon::k8s {

inline constexpr std::string_view kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct ApiConfig {
  std::string server;   // "https://10.96.0.1:443"
  std::string ca_file;  // PEM bundle; with ca_pem empty too, the system trust store
  std::string ca_pem;   // inline bundle (kubeconfig certificate-authority-data)
  bool insecure_skip_tls_verify = false;
  std::string token;                              // static bearer token (kubeconfig `token`)
  std::string token_file;                         // re-read when rotated (in-cluster, kubeconfig `tokenFile`)
  std::string client_cert_file, client_key_file;  // kubeconfig client certificates
  std::string client_cert_pem, client_key_pem;
  std::string namespace_name = "default";  // where peerd's namespaced objects live
  std::string origin;                      // "in-cluster" or the kubeconfig path, for logs
};

using Environment = std::function<std::optional<std::string>(std::string_view name)>;
// Reads the process environment.
std::optional<std::string> process_environment(std::string_view name);

// In a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, <dir>/token, <dir>/ca.crt, and the namespace
// from $NAMESPACE (the chart sets it from the downward API), else <dir>/namespace, else "default".
// Fails when the environment variables or the token are missing (not in a cluster).
Result<ApiConfig, std::string> in_cluster_config(const Environment& environment = process_environment,
                                                 std::string_view service_account_dir = kServiceAccountDir);

// --kubeconfig when given, else the in-cluster configuration when running in a pod, else nullopt (no
// Kubernetes). A given kubeconfig that cannot be used is an error, never a silent fallback.
Result<std::optional<ApiConfig>, std::string> find_api_config(
    const std::string& kubeconfig_path, const Environment& environment = process_environment,
    std::string_view service_account_dir = kServiceAccountDir);

struct ApiClientOptions {
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(3)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(5)};
  uint32_t retries_max = 3;
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(5)};
  std::chrono::seconds token_reread_interval{60};  // client-go re-reads the token file every minute
  uint64_t response_bytes_max = 4u << 20;
  std::string user_agent = "peerd";
};

struct ApiResponse {
  long status = 0;
  std::string body;
  std::optional<std::chrono::seconds> retry_after;  // a 429's or 503's Retry-After header
  // The body as JSON; a discarded value when it is not JSON.
  nlohmann::json json() const;
  // The Status object's message (or the raw body) for logs.
  std::string error_message() const;
};

class ApiClient {
 public:
  ApiClient(ApiConfig config, ApiClientOptions options, Logger logger);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // `path` starts with '/' ("/api/v1/namespaces/ns/pods/name"). An HTTP answer of any status is a value; an
  // error means no answer after every retry (or cancel()).
  Result<ApiResponse, std::string> get(const std::string& path);
  Result<ApiResponse, std::string> post(const std::string& path, const nlohmann::json& body);
  Result<ApiResponse, std::string> put(const std::string& path, const nlohmann::json& body);
  // JSON merge patch (application/merge-patch+json).
  Result<ApiResponse, std::string> merge_patch(const std::string& path, const nlohmann::json& body);

  // Ends retry waits early and makes later calls fail at once; any thread.
  void cancel();
  const ApiConfig& config() const { return config_; }
  uint64_t requests_sent() const { return requests_sent_; }

 private:
  Result<ApiResponse, std::string> request(std::string_view method, const std::string& path,
                                           const std::string* body, std::string_view content_type);
  Result<ApiResponse, std::string> perform_once(std::string_view method, const std::string& path,
                                                const std::string* body, std::string_view content_type);
  void load_token(bool force);
  bool wait_backoff(std::chrono::milliseconds delay);  // false when cancelled

  ApiConfig config_;
  const ApiClientOptions options_;
  const Logger logger_;
  void* easy_ = nullptr;  // CURL*
  std::string token_;
  std::chrono::steady_clock::time_point token_read_at_{};
  uint64_t requests_sent_ = 0;
  uint64_t jitter_state_;

  std::mutex cancel_mutex_;
  std::condition_variable cancel_wake_;
  bool cancelled_ = false;
};

// RFC 3339 with microseconds, as Kubernetes MicroTime prints: "2026-12-03T09:41:02.123456Z".
std::string format_micro_time(std::chrono::system_clock::time_point time);
// RFC 3339 seconds ("2026-12-03T09:41:02Z"), as Event firstTimestamp/lastTimestamp.
std::string format_time(std::chrono::system_clock::time_point time);

}  // namespace peerd::daemon::k8s
