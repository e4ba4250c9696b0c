// The Kubernetes API client: in-cluster and kubeconfig configuration, and the requests it makes against a
// fake HTTPS API server (bearer token, TLS verification against the CA, retries on 429/5xx, no retry on
// 403/409, token re-read on 401).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "peerd/daemon/k8s/api_client.h"
#include "peerd/daemon/k8s/kubeconfig.h"
#include "peerd/daemon/tests/k8s_fake_api_server.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon::k8s {
namespace {

using testing::base64;
using testing::FakeApiServer;
using testing::FakeKubernetes;
using testing::FakeResponse;
using testing::TempDir;

constexpr const char* kAddress = "127.0.0.160";

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

Environment environment_of(std::map<std::string, std::string> values) {
  return [values](std::string_view name) -> std::optional<std::string> {
    const auto it = values.find(std::string(name));
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

TEST(InClusterConfig, ReadsTheServiceAccountAndEnvironment) {
  TempDir dir;
  write_file(dir.path() / "token", "abc.def\n");
  write_file(dir.path() / "ca.crt", "PEM");
  write_file(dir.path() / "namespace", "from-file\n");
  auto config = in_cluster_config(
      environment_of({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}}),
      dir.path().string());
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->server, "https://10.96.0.1:443");
  EXPECT_EQ(config->token_file, (dir.path() / "token").string());
  EXPECT_EQ(config->ca_file, (dir.path() / "ca.crt").string());
  EXPECT_EQ(config->namespace_name, "from-file");

  auto with_env = in_cluster_config(environment_of({{"KUBERNETES_SERVICE_HOST", "fd00::1"},
                                                    {"KUBERNETES_SERVICE_PORT", "6443"},
                                                    {"NAMESPACE", "peerd-ns"}}),
                                    dir.path().string());
  ASSERT_TRUE(with_env) << with_env.error();
  EXPECT_EQ(with_env->server, "https://[fd00::1]:6443");
  EXPECT_EQ(with_env->namespace_name, "peerd-ns");
}

TEST(InClusterConfig, OutsideAClusterThereIsNoConfig) {
  TempDir dir;
  EXPECT_FALSE(in_cluster_config(environment_of({}), dir.path().string()));
  auto none = find_api_config("", environment_of({}), dir.path().string());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  // In a pod without a token: an error, not a silent "no Kubernetes".
  auto broken = find_api_config(
      "", environment_of({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}}),
      dir.path().string());
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().find("token"), std::string::npos);
}

TEST(Kubeconfig, ReadsTheCurrentContextAsKindWritesIt) {
  const std::string text =
      "apiVersion: v1\n"
      "clusters:\n"
      "- cluster:\n"
      "    certificate-authority-data: " +
      base64("CA PEM") +
      "\n"
      "    server: https://127.0.0.1:40123\n"
      "  name: kind-peerd\n"
      "- cluster:\n"
      "    server: https://other:6443\n"
      "  name: other\n"
      "contexts:\n"
      "- context:\n"
      "    cluster: kind-peerd\n"
      "    user: kind-peerd\n"
      "    namespace: peerd-ns   # a comment\n"
      "  name: kind-peerd\n"
      "current-context: kind-peerd\n"
      "kind: Config\n"
      "preferences: {}\n"
      "users:\n"
      "- name: kind-peerd\n"
      "  user:\n"
      "    client-certificate-data: " +
      base64("CERT") +
      "\n"
      "    client-key-data: " +
      base64("KEY") +
      "\n"
      "    token: 'tok''en'\n";
  auto config = parse_kubeconfig(text, "/home/u/.kube");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->server, "https://127.0.0.1:40123");
  EXPECT_EQ(config->ca_pem, "CA PEM");
  EXPECT_EQ(config->client_cert_pem, "CERT");
  EXPECT_EQ(config->client_key_pem, "KEY");
  EXPECT_EQ(config->token, "tok'en");
  EXPECT_EQ(config->namespace_name, "peerd-ns");

  auto other = parse_kubeconfig(text, "", "kind-peerd");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->server, "https://127.0.0.1:40123");
}

TEST(Kubeconfig, JsonAndRelativePaths) {
  const std::string text =
      R"({"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],
    "clusters":[{"name":"k","cluster":{"server":"https://10.0.0.1:6443/","certificate-authority":"ca.crt"}}],
    "users":[{"name":"u","user":{"tokenFile":"/var/token"}}]})";
  auto config = parse_kubeconfig(text, "/etc/peerd");
  ASSERT_TRUE(config) << config.error();
  EXPECT_EQ(config->server, "https://10.0.0.1:6443");
  EXPECT_EQ(config->ca_file, "/etc/peerd/ca.crt");
  EXPECT_EQ(config->token_file, "/var/token");
  EXPECT_EQ(config->namespace_name, "default");
}

TEST(Kubeconfig, ClearErrors) {
  auto plugin = parse_kubeconfig(
      "current-context: c\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nclusters:\n- name: "
      "k\n"
      "  cluster:\n    server: https://x:1\nusers:\n- name: u\n  user:\n    exec:\n      command: aws\n",
      "");
  ASSERT_FALSE(plugin);
  EXPECT_NE(plugin.error().find("credential plugin"), std::string::npos) << plugin.error();
  auto missing = parse_kubeconfig("current-context: nope\ncontexts: []\n", "");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("context 'nope' not found"), std::string::npos) << missing.error();
  auto bad_yaml = parse_simple_yaml("a: b\n   c: d\n");
  ASSERT_FALSE(bad_yaml);
  EXPECT_NE(bad_yaml.error().find("line 2"), std::string::npos) << bad_yaml.error();
  EXPECT_FALSE(load_kubeconfig("/nonexistent/kubeconfig"));
  EXPECT_FALSE(decode_base64("ab$c"));
}

class ApiClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kube_.add_pod("ns", "peerd-abc", "uid-1");
    ASSERT_TRUE(server_.start());
  }

  ApiConfig config() const { return server_.client_config("ns"); }

  static ApiClientOptions fast_options() {
    ApiClientOptions options;
    options.backoff_initial = std::chrono::milliseconds(1);
    options.backoff_max = std::chrono::milliseconds(5);
    return options;
  }

  FakeKubernetes kube_;
  FakeApiServer server_{kAddress, kube_.handler()};
};

TEST_F(ApiClientTest, GetsWithTheBearerTokenOverVerifiedTls) {
  ApiClient client(config(), fast_options(), quiet());
  auto answer = client.get("/api/v1/namespaces/ns/pods/peerd-abc");
  ASSERT_TRUE(answer) << answer.error();
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->json()["metadata"]["uid"], "uid-1");
  const auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].path, "/api/v1/namespaces/ns/pods/peerd-abc");
  EXPECT_EQ(requests[0].authorization, "Bearer test-token");

  auto missing = client.get("/api/v1/namespaces/ns/pods/other");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->error_message(), "pods \"other\" not found");
}

TEST_F(ApiClientTest, RefusesAServerItsCaDidNotSign) {
  ApiConfig wrong = config();
  wrong.ca_pem = testing::make_test_certificates(kAddress).ca_pem;
  ApiClientOptions options = fast_options();
  options.retries_max = 1;
  ApiClient client(wrong, options, quiet());
  auto answer = client.get("/api/v1/namespaces/ns/pods/peerd-abc");
  EXPECT_FALSE(answer);
}

TEST_F(ApiClientTest, RetriesTooManyRequestsAndServerErrors) {
  server_.script({429, testing::status_body(429, "TooManyRequests", "slow down"), {{"Retry-After", "0"}}});
  server_.script({503, testing::status_body(503, "ServiceUnavailable", "etcd")});
  ApiClient client(config(), fast_options(), quiet());
  auto answer = client.get("/api/v1/namespaces/ns/pods/peerd-abc");
  ASSERT_TRUE(answer) << answer.error();
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(server_.requests().size(), 3u);

  // Bounded: retries_max retries, then the last answer.
  server_.clear_requests();
  for (int i = 0; i < 5; ++i) server_.script({500, testing::status_body(500, "InternalError", "boom")});
  ApiClientOptions options = fast_options();
  options.retries_max = 2;
  ApiClient bounded(config(), options, quiet());
  auto failed = bounded.get("/api/v1/namespaces/ns/pods/peerd-abc");
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->status, 500);
  EXPECT_EQ(server_.requests().size(), 3u);
}

TEST_F(ApiClientTest, ForbiddenAndConflictAreNotRetried) {
  server_.script({403, testing::status_body(403, "Forbidden", "cannot create leases")});
  ApiClient client(config(), fast_options(), quiet());
  auto forbidden = client.post("/apis/coordination.k8s.io/v1/namespaces/ns/leases", {{"metadata", {}}});
  ASSERT_TRUE(forbidden);
  EXPECT_EQ(forbidden->status, 403);
  EXPECT_EQ(server_.requests().size(), 1u);
  EXPECT_EQ(server_.requests()[0].content_type, "application/json");

  server_.script({409, testing::status_body(409, "Conflict", "modified")});
  auto conflict = client.put("/apis/coordination.k8s.io/v1/namespaces/ns/leases/x", {{"metadata", {}}});
  ASSERT_TRUE(conflict);
  EXPECT_EQ(conflict->status, 409);
  EXPECT_EQ(server_.requests().size(), 2u);
}

TEST_F(ApiClientTest, RereadsARotatedTokenOnUnauthorized) {
  TempDir dir;
  write_file(dir.path() / "token", "old-token\n");
  ApiConfig rotating = config();
  rotating.token.clear();
  rotating.token_file = (dir.path() / "token").string();
  ApiClient client(rotating, fast_options(), quiet());
  kube_.set_token("old-token");
  auto first = client.get("/api/v1/namespaces/ns/pods/peerd-abc");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);

  // The kubelet rotated the token: the server now wants the new one.
  write_file(dir.path() / "token", "new-token\n");
  kube_.set_token("new-token");
  auto second = client.get("/api/v1/namespaces/ns/pods/peerd-abc");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200);
  const auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].authorization, "Bearer old-token");
  EXPECT_EQ(requests[2].authorization, "Bearer new-token");
}

TEST_F(ApiClientTest, ConnectionErrorsFailAfterTheRetries) {
  ApiConfig closed = config();
  closed.server = "https://127.0.0.161:" + std::to_string(testing::free_port("127.0.0.161"));
  ApiClientOptions options = fast_options();
  options.retries_max = 2;
  ApiClient client(closed, options, quiet());
  auto answer = client.get("/api/v1/nodes/x");
  ASSERT_FALSE(answer);
  EXPECT_EQ(client.requests_sent(), 3u);
  EXPECT_NE(answer.error().find("GET /api/v1/nodes/x"), std::string::npos) << answer.error();
}

TEST(MicroTime, FormatsLikeTheApiServer) {
  const auto time = std::chrono::system_clock::time_point(std::chrono::microseconds(1764755000123456));
  EXPECT_EQ(format_micro_time(time), "2025-12-03T09:43:20.123456Z");
  EXPECT_EQ(format_time(time), "2025-12-03T09:43:20Z");
}

}  // namespace
}  // namespace peerd::daemon::k8s
