#pragma once
// Rendezvous (highest-random-weight) hashing: every node ranks the live members for a chunk by
// score(member, chunk) and agrees on the same owner without talking, as long as their membership views agree.
// When the owner leaves, only its chunks move (to each chunk's second-ranked member), which is also where a
// node goes when the owner fails to answer: the fallback owner is consistent cluster-wide, so the upstream is
// still asked about once per chunk.
//
// Scores mix 64-bit hashes (node ids and content ids are sha256 outputs already), so ranking a chunk over n
// members costs n multiply-xorshift rounds and no allocation.
#include <cstddef>
#include <cstdint>
#include <span>

#include "peerd/core/common/node_id.h"

namespace peerd::transfer {

// splitmix64's finaliser: a bijective, well-mixed 64-bit hash.
constexpr uint64_t mix64(uint64_t value) {
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  value ^= value >> 31;
  return value;
}

// The leading 8 bytes of a 256-bit id (uniform, since ids are hashes).
uint64_t id_hash64(const NodeId& id);

// The rendezvous key of chunk `index` of a content whose id hashes to `content_hash64`.
constexpr uint64_t chunk_hash64(uint64_t content_hash64, uint64_t index) {
  return mix64(content_hash64 ^ mix64(index + 0x9e3779b97f4a7c15ull));
}

// One multiply: both inputs are uniform hashes already, so a multiply-xorshift mixes enough to rank by, and
// ranking 1000 members stays around a microsecond.
constexpr uint64_t rendezvous_score(uint64_t member_hash64, uint64_t chunk_hash) {
  const uint64_t mixed = (member_hash64 ^ chunk_hash) * 0x9e3779b97f4a7c15ull;
  return mixed ^ (mixed >> 32);
}

// Fills `out` with the positions (in `member_hashes`) of the min(out.size(), members) highest-scoring
// members, best first; returns how many were written. Ties (equal hashes) keep the lower position first.
size_t rendezvous_top(std::span<const uint64_t> member_hashes, uint64_t chunk_hash, std::span<uint32_t> out);

}  // namespace peerd::transfer
