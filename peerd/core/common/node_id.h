#pragma once
// 256-bit identifiers of the Kademlia key space. Node ids and content-key ids live in the same space;
// closeness is XOR distance.
#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace peerd {

struct NodeId {
  static constexpr size_t kBytes = 32;
  static constexpr int kBits = 256;

  std::array<uint8_t, kBytes> bytes{};

  // sha256 of arbitrary text: how content keys and seeded node ids become ids.
  static NodeId hash_of(std::string_view text);
  // A deterministic pseudo-random id (tests and simulations choose node ids from a seed).
  static NodeId from_seed(uint64_t seed);

  NodeId distance_to(const NodeId& other) const;
  // Number of leading zero bits; 256 for the zero id.
  int leading_zero_bits() const;
  // Bit `index` counted from the most significant bit (0 = MSB).
  bool bit(int index) const { return (bytes[index / 8] >> (7 - index % 8)) & 1; }
  bool is_zero() const;

  std::string to_hex() const;
  std::string short_hex() const { return to_hex().substr(0, 12); }

  auto operator<=>(const NodeId&) const = default;
};

// Index of the k-bucket of `other` as seen from `self`: 255 - shared prefix length; -1 when equal.
int bucket_index(const NodeId& self, const NodeId& other);

// True when `a` is strictly closer to `target` than `b` (XOR metric).
bool closer_to(const NodeId& target, const NodeId& a, const NodeId& b);

struct NodeIdHash {
  size_t operator()(const NodeId& id) const {
    size_t value = 0;
    for (size_t i = 0; i < sizeof(size_t); ++i) value = (value << 8) | id.bytes[i];
    return value;  // ids are hashes already: their leading bytes are uniform
  }
};

}  // namespace peerd
