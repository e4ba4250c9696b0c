#pragma once
// What peerd stores, advertises and transfers. A content item is an OCI blob (by digest) or a file blob (by
// its upstream URL, for /blobs/ reads). Items are split into fixed-size aligned chunks. Every key has a
// canonical string form and a 256-bit DHT id (sha256 of that string).
#include <compare>
#include <cstdint>
#include <string>
#include <variant>

#include "peerd/core/common/node_id.h"
#include "peerd/core/content/digest.h"

namespace peerd::content {

inline constexpr uint64_t kDefaultChunkBytes = 1024 * 1024;

// An upstream file blob, identified by its URL with the query string removed (SAS tokens must not become
// part of a key that is shared with peers).
struct FileId {
  std::string url;
  auto operator<=>(const FileId&) const = default;
};

struct ContentId {
  std::variant<Digest, FileId> id;

  static ContentId blob(Digest digest) { return ContentId{std::move(digest)}; }
  static ContentId file(std::string url_without_query) { return ContentId{FileId{std::move(url_without_query)}}; }

  bool is_blob() const { return std::holds_alternative<Digest>(id); }
  // "sha256:<hex>" or "file:<url>"
  std::string key_string() const;
  NodeId dht_id() const { return NodeId::hash_of("peerd/blob/" + key_string()); }

  auto operator<=>(const ContentId&) const = default;
};

// A tag key: "host/repo:tag" (the DHT lets peers resolve tags, see the containerd issue).
NodeId tag_dht_id(std::string_view host_repo_tag);

struct ChunkKey {
  ContentId content;
  uint64_t index = 0;  // chunk number; byte offset = index * chunk_bytes
  uint64_t chunk_bytes = kDefaultChunkBytes;

  uint64_t offset() const { return index * chunk_bytes; }
  // "<content key>#<chunk_bytes>@<offset>"
  std::string key_string() const;
  NodeId dht_id() const { return NodeId::hash_of("peerd/chunk/" + key_string()); }

  auto operator<=>(const ChunkKey&) const = default;
};

}  // namespace peerd::content
