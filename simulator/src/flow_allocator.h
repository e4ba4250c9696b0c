#pragma once
// Fluid flows sharing link capacity max-min fairly (the flow fidelity's bandwidth model). C++17-clean and
// free of ns-3: time comes in as seconds, so the unit tests drive it directly.
//
// Bundles. Flows with the same path (the same list of links) always get the same rate under max-min fairness,
// so they are kept in a *bundle*: one rate, and one virtual byte counter (bytes each of its flows has
// received since the bundle was created). A flow remembers the counter's value at its start; its progress is
// the difference and its finish is when the counter reaches start + size, so a rate change costs O(1) per
// bundle, not per flow.
//
// Rates. Every link l keeps a fair share s_l: the rate a flow gets on l when l is its bottleneck. Given the
// caps of its bundles (cap_b = the smallest share among b's other links), s_l solves
//     sum over bundles b on l of  flows_b x min(s_l, cap_b)  =  capacity_l       (s_l = infinity if
//     unreachable)
// by water-filling over the caps, and a bundle's rate is the smallest share on its path. Recomputing a
// link can change the caps of its neighbours, so changed links are re-examined until nothing moves: the
// classic distributed max-min computation (Bertsekas & Gallager, Data Networks, 6.5), whose fixed point is
// the max-min fair allocation. Only links whose inputs changed are recomputed, so the cost of a flow starting
// or ending is proportional to the part of the network it affects, not to the number of flows.
//
// Tolerance. A link is re-examined once the usage changes it has not yet accounted for exceed
// `tolerance` x capacity, and a new share is passed on to its bundles once it moved by more than `tolerance`
// relative; until then a bundle keeps its rate. So each rate is within about `tolerance` of the max-min rate,
// and a link carrying thousands of flows is not recomputed for each one of them. tolerance = 0 is exact.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>
#include <utility>
#include <vector>

#include "simulator/src/dary_heap.h"

namespace peerd::sim {

class FlowAllocator {
 public:
  static constexpr size_t kPathLinksMax = 6;
  using FlowId = uint64_t;
  using LinkId = uint32_t;

  explicit FlowAllocator(double tolerance = 0) : tolerance_(tolerance) {}

  LinkId add_link(double capacity_bytes_per_second);
  double link_capacity(LinkId link) const { return links_[link].capacity; }

  // A flow of `bytes` over `links` (1..kPathLinksMax distinct links) starting at `now_seconds`. It runs at
  // the smallest current share on its path until the next recompute() (rate 0 if none of its links has a
  // share).
  FlowId add_flow(double now_seconds, const LinkId* links, size_t link_count, double bytes);
  // Removes a flow (finished or aborted); returns the bytes it had received.
  double remove_flow(double now_seconds, FlowId flow);
  double sent_bytes(double now_seconds, FlowId flow) const;
  double rate(FlowId flow) const;  // bytes per second
  bool contains(FlowId flow) const;

  // Re-examines the links whose flows changed, and their neighbours, until the rates settle.
  void recompute(double now_seconds);
  // When the next flow finishes at the current rates (infinity when none will).
  double next_finish_seconds();
  // Appends the flows that have received all their bytes by `now_seconds` and removes them.
  void pop_finished(double now_seconds, std::vector<FlowId>& finished);

  size_t flow_count() const { return flow_count_; }
  size_t bundle_count() const { return bundles_active_; }
  bool settled() const { return dirty_.empty(); }
  uint64_t link_recomputations() const { return link_recomputations_; }
  uint64_t recompute_budget_exhausted() const { return budget_exhausted_; }
  // Sum of the rates of the flows crossing `link` (tests check capacity is respected and used).
  double link_load(LinkId link) const;

 private:
  struct Link {
    double capacity = 0;
    std::vector<uint32_t> bundles;  // active bundles crossing this link
    uint64_t flows = 0;
    double share_published = 0;  // the share the bundles were last updated with
    double pending = 0;          // usage change (bytes/s) not yet accounted for
    bool dirty = false;
  };
  struct Bundle {
    // What solving a link's share and publishing it read, in the first cache line.
    LinkId links[kPathLinksMax] = {};
    uint8_t hops = 0;
    bool active = false;
    uint64_t flows = 0;
    double rate = 0;           // per flow
    double virtual_bytes = 0;  // at `updated`
    double updated = 0;
    uint32_t positions[kPathLinksMax] = {};  // index of this bundle in each link's `bundles`
    uint64_t path_key = 0;
    uint64_t finish_stamp = 0;  // matches the live finish_heap_ entry; 0 = none
    double finish_at = 0;       // that entry's time: never later than the bundle's finish
    std::vector<std::pair<double, uint32_t>> by_finish;  // (virtual finish, flow slot), ascending
  };
  struct Flow {
    uint32_t bundle = 0;
    uint32_t generation = 0;
    bool live = false;
    double start_virtual = 0;
    double bytes = 0;
  };

  double virtual_now(const Bundle& bundle, double now_seconds) const;
  void advance(Bundle& bundle, double now_seconds);
  void set_rate(uint32_t bundle_index, double rate, double now_seconds);
  void update_finish(uint32_t bundle_index);
  double finish_seconds(const Bundle& bundle) const;  // of its first flow to finish, at the current rate
  // Pops superseded entries and re-files early ones until the top is a live bundle's true finish time.
  void settle_finish_top();
  double path_min_share(const Bundle& bundle) const;
  double cap_excluding(const Bundle& bundle, LinkId link) const;
  double solve_share(LinkId link) const;
  void note_change(LinkId link, double usage_change);
  void mark_dirty(LinkId link);
  void recompute_link(LinkId link, double now_seconds);
  uint32_t bundle_for(const LinkId* links, size_t link_count, bool& created);
  void release_bundle(uint32_t bundle_index);
  const Flow* resolve(FlowId flow) const;
  void erase_flow(uint32_t slot);

  double tolerance_;
  std::vector<Link> links_;
  // s_l of every link (infinity when no bundle is limited there), apart from the rest of Link: every bundle
  // visit reads the shares of its path, and a dense array of them stays in cache at 20 000 links.
  std::vector<double> shares_;
  std::vector<Bundle> bundles_;
  std::vector<uint32_t> free_bundles_;
  std::unordered_multimap<uint64_t, uint32_t> bundle_index_;  // path hash -> bundles with that hash
  size_t bundles_active_ = 0;
  std::vector<Flow> flows_;
  std::vector<uint32_t> free_flows_;
  size_t flow_count_ = 0;
  struct FinishEntry {
    double at = 0;
    uint32_t bundle = 0;
    uint64_t stamp = 0;
  };
  struct FinishBefore {
    bool operator()(const FinishEntry& a, const FinishEntry& b) const {
      return a.at != b.at ? a.at < b.at : a.stamp < b.stamp;
    }
  };
  // Min-heap of bundle finish times; an entry is live while its stamp is its bundle's finish_stamp.
  DaryHeap<FinishEntry, FinishBefore> finish_heap_;
  uint64_t finish_stamp_next_ = 1;
  std::deque<LinkId> dirty_;
  uint64_t link_recomputations_ = 0;
  uint64_t budget_exhausted_ = 0;
  mutable std::vector<std::pair<double, uint64_t>> caps_scratch_;
};

}  // namespace peerd::sim
