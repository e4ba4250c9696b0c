#pragma once
// Strict parsers for the request targets the daemon serves, run on untrusted input before anything else
// looks at it. Every failure is a typed error; the daemon answers 400.
//
//   /v2/                                   registry API version check
//   /v2/<name>/manifests/<tag or digest>   containerd/docker mirror request
//   /v2/<name>/blobs/<digest>
//   /blobs/<http or https URL>             file blob read through peerd (the URL keeps its query)
//
// A mirror path may contain no percent sign at all: names, tags and sha256 digests never need escaping, so
// any escape is either a client bug or a traversal attempt (%2e%2e, %2f). "." and ".." segments are refused
// before grammar checks so that logs name the attack.
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "peerd/core/common/result.h"
#include "peerd/core/content/content_key.h"
#include "peerd/core/content/digest.h"

namespace peerd::content {

inline constexpr size_t kMirrorPathBytesMax = 1024;  // a valid one needs at most ~410
inline constexpr size_t kQueryBytesMax = 2048;       // query of a mirror request (containerd sends only ns)
inline constexpr size_t kBlobTargetBytesMax = 8192;  // /blobs/ + URL + query (SAS tokens are long)

// Splits an HTTP request target at its first '?'. The query excludes the '?'.
struct RequestTarget {
  std::string_view path;
  std::string_view query;
};
RequestTarget split_target(std::string_view target);

enum class QueryError {
  kTooLong,       // over kQueryBytesMax
  kBadCharacter,  // control, space, non-ASCII or '#' in the query, or an escape decoding to a control byte
  kBadEscape,     // '%' not followed by two hex digits
  kDuplicate,     // the key appears twice: ambiguous, so refused
};

std::string_view describe(QueryError error);

// The percent-decoded value of `key` in an application/x-www-form-urlencoded query ('+' is a space), or
// nullopt when absent. containerd escapes ns (":" becomes "%3A"), so ns must be read through this.
Result<std::optional<std::string>, QueryError> query_parameter(std::string_view query, std::string_view key);

enum class MirrorRouteKind { kApiBase, kManifest, kBlob };

struct MirrorRoute {
  MirrorRouteKind kind = MirrorRouteKind::kApiBase;
  std::string name;              // repository path as requested ("library/ubuntu"); empty for kApiBase
  std::string tag;               // kManifest by tag
  std::optional<Digest> digest;  // kBlob, and kManifest by digest

  // The tag or digest text, as it appeared in the path.
  std::string reference() const { return digest ? digest->to_string() : tag; }

  auto operator<=>(const MirrorRoute&) const = default;
};

enum class MirrorPathError {
  kTooLong,          // over kMirrorPathBytesMax
  kBadCharacter,     // NUL, control, space, '\', '?', '#', non-ASCII
  kPercentEncoded,   // any '%'
  kNotApiV2,         // does not start with /v2/
  kTraversal,        // a "." or ".." segment
  kUnknownEndpoint,  // not .../manifests/<ref> or .../blobs/<digest>
  kBadName,          // repository path grammar (see repository_path_error)
  kBadTag,
  kBadDigest,
};

std::string_view describe(MirrorPathError error);

// `path` is the request target's path (no query): split_target first.
Result<MirrorRoute, MirrorPathError> parse_mirror_path(std::string_view path);

// An upstream file URL taken from a /blobs/ request.
struct BlobUrl {
  std::string scheme;  // "http" or "https", lower case
  std::string host;    // lower case; IPv6 in brackets
  uint16_t port = 0;   // explicit, or the scheme's default
  std::string path;    // "/..." as sent (at least "/")
  std::string query;   // without '?'; may be empty

  bool default_port() const { return port == (scheme == "https" ? 443 : 80); }
  // scheme://host[:port]path, the port only when not the default. The query is left out because it often
  // carries credentials (SAS tokens) that must not become part of a key shared with peers.
  std::string url_without_query() const;
  // url_without_query() plus "?query": what peerd fetches from upstream.
  std::string url() const;
  ContentId content_id() const { return ContentId::file(url_without_query()); }

  auto operator<=>(const BlobUrl&) const = default;
};

enum class BlobPathError {
  kTooLong,       // over kBlobTargetBytesMax
  kNotBlobs,      // does not start with /blobs/
  kBadCharacter,  // a character RFC 3986 does not allow in that part, control, space or non-ASCII
  kBadScheme,     // not http:// or https://
  kBadHost,       // missing, or not a DNS name, IPv4 or [IPv6]
  kBadPort,       // empty or not 1..65535
  kUserInfo,      // "user@host": credentials in URLs are refused
  kFragment,      // '#': clients never send one
  kBadEscape,     // '%' not followed by two hex digits, or %00
  kTraversal,     // a "." or ".." path segment, or an escaped '.', '/' or '\' in the path
};

std::string_view describe(BlobPathError error);

// `target` is the whole request target: "/blobs/https://host/path?query".
Result<BlobUrl, BlobPathError> parse_blob_path(std::string_view target);

}  // namespace peerd::content
