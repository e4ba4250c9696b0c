// Tests of OCI references (docker/containerd normalisation and the distribution-spec grammar), containerd's
// mirror ns resolution, and the strict parsers of the request targets the daemon serves (/v2/... and
// /blobs/...).
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "peerd/core/content/reference.h"
#include "peerd/core/content/request_path.h"

namespace peerd::content {
namespace {

const std::string kHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const std::string kDigest = "sha256:" + kHex;

Digest digest() {
  return Digest::parse(kDigest).value();
}

struct GoodReference {
  std::string text;
  std::string domain;
  std::string path;
  std::string tag;
  bool has_digest = false;
};

// A table of valid references: each normalises like docker/containerd and prints a text that parses back to
// the same reference.
TEST(Reference, NormalisesLikeDocker) {
  const std::vector<GoodReference> cases = {
      {"ubuntu", "docker.io", "library/ubuntu", "latest"},
      {"ubuntu:22.04", "docker.io", "library/ubuntu", "22.04"},
      {"library/ubuntu", "docker.io", "library/ubuntu", "latest"},
      {"docker.io/ubuntu", "docker.io", "library/ubuntu", "latest"},
      {"index.docker.io/ubuntu", "docker.io", "library/ubuntu", "latest"},
      {"index.docker.io/library/ubuntu:jammy", "docker.io", "library/ubuntu", "jammy"},
      {"docker.io/library/ubuntu:latest", "docker.io", "library/ubuntu", "latest"},
      {"registry-1.docker.io/library/ubuntu", "registry-1.docker.io", "library/ubuntu", "latest"},
      {"foo/bar", "docker.io", "foo/bar", "latest"},
      {"foo/bar/baz:1", "docker.io", "foo/bar/baz", "1"},
      {"a", "docker.io", "library/a", "latest"},
      {"localhost", "docker.io", "library/localhost", "latest"},
      {"localhost:5000", "docker.io", "library/localhost", "5000"},  // docker reads ":5000" as a tag here
      {"ghcr.io", "docker.io", "library/ghcr.io", "latest"},
      {"ghcr.io/org/app:v1.2.3", "ghcr.io", "org/app", "v1.2.3"},
      {"localhost/foo", "localhost", "foo", "latest"},
      {"localhost:5000/foo/bar:tag", "localhost:5000", "foo/bar", "tag"},
      {"127.0.0.1:5000/foo", "127.0.0.1:5000", "foo", "latest"},
      {"10.0.0.1/foo", "10.0.0.1", "foo", "latest"},
      {"[::1]:5000/foo", "[::1]:5000", "foo", "latest"},
      {"[fd00::1]/foo:x", "[fd00::1]", "foo", "x"},
      {"[FD00:0:0:0:0:0:0:1]:65535/foo", "[FD00:0:0:0:0:0:0:1]:65535", "foo", "latest"},
      {"Foo/bar", "Foo", "bar", "latest"},  // an upper-case first component is a host, as in docker
      {"my-registry.local:1/x", "my-registry.local:1", "x", "latest"},
      {"example.com/a.b/c_d/e__f/g-h/i--j/k0", "example.com", "a.b/c_d/e__f/g-h/i--j/k0", "latest"},
      {"example.com/a:TAG_1.x-y", "example.com", "a", "TAG_1.x-y"},
      {"example.com/a:_", "example.com", "a", "_"},
      {"ubuntu@" + kDigest, "docker.io", "library/ubuntu", "", true},
      {"ubuntu:22.04@" + kDigest, "docker.io", "library/ubuntu", "22.04", true},
      {"localhost:5000/foo@" + kDigest, "localhost:5000", "foo", "", true},
      {"example.com/a:" + std::string(128, 't'), "example.com", "a", std::string(128, 't')},
      {"example.com/" + std::string(243, 'p'), "example.com", std::string(243, 'p'), "latest"},  // name = 255
      {"x/" + std::string(243, 'p'), "docker.io", "x/" + std::string(243, 'p'), "latest"},       // name = 255
  };
  for (const auto& good : cases) {
    auto reference = parse_reference(good.text);
    ASSERT_TRUE(reference.ok()) << good.text << ": " << describe(reference.error());
    EXPECT_EQ(reference->domain, good.domain) << good.text;
    EXPECT_EQ(reference->path, good.path) << good.text;
    EXPECT_EQ(reference->tag, good.tag) << good.text;
    EXPECT_EQ(reference->digest.has_value(), good.has_digest) << good.text;
    if (good.has_digest) {
      EXPECT_EQ(*reference->digest, digest());
    }
    auto again = parse_reference(reference->to_string());
    ASSERT_TRUE(again.ok()) << reference->to_string();
    EXPECT_EQ(*again, *reference) << reference->to_string();
  }
}

// The accessors give the fully qualified name, the host to contact, the manifest reference and the tag key.
TEST(Reference, Accessors) {
  auto hub = parse_reference("ubuntu").value();
  EXPECT_EQ(hub.name(), "docker.io/library/ubuntu");
  EXPECT_EQ(hub.to_string(), "docker.io/library/ubuntu:latest");
  EXPECT_EQ(hub.registry_host(), "registry-1.docker.io");
  EXPECT_EQ(hub.manifest_reference(), "latest");
  EXPECT_EQ(hub.tag_key(), "docker.io/library/ubuntu:latest");

  auto pinned = parse_reference("ghcr.io/org/app:v1@" + kDigest).value();
  EXPECT_EQ(pinned.registry_host(), "ghcr.io");
  EXPECT_EQ(pinned.manifest_reference(), kDigest);  // the digest wins over the tag
  EXPECT_EQ(pinned.to_string(), "ghcr.io/org/app:v1@" + kDigest);

  auto by_digest = parse_reference("localhost:5000/app@" + kDigest).value();
  EXPECT_EQ(by_digest.to_string(), "localhost:5000/app@" + kDigest);
  EXPECT_EQ(by_digest.registry_host(), "localhost:5000");

  EXPECT_EQ(registry_host_for("docker.io"), "registry-1.docker.io");
  EXPECT_EQ(registry_host_for("quay.io"), "quay.io");
}

struct BadReference {
  std::string text;
  ReferenceError error;
};

// A table of invalid references: each is refused with the expected reason.
TEST(Reference, RejectsWithReason) {
  const std::vector<BadReference> cases = {
      {"", ReferenceError::kEmpty},
      {std::string(kReferenceBytesMax + 1, 'a'), ReferenceError::kTooLong},
      {kHex, ReferenceError::kHexIdentifier},
      {"Ubuntu", ReferenceError::kUpperCase},
      {"foo/Bar", ReferenceError::kUpperCase},
      {"ghcr.io/Org/app", ReferenceError::kUpperCase},
      {"ubuntu:", ReferenceError::kBadTag},
      {"ubuntu:-x", ReferenceError::kBadTag},
      {"ubuntu:.x", ReferenceError::kBadTag},
      {"ubuntu:a+b", ReferenceError::kBadTag},
      {"ubuntu:" + std::string(129, 't'), ReferenceError::kBadTag},
      {"ubuntu@sha256:abc", ReferenceError::kBadDigest},
      {"ubuntu@sha512:" + kHex + kHex, ReferenceError::kBadDigest},
      {"ubuntu@", ReferenceError::kBadDigest},
      {"ubuntu@" + kDigest + "@" + kDigest, ReferenceError::kBadDigest},
      {"ubuntu@SHA256:" + kHex, ReferenceError::kBadDigest},
      {"foo//bar", ReferenceError::kEmptyComponent},
      {"/foo", ReferenceError::kEmptyComponent},
      {"foo/", ReferenceError::kEmptyComponent},
      {"ghcr.io/", ReferenceError::kEmptyComponent},
      {":latest", ReferenceError::kEmptyComponent},
      {"@" + kDigest, ReferenceError::kEmptyComponent},
      {"ghcr.io/foo/../bar", ReferenceError::kBadComponent},
      {"ghcr.io/./foo", ReferenceError::kBadComponent},
      {"ghcr.io/..", ReferenceError::kBadComponent},
      {"foo..bar", ReferenceError::kBadComponent},
      {"foo._bar", ReferenceError::kBadComponent},
      {"foo___bar", ReferenceError::kBadComponent},
      {"foo-", ReferenceError::kBadComponent},
      {"-foo", ReferenceError::kBadComponent},
      {"_foo", ReferenceError::kBadComponent},
      {"foo.", ReferenceError::kBadComponent},
      {".foo", ReferenceError::kBadComponent},
      {"foo bar", ReferenceError::kBadComponent},
      {"foo\tbar", ReferenceError::kBadComponent},
      {std::string("foo\0bar", 7), ReferenceError::kBadComponent},
      {"ubuntu:1.0:2.0", ReferenceError::kBadComponent},
      {"ghcr.io/foo%2fbar", ReferenceError::kBadComponent},
      {"ghcr.io:0/foo", ReferenceError::kBadPort},
      {"ghcr.io:65536/foo", ReferenceError::kBadPort},
      {"ghcr.io:123456/foo", ReferenceError::kBadPort},
      {"ghcr.io:/foo", ReferenceError::kBadPort},
      {"ghcr.io:+80/foo", ReferenceError::kBadPort},
      {"ghcr.io:80:80/foo", ReferenceError::kBadPort},
      {"ubuntu:ta/g", ReferenceError::kBadPort},  // "ubuntu:ta" is read as a host with port "ta"
      {"[::1]:/foo", ReferenceError::kBadPort},
      {"-ghcr.io/foo", ReferenceError::kBadHost},
      {"ghcr-.io/foo", ReferenceError::kBadHost},
      {"ghcr..io/foo", ReferenceError::kBadHost},
      {"ghcr.io./foo", ReferenceError::kBadHost},
      {"gh_cr.io/foo", ReferenceError::kBadHost},
      {"300.1.1.1/foo", ReferenceError::kBadHost},
      {"1.2.3:5000/foo", ReferenceError::kBadHost},
      {"[::1/foo", ReferenceError::kBadHost},
      {"[zz::1]:5000/foo", ReferenceError::kBadHost},
      {"[::1]x/foo", ReferenceError::kBadHost},
      {"[]:5000/foo", ReferenceError::kBadHost},
      {"[1:2:3:4:5:6:7:8:9]/foo", ReferenceError::kBadHost},
      {"[1::2::3]/foo", ReferenceError::kBadHost},
      {std::string(64, 'a') + ".com/foo", ReferenceError::kBadHost},
      {"example.com/" + std::string(244, 'p'), ReferenceError::kNameTooLong},  // name = 256
      {std::string(246, 'p'), ReferenceError::kNameTooLong},  // docker.io/library/ makes it 264
      {"example.com/" + std::string(256, 'p'), ReferenceError::kNameTooLong},
  };
  for (const auto& bad : cases) {
    auto reference = parse_reference(bad.text);
    ASSERT_FALSE(reference.ok()) << bad.text << " parsed as " << reference->to_string();
    EXPECT_EQ(reference.error(), bad.error) << bad.text << ": " << describe(reference.error());
  }
}

// Hosts split into name and port; malformed ones are refused as bad host or bad port.
TEST(Reference, ParsesHosts) {
  auto plain = parse_host("ghcr.io");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->host, "ghcr.io");
  EXPECT_FALSE(plain->port.has_value());
  auto with_port = parse_host("localhost:5000");
  ASSERT_TRUE(with_port.ok());
  EXPECT_EQ(with_port->host, "localhost");
  EXPECT_EQ(with_port->port, 5000);
  auto v6 = parse_host("[fd00::1]:443");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "[fd00::1]");
  EXPECT_EQ(v6->port, 443);
  EXPECT_EQ(parse_host("10.1.2.3:1")->port, 1);
  EXPECT_EQ(parse_host("host:65535")->port, 65535);
  EXPECT_FALSE(host_error("UPPER.example.com").has_value());
  EXPECT_FALSE(host_error("a").has_value());
  EXPECT_FALSE(host_error("1a.2b").has_value());
  for (const char* bad : {"", ":80", "a_b.com", "a..b", ".a", "a.", "[::1]80", "[::1", "::1", "1.2.3.256",
                          "a/b", "a b", "[fe80::1%eth0]"}) {
    EXPECT_EQ(host_error(bad), ReferenceError::kBadHost) << bad;
  }
  for (const char* bad : {"a:", "a:0", "a:65536", "a:99999", "a:1a", "[::1]:", "[::1]:-1", "a:00000"}) {
    EXPECT_EQ(host_error(bad), ReferenceError::kBadPort) << bad;
  }
}

// Tags follow [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; repository paths follow the distribution-spec grammar.
TEST(Reference, ValidatesTagsAndPaths) {
  for (const std::string& good : std::vector<std::string>{"latest", "_", "A", "1.0-rc_1", "v1.2.3",
                                                          "x..y--z__", std::string(128, 'a')}) {
    EXPECT_FALSE(tag_error(good).has_value()) << good;
  }
  for (const std::string& bad : std::vector<std::string>{"", ".", "-a", ".a", "a:b", "a/b", "a b", "a+b",
                                                         "a@b", std::string(129, 'a')}) {
    EXPECT_EQ(tag_error(bad), ReferenceError::kBadTag) << bad;
  }
  for (const std::string good :
       {"a", "a/b", "a.b", "a_b", "a__b", "a-b", "a---b", "0", "a.b-c_d__e/f", "a1/b2/c3"}) {
    EXPECT_FALSE(repository_path_error(good).has_value()) << good;
  }
  EXPECT_FALSE(repository_path_error(std::string(255, 'a')).has_value());
  EXPECT_EQ(repository_path_error(std::string(256, 'a')), ReferenceError::kNameTooLong);
  EXPECT_EQ(repository_path_error(""), ReferenceError::kEmptyComponent);
  EXPECT_EQ(repository_path_error("a//b"), ReferenceError::kEmptyComponent);
  EXPECT_EQ(repository_path_error("/a"), ReferenceError::kEmptyComponent);
  EXPECT_EQ(repository_path_error("a/"), ReferenceError::kEmptyComponent);
  EXPECT_EQ(repository_path_error("A"), ReferenceError::kUpperCase);
  for (const char* bad : {"..", ".", "a/../b", "a..b", "a._b", "a___b", "a_-b", "-a", "a-", "a_", ".a", "a.",
                          "a b", "a:b", "a@b", "a\\b", "é"}) {
    EXPECT_EQ(repository_path_error(bad), ReferenceError::kBadComponent) << bad;
  }
}

struct MirrorCase {
  std::string path;
  std::string ns;
  std::string domain;
  std::string registry_host;
  std::string upstream_path;
};

// containerd's ?ns= names the upstream registry; docker.io maps to registry-1.docker.io and gains library/.
TEST(Reference, ResolvesMirrorNamespace) {
  const std::vector<MirrorCase> cases = {
      {"library/ubuntu", "docker.io", "docker.io", "registry-1.docker.io", "library/ubuntu"},
      {"ubuntu", "docker.io", "docker.io", "registry-1.docker.io", "library/ubuntu"},
      {"ubuntu", "", "docker.io", "registry-1.docker.io", "library/ubuntu"},  // dockerd sends no ns
      {"library/ubuntu", "index.docker.io", "docker.io", "registry-1.docker.io", "library/ubuntu"},
      {"org/app", "ghcr.io", "ghcr.io", "ghcr.io", "org/app"},
      {"app", "ghcr.io", "ghcr.io", "ghcr.io", "app"},
      {"foo", "localhost:5000", "localhost:5000", "localhost:5000", "foo"},
      {"foo", "[fd00::1]:5000", "[fd00::1]:5000", "[fd00::1]:5000", "foo"},
      {"a/b/c", "mcr.microsoft.com", "mcr.microsoft.com", "mcr.microsoft.com", "a/b/c"},
  };
  for (const auto& item : cases) {
    auto upstream = resolve_mirror_repository(item.path, item.ns);
    ASSERT_TRUE(upstream.ok()) << item.path << " ns=" << item.ns << ": " << describe(upstream.error());
    EXPECT_EQ(upstream->domain, item.domain);
    EXPECT_EQ(upstream->registry_host, item.registry_host);
    EXPECT_EQ(upstream->path, item.upstream_path);
    EXPECT_EQ(upstream->name(), item.domain + "/" + item.upstream_path);
  }
  EXPECT_EQ(resolve_mirror_repository("Foo", "ghcr.io").error(), ReferenceError::kUpperCase);
  EXPECT_EQ(resolve_mirror_repository("../etc", "ghcr.io").error(), ReferenceError::kBadComponent);
  EXPECT_EQ(resolve_mirror_repository("", "ghcr.io").error(), ReferenceError::kEmptyComponent);
  EXPECT_EQ(resolve_mirror_repository("foo", "ghcr.io/x").error(), ReferenceError::kBadHost);
  EXPECT_EQ(resolve_mirror_repository("foo", "ghcr.io ").error(), ReferenceError::kBadHost);
  EXPECT_EQ(resolve_mirror_repository("foo", "https://ghcr.io").error(), ReferenceError::kBadPort);
  EXPECT_EQ(resolve_mirror_repository("foo", "ghcr.io:0").error(), ReferenceError::kBadPort);
  EXPECT_EQ(resolve_mirror_repository(std::string(250, 'a'), "ghcr.io").error(),
            ReferenceError::kNameTooLong);
  EXPECT_EQ(resolve_mirror_repository(std::string(240, 'a'), "").error(), ReferenceError::kNameTooLong);
}

// Request targets split at the first '?', and query parameters are form-decoded strictly.
TEST(RequestPath, ReadsQueryParameters) {
  auto target = split_target("/v2/foo/manifests/latest?ns=docker.io");
  EXPECT_EQ(target.path, "/v2/foo/manifests/latest");
  EXPECT_EQ(target.query, "ns=docker.io");
  EXPECT_EQ(split_target("/v2/").query, "");
  EXPECT_EQ(split_target("/a?b?c").query, "b?c");

  struct Good {
    std::string query;
    std::optional<std::string> value;
  };
  for (const auto& good : std::vector<Good>{
           {"ns=docker.io", "docker.io"},
           {"ns=localhost%3A5000", "localhost:5000"},  // what containerd actually sends
           {"ns=localhost%3a5000", "localhost:5000"},
           {"foo=1&ns=ghcr.io&bar", "ghcr.io"},
           {"&&ns=x&&", "x"},
           {"", std::nullopt},
           {"foo=1", std::nullopt},
           {"nsx=1&xns=2", std::nullopt},
           {"ns", ""},
           {"ns=", ""},
           {"n%73=x", "x"},
           {"ns=a+b", "a b"},
           {"ns=a=b", "a=b"},
       }) {
    auto value = query_parameter(good.query, "ns");
    ASSERT_TRUE(value.ok()) << good.query << ": " << describe(value.error());
    EXPECT_EQ(*value, good.value) << good.query;
  }
  struct Bad {
    std::string query;
    QueryError error;
  };
  for (const auto& bad : std::vector<Bad>{
           {"ns=a&ns=b", QueryError::kDuplicate},
           {"ns=a&n%73=a", QueryError::kDuplicate},
           {"ns=%zz", QueryError::kBadEscape},
           {"ns=%4", QueryError::kBadEscape},
           {"ns=%", QueryError::kBadEscape},
           {"x=%zz&ns=ok", QueryError::kBadEscape},
           {"ns=%00", QueryError::kBadCharacter},
           {"ns=%0a", QueryError::kBadCharacter},
           {"ns=%7F", QueryError::kBadCharacter},
           {"ns=a b", QueryError::kBadCharacter},
           {"ns=a#b", QueryError::kBadCharacter},
           {std::string("ns=a\0b", 6), QueryError::kBadCharacter},
           {"ns=\xc3\xa9", QueryError::kBadCharacter},
           {"ns=" + std::string(kQueryBytesMax, 'a'), QueryError::kTooLong},
       }) {
    auto value = query_parameter(bad.query, "ns");
    ASSERT_FALSE(value.ok()) << bad.query;
    EXPECT_EQ(value.error(), bad.error) << bad.query << ": " << describe(value.error());
  }
}

// Valid registry API paths map to typed routes; the name may itself contain "manifests" or "blobs".
TEST(RequestPath, RoutesMirrorPaths) {
  EXPECT_EQ(parse_mirror_path("/v2/").value(), MirrorRoute{});
  EXPECT_EQ(parse_mirror_path("/v2").value(), MirrorRoute{});

  auto by_tag = parse_mirror_path("/v2/library/ubuntu/manifests/latest");
  ASSERT_TRUE(by_tag.ok());
  EXPECT_EQ(by_tag->kind, MirrorRouteKind::kManifest);
  EXPECT_EQ(by_tag->name, "library/ubuntu");
  EXPECT_EQ(by_tag->tag, "latest");
  EXPECT_FALSE(by_tag->digest.has_value());
  EXPECT_EQ(by_tag->reference(), "latest");

  auto by_digest = parse_mirror_path("/v2/library/ubuntu/manifests/" + kDigest);
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(by_digest->kind, MirrorRouteKind::kManifest);
  EXPECT_TRUE(by_digest->tag.empty());
  EXPECT_EQ(by_digest->digest, digest());
  EXPECT_EQ(by_digest->reference(), kDigest);

  auto blob = parse_mirror_path("/v2/org/app/blobs/" + kDigest);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->kind, MirrorRouteKind::kBlob);
  EXPECT_EQ(blob->name, "org/app");
  EXPECT_EQ(blob->digest, digest());

  auto nested = parse_mirror_path("/v2/foo/manifests/bar/manifests/v1");
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->name, "foo/manifests/bar");
  EXPECT_EQ(nested->tag, "v1");
  auto blobs_name = parse_mirror_path("/v2/foo/blobs/manifests/latest");
  ASSERT_TRUE(blobs_name.ok());
  EXPECT_EQ(blobs_name->kind, MirrorRouteKind::kManifest);
  EXPECT_EQ(blobs_name->name, "foo/blobs");

  EXPECT_TRUE(parse_mirror_path("/v2/a/manifests/" + std::string(128, 't')).ok());
  EXPECT_TRUE(parse_mirror_path("/v2/" + std::string(255, 'a') + "/manifests/x").ok());
}

struct BadMirrorPath {
  std::string path;
  MirrorPathError error;
};

// A table of hostile or malformed registry paths: each is refused with the expected reason.
TEST(RequestPath, RejectsBadMirrorPaths) {
  const std::vector<BadMirrorPath> cases = {
      {"", MirrorPathError::kNotApiV2},
      {"/", MirrorPathError::kNotApiV2},
      {"/v1/foo/manifests/x", MirrorPathError::kNotApiV2},
      {"/v2foo/manifests/x", MirrorPathError::kNotApiV2},
      {"v2/foo/manifests/x", MirrorPathError::kNotApiV2},
      {"/V2/foo/manifests/x", MirrorPathError::kNotApiV2},
      {"//v2/foo/manifests/x", MirrorPathError::kNotApiV2},
      {"/v2/../etc/passwd", MirrorPathError::kTraversal},
      {"/v2/foo/../manifests/x", MirrorPathError::kTraversal},
      {"/v2/./foo/manifests/x", MirrorPathError::kTraversal},
      {"/v2/foo/manifests/..", MirrorPathError::kTraversal},
      {"/v2/foo/manifests/.", MirrorPathError::kTraversal},
      {"/v2/..", MirrorPathError::kTraversal},
      {"/v2/%2e%2e/foo/manifests/x", MirrorPathError::kPercentEncoded},
      {"/v2/%2E%2E/foo/manifests/x", MirrorPathError::kPercentEncoded},
      {"/v2/foo%2fbar/manifests/x", MirrorPathError::kPercentEncoded},
      {"/v2/foo/manifests/sha256%3A" + kHex, MirrorPathError::kPercentEncoded},
      {"/v2/foo/manifests/%00", MirrorPathError::kPercentEncoded},
      {std::string("/v2/foo\0/manifests/x", 20), MirrorPathError::kBadCharacter},
      {"/v2/foo/manifests/x\r\n", MirrorPathError::kBadCharacter},
      {"/v2/foo/manifests/x y", MirrorPathError::kBadCharacter},
      {"/v2/foo\\..\\bar/manifests/x", MirrorPathError::kBadCharacter},
      {"/v2/foo/manifests/x?ns=docker.io", MirrorPathError::kBadCharacter},
      {"/v2/foo/manifests/x#frag", MirrorPathError::kBadCharacter},
      {"/v2/f\xc3\xb3o/manifests/x", MirrorPathError::kBadCharacter},
      {"/v2/foo/manifests/x\x7f", MirrorPathError::kBadCharacter},
      {"/v2/" + std::string(kMirrorPathBytesMax, 'a'), MirrorPathError::kTooLong},
      {"/v2/foo", MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/manifests", MirrorPathError::kUnknownEndpoint},
      {"/v2/manifests/latest", MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/tags/list", MirrorPathError::kUnknownEndpoint},
      {"/v2/_catalog", MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/blobs/uploads/", MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/manifests/latest/", MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/referrers/" + kDigest, MirrorPathError::kUnknownEndpoint},
      {"/v2/foo/Manifests/latest", MirrorPathError::kUnknownEndpoint},
      {"/v2//manifests/latest", MirrorPathError::kBadName},
      {"/v2/Foo/manifests/latest", MirrorPathError::kBadName},
      {"/v2/foo//bar/manifests/latest", MirrorPathError::kBadName},
      {"/v2/foo/bar//manifests/latest", MirrorPathError::kBadName},
      {"/v2/foo..bar/manifests/latest", MirrorPathError::kBadName},
      {"/v2/-foo/manifests/latest", MirrorPathError::kBadName},
      {"/v2/" + std::string(256, 'a') + "/manifests/x", MirrorPathError::kBadName},
      {"/v2/foo/manifests/", MirrorPathError::kBadTag},
      {"/v2/foo/manifests/-bad", MirrorPathError::kBadTag},
      {"/v2/foo/manifests/" + std::string(129, 't'), MirrorPathError::kBadTag},
      {"/v2/foo/manifests/sha256:abc", MirrorPathError::kBadDigest},
      {"/v2/foo/manifests/sha512:" + kHex + kHex, MirrorPathError::kBadDigest},
      {"/v2/foo/manifests/sha256:" + std::string(64, 'E'), MirrorPathError::kBadDigest},
      {"/v2/foo/blobs/latest", MirrorPathError::kBadDigest},
      {"/v2/foo/blobs/", MirrorPathError::kBadDigest},
  };
  for (const auto& bad : cases) {
    auto route = parse_mirror_path(bad.path);
    ASSERT_FALSE(route.ok()) << bad.path;
    EXPECT_EQ(route.error(), bad.error) << bad.path << ": " << describe(route.error());
  }
}

struct GoodBlobPath {
  std::string target;
  std::string scheme;
  std::string host;
  uint16_t port;
  std::string path;
  std::string query;
  std::string url_without_query;
};

// /blobs/<URL> targets split into scheme, host, port, path and query; the query-less URL is canonical (lower
// case scheme and host, default port dropped) because it becomes a ContentId shared with peers.
TEST(RequestPath, ParsesBlobUrls) {
  const std::vector<GoodBlobPath> cases = {
      {"/blobs/https://account.blob.core.windows.net/container/dir/file.vhd?sv=2021&sig=abc%2B%3D", "https",
       "account.blob.core.windows.net", 443, "/container/dir/file.vhd", "sv=2021&sig=abc%2B%3D",
       "https://account.blob.core.windows.net/container/dir/file.vhd"},
      {"/blobs/http://example.com/file", "http", "example.com", 80, "/file", "", "http://example.com/file"},
      {"/blobs/HTTPS://Example.COM:443/File", "https", "example.com", 443, "/File", "",
       "https://example.com/File"},
      {"/blobs/http://example.com:8080/a", "http", "example.com", 8080, "/a", "",
       "http://example.com:8080/a"},
      {"/blobs/https://example.com:80/a", "https", "example.com", 80, "/a", "", "https://example.com:80/a"},
      {"/blobs/https://example.com", "https", "example.com", 443, "/", "", "https://example.com/"},
      {"/blobs/https://example.com?x=1", "https", "example.com", 443, "/", "x=1", "https://example.com/"},
      {"/blobs/https://10.0.0.1:8443/a/b", "https", "10.0.0.1", 8443, "/a/b", "",
       "https://10.0.0.1:8443/a/b"},
      {"/blobs/https://[FD00::1]:8443/a", "https", "[fd00::1]", 8443, "/a", "", "https://[fd00::1]:8443/a"},
      {"/blobs/https://example.com/a%20b/c", "https", "example.com", 443, "/a%20b/c", "",
       "https://example.com/a%20b/c"},
      {"/blobs/https://example.com/a//b", "https", "example.com", 443, "/a//b", "",
       "https://example.com/a//b"},
      {"/blobs/https://example.com/a?b=c?d/e%2f", "https", "example.com", 443, "/a", "b=c?d/e%2f",
       "https://example.com/a"},
      {"/blobs/https://example.com/a:b@c!$&'()*+,;=~_-.", "https", "example.com", 443,
       "/a:b@c!$&'()*+,;=~_-.", "", "https://example.com/a:b@c!$&'()*+,;=~_-."},
      {"/blobs/https://example.com/a..b/...", "https", "example.com", 443, "/a..b/...", "",
       "https://example.com/a..b/..."},
  };
  for (const auto& good : cases) {
    auto url = parse_blob_path(good.target);
    ASSERT_TRUE(url.ok()) << good.target << ": " << describe(url.error());
    EXPECT_EQ(url->scheme, good.scheme) << good.target;
    EXPECT_EQ(url->host, good.host) << good.target;
    EXPECT_EQ(url->port, good.port) << good.target;
    EXPECT_EQ(url->path, good.path) << good.target;
    EXPECT_EQ(url->query, good.query) << good.target;
    EXPECT_EQ(url->url_without_query(), good.url_without_query) << good.target;
    EXPECT_EQ(url->content_id(), ContentId::file(good.url_without_query));
    const std::string full =
        good.query.empty() ? good.url_without_query : good.url_without_query + "?" + good.query;
    EXPECT_EQ(url->url(), full);
    // The canonical URL is itself a valid /blobs/ target that parses to the same thing.
    auto again = parse_blob_path("/blobs/" + url->url());
    ASSERT_TRUE(again.ok()) << url->url();
    EXPECT_EQ(*again, *url);
  }
}

struct BadBlobPath {
  std::string target;
  BlobPathError error;
};

// A table of hostile or malformed /blobs/ targets: each is refused with the expected reason.
TEST(RequestPath, RejectsBadBlobUrls) {
  const std::vector<BadBlobPath> cases = {
      {"", BlobPathError::kNotBlobs},
      {"/blob/https://x.com/a", BlobPathError::kNotBlobs},
      {"blobs/https://x.com/a", BlobPathError::kNotBlobs},
      {"/v2/foo/blobs/" + kDigest, BlobPathError::kNotBlobs},
      {"/blobs/", BlobPathError::kBadScheme},
      {"/blobs/ftp://x.com/a", BlobPathError::kBadScheme},
      {"/blobs/file:///etc/passwd", BlobPathError::kBadScheme},
      {"/blobs/https:/x.com/a", BlobPathError::kBadScheme},
      {"/blobs/x.com/a", BlobPathError::kBadScheme},
      {"/blobs/https%3A%2F%2Fx.com%2Fa", BlobPathError::kBadScheme},
      {"/blobs/httpss://x.com", BlobPathError::kBadScheme},
      {"/blobs/://x.com", BlobPathError::kBadScheme},
      {"/blobs/https:///a", BlobPathError::kBadHost},
      {"/blobs/https://?a", BlobPathError::kBadHost},
      {"/blobs/https://", BlobPathError::kBadHost},
      {"/blobs/https://-x.com/a", BlobPathError::kBadHost},
      {"/blobs/https://x_y.com/a", BlobPathError::kBadHost},
      {"/blobs/https://[zz]/a", BlobPathError::kBadHost},
      {"/blobs/https://[::1/a", BlobPathError::kBadHost},
      {"/blobs/https://999.1.1.1/a", BlobPathError::kBadHost},
      {"/blobs/https://x.com./a", BlobPathError::kBadHost},
      {"/blobs/https://x.com:0/a", BlobPathError::kBadPort},
      {"/blobs/https://x.com:65536/a", BlobPathError::kBadPort},
      {"/blobs/https://x.com:/a", BlobPathError::kBadPort},
      {"/blobs/https://x.com:abc", BlobPathError::kBadPort},
      {"/blobs/https://user:pass@x.com/a", BlobPathError::kUserInfo},
      {"/blobs/https://x.com@evil.com/a", BlobPathError::kUserInfo},
      {"/blobs/https://x.com/a#frag", BlobPathError::kFragment},
      {"/blobs/https://x.com/a?b#frag", BlobPathError::kFragment},
      {"/blobs/https://x.com/a b", BlobPathError::kBadCharacter},
      {std::string("/blobs/https://x.com/a\0b", 24), BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a\r\nHost: evil", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/\xc3\xa9", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a<b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a\\b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a\"b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a{b}", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a|b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a^b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a`b", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a?b=[c]", BlobPathError::kBadCharacter},
      {"/blobs/https://x.com/a%zz", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/a%4", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/a%", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/a%00", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/a?sig=%zz", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/a?sig=%00", BlobPathError::kBadEscape},
      {"/blobs/https://x.com/../etc/passwd", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a/./b", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a/..", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a/..?x", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a/%2e%2e/b", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a/%2E%2E/b", BlobPathError::kTraversal},
      {"/blobs/https://x.com/%2e/b", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a%2fb", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a%2Fb", BlobPathError::kTraversal},
      {"/blobs/https://x.com/a%5cb", BlobPathError::kTraversal},
      {"/blobs/https://x.com/" + std::string(kBlobTargetBytesMax, 'a'), BlobPathError::kTooLong},
  };
  for (const auto& bad : cases) {
    auto url = parse_blob_path(bad.target);
    ASSERT_FALSE(url.ok()) << bad.target << " parsed as " << url->url();
    EXPECT_EQ(url.error(), bad.error) << bad.target << ": " << describe(url.error());
  }
}

// Every error enum value has its own non-empty description.
TEST(RequestPath, DescribesEveryErrorDistinctly) {
  std::set<std::string_view> seen;
  auto check = [&seen](std::string_view text) {
    EXPECT_FALSE(text.empty());
    EXPECT_TRUE(seen.insert(text).second) << text;
  };
  for (int i = 0; i <= static_cast<int>(ReferenceError::kBadDigest); ++i) {
    check(describe(static_cast<ReferenceError>(i)));
  }
  for (int i = 0; i <= static_cast<int>(QueryError::kDuplicate); ++i)
    check(describe(static_cast<QueryError>(i)));
  seen.clear();
  for (int i = 0; i <= static_cast<int>(MirrorPathError::kBadDigest); ++i) {
    check(describe(static_cast<MirrorPathError>(i)));
  }
  seen.clear();
  for (int i = 0; i <= static_cast<int>(BlobPathError::kTraversal); ++i)
    check(describe(static_cast<BlobPathError>(i)));
}

}  // namespace
}  // namespace peerd::content
