#include "peerd/core/harness/transfer_content.h"

#include <algorithm>

#include "peerd/core/transfer/rendezvous.h"

namespace peerd::harness {

VirtualContent::VirtualContent(const content::ContentId& id, uint64_t size_bytes)
    : seed_(transfer::id_hash64(id.dht_id())), size_bytes_(size_bytes) {
  const uint64_t blocks = size_bytes / kBlockBytes;
  block_prefix_.resize(blocks + 1);
  for (uint64_t block = 0; block < blocks; ++block) {
    block_prefix_[block + 1] =
        block_prefix_[block] + direct_sum(block * kBlockBytes, (block + 1) * kBlockBytes);
  }
}

uint64_t VirtualContent::word(uint64_t index) const {
  return transfer::mix64(seed_ ^ (index * 0x9e3779b97f4a7c15ull));
}

uint8_t VirtualContent::byte_at(uint64_t offset) const {
  return static_cast<uint8_t>(word(offset / 8) >> (8 * (offset % 8)));
}

uint64_t VirtualContent::direct_sum(uint64_t begin, uint64_t end) const {
  uint64_t sum = 0;
  uint64_t offset = begin;
  while (offset < end && offset % 8 != 0) {
    sum += uint64_t{byte_at(offset)} * (2 * offset + 1);
    ++offset;
  }
  // Whole words: sum of b_i * (2(8w + i) + 1) = (16w + 1) * S + 2 * T with S = sum b_i, T = sum i * b_i.
  while (offset + 8 <= end) {
    const uint64_t index = offset / 8;
    const uint64_t value = word(index);
    uint64_t bytes_sum = 0;
    uint64_t weighted = 0;
    for (uint64_t i = 0; i < 8; ++i) {
      const uint64_t b = (value >> (8 * i)) & 0xff;
      bytes_sum += b;
      weighted += i * b;
    }
    sum += (16 * index + 1) * bytes_sum + 2 * weighted;
    offset += 8;
  }
  while (offset < end) {
    sum += uint64_t{byte_at(offset)} * (2 * offset + 1);
    ++offset;
  }
  return sum;
}

uint64_t VirtualContent::checksum(uint64_t begin, uint64_t end) const {
  if (begin >= end) return 0;
  const uint64_t first_block = (begin + kBlockBytes - 1) / kBlockBytes;
  const uint64_t last_block = std::min<uint64_t>(end / kBlockBytes, block_prefix_.size() - 1);
  if (first_block >= last_block) return direct_sum(begin, end);
  return direct_sum(begin, first_block * kBlockBytes) +
         (block_prefix_[last_block] - block_prefix_[first_block]) + direct_sum(last_block * kBlockBytes, end);
}

uint64_t VirtualContent::flipped_checksum(uint64_t begin, uint64_t end) const {
  // sum (255 - b) * (2o + 1) = 255 * (end^2 - begin^2) - checksum   (sum of 2o + 1 over [begin, end)).
  return 255 * (end * end - begin * begin) - checksum(begin, end);
}

uint64_t VirtualContent::checksum_slow(uint64_t begin, uint64_t end) const {
  uint64_t sum = 0;
  for (uint64_t offset = begin; offset < end; ++offset) sum += uint64_t{byte_at(offset)} * (2 * offset + 1);
  return sum;
}

}  // namespace peerd::harness
