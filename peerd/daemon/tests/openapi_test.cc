// Keeps peerd/api/openapi.yaml in sync with the router: every documented path answers (not "no such route"),
// every route the router serves is documented, and every peer header the daemon uses is described.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "peerd/daemon/router.h"

namespace peerd::daemon {
namespace {

// The keys directly under "paths:" (two-space indented lines ending in ':').
std::set<std::string> documented_paths(const std::string& yaml) {
  std::set<std::string> paths;
  std::istringstream lines(yaml);
  std::string line;
  bool in_paths = false;
  while (std::getline(lines, line)) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (in_paths && !line.empty() && line[0] != ' ') break;
    if (in_paths && line.size() > 3 && line.starts_with("  /") && line[3] != ' ' && line.back() == ':') {
      paths.insert(line.substr(2, line.size() - 3));
    }
  }
  return paths;
}

class Recording final : public ContentService {
 public:
  void serve_mirror(MirrorRequest, Respond respond) override { respond(text_response(http::status::ok, "")); }
  void serve_file(FileRequest, Respond respond) override { respond(text_response(http::status::ok, "")); }
};

// Shows each documented path template, filled with a valid example, reaches a handler, and that the set of
// documented paths is exactly the router's (a new route without documentation fails here).
TEST(OpenApi, DocumentedPathsMatchTheRouter) {
  std::ifstream file(std::string(PEERD_SOURCE_DIR) + "/peerd/api/openapi.yaml");
  ASSERT_TRUE(file) << "peerd/api/openapi.yaml missing";
  std::stringstream text;
  text << file.rdbuf();
  const std::string yaml = text.str();

  const std::string digest = "sha256:" + std::string(64, 'e');
  const std::map<std::string, std::string> examples = {
      {"/v2/", "/v2/"},
      {"/v2/{name}/manifests/{reference}", "/v2/team/app/manifests/v1?ns=ghcr.io"},
      {"/v2/{name}/blobs/{digest}", "/v2/team/app/blobs/" + digest + "?ns=ghcr.io"},
      {"/blobs/{url}", "/blobs/https://ghcr.io/some/file.bin"},
      {"/metrics", "/metrics"},
      {"/healthz", "/healthz"},
      {"/readyz", "/readyz"},
  };
  std::set<std::string> routed;
  for (const auto& [path, target] : examples) routed.insert(path);
  EXPECT_EQ(documented_paths(yaml), routed);

  Recording content;
  AllowedUpstreams allowed({}, {*parse_registry_host("https://ghcr.io")});
  MetricsRegistry registry;
  Readiness readiness;
  Router router(content, allowed, registry, readiness, Logger(LogLevel::kError, [](std::string_view) {}));
  for (const auto& [path, target] : examples) {
    Request request;
    request.message.method(http::verb::get);
    request.message.target(target);
    request.message.version(11);
    std::optional<Response> answer;
    router.handle(request, [&](Response response) { answer = std::move(response); });
    ASSERT_TRUE(answer) << path;
    EXPECT_EQ(answer->message.result(), http::status::ok) << path << " -> " << answer->message.body();
  }
  for (std::string_view header : {kPeerRequestHeader, kPeerContentLengthHeader, kPeerFetchThroughHeader}) {
    EXPECT_NE(yaml.find(header), std::string::npos) << header << " is not documented";
  }
}

}  // namespace
}  // namespace peerd::daemon
