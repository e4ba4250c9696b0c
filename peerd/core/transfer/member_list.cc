#include "peerd/core/transfer/member_list.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "peerd/core/transfer/rendezvous.h"

namespace peerd::transfer {

std::shared_ptr<const MemberList> MemberList::build(std::span<const Peer> members, size_t members_max,
                                                    const Peer* also) {
  auto list = std::make_shared<MemberList>();
  std::vector<Peer> listed;
  listed.reserve(std::min(members.size(), members_max) + 1);
  bool also_listed = false;
  for (const Peer& member : members) {
    if (listed.size() >= members_max) {
      ++list->dropped_;
      continue;
    }
    also_listed |= also != nullptr && member.id == also->id;
    listed.push_back(member);
  }
  if (also != nullptr && !also_listed) listed.push_back(*also);
  // Sorted by id through (id_hash64, position) pairs: the big-endian leading 8 bytes order like the ids and
  // decide nearly every comparison, and no Peer moves. Of an id listed twice the later address is kept.
  std::vector<std::pair<uint64_t, uint32_t>> order;
  order.reserve(listed.size());
  for (uint32_t position = 0; position < listed.size(); ++position)
    order.emplace_back(id_hash64(listed[position].id), position);
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    const NodeId& a_id = listed[a.second].id;
    const NodeId& b_id = listed[b.second].id;
    return a_id != b_id ? a_id < b_id : a.second < b.second;
  });
  list->peers_.reserve(order.size());
  list->hashes_.reserve(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const Peer& member = listed[order[i].second];
    if (i + 1 < order.size() && listed[order[i + 1].second].id == member.id) continue;
    list->peers_.push_back(member);
    list->hashes_.push_back(order[i].first);
  }
  return list;
}

const Peer* MemberList::find(const NodeId& id) const {
  const auto it = std::lower_bound(peers_.begin(), peers_.end(), id,
                                   [](const Peer& member, const NodeId& key) { return member.id < key; });
  return it != peers_.end() && it->id == id ? &*it : nullptr;
}

size_t MemberList::top(uint64_t chunk_hash, std::span<uint32_t> out) const {
  assert(out.size() <= kRanksMax);
  auto it = memo_.find(chunk_hash);
  if (it == memo_.end()) {
    if (memo_.size() >= kMemoEntriesMax) memo_.clear();
    Ranked ranked;
    // The best kRanksMax; fewer ranks are its prefix (the order is by score, then position).
    ranked.count = static_cast<uint32_t>(rendezvous_top(hashes_, chunk_hash, ranked.positions));
    it = memo_.emplace(chunk_hash, ranked).first;
  }
  const size_t count = std::min<size_t>(out.size(), it->second.count);
  std::copy_n(it->second.positions.begin(), count, out.begin());
  return count;
}

size_t MemberList::balanced_top(uint64_t content_hash, uint64_t chunk_count, uint64_t index,
                                std::span<uint32_t> out) const {
  assert(out.size() <= kRanksMax);
  if (index >= chunk_count || chunk_count > kBalancedChunksMax || peers_.empty())
    return top(chunk_hash64(content_hash, index), out);
  auto it = std::find_if(balanced_.begin(), balanced_.end(), [&](const Balanced& entry) {
    return entry.content_hash == content_hash && entry.chunk_count == chunk_count;
  });
  if (it == balanced_.end()) {
    if (balanced_.size() >= kBalancedContentsMax) balanced_.clear();
    Balanced entry{content_hash, chunk_count, {}};
    entry.ranks.resize(chunk_count);
    const uint64_t cap =
        std::max<uint64_t>(1, (chunk_count * 5 + 4 * peers_.size() - 1) / (4 * peers_.size()));
    std::vector<uint32_t> loads(peers_.size(), 0);
    for (uint64_t chunk = 0; chunk < chunk_count; ++chunk) {
      Ranked& ranked = entry.ranks[chunk];
      ranked.count = static_cast<uint32_t>(top(chunk_hash64(content_hash, chunk), ranked.positions));
      uint32_t chosen = 0;
      for (uint32_t rank = 0; rank < ranked.count; ++rank) {
        if (loads[ranked.positions[rank]] < cap) {
          chosen = rank;
          break;
        }
        if (loads[ranked.positions[rank]] < loads[ranked.positions[chosen]]) chosen = rank;
      }
      std::rotate(ranked.positions.begin(), ranked.positions.begin() + chosen,
                  ranked.positions.begin() + chosen + 1);
      ++loads[ranked.positions[0]];
    }
    balanced_.push_back(std::move(entry));
    it = balanced_.end() - 1;
  }
  const Ranked& ranked = it->ranks[index];
  const size_t count = std::min<size_t>(out.size(), ranked.count);
  std::copy_n(ranked.positions.begin(), count, out.begin());
  return count;
}

}  // namespace peerd::transfer
