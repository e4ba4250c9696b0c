#include "peerd/core/transfer/rendezvous.h"

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
  const size_t want = out.size() < member_hashes.size() ? out.size() : member_hashes.size();
  if (want == 0) return 0;
  std::array<uint64_t, kRanksMax> scores{};
  size_t filled = 0;
  for (size_t position = 0; position < member_hashes.size(); ++position) {
    const uint64_t score = rendezvous_score(member_hashes[position], chunk_hash);
    if (filled == want && score <= scores[want - 1]) continue;
    // Insertion into the short sorted prefix (want is tiny: 1-4 in practice).
    size_t slot = filled < want ? filled++ : want - 1;
    while (slot > 0 && scores[slot - 1] < score) {
      scores[slot] = scores[slot - 1];
      out[slot] = out[slot - 1];
      --slot;
    }
    scores[slot] = score;
    out[slot] = static_cast<uint32_t>(position);
  }
  return filled;
}

}  // namespace peerd::transfer
