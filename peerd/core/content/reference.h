#pragma once
// OCI image references ("host[:port]/repo/path:tag@digest") with docker/containerd semantics, the grammar of
// the OCI distribution spec for their parts, and containerd's mirror "?ns=<registry>" resolution.
//
// Docker semantics followed (github.com/distribution/reference, ParseNormalizedNamed + containerd's
// ParseDockerRef): the first path component is a registry host only when it contains '.' or ':', is
// "localhost", or has an upper-case letter; otherwise the host is docker.io. "index.docker.io" becomes
// "docker.io", and a one-component docker.io path gets the "library/" prefix. A reference with neither tag
// nor digest gets the tag "latest". A bare 64-hex string is refused (docker reads it as an image id). The
// normalised name (host + "/" + path) is at most 255 bytes.
//
// Stricter than docker, on purpose: digests must be sha256 (peerd addresses nothing else), ports must be
// 1..65535, host labels at most 63 bytes, an all-numeric host must be a valid IPv4 address and an IPv6 host a
// valid RFC 4291 address. The host's case is preserved (as docker does): "Foo/bar" names the host "Foo".
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"
#include "peerd/core/content/digest.h"

namespace peerd::content {

inline constexpr size_t kNameBytesMax = 255;       // docker's NameTotalLengthMax: host + "/" + path
inline constexpr size_t kReferenceBytesMax = 512;  // whole reference text; a valid one needs at most 456
inline constexpr size_t kTagBytesMax = 128;
inline constexpr size_t kHostLabelBytesMax = 63;

inline constexpr std::string_view kDockerHubDomain = "docker.io";
inline constexpr std::string_view kDockerHubLegacyDomain = "index.docker.io";
inline constexpr std::string_view kDockerHubRegistryHost = "registry-1.docker.io";
inline constexpr std::string_view kDefaultTag = "latest";

enum class ReferenceError {
  kEmpty,
  kTooLong,         // reference text over kReferenceBytesMax
  kNameTooLong,     // normalised host/path over kNameBytesMax
  kHexIdentifier,   // a bare 64-hex string
  kBadHost,         // not name, IPv4 or [IPv6]
  kBadPort,         // not 1..65535
  kEmptyComponent,  // empty path, "a//b", or a leading or trailing '/'
  kUpperCase,       // repository paths are lower case
  kBadComponent,    // other path-component grammar violations, including "." and ".."
  kBadTag,          // not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
  kBadDigest,       // not sha256:<64 lowercase hex>
};

std::string_view describe(ReferenceError error);

// A registry host split into name and optional port. Views into the parsed text.
struct HostPort {
  std::string_view host;  // "ghcr.io", "10.0.0.1", "[fd00::1]" (brackets kept)
  std::optional<uint16_t> port;
};

// "name[:port]", "IPv4[:port]" or "[IPv6][:port]".
Result<HostPort, ReferenceError> parse_host(std::string_view text);

// nullopt when valid. Each checks one part of a reference.
std::optional<ReferenceError> host_error(std::string_view host);
// Components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* separated by '/', total at most kNameBytesMax.
std::optional<ReferenceError> repository_path_error(std::string_view path);
std::optional<ReferenceError> tag_error(std::string_view tag);

// The host to contact for a registry domain: registry-1.docker.io for docker.io, the domain otherwise.
std::string_view registry_host_for(std::string_view domain);

struct Reference {
  std::string domain;  // "docker.io", "ghcr.io", "localhost:5000", "[fd00::1]:5000"
  std::string path;    // "library/ubuntu"
  std::string tag;     // empty only when a digest is given
  std::optional<Digest> digest;

  // "docker.io/library/ubuntu"
  std::string name() const { return domain + "/" + path; }
  std::string_view registry_host() const { return registry_host_for(domain); }
  // What goes into /v2/<path>/manifests/<reference>: the digest when present (it wins over the tag, as in
  // containerd), else the tag.
  std::string manifest_reference() const;
  // "name[:tag][@digest]"; parse_reference(to_string()) gives back this reference.
  std::string to_string() const;
  // "domain/path:tag", the text behind tag_dht_id(). Requires a tag.
  std::string tag_key() const;

  auto operator<=>(const Reference&) const = default;
};

Result<Reference, ReferenceError> parse_reference(std::string_view text);

// The upstream a containerd mirror request stands for.
struct UpstreamRepository {
  std::string domain;         // normalised registry domain ("docker.io")
  std::string registry_host;  // host to contact ("registry-1.docker.io")
  std::string path;           // repository path at that registry ("library/ubuntu")

  std::string name() const { return domain + "/" + path; }

  auto operator<=>(const UpstreamRepository&) const = default;
};

// containerd sends mirror requests as /v2/<path>/...?ns=<registry domain> (hosts.toml). `ns` is the decoded
// query value; empty means docker.io, because dockerd's registry-mirrors only mirror Docker Hub and send no
// ns. Docker Hub paths get the "library/" prefix like references do.
Result<UpstreamRepository, ReferenceError> resolve_mirror_repository(std::string_view repository_path,
                                                                     std::string_view ns);

}  // namespace peerd::content
