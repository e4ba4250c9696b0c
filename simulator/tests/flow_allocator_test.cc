// The flow fidelity's bandwidth model: max-min fair sharing of link capacity among fluid flows.
#include "simulator/src/flow_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <queue>
#include <vector>

#include "simulator/src/dary_heap.h"

namespace peerd::sim {
namespace {

using LinkId = FlowAllocator::LinkId;

// Two flows on one link split it evenly, and one finishing hands its share to the other.
TEST(FlowAllocatorTest, FlowsOnOneLinkShareItEvenly) {
  FlowAllocator allocator;
  const LinkId link = allocator.add_link(100);
  const auto a = allocator.add_flow(0, &link, 1, 100);
  const auto b = allocator.add_flow(0, &link, 1, 300);
  allocator.recompute(0);
  EXPECT_DOUBLE_EQ(allocator.rate(a), 50);
  EXPECT_DOUBLE_EQ(allocator.rate(b), 50);
  EXPECT_DOUBLE_EQ(allocator.next_finish_seconds(), 2.0);
  std::vector<FlowAllocator::FlowId> finished;
  allocator.pop_finished(2.0, finished);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0], a);
  allocator.recompute(2.0);
  EXPECT_DOUBLE_EQ(allocator.rate(b), 100);
  EXPECT_DOUBLE_EQ(allocator.sent_bytes(2.0, b), 100);
  EXPECT_DOUBLE_EQ(allocator.next_finish_seconds(), 4.0);
}

// The classic max-min example: a flow bottlenecked elsewhere leaves its unused share to the others.
TEST(FlowAllocatorTest, BottleneckedFlowLeavesItsShareToOthers) {
  FlowAllocator allocator;
  const LinkId shared = allocator.add_link(100);
  const LinkId narrow = allocator.add_link(10);
  const LinkId narrow_path[] = {shared, narrow};
  const auto slow = allocator.add_flow(0, narrow_path, 2, 1000);
  const auto fast1 = allocator.add_flow(0, &shared, 1, 1000);
  const auto fast2 = allocator.add_flow(0, &shared, 1, 1000);
  allocator.recompute(0);
  EXPECT_DOUBLE_EQ(allocator.rate(slow), 10);
  EXPECT_DOUBLE_EQ(allocator.rate(fast1), 45);
  EXPECT_DOUBLE_EQ(allocator.rate(fast2), 45);
  EXPECT_NEAR(allocator.link_load(shared), 100, 1e-9);
}

// A chain of links: every link stays within capacity and every flow has a saturated bottleneck link on which
// it has the largest rate (the definition of max-min fairness), checked on a seeded random network.
TEST(FlowAllocatorTest, RandomNetworkIsFeasibleAndMaxMinFair) {
  FlowAllocator allocator;
  std::vector<LinkId> links;
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  for (int i = 0; i < 30; ++i) links.push_back(allocator.add_link(double(10 + next() % 90)));
  std::vector<std::vector<LinkId>> paths;
  std::vector<FlowAllocator::FlowId> flows;
  for (int i = 0; i < 200; ++i) {
    const LinkId first = static_cast<LinkId>(next() % 30);
    LinkId second = static_cast<LinkId>(next() % 30);
    if (second == first) second = (second + 1) % 30;
    std::vector<LinkId> path{links[first], links[second]};
    flows.push_back(allocator.add_flow(0, path.data(), path.size(), 1e6));
    paths.push_back(path);
  }
  allocator.recompute(0);
  for (LinkId link : links) EXPECT_LE(allocator.link_load(link), allocator.link_capacity(link) * (1 + 1e-9));
  for (size_t i = 0; i < flows.size(); ++i) {
    bool has_bottleneck = false;
    for (LinkId link : paths[i]) {
      const bool saturated = allocator.link_load(link) >= allocator.link_capacity(link) * (1 - 1e-9);
      bool largest = true;
      for (size_t j = 0; j < flows.size(); ++j) {
        for (LinkId other : paths[j]) {
          if (other == link && allocator.rate(flows[j]) > allocator.rate(flows[i]) * (1 + 1e-9))
            largest = false;
        }
      }
      has_bottleneck = has_bottleneck || (saturated && largest);
    }
    EXPECT_TRUE(has_bottleneck) << "flow " << i;
  }
}

// Reference: global progressive filling from scratch (rates per flow), for comparing with the incremental
// one.
std::vector<double> reference_rates(const std::vector<double>& capacities,
                                    const std::vector<std::vector<LinkId>>& paths) {
  std::vector<double> rates(paths.size(), 0);
  std::vector<bool> frozen(paths.size(), false);
  std::vector<double> remaining = capacities;
  for (;;) {
    double best = 1e300;
    LinkId best_link = 0;
    for (LinkId link = 0; link < capacities.size(); ++link) {
      size_t count = 0;
      for (size_t f = 0; f < paths.size(); ++f) {
        if (!frozen[f] && std::find(paths[f].begin(), paths[f].end(), link) != paths[f].end()) ++count;
      }
      if (count > 0 && remaining[link] / double(count) < best) {
        best = remaining[link] / double(count);
        best_link = link;
      }
    }
    if (best == 1e300) return rates;
    for (size_t f = 0; f < paths.size(); ++f) {
      if (frozen[f] || std::find(paths[f].begin(), paths[f].end(), best_link) == paths[f].end()) continue;
      frozen[f] = true;
      rates[f] = best;
      for (LinkId link : paths[f]) remaining[link] -= best;
    }
  }
}

// Flows come and go one at a time; after every change the incremental rates equal a from-scratch max-min
// computation (tolerance 0), so recomputing only the affected links loses nothing.
TEST(FlowAllocatorTest, IncrementalRatesMatchFromScratchMaxMin) {
  FlowAllocator allocator;
  std::vector<double> capacities;
  for (int i = 0; i < 12; ++i)
    capacities.push_back(allocator.link_capacity(allocator.add_link(10.0 + 7 * (i % 5))));
  uint64_t state = 777;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  std::vector<FlowAllocator::FlowId> flows;
  std::vector<std::vector<LinkId>> paths;
  for (int step = 0; step < 300; ++step) {
    if (flows.empty() || next() % 3 != 0) {
      std::vector<LinkId> path{static_cast<LinkId>(next() % 6), static_cast<LinkId>(6 + next() % 6)};
      flows.push_back(allocator.add_flow(step, path.data(), path.size(), 1e9));
      paths.push_back(path);
    } else {
      const size_t victim = next() % flows.size();
      allocator.remove_flow(step, flows[victim]);
      flows.erase(flows.begin() + static_cast<long>(victim));
      paths.erase(paths.begin() + static_cast<long>(victim));
    }
    allocator.recompute(step);
    const std::vector<double> expected = reference_rates(capacities, paths);
    for (size_t f = 0; f < flows.size(); ++f) {
      ASSERT_NEAR(allocator.rate(flows[f]), expected[f], 1e-6 * expected[f])
          << "step " << step << " flow " << f;
    }
  }
}

// With a tolerance, rates stay within it of max-min and a busy link is recomputed far less often than once
// per flow change.
TEST(FlowAllocatorTest, ToleranceBoundsErrorAndWork) {
  FlowAllocator exact;
  FlowAllocator loose(0.01);
  const LinkId shared_exact = exact.add_link(1000);
  const LinkId shared_loose = loose.add_link(1000);
  std::vector<FlowAllocator::FlowId> exact_flows;
  std::vector<FlowAllocator::FlowId> loose_flows;
  for (int i = 0; i < 2000; ++i) {
    exact_flows.push_back(exact.add_flow(0, &shared_exact, 1, 1e9));
    loose_flows.push_back(loose.add_flow(0, &shared_loose, 1, 1e9));
    exact.recompute(0);
    loose.recompute(0);
  }
  EXPECT_LT(loose.link_recomputations() * 4, exact.link_recomputations());
  EXPECT_NEAR(loose.rate(loose_flows.back()), exact.rate(exact_flows.back()),
              0.02 * exact.rate(exact_flows.back()));
  EXPECT_LE(loose.link_load(shared_loose), 1000 * 1.02);
}

// Removing a flow mid-way reports the bytes it received; flows sharing a path keep separate progress.
TEST(FlowAllocatorTest, RemovedFlowReportsItsProgress) {
  FlowAllocator allocator;
  const LinkId link = allocator.add_link(10);
  const auto first = allocator.add_flow(0, &link, 1, 100);
  allocator.recompute(0);
  const auto second = allocator.add_flow(4, &link, 1, 100);  // first has 40 bytes by now
  allocator.recompute(4);
  EXPECT_DOUBLE_EQ(allocator.sent_bytes(4, first), 40);
  EXPECT_DOUBLE_EQ(allocator.sent_bytes(6, second), 10);
  EXPECT_DOUBLE_EQ(allocator.remove_flow(6, first), 50);
  EXPECT_FALSE(allocator.contains(first));
  EXPECT_EQ(allocator.flow_count(), 1u);
  allocator.recompute(6);
  EXPECT_DOUBLE_EQ(allocator.rate(second), 10);
  EXPECT_DOUBLE_EQ(allocator.next_finish_seconds(), 15.0);
}

// A flow gets no rate before the first recomputation: the caller decides when rates change.
TEST(FlowAllocatorTest, NewFlowWaitsForRecompute) {
  FlowAllocator allocator;
  const LinkId link = allocator.add_link(10);
  const auto flow = allocator.add_flow(0, &link, 1, 100);
  EXPECT_EQ(allocator.rate(flow), 0);
  EXPECT_TRUE(std::isinf(allocator.next_finish_seconds()));
  allocator.recompute(1);
  EXPECT_DOUBLE_EQ(allocator.next_finish_seconds(), 11.0);
}

}  // namespace
}  // namespace peerd::sim

namespace peerd::sim {
namespace {

// The finish heap pops in exactly the order of a binary heap under the same strict total order, with pushes,
// pops and filters interleaved (the allocator's results depend on that order).
TEST(DaryHeapTest, PopsInTheOrderOfAStandardHeap) {
  struct Entry {
    double at;
    uint64_t stamp;
  };
  struct Before {
    bool operator()(const Entry& a, const Entry& b) const {
      return a.at != b.at ? a.at < b.at : a.stamp < b.stamp;
    }
  };
  struct After {
    bool operator()(const Entry& a, const Entry& b) const { return Before{}(b, a); }
  };
  DaryHeap<Entry, Before> heap;
  std::priority_queue<Entry, std::vector<Entry>, After> reference;
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  uint64_t stamp = 0;
  for (int step = 0; step < 200000; ++step) {
    const uint64_t choice = next() % 10;
    if (choice < 6 || reference.empty()) {
      const Entry entry{double(next() % 1000), ++stamp};  // many equal times: ties go by stamp
      heap.push(entry);
      reference.push(entry);
    } else if (choice < 9) {
      ASSERT_EQ(heap.top().stamp, reference.top().stamp);
      heap.pop();
      reference.pop();
    } else if (step % 1000 == 0) {
      // Drop odd stamps from both.
      heap.filter([](const Entry& entry) { return entry.stamp % 2 == 0; });
      std::priority_queue<Entry, std::vector<Entry>, After> kept;
      for (; !reference.empty(); reference.pop()) {
        if (reference.top().stamp % 2 == 0) kept.push(reference.top());
      }
      reference = std::move(kept);
    }
    ASSERT_EQ(heap.size(), reference.size());
  }
  for (; !reference.empty(); reference.pop(), heap.pop()) ASSERT_EQ(heap.top().stamp, reference.top().stamp);
  EXPECT_TRUE(heap.empty());
}

}  // namespace
}  // namespace peerd::sim
