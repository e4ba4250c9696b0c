// Tests of content keys: canonical key strings and DHT ids, chunk counting, and the mapping of a byte range
// to the chunks (and parts of chunks) that cover it.
#include <gtest/gtest.h>

#include <limits>
#include <set>
#include <string>
#include <vector>

#include "peerd/core/content/content_key.h"

namespace peerd::content {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kMiB = 1024 * 1024;

Digest digest_of(std::string_view text) {
  return Digest::of_bytes(text);
}

// Key strings have the documented forms and distinct contents get distinct DHT ids in distinct namespaces.
TEST(ContentKey, KeyStringsAndIds) {
  const auto blob = ContentId::blob(digest_of("layer"));
  const auto file = ContentId::file("https://example.com/a/b.bin");
  EXPECT_TRUE(blob.is_blob());
  EXPECT_FALSE(file.is_blob());
  EXPECT_EQ(blob.key_string(), digest_of("layer").to_string());
  EXPECT_EQ(file.key_string(), "file:https://example.com/a/b.bin");
  EXPECT_EQ(blob.dht_id(), NodeId::hash_of("peerd/blob/" + blob.key_string()));
  EXPECT_NE(blob.dht_id(), file.dht_id());

  const ChunkKey chunk{blob, 3};
  EXPECT_EQ(chunk.chunk_bytes, kDefaultChunkBytes);
  EXPECT_EQ(kDefaultChunkBytes, kMiB);
  EXPECT_EQ(chunk.offset(), 3 * kMiB);
  EXPECT_EQ(chunk.key_string(), blob.key_string() + "#1048576@3145728");
  EXPECT_NE(chunk.dht_id(), (ChunkKey{blob, 4}).dht_id());
  EXPECT_NE(chunk.dht_id(), (ChunkKey{blob, 3, 512 * 1024}).dht_id());
  EXPECT_NE(chunk.dht_id(), blob.dht_id());

  EXPECT_EQ(tag_dht_id("docker.io/library/ubuntu:latest"), tag_dht_id("docker.io/library/ubuntu:latest"));
  EXPECT_NE(tag_dht_id("docker.io/library/ubuntu:latest"), tag_dht_id("docker.io/library/ubuntu:22.04"));
  EXPECT_NE(tag_dht_id(blob.key_string()), blob.dht_id());
}

// chunk_count is a ceiling division and chunk_length shortens only the last chunk.
TEST(ContentKey, CountsChunks) {
  EXPECT_EQ(chunk_count(0, kMiB), 0u);
  EXPECT_EQ(chunk_count(1, kMiB), 1u);
  EXPECT_EQ(chunk_count(kMiB, kMiB), 1u);
  EXPECT_EQ(chunk_count(kMiB + 1, kMiB), 2u);
  EXPECT_EQ(chunk_count(10, 3), 4u);
  EXPECT_EQ(chunk_count(kMax, 1), kMax);
  EXPECT_EQ(chunk_count(kMax, kMax), 1u);
  EXPECT_EQ(chunk_count(kMax, 2), kMax / 2 + 1);
  EXPECT_EQ(chunk_length(0, 10, 3), 3u);
  EXPECT_EQ(chunk_length(3, 10, 3), 1u);
  EXPECT_EQ(chunk_length(1, 2 * kMiB, kMiB), kMiB);
  EXPECT_EQ(chunk_length(kMax / 2, kMax, 2), 1u);
}

struct CoverCase {
  const char* what;
  ByteRange range;
  uint64_t content_bytes;
  uint64_t chunk_bytes;
  std::vector<ChunkSlice> slices;
};

// A table of edge cases: each range maps to exactly the expected chunk slices.
TEST(ContentKey, CoversRangeEdges) {
  const uint64_t size = 3 * kMiB + 10;
  const std::vector<CoverCase> cases = {
      {"first byte", {0, 1}, size, kMiB, {{0, 0, 1, 0}}},
      {"last byte", {size - 1, 1}, size, kMiB, {{3, 9, 1, 0}}},
      {"last byte of a full chunk", {kMiB - 1, 1}, size, kMiB, {{0, kMiB - 1, 1, 0}}},
      {"first byte of the second chunk", {kMiB, 1}, size, kMiB, {{1, 0, 1, 0}}},
      {"two bytes across a boundary", {kMiB - 1, 2}, size, kMiB, {{0, kMiB - 1, 1, 0}, {1, 0, 1, 1}}},
      {"one whole chunk", {kMiB, kMiB}, size, kMiB, {{1, 0, kMiB, 0}}},
      {"whole file",
       {0, size},
       size,
       kMiB,
       {{0, 0, kMiB, 0}, {1, 0, kMiB, kMiB}, {2, 0, kMiB, 2 * kMiB}, {3, 0, 10, 3 * kMiB}}},
      {"whole file, exact multiple", {0, 2 * kMiB}, 2 * kMiB, kMiB, {{0, 0, kMiB, 0}, {1, 0, kMiB, kMiB}}},
      {"tail of an exact multiple", {2 * kMiB - 5, 5}, 2 * kMiB, kMiB, {{1, kMiB - 5, 5, 0}}},
      {"chunk size 3 (not a power of two)", {2, 6}, 10, 3, {{0, 2, 1, 0}, {1, 0, 3, 1}, {2, 0, 2, 4}}},
      {"chunk size 3, short last chunk", {8, 2}, 10, 3, {{2, 2, 1, 0}, {3, 0, 1, 1}}},
      {"chunk larger than the content", {1, 3}, 5, kMiB, {{0, 1, 3, 0}}},
      {"chunk size 1", {4, 3}, 10, 1, {{4, 0, 1, 0}, {5, 0, 1, 1}, {6, 0, 1, 2}}},
      // Chunks [0, h), [h, 2h), [2h, kMax) with h = kMax / 2: the last three bytes straddle chunks 1 and 2.
      {"top of the 64-bit space", {kMax - 3, 3}, kMax, kMax / 2, {{1, kMax / 2 - 2, 2, 0}, {2, 0, 1, 2}}},
  };
  for (const auto& item : cases) {
    auto cover = cover_range(item.range, item.content_bytes, item.chunk_bytes);
    ASSERT_TRUE(cover.ok()) << item.what << ": " << describe(cover.error());
    std::vector<ChunkSlice> slices;
    for (uint64_t index = cover->first_index; index <= cover->last_index; ++index) {
      slices.push_back(cover->slice(index));
    }
    ASSERT_EQ(cover->count(), slices.size()) << item.what;
    EXPECT_EQ(slices, item.slices) << item.what;
  }
}

struct BadCover {
  const char* what;
  ByteRange range;
  uint64_t content_bytes;
  uint64_t chunk_bytes;
  ChunkCoverError error;
};

// Ranges that cover nothing, or lie outside the content, or chunk size 0, are refused with a typed reason.
TEST(ContentKey, RefusesBadCovers) {
  const std::vector<BadCover> cases = {
      {"chunk size 0", {0, 1}, 10, 0, ChunkCoverError::kZeroChunkBytes},
      {"empty range", {0, 0}, 10, 3, ChunkCoverError::kEmptyRange},
      {"empty range at the end", {10, 0}, 10, 3, ChunkCoverError::kEmptyRange},
      {"empty content", {0, 1}, 0, 3, ChunkCoverError::kOutOfBounds},
      {"starts at the end", {10, 1}, 10, 3, ChunkCoverError::kOutOfBounds},
      {"runs past the end", {9, 2}, 10, 3, ChunkCoverError::kOutOfBounds},
      {"offset + length overflows", {5, kMax}, kMax, 3, ChunkCoverError::kOutOfBounds},
      {"huge offset", {kMax, 1}, kMax, 3, ChunkCoverError::kOutOfBounds},
  };
  for (const auto& item : cases) {
    auto cover = cover_range(item.range, item.content_bytes, item.chunk_bytes);
    ASSERT_FALSE(cover.ok()) << item.what;
    EXPECT_EQ(cover.error(), item.error) << item.what << ": " << describe(cover.error());
  }
}

// For every range over small contents and every chunk size up to 7, the slices tile the range exactly, each
// lies inside its chunk, and the chunk indices are those the range touches; checked by brute force.
TEST(ContentKey, SlicesTileEveryRangeExhaustively) {
  size_t covers_checked = 0;
  for (uint64_t content_bytes = 1; content_bytes <= 24; ++content_bytes) {
    for (uint64_t chunk_bytes = 1; chunk_bytes <= 7; ++chunk_bytes) {
      for (uint64_t offset = 0; offset < content_bytes; ++offset) {
        for (uint64_t length = 1; offset + length <= content_bytes; ++length) {
          auto cover = cover_range(ByteRange{offset, length}, content_bytes, chunk_bytes);
          ASSERT_TRUE(cover.ok());
          ASSERT_EQ(cover->first_index, offset / chunk_bytes);
          ASSERT_EQ(cover->last_index, (offset + length - 1) / chunk_bytes);
          uint64_t next_in_range = 0;
          for (uint64_t index = cover->first_index; index <= cover->last_index; ++index) {
            const ChunkSlice slice = cover->slice(index);
            ASSERT_EQ(slice.index, index);
            ASSERT_GT(slice.length, 0u);
            ASSERT_EQ(slice.offset_in_range, next_in_range);
            ASSERT_LE(slice.offset_in_chunk + slice.length, chunk_length(index, content_bytes, chunk_bytes));
            ASSERT_EQ(index * chunk_bytes + slice.offset_in_chunk, offset + slice.offset_in_range);
            next_in_range += slice.length;
          }
          ASSERT_EQ(next_in_range, length);
          ++covers_checked;
        }
      }
    }
  }
  EXPECT_EQ(covers_checked, 7u * (24u * 25u * 26u / 6u));  // 7 chunk sizes x sum over n of n(n+1)/2
}

// Each error has its own non-empty description.
TEST(ContentKey, DescribesEveryErrorDistinctly) {
  std::set<std::string_view> seen;
  for (auto error :
       {ChunkCoverError::kZeroChunkBytes, ChunkCoverError::kEmptyRange, ChunkCoverError::kOutOfBounds}) {
    EXPECT_FALSE(describe(error).empty());
    EXPECT_TRUE(seen.insert(describe(error)).second);
  }
}

}  // namespace
}  // namespace peerd::content
