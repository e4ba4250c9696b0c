#include "peerd/core/common/node_id.h"

#include "peerd/core/common/rng.h"
#include "peerd/core/crypto/sha256.h"

namespace peerd {

NodeId NodeId::hash_of(std::string_view text) {
  NodeId id;
  id.bytes = crypto::Sha256::hash(text);
  return id;
}

NodeId NodeId::from_seed(uint64_t seed) {
  Rng rng(seed);
  NodeId id;
  for (size_t i = 0; i < kBytes; i += 8) {
    uint64_t word = rng.next_u64();
    for (size_t j = 0; j < 8; ++j) id.bytes[i + j] = static_cast<uint8_t>(word >> (8 * j));
  }
  return id;
}

NodeId NodeId::distance_to(const NodeId& other) const {
  NodeId distance;
  for (size_t i = 0; i < kBytes; ++i) distance.bytes[i] = bytes[i] ^ other.bytes[i];
  return distance;
}

int NodeId::leading_zero_bits() const {
  for (size_t i = 0; i < kBytes; ++i) {
    if (bytes[i] != 0) return static_cast<int>(i * 8) + __builtin_clz(bytes[i]) - 24;
  }
  return kBits;
}

bool NodeId::is_zero() const {
  return leading_zero_bits() == kBits;
}

std::string NodeId::to_hex() const {
  return crypto::to_hex(bytes);
}

int bucket_index(const NodeId& self, const NodeId& other) {
  return NodeId::kBits - 1 - self.distance_to(other).leading_zero_bits();
}

bool closer_to(const NodeId& target, const NodeId& a, const NodeId& b) {
  for (size_t i = 0; i < NodeId::kBytes; ++i) {
    uint8_t da = a.bytes[i] ^ target.bytes[i];
    uint8_t db = b.bytes[i] ^ target.bytes[i];
    if (da != db) return da < db;
  }
  return false;
}

}  // namespace peerd
