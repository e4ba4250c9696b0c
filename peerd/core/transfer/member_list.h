#pragma once
// The member list rendezvous hashing ranks (engine.h, handle_membership): the live members sorted by id,
// their rendezvous hashes, and a memo of each chunk's best-ranked members.
//
// Immutable once built, except for the memo, which caches a pure function of the list (rendezvous_top), so
// the answers never depend on what was asked before. Engines driven from one thread may therefore share one
// list: a simulation of N nodes then holds one copy instead of N (60 bytes a member each) and ranks a chunk
// once for the whole cluster instead of once per node (an O(members) scan). Not thread-safe: engines on
// different threads need their own lists.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "peerd/core/transfer/types.h"

namespace peerd::transfer {

class MemberList {
 public:
  // Ranks a memo keeps per chunk: the most any caller asks for (the engine's owner ranks + 1).
  static constexpr size_t kRanksMax = 5;
  static constexpr size_t kMemoEntriesMax = size_t{1} << 20;  // then the memo starts over (~64 MB)
  static constexpr uint64_t kBalancedChunksMax = 4096;        // 4 GiB at the default chunk size

  // Sorted by id; of an id listed twice the later address is kept. At most `members_max` of `members` are
  // taken (the rest are counted in dropped()); `also` (if given and not listed) is added beyond that limit.
  static std::shared_ptr<const MemberList> build(std::span<const Peer> members, size_t members_max,
                                                 const Peer* also = nullptr);

  size_t size() const { return peers_.size(); }
  bool empty() const { return peers_.empty(); }
  const Peer& operator[](size_t position) const { return peers_[position]; }
  std::span<const Peer> peers() const { return peers_; }
  std::span<const uint64_t> hashes() const { return hashes_; }
  size_t dropped() const { return dropped_; }
  const Peer* find(const NodeId& id) const;

  // rendezvous_top over the list (positions of the min(out.size(), size()) highest-scoring members, best
  // first; out.size() <= kRanksMax), memoised per chunk hash. Returns how many were written.
  size_t top(uint64_t chunk_hash, std::span<uint32_t> out) const;

  // Owners with a bounded load: the chunks of a content of `chunk_count` chunks are taken in index order,
  // and each goes to the first of its top() members that owns fewer than the cap (ceil(1.25 x chunks /
  // members), at least 1), else to the least loaded of them; that member comes first and the other top()
  // members follow in their order. Plain rendezvous gives some members 3-6 chunks of a big blob while most
  // have none, and in a cold pull an owner sends each of its chunks to every node, so those few set the
  // pace. A pure function of the list and (content, chunk_count): nodes with the same view agree.
  // An index at or past chunk_count, or a content of more than kBalancedChunksMax chunks, gets top(): the
  // first call ranks every chunk of the content (an O(members) scan each), which must stay small.
  size_t balanced_top(uint64_t content_hash, uint64_t chunk_count, uint64_t index,
                      std::span<uint32_t> out) const;

 private:
  struct Ranked {
    std::array<uint32_t, kRanksMax> positions{};
    uint32_t count = 0;
  };

  std::vector<Peer> peers_;
  std::vector<uint64_t> hashes_;  // id_hash64 of each member, parallel to peers_
  size_t dropped_ = 0;
  mutable std::unordered_map<uint64_t, Ranked> memo_;
  struct Balanced {
    uint64_t content_hash = 0;
    uint64_t chunk_count = 0;
    std::vector<Ranked> ranks;  // per chunk index
  };
  static constexpr size_t kBalancedContentsMax = 64;  // then that memo starts over
  mutable std::vector<Balanced> balanced_;
};

}  // namespace peerd::transfer
