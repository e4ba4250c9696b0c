#pragma once
// What peerd stores, advertises and transfers. A content item is an OCI blob (by digest) or a file blob (by
// its upstream URL, for /blobs/ reads). Items are split into fixed-size aligned chunks. Every key has a
// canonical string form and a 256-bit DHT id (sha256 of that string).
#include <compare>
#include <cstdint>
#include <string>
#include <variant>

#include "peerd/core/common/node_id.h"
#include "peerd/core/common/result.h"
#include "peerd/core/content/digest.h"
#include "peerd/core/content/range.h"

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
  static ContentId file(std::string url_without_query) {
    return ContentId{FileId{std::move(url_without_query)}};
  }

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

// Number of chunks of a content item: ceil(content_bytes / chunk_bytes). Requires chunk_bytes > 0.
uint64_t chunk_count(uint64_t content_bytes, uint64_t chunk_bytes);
// Size of chunk `index`: chunk_bytes except for a short last chunk. Requires index < chunk_count().
uint64_t chunk_length(uint64_t index, uint64_t content_bytes, uint64_t chunk_bytes);

// The part of one chunk that a byte range reads.
struct ChunkSlice {
  uint64_t index = 0;            // chunk number
  uint64_t offset_in_chunk = 0;  // first byte taken from the chunk
  uint64_t length = 0;           // bytes taken from the chunk (> 0)
  uint64_t offset_in_range = 0;  // where those bytes go in the range's output

  auto operator<=>(const ChunkSlice&) const = default;
};

enum class ChunkCoverError {
  kZeroChunkBytes,  // chunk size 0
  kEmptyRange,      // a range of length 0 covers no chunk
  kOutOfBounds,     // the range ends past the content
};

std::string_view describe(ChunkCoverError error);

// The chunks a byte range touches: first_index..last_index (inclusive), each read through slice(index).
// Computed lazily, so a 1 TiB range over 1-byte chunks costs nothing until it is walked.
struct ChunkCover {
  ByteRange range;
  uint64_t content_bytes = 0;
  uint64_t chunk_bytes = kDefaultChunkBytes;
  uint64_t first_index = 0;
  uint64_t last_index = 0;

  uint64_t count() const { return last_index - first_index + 1; }
  // Requires first_index <= index <= last_index.
  ChunkSlice slice(uint64_t index) const;

  auto operator<=>(const ChunkCover&) const = default;
};

Result<ChunkCover, ChunkCoverError> cover_range(const ByteRange& range, uint64_t content_bytes,
                                                uint64_t chunk_bytes = kDefaultChunkBytes);

}  // namespace peerd::content
