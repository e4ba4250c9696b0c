// UpstreamClient against real servers: docker-registry 2.8 (blobs, manifests, ranges, 404s), nginx (plain
// files, a redirect to a second host with a SAS-like query, 503 retries counted in nginx's access log) and
// nginx with TLS (verification on: refused without the CA, accepted with it). Each test starts its own
// process on 127.0.0.x with a free port and skips when the program is not installed.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <nlohmann/json.hpp>

#include "peerd/core/crypto/sha256.h"
#include "peerd/daemon/tests/test_process.h"
#include "peerd/daemon/upstream_client.h"

namespace peerd::daemon {
namespace {

using testing::ChildProcess;
using testing::TempDir;

std::string sha256_digest(std::string_view data) {
  return "sha256:" + crypto::to_hex(crypto::Sha256::hash(data));
}

std::string pattern(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>((i * 31 + i / 97) % 256);
  return out;
}

// Minimal blocking libcurl helper for pushing test content (the client under test only reads).
struct RawResponse {
  long status = 0;
  std::string location;
  std::string body;
};

size_t collect_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

size_t collect_location(char* data, size_t size, size_t count, void* user) {
  std::string_view line(data, size * count);
  if (line.size() > 10 && (line.starts_with("Location:") || line.starts_with("location:"))) {
    line.remove_prefix(9);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
    *static_cast<std::string*>(user) = std::string(line);
  }
  return size * count;
}

RawResponse raw_request(const std::string& method, const std::string& url, const std::string& body,
                        const std::string& content_type) {
  RawResponse response;
  CURL* easy = curl_easy_init();
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_slist* headers = nullptr;
  if (!content_type.empty()) headers = curl_slist_append(headers, ("Content-Type: " + content_type).c_str());
  if (method != "GET") {
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, collect_location);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &response.location);
  curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(easy);
  return response;
}

class Registry {
 public:
  static constexpr const char* kAddress = "127.0.0.21";

  bool start() {
    const auto binary = testing::find_binary("docker-registry");
    if (!binary) return false;
    port_ = testing::free_port(kAddress);
    std::ofstream(dir_.path() / "config.yml")
        << "version: 0.1\n"
        << "log: {level: info}\n"
        << "storage: {filesystem: {rootdirectory: " << (dir_.path() / "data").string()
        << "}, delete: {enabled: true}}\n"
        << "http: {addr: " << kAddress << ":" << port_ << "}\n";
    started_ = process_.start({*binary, "serve", (dir_.path() / "config.yml").string()},
                              dir_.path() / "registry.log") &&
               process_.wait_for_port(kAddress, port_);
    return started_;
  }
  bool started() const { return started_; }

  std::string url() const { return std::string("http://") + kAddress + ":" + std::to_string(port_); }

  // The monolithic upload of the distribution spec: POST to open an upload, PUT the bytes with ?digest=.
  std::string push_blob(const std::string& repository, const std::string& data) {
    const std::string digest = sha256_digest(data);
    const auto opened = raw_request("POST", url() + "/v2/" + repository + "/blobs/uploads/", "", "");
    EXPECT_EQ(opened.status, 202) << opened.body;
    std::string location = opened.location.starts_with("/") ? url() + opened.location : opened.location;
    location += (location.find('?') == std::string::npos ? "?" : "&") + std::string("digest=") + digest;
    const auto put = raw_request("PUT", location, data, "application/octet-stream");
    EXPECT_EQ(put.status, 201) << put.body;
    return digest;
  }

  std::string push_manifest(const std::string& repository, const std::string& tag,
                            const std::string& manifest) {
    const auto put = raw_request("PUT", url() + "/v2/" + repository + "/manifests/" + tag, manifest,
                                 "application/vnd.oci.image.manifest.v1+json");
    EXPECT_EQ(put.status, 201) << put.body;
    return sha256_digest(manifest);
  }

 private:
  TempDir dir_;
  ChildProcess process_;
  uint16_t port_ = 0;
  bool started_ = false;
};

class Nginx {
 public:
  // `servers` is the text of the http{} block's server sections; ROOT in it is replaced by the docroot.
  bool start(const std::string& servers) {
    const auto binary = testing::find_binary("nginx");
    if (!binary) return false;
    std::filesystem::create_directories(root());
    std::string body = servers;
    for (size_t at = body.find("ROOT"); at != std::string::npos; at = body.find("ROOT", at)) {
      body.replace(at, 4, root().string());
    }
    std::ofstream(dir_.path() / "nginx.conf")
        << "daemon off;\nuser root;\nworker_processes 1;\npid " << (dir_.path() / "nginx.pid").string()
        << ";\n"
        << "error_log " << (dir_.path() / "error.log").string() << ";\n"
        << "events { worker_connections 256; }\n"
        << "http {\n  access_log " << access_log().string() << ";\n"
        << "  client_body_temp_path " << (dir_.path() / "body").string() << ";\n"
        << "  proxy_temp_path " << (dir_.path() / "proxy").string() << ";\n"
        << "  fastcgi_temp_path " << (dir_.path() / "fastcgi").string() << ";\n"
        << "  uwsgi_temp_path " << (dir_.path() / "uwsgi").string() << ";\n"
        << "  scgi_temp_path " << (dir_.path() / "scgi").string() << ";\n"
        << "  sendfile on;\n"
        << body << "}\n";
    return process_.start({*binary, "-e", (dir_.path() / "error.log").string(), "-p", dir_.path().string(),
                           "-c", (dir_.path() / "nginx.conf").string()},
                          dir_.path() / "stdout.log");
  }
  bool wait_for_port(const std::string& address, uint16_t port) {
    return process_.wait_for_port(address, port);
  }
  std::filesystem::path root() const { return dir_.path() / "www"; }
  std::filesystem::path access_log() const { return dir_.path() / "access.log"; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  size_t access_log_lines_containing(const std::string& text) const {
    std::istringstream lines(testing::read_text(access_log()));
    size_t count = 0;
    for (std::string line; std::getline(lines, line);) count += line.find(text) != std::string::npos;
    return count;
  }

 private:
  TempDir dir_;
  ChildProcess process_;
};

class UpstreamIntegrationTest : public ::testing::Test {
 protected:
  UpstreamClient& client(UpstreamOptions options = {}) {
    options.retry_backoff_initial = std::chrono::milliseconds(5);
    options.retry_backoff_max = std::chrono::milliseconds(20);
    client_ = std::make_unique<UpstreamClient>(options,
                                               Logger(LogLevel::kDebug,
                                                      [this](std::string_view line) {
                                                        std::lock_guard lock(log_mutex_);
                                                        log_ += line;
                                                      }),
                                               &metrics_);
    return *client_;
  }

  UpstreamResult get(std::string url, std::string* body, std::optional<content::OpenByteRange> range = {},
                     std::vector<std::pair<std::string, std::string>> headers = {},
                     UpstreamMethod method = UpstreamMethod::kGet) {
    UpstreamRequest request;
    request.method = method;
    request.url = std::move(url);
    request.range = range;
    request.headers = std::move(headers);
    request.on_body = [body](std::string_view bytes) {
      body->append(bytes);
      return true;
    };
    return client_->fetch(std::move(request));
  }

  MetricsRegistry registry_;
  DaemonMetrics metrics_{registry_};
  std::unique_ptr<UpstreamClient> client_;
  std::mutex log_mutex_;
  std::string log_;
};

// Shows blob GET, HEAD (length + Docker-Content-Digest) and Range reads against docker-registry, with the
// blob pushed through the monolithic upload flow.
TEST_F(UpstreamIntegrationTest, RegistryBlobs) {
  Registry registry;
  if (!registry.start()) GTEST_SKIP() << "docker-registry not installed or did not start";
  const std::string data = pattern(300000);
  const std::string digest = registry.push_blob("test/blob", data);
  client();
  const std::string url = registry.url() + "/v2/test/blob/blobs/" + digest;

  std::string body;
  const auto whole = get(url, &body);
  ASSERT_TRUE(whole.ok()) << describe(whole.error) << " " << whole.head.status;
  EXPECT_TRUE(body == data);

  std::string none;
  const auto head = get(url, &none, {}, {}, UpstreamMethod::kHead);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head.head.content_length, data.size());
  EXPECT_EQ(head.head.header("docker-content-digest"), digest);
  EXPECT_TRUE(none.empty());

  std::string middle;
  const auto ranged = get(url, &middle, content::OpenByteRange{1000, 5000});
  EXPECT_EQ(ranged.head.status, 206);
  EXPECT_TRUE(middle == data.substr(1000, 5000));

  std::string resumed;
  const auto open_ended = get(url, &resumed, content::OpenByteRange{299990, {}});
  EXPECT_EQ(open_ended.head.status, 206);
  EXPECT_EQ(resumed, data.substr(299990));
}

// Shows a manifest fetched by tag with an OCI Accept comes back with its media type and digest header.
TEST_F(UpstreamIntegrationTest, RegistryManifestByTag) {
  Registry registry;
  if (!registry.start()) GTEST_SKIP() << "docker-registry not installed or did not start";
  const std::string config =
      R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
  const std::string config_digest = registry.push_blob("test/img", config);
  const std::string manifest = nlohmann::json{
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config",
       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
        {"digest", config_digest},
        {"size", config.size()}}},
      {"layers",
       nlohmann::json::array()}}.dump();
  const std::string manifest_digest = registry.push_manifest("test/img", "latest", manifest);
  client();
  std::string body;
  const auto result = get(registry.url() + "/v2/test/img/manifests/latest", &body, {},
                          {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
  ASSERT_TRUE(result.ok()) << result.head.status << " " << result.error_body;
  EXPECT_EQ(body, manifest);
  EXPECT_EQ(result.head.header("content-type"), "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(result.head.header("docker-content-digest"), manifest_digest);
}

// Shows a missing blob is a plain 404 with the registry's OCI error body: not retried, never sent to on_body.
TEST_F(UpstreamIntegrationTest, RegistryMissingBlobIs404) {
  Registry registry;
  if (!registry.start()) GTEST_SKIP() << "docker-registry not installed or did not start";
  client();
  std::string body;
  const auto result = get(registry.url() + "/v2/test/none/blobs/sha256:" + std::string(64, '0'), &body);
  EXPECT_EQ(result.error, UpstreamError::kNone);
  EXPECT_EQ(result.head.status, 404);
  EXPECT_EQ(result.attempts, 1u);
  EXPECT_NE(result.error_body.find("BLOB_UNKNOWN"), std::string::npos) << result.error_body;
  EXPECT_TRUE(body.empty());
}

// Shows plain files from nginx with ranges, a redirect to another host whose signed query never reaches the
// logs, and 503 retries (counted in nginx's own access log).
TEST_F(UpstreamIntegrationTest, NginxFilesRedirectsAndRetries) {
  const std::string origin = "127.0.0.22";
  const std::string storage = "127.0.0.23";
  const uint16_t origin_port = testing::free_port(origin);
  const uint16_t storage_port = testing::free_port(storage);
  Nginx nginx;
  const std::string storage_url = "http://" + storage + ":" + std::to_string(storage_port);
  if (!nginx.start("  server {\n    listen " + origin + ":" + std::to_string(origin_port) +
                   ";\n    root ROOT;\n" + "    location = /redirect { return 302 " + storage_url +
                   "/file.bin?sig=SECRETSIG; }\n" + "    location = /unavailable { return 503; }\n  }\n" +
                   "  server {\n    listen " + storage + ":" + std::to_string(storage_port) +
                   ";\n    root ROOT;\n  }\n")) {
    GTEST_SKIP() << "nginx not installed";
  }
  const std::string data = pattern(2u << 20);
  std::ofstream(nginx.root() / "file.bin", std::ios::binary) << data;
  ASSERT_TRUE(nginx.wait_for_port(origin, origin_port));
  ASSERT_TRUE(nginx.wait_for_port(storage, storage_port));
  client();
  const std::string origin_url = "http://" + origin + ":" + std::to_string(origin_port);

  std::string slice;
  const auto ranged = get(origin_url + "/file.bin", &slice, content::OpenByteRange{(1u << 20) - 10, 20});
  EXPECT_EQ(ranged.head.status, 206);
  EXPECT_EQ(slice, data.substr((1u << 20) - 10, 20));

  std::string redirected;
  const auto followed = get(origin_url + "/redirect", &redirected);
  ASSERT_TRUE(followed.ok()) << describe(followed.error);
  EXPECT_TRUE(redirected == data);
  ASSERT_EQ(followed.redirect_hosts, std::vector<std::string>{storage});
  EXPECT_EQ(followed.final_url_redacted, storage_url + "/file.bin");
  {
    std::lock_guard lock(log_mutex_);
    EXPECT_EQ(log_.find("SECRETSIG"), std::string::npos);
  }

  std::string nothing;
  const auto unavailable = get(origin_url + "/unavailable", &nothing);
  EXPECT_EQ(unavailable.head.status, 503);
  EXPECT_EQ(unavailable.attempts, 4u);
  // nginx writes its access log line after the response; poll briefly for the last one.
  for (int i = 0; i < 100 && nginx.access_log_lines_containing("GET /unavailable") < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(nginx.access_log_lines_containing("GET /unavailable"), 4u);
}

// Shows TLS verification is on: a self-signed server is refused, and accepted once its CA is configured.
TEST_F(UpstreamIntegrationTest, TlsVerification) {
  const auto openssl = testing::find_binary("openssl");
  if (!openssl || !testing::find_binary("nginx")) GTEST_SKIP() << "openssl or nginx not installed";
  const std::string address = "127.0.0.24";
  const uint16_t port = testing::free_port(address);
  Nginx nginx;
  const auto cert = nginx.dir() / "cert.pem";
  const auto key = nginx.dir() / "key.pem";
  ChildProcess keygen;
  ASSERT_TRUE(
      keygen.start({*openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key.string(), "-out", cert.string(), "-days", "1", "-subj",
                    "/CN=" + address, "-addext", "subjectAltName=IP:" + address},
                   nginx.dir() / "openssl.log"));
  ASSERT_EQ(keygen.wait_exit(), 0) << keygen.log();
  ASSERT_TRUE(nginx.start("  server {\n    listen " + address + ":" + std::to_string(port) + " ssl;\n" +
                          "    ssl_certificate " + cert.string() + ";\n    ssl_certificate_key " +
                          key.string() + ";\n    root ROOT;\n  }\n"));
  std::ofstream(nginx.root() / "secure.txt") << "over tls";
  ASSERT_TRUE(nginx.wait_for_port(address, port));
  const std::string url = "https://" + address + ":" + std::to_string(port) + "/secure.txt";

  UpstreamOptions strict;
  strict.retries_max = 0;
  client(strict);
  std::string body;
  const auto refused = get(url, &body);
  EXPECT_EQ(refused.error, UpstreamError::kTls) << refused.error_message;
  EXPECT_TRUE(body.empty());

  UpstreamOptions trusting;
  trusting.ca_file = cert.string();
  client(trusting);
  const auto accepted = get(url, &body);
  ASSERT_TRUE(accepted.ok()) << accepted.error_message;
  EXPECT_EQ(body, "over tls");
}

}  // namespace
}  // namespace peerd::daemon
