#include "workloads/common/http_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <cctype>
#include <memory>
#include <mutex>
#include <string_view>

namespace peerd::workload {
namespace {

struct Transfer {
  BodyHandling handling = BodyHandling::kDiscard;
  uint64_t keep_bytes_max = 0;
  bool body_too_large = false;
  HttpResponse* response = nullptr;
  // OpenSSL rather than the core's portable SHA-256: hashing runs inside the timed read, so it must be fast.
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> hasher{nullptr, EVP_MD_CTX_free};
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const size_t bytes = size * count;
  auto& response = *transfer.response;
  response.body_bytes += bytes;
  if (transfer.handling == BodyHandling::kHash) {
    EVP_DigestUpdate(transfer.hasher.get(), data, bytes);
  } else if (transfer.handling == BodyHandling::kKeep) {
    if (response.body.size() + bytes > transfer.keep_bytes_max) {
      transfer.body_too_large = true;
      return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    response.body.append(data, bytes);
  }
  return bytes;
}

bool header_is(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto& response = *static_cast<Transfer*>(user)->response;
  const std::string_view line(data, size * count);
  // Each response of a redirect chain starts with a status line; only the last one's headers count.
  if (line.starts_with("HTTP/")) response.content_range.clear();
  if (header_is(line, "content-range")) {
    response.content_range = std::string(trim(line.substr(std::string_view("content-range:").size())));
  }
  return size * count;
}

}  // namespace

void HttpClient::global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HttpClient::HttpClient(HttpClientOptions options) : options_(options) {
  global_init();
  curl_ = curl_easy_init();
}

HttpClient::~HttpClient() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

HttpResponse HttpClient::head(const std::string& url) {
  return perform(url, true, "", BodyHandling::kDiscard, 0);
}

HttpResponse HttpClient::get(const std::string& url, const std::string& range, BodyHandling handling,
                             uint64_t keep_bytes_max) {
  return perform(url, false, range, handling, keep_bytes_max);
}

HttpResponse HttpClient::perform(const std::string& url, bool head, const std::string& range,
                                 BodyHandling handling, uint64_t keep_bytes_max) {
  HttpResponse response;
  if (curl_ == nullptr) {
    response.error = "curl_easy_init failed";
    return response;
  }
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);  // keeps the connection cache
  Transfer transfer;
  transfer.handling = handling;
  transfer.keep_bytes_max = keep_bytes_max;
  transfer.response = &response;
  if (handling == BodyHandling::kHash) {
    transfer.hasher.reset(EVP_MD_CTX_new());
    if (!transfer.hasher || EVP_DigestInit_ex(transfer.hasher.get(), EVP_sha256(), nullptr) != 1) {
      response.error = "SHA-256 is unavailable";
      return response;
    }
  }
  char error_text[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOBODY, head ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, options_.redirects_max > 0 ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, options_.redirects_max);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // timeouts from worker threads must not raise SIGALRM
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  if (options_.insecure_tls) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!range.empty()) curl_easy_setopt(curl, CURLOPT_RANGE, range.substr(range.find('=') + 1).c_str());

  const auto started = std::chrono::steady_clock::now();
  const CURLcode code = curl_easy_perform(curl);
  response.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  curl_off_t length = -1;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (length >= 0) response.content_length = static_cast<uint64_t>(length);
  if (transfer.body_too_large) {
    response.error = "response body larger than " + std::to_string(keep_bytes_max) + " bytes";
  } else if (code != CURLE_OK) {
    response.error = error_text[0] != '\0' ? error_text : curl_easy_strerror(code);
  }
  if (handling == BodyHandling::kHash) {
    unsigned int digest_bytes = 0;
    EVP_DigestFinal_ex(transfer.hasher.get(), response.body_sha256.data(), &digest_bytes);
  }
  return response;
}

}  // namespace peerd::workload
