#include "peerd/daemon/router.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace peerd::daemon {
namespace {

// Records what reached the content service and answers 200 "served".
class RecordingContentService final : public ContentService {
 public:
  void serve_mirror(MirrorRequest request, Respond respond) override {
    mirror_requests.push_back(std::move(request));
    respond(text_response(http::status::ok, "served"));
  }
  void serve_file(FileRequest request, Respond respond) override {
    file_requests.push_back(std::move(request));
    respond(text_response(http::status::ok, "served"));
  }
  std::vector<MirrorRequest> mirror_requests;
  std::vector<FileRequest> file_requests;
};

class RouterTest : public ::testing::Test {
 protected:
  RouterTest()
      : allowed_({}, {*parse_registry_host("https://ghcr.io"), *parse_registry_host("docker.io"),
                      *parse_registry_host("http://127.0.0.1:5000")}),
        metrics_(registry_),
        router_(content_, allowed_, registry_, readiness_,
                Logger(LogLevel::kError, [](std::string_view) {})) {}

  Response get(std::string_view target, std::vector<std::pair<std::string, std::string>> headers = {},
               http::verb method = http::verb::get) {
    Request request;
    request.message.method(method);
    request.message.target(target);
    request.message.version(11);
    for (const auto& [name, value] : headers) request.message.set(name, value);
    request.remote = "127.0.0.1:40000";
    std::optional<Response> answer;
    router_.handle(request, [&](Response response) { answer = std::move(response); });
    EXPECT_TRUE(answer.has_value()) << target;
    return answer ? std::move(*answer) : Response{};
  }

  static std::string error_code(const Response& response) {
    const auto body = nlohmann::json::parse(response.message.body());
    return body["errors"][0]["code"];
  }

  RecordingContentService content_;
  AllowedUpstreams allowed_;
  MetricsRegistry registry_;
  DaemonMetrics metrics_;
  Readiness readiness_;
  Router router_;
};

// Shows the registry version check answers 200 with the distribution API header, with and without a slash.
TEST_F(RouterTest, ApiBaseAnswers200) {
  for (std::string_view target : {"/v2/", "/v2"}) {
    const Response response = get(target);
    EXPECT_EQ(response.message.result(), http::status::ok);
    EXPECT_EQ(response.message["Docker-Distribution-API-Version"], "registry/2.0");
    EXPECT_EQ(response.route, "v2");
  }
  EXPECT_EQ(get("/v2/", {}, http::verb::head).message.result(), http::status::ok);
}

// Shows a containerd manifest request reaches the service with the ns registry, its scheme from --hosts,
// the Accept header and the client's Authorization.
TEST_F(RouterTest, ManifestRequestIsResolvedThroughNs) {
  const Response response =
      get("/v2/test/img/manifests/latest?ns=127.0.0.1%3A5000",
          {{"Accept", "application/vnd.oci.image.index.v1+json"}, {"Authorization", "Bearer t"}},
          http::verb::head);
  EXPECT_EQ(response.message.result(), http::status::ok);
  EXPECT_EQ(response.route, "manifest");
  ASSERT_EQ(content_.mirror_requests.size(), 1u);
  const MirrorRequest& request = content_.mirror_requests[0];
  EXPECT_EQ(request.route.kind, content::MirrorRouteKind::kManifest);
  EXPECT_EQ(request.route.tag, "latest");
  EXPECT_EQ(request.repository.domain, "127.0.0.1:5000");
  EXPECT_EQ(request.repository.path, "test/img");
  EXPECT_EQ(request.upstream_base_url, "http://127.0.0.1:5000");
  EXPECT_TRUE(request.head);
  EXPECT_EQ(request.accept, "application/vnd.oci.image.index.v1+json");
  EXPECT_EQ(request.authorization, "Bearer t");
  EXPECT_FALSE(request.from_peer);
}

// Shows a blob request without ns means Docker Hub (library/ prefix, registry-1 host), and Range and the
// peer header are passed on.
TEST_F(RouterTest, BlobRequestDefaultsToDockerHubWithRange) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  const Response response =
      get("/v2/ubuntu/blobs/" + digest, {{"Range", "bytes=100-"}, {"X-Peerd-Peer", "1"}});
  EXPECT_EQ(response.message.result(), http::status::ok);
  ASSERT_EQ(content_.mirror_requests.size(), 1u);
  const MirrorRequest& request = content_.mirror_requests[0];
  EXPECT_EQ(request.route.kind, content::MirrorRouteKind::kBlob);
  EXPECT_EQ(request.route.digest->to_string(), digest);
  EXPECT_EQ(request.repository.path, "library/ubuntu");
  EXPECT_EQ(request.upstream_base_url, "https://registry-1.docker.io");
  ASSERT_TRUE(request.range.has_value());
  EXPECT_EQ(request.range->kind, content::RangeSpec::Kind::kFrom);
  EXPECT_EQ(request.range->first, 100u);
  EXPECT_TRUE(request.from_peer);
}

// Shows malformed names, digests, tags, queries and Ranges are 400 with OCI error codes before the service
// sees them; an unsupported Range unit is ignored.
TEST_F(RouterTest, MalformedInputIs400) {
  const std::string digest = "sha256:" + std::string(64, 'b');
  EXPECT_EQ(error_code(get("/v2/UPPER/manifests/latest")), "NAME_INVALID");
  EXPECT_EQ(error_code(get("/v2/x/blobs/sha256:abc")), "DIGEST_INVALID");
  EXPECT_EQ(error_code(get("/v2/x/manifests/bad!tag")), "TAG_INVALID");
  EXPECT_EQ(error_code(get("/v2/x/manifests/latest?ns=a&ns=b")), "NAME_INVALID");
  EXPECT_EQ(get("/v2/x/blobs/" + digest, {{"Range", "bytes=5-1"}}).message.result(),
            http::status::bad_request);
  EXPECT_EQ(error_code(get("/v2/x/blobs/" + digest, {{"Range", "bytes=0-1,4-5"}})), "RANGE_INVALID");
  EXPECT_EQ(get("/v2/x/blobs/" + digest + "?ns=ghcr.io", {{"Range", "items=0-1"}}).message.result(),
            http::status::ok);
  EXPECT_EQ(content_.mirror_requests.size(), 1u);
  EXPECT_FALSE(content_.mirror_requests[0].range.has_value());
}

// Shows raw and percent-encoded traversal is 400 on every route, including /blobs/ URLs.
TEST_F(RouterTest, TraversalIs400) {
  for (std::string_view target : {"/v2/../etc/passwd", "/v2/x/%2e%2e/manifests/latest", "/%2E%2E/metrics",
                                  "/a/..", "/x%2fy", "/x%5c..", "/blobs/https://ghcr.io/a/../b",
                                  "/blobs/https://ghcr.io/a/%2e%2e/b", "/blobs/https://ghcr.io/a%2fb"}) {
    EXPECT_EQ(get(target).message.result(), http::status::bad_request) << target;
  }
  EXPECT_TRUE(path_is_traversal("/a/%2e/b"));
  EXPECT_TRUE(path_is_traversal("/a/%00"));
  EXPECT_TRUE(path_is_traversal("/a/%4"));
  EXPECT_FALSE(path_is_traversal("/a/.b/c..d/"));
  EXPECT_TRUE(content_.mirror_requests.empty());
  EXPECT_TRUE(content_.file_requests.empty());
}

// Shows /blobs/ only reaches allowed hosts (403 otherwise) and keeps the query for the fetch but not the key.
TEST_F(RouterTest, BlobsUrlAllowListAndQuery) {
  const Response denied = get("/blobs/https://evil.example.com/x");
  EXPECT_EQ(denied.message.result(), http::status::forbidden);
  EXPECT_EQ(error_code(denied), "DENIED");
  EXPECT_EQ(get("/blobs/http://127.0.0.1:5001/x").message.result(), http::status::forbidden);

  const Response served =
      get("/blobs/http://127.0.0.1:5000/data/file.bin?sig=SECRET", {{"Range", "bytes=0-9"}});
  EXPECT_EQ(served.message.result(), http::status::ok);
  EXPECT_EQ(served.route, "file");
  ASSERT_EQ(content_.file_requests.size(), 1u);
  const FileRequest& request = content_.file_requests[0];
  EXPECT_EQ(request.url.url(), "http://127.0.0.1:5000/data/file.bin?sig=SECRET");
  EXPECT_EQ(request.url.content_id().key_string().find("SECRET"), std::string::npos);
  EXPECT_EQ(request.range->last, 9u);

  allowed_.learn_redirect_host("storage.example.net");
  EXPECT_EQ(get("/blobs/https://storage.example.net/b").message.result(), http::status::ok);
}

// Shows a mirror request for a registry that is not allowed is 403.
TEST_F(RouterTest, MirrorForUnknownRegistryIs403) {
  const Response response = get("/v2/x/manifests/latest?ns=quay.io");
  EXPECT_EQ(response.message.result(), http::status::forbidden);
  EXPECT_TRUE(content_.mirror_requests.empty());
}

// Shows health, readiness (503 listing pending conditions until met) and metrics.
TEST_F(RouterTest, HealthReadinessMetrics) {
  EXPECT_EQ(get("/healthz").message.result(), http::status::ok);
  readiness_.require("cache");
  Response not_ready = get("/readyz");
  EXPECT_EQ(not_ready.message.result(), http::status::service_unavailable);
  EXPECT_EQ(nlohmann::json::parse(not_ready.message.body())["pending"][0], "cache");
  readiness_.set("cache", true);
  EXPECT_EQ(get("/readyz").message.result(), http::status::ok);
  metrics_.count_request("blob", 200);
  const Response metrics = get("/metrics");
  EXPECT_EQ(metrics.message[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(metrics.message.body().find("peerd_requests_total{route=\"blob\",status=\"200\"} 1"),
            std::string::npos);
}

// Shows other methods are 405 with Allow, unknown paths 404, and absolute-form targets 400.
TEST_F(RouterTest, MethodsUnknownPathsAndTargetForms) {
  const Response post = get("/v2/", {}, http::verb::post);
  EXPECT_EQ(post.message.result(), http::status::method_not_allowed);
  EXPECT_EQ(post.message[http::field::allow], "GET, HEAD");
  EXPECT_EQ(get("/nope").message.result(), http::status::not_found);
  EXPECT_EQ(get("/v2/x/tags/list").message.result(), http::status::not_found);
  EXPECT_EQ(get("http://127.0.0.1/v2/").message.result(), http::status::bad_request);
}

// Shows a peer's headers reach the content service as hints, and a malformed peer size is a 400.
TEST_F(RouterTest, PeerHintsAreParsedAndValidated) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  const std::string target = "/v2/library/alpine/blobs/" + digest + "?ns=docker.io";
  get(target, {{"X-Peerd-Peer", "abc123"},
               {"X-Peerd-Content-Length", "4096"},
               {"X-Peerd-Fetch-Through", "1"},
               {"Range", "bytes=0-1023"}});
  ASSERT_EQ(content_.mirror_requests.size(), 1u);
  const MirrorRequest& request = content_.mirror_requests[0];
  EXPECT_TRUE(request.from_peer);
  EXPECT_EQ(request.peer.node_id_hex, "abc123");
  EXPECT_EQ(request.peer.content_bytes, 4096u);
  EXPECT_TRUE(request.peer.fetch_through);
  for (const char* bad : {"", "-1", "0", "12x", "99999999999999999999999"}) {
    const Response answer = get(target, {{"X-Peerd-Peer", "1"}, {"X-Peerd-Content-Length", bad}});
    EXPECT_EQ(answer.message.result(), http::status::bad_request) << bad;
  }
  EXPECT_EQ(content_.mirror_requests.size(), 1u);
  // Manifests by digest are fetched as chunks by peers too: their Range reaches the service.
  get("/v2/library/alpine/manifests/" + digest + "?ns=docker.io",
      {{"X-Peerd-Peer", "1"}, {"X-Peerd-Content-Length", "500"}, {"Range", "bytes=0-499"}});
  ASSERT_EQ(content_.mirror_requests.size(), 2u);
  ASSERT_TRUE(content_.mirror_requests[1].range.has_value());
  EXPECT_EQ(content_.mirror_requests[1].range->last, 499u);
  content_.mirror_requests.pop_back();
  // Hints from a client that is not a peer are ignored.
  get(target, {{"X-Peerd-Content-Length", "4096"}});
  ASSERT_EQ(content_.mirror_requests.size(), 2u);
  EXPECT_FALSE(content_.mirror_requests[1].peer.content_bytes.has_value());
}

// Shows content_response sets 206 headers for a range and 200 headers for whole content.
TEST(ContentResponse, RangeAndWholeHeaders) {
  const ContentHead head{1000, "application/vnd.oci.image.layer.v1.tar+gzip",
                         "sha256:" + std::string(64, 'c')};
  const Response partial = content_response(head, content::ByteRange{100, 50}, nullptr, ByteSource::kCache);
  EXPECT_EQ(partial.message.result(), http::status::partial_content);
  EXPECT_EQ(partial.message[http::field::content_range], "bytes 100-149/1000");
  EXPECT_EQ(*partial.body_bytes, 50u);
  EXPECT_EQ(partial.message["Docker-Content-Digest"], head.digest);
  const Response whole = content_response(head, std::nullopt, nullptr, ByteSource::kPeer);
  EXPECT_EQ(whole.message.result(), http::status::ok);
  EXPECT_EQ(*whole.body_bytes, 1000u);
  const Response unsatisfiable = range_not_satisfiable(1000);
  EXPECT_EQ(unsatisfiable.message.result(), http::status::range_not_satisfiable);
  EXPECT_EQ(unsatisfiable.message[http::field::content_range], "bytes */1000");
}

}  // namespace
}  // namespace peerd::daemon
