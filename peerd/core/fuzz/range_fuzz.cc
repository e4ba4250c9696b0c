// libFuzzer target for HTTP Range parsing and chunk covers. The input is a content size, a chunk size and a
// Range header value. Checked: resolved ranges lie inside the content; the three parsers agree with each
// other; a resolved range written back as "bytes=first-last" resolves to itself; Content-Range text matches;
// chunk slices tile the range inside their chunks.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "peerd/core/content/content_key.h"
#include "peerd/core/content/range.h"

#define FUZZ_CHECK(condition)                                      \
  do {                                                             \
    if (!(condition)) {                                            \
      std::fprintf(stderr, "fuzz check failed: %s\n", #condition); \
      std::abort();                                                \
    }                                                              \
  } while (false)

namespace {

using namespace peerd::content;

constexpr uint64_t kSlicesWalkedMax = 4096;

void check_slice(const ChunkCover& cover, uint64_t index) {
  const ChunkSlice slice = cover.slice(index);
  FUZZ_CHECK(slice.index == index);
  FUZZ_CHECK(slice.length > 0);
  FUZZ_CHECK(slice.offset_in_range < cover.range.length);
  FUZZ_CHECK(slice.length <= cover.range.length - slice.offset_in_range);
  FUZZ_CHECK(slice.offset_in_chunk < chunk_length(index, cover.content_bytes, cover.chunk_bytes));
  FUZZ_CHECK(slice.length <=
             chunk_length(index, cover.content_bytes, cover.chunk_bytes) - slice.offset_in_chunk);
  FUZZ_CHECK(index * cover.chunk_bytes + slice.offset_in_chunk == cover.range.offset + slice.offset_in_range);
}

void check_cover(const ByteRange& range, uint64_t content_bytes, uint64_t chunk_bytes) {
  auto cover = cover_range(range, content_bytes, chunk_bytes);
  if (chunk_bytes == 0) {
    FUZZ_CHECK(!cover.ok() && cover.error() == ChunkCoverError::kZeroChunkBytes);
    return;
  }
  FUZZ_CHECK(cover.ok());
  FUZZ_CHECK(cover->first_index <= cover->last_index);
  FUZZ_CHECK(cover->last_index < chunk_count(content_bytes, chunk_bytes));
  if (cover->count() <= kSlicesWalkedMax) {
    uint64_t next_in_range = 0;
    for (uint64_t index = cover->first_index; index <= cover->last_index; ++index) {
      check_slice(*cover, index);
      FUZZ_CHECK(cover->slice(index).offset_in_range == next_in_range);
      next_in_range += cover->slice(index).length;
    }
    FUZZ_CHECK(next_in_range == range.length);
    return;
  }
  check_slice(*cover, cover->first_index);
  check_slice(*cover, cover->first_index + cover->count() / 2);
  check_slice(*cover, cover->last_index);
  FUZZ_CHECK(cover->slice(cover->first_index).offset_in_range == 0);
  const ChunkSlice last = cover->slice(cover->last_index);
  FUZZ_CHECK(last.offset_in_range + last.length == range.length);
}

void check_resolved(const ByteRange& range, uint64_t content_bytes, const RangeSpec& spec) {
  FUZZ_CHECK(range.length > 0);
  FUZZ_CHECK(range.offset < content_bytes);
  FUZZ_CHECK(range.length <= content_bytes - range.offset);
  if (spec.kind != RangeSpec::Kind::kSuffix) FUZZ_CHECK(range.offset == spec.first);
  if (spec.kind != RangeSpec::Kind::kFromTo) FUZZ_CHECK(range.end() == content_bytes);

  const std::string header = "bytes=" + std::to_string(range.offset) + "-" + std::to_string(range.last());
  auto again = parse_range(header, content_bytes);
  FUZZ_CHECK(again.ok() && *again == range);
  FUZZ_CHECK(content_range(range, content_bytes) == "bytes " + std::to_string(range.offset) + "-" +
                                                        std::to_string(range.last()) + "/" +
                                                        std::to_string(content_bytes));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  // Small sizes are interesting (clamping, 0, exact multiples), and so are the 64-bit extremes.
  const uint64_t content_bytes = provider.ConsumeBool() ? provider.ConsumeIntegralInRange<uint64_t>(0, 4096)
                                                        : provider.ConsumeIntegral<uint64_t>();
  const uint64_t chunk_bytes = provider.ConsumeBool() ? provider.ConsumeIntegralInRange<uint64_t>(0, 64)
                                                      : provider.ConsumeIntegral<uint64_t>();
  const std::string header = provider.ConsumeRemainingBytesAsString();

  auto spec = parse_range_spec(header);
  auto range = parse_range(header, content_bytes);
  auto open = parse_range_unknown_size(header);
  if (!spec.ok()) {
    FUZZ_CHECK(!range.ok() && range.error() == spec.error());
    FUZZ_CHECK(!open.ok() && open.error() == spec.error());
    FUZZ_CHECK(!describe(spec.error()).empty());
    return 0;
  }
  FUZZ_CHECK(header.size() <= kRangeHeaderBytesMax);
  if (spec->kind == RangeSpec::Kind::kFromTo) FUZZ_CHECK(spec->first <= spec->last);

  if (range.ok()) {
    check_resolved(*range, content_bytes, *spec);
    check_cover(*range, content_bytes, chunk_bytes);
    FUZZ_CHECK(content_range_unknown_size(*range).ends_with("/*"));
  } else {
    FUZZ_CHECK(range.error() == RangeError::kUnsatisfiable);
    FUZZ_CHECK(content_range_unsatisfied(content_bytes) == "bytes */" + std::to_string(content_bytes));
  }

  if (spec->kind == RangeSpec::Kind::kSuffix) {
    FUZZ_CHECK(!open.ok() && open.error() == RangeError::kSizeUnknown);
  } else {
    FUZZ_CHECK(open.ok() && open->offset == spec->first);
    if (open->length) {
      FUZZ_CHECK(*open->length > 0);
      FUZZ_CHECK(*open->length - 1 <= std::numeric_limits<uint64_t>::max() - open->offset);
      // With the content at least as long as the open range, both resolutions agree.
      if (range.ok() && open->offset + *open->length <= content_bytes) {
        FUZZ_CHECK(range->length == *open->length);
      }
    } else if (range.ok()) {
      FUZZ_CHECK(range->end() == content_bytes);
    }
  }
  return 0;
}
