#pragma once
// XOR distance as four big-endian 64-bit words: compares (lexicographically) like the 32-byte distance but in
// four word operations, which is what the hot paths (closest-k, lookup candidate ordering) need.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "peerd/core/common/node_id.h"

namespace peerd::routing {

using DistanceWords = std::array<uint64_t, 4>;

inline uint64_t id_word(const NodeId& id, size_t word) {
  uint64_t value = 0;
  std::memcpy(&value, id.bytes.data() + word * 8, sizeof value);
  if constexpr (std::endian::native == std::endian::little) value = __builtin_bswap64(value);
  return value;
}

inline DistanceWords id_words(const NodeId& id) {
  return {id_word(id, 0), id_word(id, 1), id_word(id, 2), id_word(id, 3)};
}

inline DistanceWords distance_words(const DistanceWords& a, const DistanceWords& b) {
  return {a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]};
}

}  // namespace peerd::routing
