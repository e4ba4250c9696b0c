#pragma once
// A fake Kubernetes API server for tests without a cluster: HTTPS (Beast + Asio SSL) on a loopback address
// with a CA and a server certificate generated in the test (OpenSSL), every request recorded (method, path,
// headers, body), answers from a handler. FakeKubernetes is a stateful handler answering in the real API
// server's format: Lease get/create/update with resourceVersion checks (409 Conflict / AlreadyExists Status
// bodies, 404 NotFound), Event create (201 and the object) and merge patch, Pod / Node / Service get; bearer
// tokens checked (401). Scripted answers (e.g. one 429, one 500) can be queued ahead of the stateful ones.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "peerd/daemon/k8s/api_client.h"

namespace peerd::daemon::testing {

struct TestCertificates {
  std::string ca_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
};

namespace detail {

inline std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<size_t>(size));
  BIO_free(bio);
  return text;
}

inline void add_extension(X509* issuer, X509* subject, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer, subject, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
  X509_add_ext(subject, extension, -1);
  X509_EXTENSION_free(extension);
}

inline X509* new_certificate(EVP_PKEY* key, const std::string& common_name, long serial) {
  X509* certificate = X509_new();
  X509_set_version(certificate, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate), serial);
  X509_gmtime_adj(X509_getm_notBefore(certificate), -3600);
  X509_gmtime_adj(X509_getm_notAfter(certificate), 24 * 3600);
  X509_set_pubkey(certificate, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(certificate), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  return certificate;
}

}  // namespace detail

// A CA and a server certificate for `ip` (subjectAltName IP), P-256 keys.
inline TestCertificates make_test_certificates(const std::string& ip) {
  EVP_PKEY* ca_key = EVP_EC_gen("P-256");
  X509* ca = detail::new_certificate(ca_key, "peerd-test-ca", 1);
  X509_set_issuer_name(ca, X509_get_subject_name(ca));
  detail::add_extension(ca, ca, NID_basic_constraints, "critical,CA:TRUE");
  detail::add_extension(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign");
  detail::add_extension(ca, ca, NID_subject_key_identifier, "hash");
  X509_sign(ca, ca_key, EVP_sha256());

  EVP_PKEY* server_key = EVP_EC_gen("P-256");
  X509* server = detail::new_certificate(server_key, "kubernetes", 2);
  X509_set_issuer_name(server, X509_get_subject_name(ca));
  detail::add_extension(ca, server, NID_basic_constraints, "critical,CA:FALSE");
  detail::add_extension(ca, server, NID_ext_key_usage, "serverAuth");
  const std::string san = "IP:" + ip;
  detail::add_extension(ca, server, NID_subject_alt_name, san.c_str());
  X509_sign(server, ca_key, EVP_sha256());

  TestCertificates out;
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, ca);
  out.ca_pem = detail::bio_text(bio);
  bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, server);
  out.server_cert_pem = detail::bio_text(bio);
  bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, server_key, nullptr, nullptr, 0, nullptr, nullptr);
  out.server_key_pem = detail::bio_text(bio);
  X509_free(ca);
  X509_free(server);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(server_key);
  return out;
}

struct RecordedRequest {
  std::string method;
  std::string path;  // target without the query
  std::string query;
  std::string authorization;
  std::string content_type;
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

struct FakeResponse {
  FakeResponse(unsigned status_code = 200, nlohmann::json json_body = nlohmann::json::object(),
               std::map<std::string, std::string> extra_headers = {})
      : status(status_code), body(std::move(json_body)), headers(std::move(extra_headers)) {}
  unsigned status;
  nlohmann::json body;
  std::map<std::string, std::string> headers;
};

// Standard base64 with padding: certificate data in the kubeconfigs the tests write.
inline std::string base64(const std::string& text) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : text) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(alphabet[(buffer >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(alphabet[(buffer << (6 - bits)) & 63]);
  while (out.size() % 4 != 0) out.push_back('=');
  return out;
}

// The Status object the API server sends with errors.
inline nlohmann::json status_body(unsigned code, const std::string& reason, const std::string& message) {
  return {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
          {"status", "Failure"}, {"message", message}, {"reason", reason},
          {"code", code}};
}

class FakeApiServer {
 public:
  using Handler = std::function<FakeResponse(const RecordedRequest&)>;
  static constexpr size_t kConnectionsMax = 256;

  FakeApiServer(std::string address, Handler handler)
      : address_(std::move(address)),
        handler_(std::move(handler)),
        certificates_(make_test_certificates(address_)) {
    ssl_.use_certificate_chain(boost::asio::buffer(certificates_.server_cert_pem));
    ssl_.use_private_key(boost::asio::buffer(certificates_.server_key_pem), boost::asio::ssl::context::pem);
  }
  ~FakeApiServer() { stop(); }

  // Binds a free port; false when it cannot.
  bool start() {
    boost::system::error_code error;
    const boost::asio::ip::tcp::endpoint endpoint(boost::asio::ip::make_address(address_), 0);
    acceptor_.open(endpoint.protocol(), error);
    if (!error) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), error);
    if (!error) acceptor_.bind(endpoint, error);
    if (!error) acceptor_.listen(64, error);
    if (error) return false;
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
    return true;
  }

  void stop() {
    if (stopping_.exchange(true)) return;
    if (acceptor_.is_open()) ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& thread : connection_threads_) thread.join();
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

  uint16_t port() const { return port_; }
  const std::string& address() const { return address_; }
  std::string url() const { return "https://" + address_ + ":" + std::to_string(port_); }
  const std::string& ca_pem() const { return certificates_.ca_pem; }
  // What a peerd in `namespace_name` is configured with to reach this server.
  k8s::ApiConfig client_config(const std::string& namespace_name) const {
    k8s::ApiConfig config;
    config.server = url();
    config.ca_pem = ca_pem();
    config.token = "test-token";
    config.namespace_name = namespace_name;
    return config;
  }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  void clear_requests() {
    std::lock_guard lock(mutex_);
    requests_.clear();
  }
  // Answers the next requests with these, in order, before the handler.
  void script(FakeResponse response) {
    std::lock_guard lock(mutex_);
    scripted_.push_back(std::move(response));
  }

 private:
  void accept_loop() {
    while (!stopping_) {
      auto socket = std::make_unique<boost::asio::ip::tcp::socket>(io_);
      boost::system::error_code error;
      acceptor_.accept(*socket, error);
      if (error || stopping_) return;
      std::lock_guard lock(mutex_);
      if (connection_threads_.size() >= kConnectionsMax) continue;  // refuse: closed when `socket` goes
      open_fds_.push_back(socket->native_handle());
      connection_threads_.emplace_back(
          [this, socket = std::move(socket)]() mutable { serve(std::move(socket)); });
    }
  }

  void serve(std::unique_ptr<boost::asio::ip::tcp::socket> socket) {
    namespace http = boost::beast::http;
    boost::asio::ssl::stream<boost::asio::ip::tcp::socket&> stream(*socket, ssl_);
    boost::system::error_code error;
    stream.handshake(boost::asio::ssl::stream_base::server, error);
    boost::beast::flat_buffer buffer;
    while (!error && !stopping_) {
      http::request<http::string_body> request;
      http::read(stream, buffer, request, error);
      if (error) break;
      RecordedRequest recorded;
      recorded.method = std::string(request.method_string());
      const std::string target(request.target());
      const auto question = target.find('?');
      recorded.path = target.substr(0, question);
      if (question != std::string::npos) recorded.query = target.substr(question + 1);
      recorded.authorization = std::string(request[http::field::authorization]);
      recorded.content_type = std::string(request[http::field::content_type]);
      recorded.body = request.body();
      std::optional<FakeResponse> answer;
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(recorded);
        if (!scripted_.empty()) {
          answer = std::move(scripted_.front());
          scripted_.pop_front();
        }
      }
      if (!answer) answer = handler_(recorded);
      http::response<http::string_body> response{static_cast<http::status>(answer->status), 11};
      response.set(http::field::content_type, "application/json");
      for (const auto& [name, value] : answer->headers) response.set(name, value);
      response.body() = answer->body.dump();
      response.keep_alive(request.keep_alive());
      response.prepare_payload();
      http::write(stream, response, error);
      if (!request.keep_alive()) break;
    }
    stream.shutdown(error);
    std::lock_guard lock(mutex_);
    std::erase(open_fds_, socket->native_handle());
  }

  const std::string address_;
  const Handler handler_;
  const TestCertificates certificates_;
  boost::asio::io_context io_;
  boost::asio::ssl::context ssl_{boost::asio::ssl::context::tls_server};
  boost::asio::ip::tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  mutable std::mutex mutex_;
  std::vector<std::thread> connection_threads_;
  std::vector<int> open_fds_;
  std::vector<RecordedRequest> requests_;
  std::deque<FakeResponse> scripted_;
};

// A stateful API server in the real one's format (see the file comment). Thread-safe.
class FakeKubernetes {
 public:
  explicit FakeKubernetes(std::string token = "test-token") : token_(std::move(token)) {}

  FakeApiServer::Handler handler() {
    return [this](const RecordedRequest& request) { return handle(request); };
  }
  void set_token(std::string token) {
    std::lock_guard lock(mutex_);
    token_ = std::move(token);
  }
  void add_pod(const std::string& namespace_name, const std::string& name, const std::string& uid) {
    std::lock_guard lock(mutex_);
    objects_["/api/v1/namespaces/" + namespace_name + "/pods/" + name] = {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata",
         {{"name", name}, {"namespace", namespace_name}, {"uid", uid}, {"resourceVersion", next_version()}}},
        {"spec", {{"nodeName", "node-" + name}}}};
  }
  void add_node(const std::string& name, const std::string& uid) {
    std::lock_guard lock(mutex_);
    objects_["/api/v1/nodes/" + name] = {
        {"apiVersion", "v1"},
        {"kind", "Node"},
        {"metadata", {{"name", name}, {"uid", uid}, {"resourceVersion", next_version()}}}};
  }
  void add_service(const std::string& namespace_name, const std::string& name, bool headless) {
    std::lock_guard lock(mutex_);
    objects_["/api/v1/namespaces/" + namespace_name + "/services/" + name] = {
        {"apiVersion", "v1"},
        {"kind", "Service"},
        {"metadata", {{"name", name}, {"namespace", namespace_name}, {"resourceVersion", next_version()}}},
        {"spec", {{"clusterIP", headless ? "None" : "10.96.0.10"}}}};
  }
  std::optional<nlohmann::json> lease(const std::string& namespace_name, const std::string& name) const {
    std::lock_guard lock(mutex_);
    const auto it =
        objects_.find("/apis/coordination.k8s.io/v1/namespaces/" + namespace_name + "/leases/" + name);
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }
  // Sets a lease as another writer would (bumps the resourceVersion).
  void put_lease(const std::string& namespace_name, nlohmann::json lease) {
    std::lock_guard lock(mutex_);
    const std::string name = lease["metadata"]["name"];
    lease["metadata"]["resourceVersion"] = next_version();
    objects_["/apis/coordination.k8s.io/v1/namespaces/" + namespace_name + "/leases/" + name] =
        std::move(lease);
  }
  std::vector<nlohmann::json> events() const {
    std::lock_guard lock(mutex_);
    std::vector<nlohmann::json> out;
    for (const auto& [path, object] : objects_) {
      if (object.value("kind", "") == "Event") out.push_back(object);
    }
    return out;
  }

 private:
  std::string next_version() { return std::to_string(++resource_version_); }

  static FakeResponse not_found(const std::string& kind, const std::string& name) {
    return {404, status_body(404, "NotFound", kind + " \"" + name + "\" not found")};
  }

  FakeResponse handle(const RecordedRequest& request) {
    std::lock_guard lock(mutex_);
    if (request.authorization != "Bearer " + token_)
      return {401, status_body(401, "Unauthorized", "Unauthorized")};
    const std::string& path = request.path;
    const auto slash = path.rfind('/');
    const std::string collection = path.substr(0, slash);
    const std::string name = path.substr(slash + 1);
    const bool is_lease = path.find("/leases") != std::string::npos;
    const std::string kind_plural =
        is_lease ? "leases.coordination.k8s.io" : collection.substr(collection.rfind('/') + 1);
    if (request.method == "GET") {
      const auto it = objects_.find(path);
      if (it == objects_.end()) return not_found(kind_plural, name);
      return {200, it->second};
    }
    if (request.method == "POST") {
      auto object = request.json();
      if (!object.is_object() || !object.contains("metadata"))
        return {400, status_body(400, "BadRequest", "bad body")};
      const std::string object_name = object["metadata"].value("name", "");
      const std::string object_path = path + "/" + object_name;
      if (objects_.count(object_path))
        return {409,
                status_body(409, "AlreadyExists", kind_plural + " \"" + object_name + "\" already exists")};
      object["metadata"]["resourceVersion"] = next_version();
      object["metadata"]["uid"] = "uid-" + object["metadata"]["resourceVersion"].get<std::string>();
      object["metadata"]["creationTimestamp"] = "2026-12-03T10:00:00Z";
      objects_[object_path] = object;
      return {201, object};
    }
    if (request.method == "PUT") {
      auto object = request.json();
      const auto it = objects_.find(path);
      if (it == objects_.end()) return not_found(kind_plural, name);
      if (!object.is_object() || !object.contains("metadata") ||
          object["metadata"].value("resourceVersion", "") !=
              it->second["metadata"].value("resourceVersion", "")) {
        return {409,
                status_body(409, "Conflict",
                            "Operation cannot be fulfilled on " + kind_plural + " \"" + name +
                                "\": the object has been modified; please apply your changes to the latest "
                                "version and try again")};
      }
      object["metadata"]["resourceVersion"] = next_version();
      it->second = object;
      return {200, object};
    }
    if (request.method == "PATCH") {
      const auto it = objects_.find(path);
      if (it == objects_.end()) return not_found(kind_plural, name);
      it->second.merge_patch(request.json());
      it->second["metadata"]["resourceVersion"] = next_version();
      return {200, it->second};
    }
    return {405, status_body(405, "MethodNotAllowed", "method not allowed")};
  }

  mutable std::mutex mutex_;
  std::string token_;
  uint64_t resource_version_ = 1000;
  std::map<std::string, nlohmann::json> objects_;
};

}  // namespace peerd::daemon::testing
