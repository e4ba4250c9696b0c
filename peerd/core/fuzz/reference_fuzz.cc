// libFuzzer target for everything that parses names and request targets from untrusted input: references,
// hosts, registry API paths with their ns query, and /blobs/ URLs. Checked: no crash; accepted values satisfy
// the grammar they were checked against; printing an accepted value and parsing it again gives it back.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "peerd/core/content/reference.h"
#include "peerd/core/content/request_path.h"

#define FUZZ_CHECK(condition)                                      \
  do {                                                             \
    if (!(condition)) {                                            \
      std::fprintf(stderr, "fuzz check failed: %s\n", #condition); \
      std::abort();                                                \
    }                                                              \
  } while (false)

namespace {

using namespace peerd::content;

bool has_dot_segment(std::string_view path) {
  return path == "." || path == ".." || path.starts_with("./") || path.starts_with("../") ||
         path.find("/./") != std::string_view::npos || path.find("/../") != std::string_view::npos ||
         path.ends_with("/.") || path.ends_with("/..");
}

void check_reference(std::string_view text) {
  auto reference = parse_reference(text);
  if (!reference.ok()) {
    FUZZ_CHECK(!describe(reference.error()).empty());
    return;
  }
  FUZZ_CHECK(!host_error(reference->domain).has_value());
  FUZZ_CHECK(!repository_path_error(reference->path).has_value());
  FUZZ_CHECK(reference->name().size() <= kNameBytesMax);
  FUZZ_CHECK(reference->domain != kDockerHubLegacyDomain);
  FUZZ_CHECK(!reference->tag.empty() || reference->digest.has_value());
  if (!reference->tag.empty()) FUZZ_CHECK(!tag_error(reference->tag).has_value());
  if (reference->domain == kDockerHubDomain) FUZZ_CHECK(reference->path.find('/') != std::string::npos);
  const std::string printed = reference->to_string();
  FUZZ_CHECK(printed.size() <= kReferenceBytesMax);
  auto again = parse_reference(printed);
  FUZZ_CHECK(again.ok() && *again == *reference);
}

void check_mirror_target(std::string_view target) {
  const RequestTarget parts = split_target(target);
  auto route = parse_mirror_path(parts.path);
  if (!route.ok()) {
    FUZZ_CHECK(!describe(route.error()).empty());
    return;
  }
  FUZZ_CHECK(parts.path.find('%') == std::string_view::npos);
  FUZZ_CHECK(!has_dot_segment(parts.path));
  if (route->kind == MirrorRouteKind::kApiBase) {
    FUZZ_CHECK(route->name.empty() && route->tag.empty() && !route->digest);
    return;
  }
  FUZZ_CHECK(!repository_path_error(route->name).has_value());
  FUZZ_CHECK(route->tag.empty() != !route->digest.has_value());
  if (route->kind == MirrorRouteKind::kBlob) FUZZ_CHECK(route->digest.has_value());
  const std::string endpoint = route->kind == MirrorRouteKind::kBlob ? "/blobs/" : "/manifests/";
  const std::string rebuilt = "/v2/" + route->name + endpoint + route->reference();
  FUZZ_CHECK(rebuilt == parts.path);
  auto again = parse_mirror_path(rebuilt);
  FUZZ_CHECK(again.ok() && *again == *route);

  auto ns = query_parameter(parts.query, "ns");
  if (!ns.ok()) {
    FUZZ_CHECK(!describe(ns.error()).empty());
    return;
  }
  auto upstream = resolve_mirror_repository(route->name, ns->value_or(""));
  if (!upstream.ok()) return;
  FUZZ_CHECK(upstream->name().size() <= kNameBytesMax);
  FUZZ_CHECK(!host_error(upstream->domain).has_value());
  FUZZ_CHECK(!repository_path_error(upstream->path).has_value());
  FUZZ_CHECK(upstream->registry_host == registry_host_for(upstream->domain));
}

void check_blob_target(std::string_view target) {
  auto url = parse_blob_path(target);
  if (!url.ok()) {
    FUZZ_CHECK(!describe(url.error()).empty());
    return;
  }
  FUZZ_CHECK(url->scheme == "http" || url->scheme == "https");
  FUZZ_CHECK(!url->host.empty() && url->port != 0);
  FUZZ_CHECK(url->path.starts_with("/"));
  FUZZ_CHECK(!has_dot_segment(url->path));
  const std::string canonical = url->url_without_query();
  FUZZ_CHECK(canonical.find('?') == std::string::npos && canonical.find('#') == std::string::npos);
  FUZZ_CHECK(url->host.find('@') == std::string::npos);
  FUZZ_CHECK(canonical.starts_with(url->scheme + "://" + url->host) && canonical.ends_with(url->path));
  FUZZ_CHECK(url->content_id().key_string() == "file:" + canonical);
  auto again = parse_blob_path("/blobs/" + url->url());
  FUZZ_CHECK(again.ok() && *again == *url);
}

void check_host(std::string_view text) {
  auto host = parse_host(text);
  if (!host.ok()) return;
  FUZZ_CHECK(!host->host.empty());
  FUZZ_CHECK(!host_error(host->host).has_value());
  if (host->port) FUZZ_CHECK(*host->port != 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_reference(text);
  check_host(text);
  check_mirror_target(text);
  check_blob_target(text);
  // Let short inputs reach the deep checks without the fuzzer having to find the prefixes.
  if (!text.starts_with("/")) {
    check_mirror_target("/v2/" + std::string(text));
    check_blob_target("/blobs/" + std::string(text));
    check_blob_target("/blobs/https://" + std::string(text));
  }
  return 0;
}
