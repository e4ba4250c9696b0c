#pragma once
// Virtual content for the transfer harness: byte o of an item is a deterministic function of (item, o), so
// every delivered range can be checked without storing a byte. A range's checksum is
//   sum over o in [begin, end) of byte(o) * (2o + 1)   (mod 2^64),
// which is additive over adjacent ranges (a chunk assembled from pieces of several sources checks the same as
// one piece) and position-sensitive (a shifted or flipped piece does not). A corrupting node sends every byte
// flipped (byte ^ 0xff); the checksum of a flipped range has a closed form, so corruption costs nothing to
// model. Prefix sums over 64 KiB blocks make chunk-aligned ranges O(1); unaligned edges (resumed streams) are
// summed directly.
#include <cstdint>
#include <vector>

#include "peerd/core/content/content_key.h"

namespace peerd::harness {

class VirtualContent {
 public:
  static constexpr uint64_t kBlockBytes = 64 * 1024;

  VirtualContent(const content::ContentId& id, uint64_t size_bytes);

  uint64_t size_bytes() const { return size_bytes_; }
  uint8_t byte_at(uint64_t offset) const;
  // Checksum of the true bytes of [begin, end), and of the same bytes flipped.
  uint64_t checksum(uint64_t begin, uint64_t end) const;
  uint64_t flipped_checksum(uint64_t begin, uint64_t end) const;
  // Checksum of [begin, end) computed byte by byte (tests use it to check the fast path).
  uint64_t checksum_slow(uint64_t begin, uint64_t end) const;

 private:
  uint64_t word(uint64_t index) const;
  uint64_t direct_sum(uint64_t begin, uint64_t end) const;

  uint64_t seed_;
  uint64_t size_bytes_;
  std::vector<uint64_t> block_prefix_;  // block_prefix_[k] = checksum(0, k * kBlockBytes)
};

}  // namespace peerd::harness
