#pragma once
// A small blocking HTTP client over libcurl for the workloads: HEAD for sizes, GET with a Range header whose
// body is discarded, hashed or kept. One client per thread; it reuses its connections (keep-alive).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "peerd/core/crypto/sha256.h"

namespace peerd::workload {

struct HttpClientOptions {
  std::chrono::milliseconds request_timeout{60'000};  // whole request, including the body
  std::chrono::milliseconds connect_timeout{10'000};
  bool insecure_tls = false;  // skip certificate checks (kind clusters use self-signed certificates)
  long redirects_max = 5;     // registries redirect blob reads to storage
};

enum class BodyHandling : uint8_t { kDiscard, kHash, kKeep };

struct HttpResponse {
  std::string error;  // transport failure (connect, timeout, TLS, body too large); empty when a response came
  long status = 0;
  std::optional<uint64_t> content_length;  // as announced (HEAD reports the size here)
  std::string content_range;               // of the final response, "" when absent
  uint64_t body_bytes = 0;
  std::string body;                    // BodyHandling::kKeep
  crypto::Sha256Digest body_sha256{};  // BodyHandling::kHash
  double seconds = 0;                  // from sending the request to the last body byte

  bool transport_ok() const { return error.empty(); }
};

class HttpClient {
 public:
  // libcurl's global setup; call once before any thread creates a client (the constructor also calls it).
  static void global_init();

  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResponse head(const std::string& url);
  // `range` is a Range header value ("bytes=0-9") or empty for none. kKeep stores at most `keep_bytes_max`
  // bytes and fails the request beyond that.
  HttpResponse get(const std::string& url, const std::string& range, BodyHandling handling,
                   uint64_t keep_bytes_max = 16 << 20);

 private:
  HttpResponse perform(const std::string& url, bool head, const std::string& range, BodyHandling handling,
                       uint64_t keep_bytes_max);

  HttpClientOptions options_;
  void* curl_ = nullptr;  // CURL*, kept out of the header
};

}  // namespace peerd::workload
