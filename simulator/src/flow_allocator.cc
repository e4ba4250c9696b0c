#include "simulator/src/flow_allocator.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace peerd::sim {

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// A flow whose counter is within this many bytes of its end is finished (event times are rounded to ns).
constexpr double kFinishSlackBytes = 0.5;
constexpr double kFinishSlackSeconds = 1e-9;
// Share and rate changes smaller than this (relative) are rounding, not news.
constexpr double kRelativeEpsilon = 1e-9;

uint64_t mix(uint64_t value) {
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

uint64_t path_hash(const FlowAllocator::LinkId* links, size_t count) {
  uint64_t hash = count;
  for (size_t i = 0; i < count; ++i)
    hash = mix(hash ^ (uint64_t{links[i]} + 0x9e3779b97f4a7c15ull * (i + 1)));
  return hash;
}

}  // namespace

FlowAllocator::LinkId FlowAllocator::add_link(double capacity_bytes_per_second) {
  assert(capacity_bytes_per_second > 0);
  Link link;
  link.capacity = capacity_bytes_per_second;
  link.share_published = kInfinity;
  links_.push_back(std::move(link));
  shares_.push_back(kInfinity);
  return static_cast<LinkId>(links_.size() - 1);
}

double FlowAllocator::virtual_now(const Bundle& bundle, double now_seconds) const {
  return bundle.virtual_bytes + bundle.rate * std::max(0.0, now_seconds - bundle.updated);
}

void FlowAllocator::advance(Bundle& bundle, double now_seconds) {
  bundle.virtual_bytes = virtual_now(bundle, now_seconds);
  bundle.updated = std::max(bundle.updated, now_seconds);
}

void FlowAllocator::set_rate(uint32_t bundle_index, double rate, double now_seconds) {
  Bundle& bundle = bundles_[bundle_index];
  advance(bundle, now_seconds);
  bundle.rate = rate;
  update_finish(bundle_index);
}

double FlowAllocator::finish_seconds(const Bundle& bundle) const {
  const double left = std::max(0.0, bundle.by_finish.front().first - bundle.virtual_bytes);
  return bundle.updated + left / bundle.rate;
}

void FlowAllocator::update_finish(uint32_t bundle_index) {
  Bundle& bundle = bundles_[bundle_index];
  if (bundle.by_finish.empty() || !(bundle.rate > 0)) {
    bundle.finish_stamp = 0;
    return;
  }
  const double at = finish_seconds(bundle);
  // A rate that fell moves the finish later: the live entry is then early, which is harmless (it is checked
  // when it reaches the top), and saves a push and a stale pop for each of the many small rate changes.
  if (bundle.finish_stamp != 0 && bundle.finish_at <= at) return;
  bundle.finish_stamp = finish_stamp_next_++;
  bundle.finish_at = at;
  finish_heap_.push(FinishEntry{at, bundle_index, bundle.finish_stamp});
  if (finish_heap_.size() > 8 * bundles_active_ + 4096) {
    // Mostly superseded entries: keep the live ones only.
    finish_heap_.filter(
        [this](const FinishEntry& entry) { return bundles_[entry.bundle].finish_stamp == entry.stamp; });
  }
}

void FlowAllocator::settle_finish_top() {
  while (!finish_heap_.empty()) {
    const FinishEntry top = finish_heap_.top();
    Bundle& bundle = bundles_[top.bundle];
    if (bundle.finish_stamp != top.stamp) {
      finish_heap_.pop();  // superseded
      continue;
    }
    const double at = finish_seconds(bundle);
    if (at <= top.at + kFinishSlackSeconds) return;
    // Early (the rate fell since): put it where it belongs.
    finish_heap_.pop();
    bundle.finish_stamp = finish_stamp_next_++;
    bundle.finish_at = at;
    finish_heap_.push(FinishEntry{at, top.bundle, bundle.finish_stamp});
  }
}

double FlowAllocator::path_min_share(const Bundle& bundle) const {
  double share = kInfinity;
  for (size_t hop = 0; hop < bundle.hops; ++hop) share = std::min(share, shares_[bundle.links[hop]]);
  return share;
}

double FlowAllocator::cap_excluding(const Bundle& bundle, LinkId link) const {
  double cap = kInfinity;
  for (size_t hop = 0; hop < bundle.hops; ++hop) {
    if (bundle.links[hop] != link) cap = std::min(cap, shares_[bundle.links[hop]]);
  }
  return cap;
}

// Water-filling on one link: bundles capped below the level take their cap, the rest share what is left.
// Every cap below the current level (what is left / flows left) is taken whatever the order (taking it
// only raises the level), so instead of sorting all caps each round takes those below the level and
// raises it, until none is below: usually one or two passes over a link's bundles, not a sort.
double FlowAllocator::solve_share(LinkId id) const {
  const Link& link = links_[id];
  auto& caps = caps_scratch_;
  caps.clear();
  for (uint32_t bundle_index : link.bundles) {
    const Bundle& bundle = bundles_[bundle_index];
    const double cap = cap_excluding(bundle, id);
    if (!std::isinf(cap)) caps.emplace_back(cap, bundle.flows);
  }
  double remaining = link.capacity;
  uint64_t count = link.flows;
  size_t open = caps.size();  // caps[0, open) are not taken yet
  while (count > 0 && open > 0) {
    const double level = remaining / double(count);
    size_t kept = 0;
    for (size_t i = 0; i < open; ++i) {
      if (caps[i].first < level) {
        remaining -= caps[i].first * double(caps[i].second);
        count -= caps[i].second;
      } else {
        caps[kept++] = caps[i];
      }
    }
    if (kept == open) break;  // nothing below the level: it is the share
    open = kept;
  }
  return count > 0 ? std::max(0.0, remaining) / double(count) : kInfinity;
}

void FlowAllocator::mark_dirty(LinkId id) {
  Link& link = links_[id];
  if (link.dirty) return;
  link.dirty = true;
  dirty_.push_back(id);
}

void FlowAllocator::note_change(LinkId id, double usage_change) {
  Link& link = links_[id];
  link.pending += std::fabs(usage_change);
  if (link.pending > tolerance_ * link.capacity || tolerance_ == 0) mark_dirty(id);
}

void FlowAllocator::recompute_link(LinkId id, double now_seconds) {
  Link& link = links_[id];
  link.dirty = false;
  link.pending = 0;
  ++link_recomputations_;
  const double share = solve_share(id);
  shares_[id] = share;
  const double published = link.share_published;
  const double significance = std::max(tolerance_, kRelativeEpsilon);
  const bool moved = std::isinf(share) != std::isinf(published) ||
                     (!std::isinf(share) && std::fabs(share - published) > significance * published);
  if (!moved) return;
  link.share_published = share;
  for (size_t i = 0; i < link.bundles.size(); ++i) {
    const uint32_t bundle_index = links_[id].bundles[i];
    Bundle& bundle = bundles_[bundle_index];
    const double rate = path_min_share(bundle);
    if (std::isinf(rate)) {
      // Every link of the path thinks another one limits it: let them all look again.
      for (size_t hop = 0; hop < bundle.hops; ++hop) mark_dirty(bundle.links[hop]);
      continue;
    }
    if (bundle.rate > 0 && std::fabs(rate - bundle.rate) <= kRelativeEpsilon * bundle.rate) continue;
    const double usage_change = (rate - bundle.rate) * double(bundle.flows);
    set_rate(bundle_index, rate, now_seconds);
    for (size_t hop = 0; hop < bundle.hops; ++hop) {
      if (bundle.links[hop] != id) note_change(bundle.links[hop], usage_change);
    }
  }
}

void FlowAllocator::recompute(double now_seconds) {
  // Enough for the propagation to settle in practice; if it does not, the rest waits for the next call.
  uint64_t budget = 64 * (dirty_.size() + 16);
  while (!dirty_.empty()) {
    if (budget-- == 0) {
      ++budget_exhausted_;
      return;
    }
    const LinkId id = dirty_.front();
    dirty_.pop_front();
    if (links_[id].dirty) recompute_link(id, now_seconds);
  }
}

uint32_t FlowAllocator::bundle_for(const LinkId* links, size_t link_count, bool& created) {
  const uint64_t key = path_hash(links, link_count);
  const auto range = bundle_index_.equal_range(key);
  for (auto it = range.first; it != range.second; ++it) {
    const Bundle& bundle = bundles_[it->second];
    if (bundle.hops == link_count && std::equal(links, links + link_count, bundle.links)) {
      created = false;
      return it->second;
    }
  }
  created = true;
  uint32_t index;
  if (!free_bundles_.empty()) {
    index = free_bundles_.back();
    free_bundles_.pop_back();
  } else {
    index = static_cast<uint32_t>(bundles_.size());
    bundles_.emplace_back();
  }
  Bundle& bundle = bundles_[index];
  bundle = Bundle{};
  bundle.active = true;
  bundle.path_key = key;
  bundle.hops = static_cast<uint8_t>(link_count);
  for (size_t hop = 0; hop < link_count; ++hop) {
    bundle.links[hop] = links[hop];
    Link& link = links_[links[hop]];
    bundle.positions[hop] = static_cast<uint32_t>(link.bundles.size());
    link.bundles.push_back(index);
  }
  bundle_index_.emplace(key, index);
  ++bundles_active_;
  return index;
}

void FlowAllocator::release_bundle(uint32_t index) {
  Bundle& bundle = bundles_[index];
  assert(bundle.flows == 0 && bundle.by_finish.empty());
  for (size_t hop = 0; hop < bundle.hops; ++hop) {
    Link& link = links_[bundle.links[hop]];
    const uint32_t position = bundle.positions[hop];
    const uint32_t moved = link.bundles.back();
    link.bundles[position] = moved;
    link.bundles.pop_back();
    if (moved != index) {
      Bundle& other = bundles_[moved];
      for (size_t other_hop = 0; other_hop < other.hops; ++other_hop) {
        if (other.links[other_hop] == bundle.links[hop]) other.positions[other_hop] = position;
      }
    }
  }
  const auto range = bundle_index_.equal_range(bundle.path_key);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == index) {
      bundle_index_.erase(it);
      break;
    }
  }
  bundle = Bundle{};
  free_bundles_.push_back(index);
  --bundles_active_;
}

FlowAllocator::FlowId FlowAllocator::add_flow(double now_seconds, const LinkId* links, size_t link_count,
                                              double bytes) {
  assert(link_count >= 1 && link_count <= kPathLinksMax);
  bool created = false;
  const uint32_t bundle_index = bundle_for(links, link_count, created);
  uint32_t slot;
  if (!free_flows_.empty()) {
    slot = free_flows_.back();
    free_flows_.pop_back();
  } else {
    slot = static_cast<uint32_t>(flows_.size());
    flows_.emplace_back();
  }
  Bundle& bundle = bundles_[bundle_index];
  if (created) {
    bundle.updated = now_seconds;
    const double share = path_min_share(bundle);
    bundle.rate = std::isinf(share) ? 0.0 : share;
  }
  advance(bundle, now_seconds);
  Flow& flow = flows_[slot];
  ++flow.generation;
  flow.live = true;
  flow.bundle = bundle_index;
  flow.start_virtual = bundle.virtual_bytes;
  flow.bytes = bytes;
  const std::pair<double, uint32_t> entry{flow.start_virtual + bytes, slot};
  bundle.by_finish.insert(std::upper_bound(bundle.by_finish.begin(), bundle.by_finish.end(), entry), entry);
  ++bundle.flows;
  ++flow_count_;
  for (size_t hop = 0; hop < bundle.hops; ++hop) {
    ++links_[bundle.links[hop]].flows;
    if (bundle.rate > 0) {
      note_change(bundle.links[hop], bundle.rate);
    } else {
      mark_dirty(bundle.links[hop]);
    }
  }
  update_finish(bundle_index);
  return (uint64_t{flow.generation} << 32) | slot;
}

const FlowAllocator::Flow* FlowAllocator::resolve(FlowId id) const {
  const uint32_t slot = static_cast<uint32_t>(id);
  if (slot >= flows_.size()) return nullptr;
  const Flow& flow = flows_[slot];
  if (!flow.live || flow.generation != static_cast<uint32_t>(id >> 32)) return nullptr;
  return &flow;
}

bool FlowAllocator::contains(FlowId flow) const {
  return resolve(flow) != nullptr;
}

double FlowAllocator::rate(FlowId id) const {
  const Flow* flow = resolve(id);
  return flow ? bundles_[flow->bundle].rate : 0.0;
}

double FlowAllocator::sent_bytes(double now_seconds, FlowId id) const {
  const Flow* flow = resolve(id);
  if (!flow) return 0;
  const double sent = virtual_now(bundles_[flow->bundle], now_seconds) - flow->start_virtual;
  return std::clamp(sent, 0.0, flow->bytes);
}

void FlowAllocator::erase_flow(uint32_t slot) {
  Flow& flow = flows_[slot];
  const uint32_t bundle_index = flow.bundle;
  Bundle& bundle = bundles_[bundle_index];
  const auto entry = std::find(bundle.by_finish.begin(), bundle.by_finish.end(),
                               std::pair<double, uint32_t>{flow.start_virtual + flow.bytes, slot});
  assert(entry != bundle.by_finish.end());
  bundle.by_finish.erase(entry);
  --bundle.flows;
  for (size_t hop = 0; hop < bundle.hops; ++hop) {
    --links_[bundle.links[hop]].flows;
    note_change(bundle.links[hop], bundle.rate > 0 ? bundle.rate : links_[bundle.links[hop]].capacity);
  }
  flow.live = false;
  free_flows_.push_back(slot);
  --flow_count_;
  if (bundle.flows == 0) {
    release_bundle(bundle_index);
  } else {
    update_finish(bundle_index);
  }
}

double FlowAllocator::remove_flow(double now_seconds, FlowId id) {
  if (!resolve(id)) return 0;
  const double sent = sent_bytes(now_seconds, id);
  const uint32_t slot = static_cast<uint32_t>(id);
  advance(bundles_[flows_[slot].bundle], now_seconds);
  erase_flow(slot);
  return sent;
}

double FlowAllocator::next_finish_seconds() {
  settle_finish_top();
  return finish_heap_.empty() ? kInfinity : finish_heap_.top().at;
}

void FlowAllocator::pop_finished(double now_seconds, std::vector<FlowId>& finished) {
  for (;;) {
    settle_finish_top();
    // A nanosecond of slack: the caller's clock is in whole nanoseconds, finish times are not.
    if (finish_heap_.empty() || finish_heap_.top().at > now_seconds + kFinishSlackSeconds) return;
    const uint32_t bundle_index = finish_heap_.top().bundle;
    Bundle& bundle = bundles_[bundle_index];
    advance(bundle, now_seconds);
    bool any = false;
    while (!bundle.by_finish.empty() &&
           bundle.by_finish.front().first <= bundle.virtual_bytes + kFinishSlackBytes) {
      const uint32_t slot = bundle.by_finish.front().second;
      finished.push_back((uint64_t{flows_[slot].generation} << 32) | slot);
      any = true;
      const bool last = bundle.flows == 1;
      erase_flow(slot);
      if (last) break;  // the bundle was released
    }
    if (!any) {
      // Rounding left the head a hair short: it finishes at the next instant.
      bundle.virtual_bytes = std::max(bundle.virtual_bytes, bundle.by_finish.front().first);
      update_finish(bundle_index);
    }
  }
}

double FlowAllocator::link_load(LinkId id) const {
  double load = 0;
  for (uint32_t bundle_index : links_[id].bundles) {
    load += bundles_[bundle_index].rate * double(bundles_[bundle_index].flows);
  }
  return load;
}

}  // namespace peerd::sim
