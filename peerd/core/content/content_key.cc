#include "peerd/core/content/content_key.h"

#include <algorithm>
#include <cassert>

namespace peerd::content {

std::string ContentId::key_string() const {
  if (const auto* digest = std::get_if<Digest>(&id)) return digest->to_string();
  return "file:" + std::get<FileId>(id).url;
}

NodeId tag_dht_id(std::string_view host_repo_tag) {
  return NodeId::hash_of("peerd/tag/" + std::string(host_repo_tag));
}

std::string ChunkKey::key_string() const {
  return content.key_string() + "#" + std::to_string(chunk_bytes) + "@" + std::to_string(offset());
}

uint64_t chunk_count(uint64_t content_bytes, uint64_t chunk_bytes) {
  assert(chunk_bytes > 0);
  return content_bytes / chunk_bytes + (content_bytes % chunk_bytes != 0 ? 1 : 0);
}

uint64_t chunk_length(uint64_t index, uint64_t content_bytes, uint64_t chunk_bytes) {
  assert(index < chunk_count(content_bytes, chunk_bytes));
  // index * chunk_bytes < content_bytes here, so neither line overflows.
  return std::min(chunk_bytes, content_bytes - index * chunk_bytes);
}

std::string_view describe(ChunkCoverError error) {
  switch (error) {
    case ChunkCoverError::kZeroChunkBytes:
      return "chunk size must be positive";
    case ChunkCoverError::kEmptyRange:
      return "an empty range covers no chunk";
    case ChunkCoverError::kOutOfBounds:
      return "range ends past the content";
  }
  return "invalid chunk cover";
}

Result<ChunkCover, ChunkCoverError> cover_range(const ByteRange& range, uint64_t content_bytes,
                                                uint64_t chunk_bytes) {
  if (chunk_bytes == 0) return fail(ChunkCoverError::kZeroChunkBytes);
  if (range.length == 0) return fail(ChunkCoverError::kEmptyRange);
  // Written so that offset + length cannot overflow.
  if (range.offset >= content_bytes || range.length > content_bytes - range.offset) {
    return fail(ChunkCoverError::kOutOfBounds);
  }
  ChunkCover cover;
  cover.range = range;
  cover.content_bytes = content_bytes;
  cover.chunk_bytes = chunk_bytes;
  cover.first_index = range.offset / chunk_bytes;
  cover.last_index = range.last() / chunk_bytes;
  return cover;
}

ChunkSlice ChunkCover::slice(uint64_t index) const {
  assert(index >= first_index && index <= last_index);
  const uint64_t chunk_offset = index * chunk_bytes;  // <= range.last(): cannot overflow
  const uint64_t begin = std::max(range.offset, chunk_offset);
  // Inclusive ends: chunk_offset + chunk_bytes could overflow for the chunk holding byte UINT64_MAX - 1.
  const uint64_t last = chunk_offset + std::min(chunk_bytes - 1, range.last() - chunk_offset);
  return ChunkSlice{index, begin - chunk_offset, last - begin + 1, begin - range.offset};
}

}  // namespace peerd::content
