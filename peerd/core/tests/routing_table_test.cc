// Tests of the DHT's pure data structures: k-buckets, the provider store and lookup candidate bookkeeping.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "peerd/core/common/rng.h"
#include "peerd/core/routing/lookup.h"
#include "peerd/core/routing/provider_store.h"
#include "peerd/core/routing/routing_table.h"

namespace peerd::routing {
namespace {

Contact contact(uint64_t seed) {
  return Contact{NodeId::from_seed(seed),
                 Endpoint::ipv4(10, 0, static_cast<uint8_t>(seed >> 8), static_cast<uint8_t>(seed), 4000)};
}

// A contact whose id is `self` with bit `bucket` (counted from the least significant end) flipped, plus
// `low` mixed into the bits below, so it lands in that bucket.
Contact contact_in_bucket(const NodeId& self, int bucket, uint8_t low, uint16_t port) {
  NodeId id = self;
  const int bit = NodeId::kBits - 1 - bucket;
  id.bytes[static_cast<size_t>(bit / 8)] ^= static_cast<uint8_t>(0x80 >> (bit % 8));
  if (bit < NodeId::kBits - 8) id.bytes[31] ^= low;
  return Contact{id, Endpoint::ipv4(10, 1, 0, low, port)};
}

std::vector<Contact> brute_force_closest(std::vector<Contact> all, const NodeId& target, size_t count) {
  std::sort(all.begin(), all.end(),
            [&](const Contact& a, const Contact& b) { return closer_to(target, a.id, b.id); });
  if (all.size() > count) all.resize(count);
  return all;
}

// closest() agrees with a brute-force sort by XOR distance for many random targets and table shapes.
TEST(RoutingTable, ClosestMatchesBruteForce) {
  const NodeId self = NodeId::from_seed(1);
  RoutingTable table(self, RoutingTableOptions{20, 8});
  std::vector<Contact> stored;
  for (uint64_t seed = 2; seed < 2000; ++seed) {
    const Contact candidate = contact(seed);
    if (table.observe(candidate, Instant{}) == RoutingTable::ObserveResult::kAdded)
      stored.push_back(candidate);
  }
  EXPECT_EQ(table.size(), stored.size());
  Rng rng(7);
  for (int round = 0; round < 200; ++round) {
    const NodeId target = NodeId::from_seed(rng.next_u64());
    for (size_t count : {1u, 3u, 20u, 1000u}) {
      EXPECT_EQ(table.closest(target, count), brute_force_closest(stored, target, count));
    }
  }
  // Targets inside the table's own buckets, excluding the target (what a lookup answering its sender asks):
  // the target's bucket is then short and the closest come from the buckets nearer to the local id.
  for (const Contact& stored_contact : stored) {
    std::vector<Contact> others;
    for (const Contact& other : stored) {
      if (other.id != stored_contact.id) others.push_back(other);
    }
    for (size_t count : {1u, 8u, 20u, 40u}) {
      EXPECT_EQ(table.closest(stored_contact.id, count, &stored_contact.id),
                brute_force_closest(others, stored_contact.id, count));
    }
  }
  // The local id as target, and exclusion of one contact.
  EXPECT_EQ(table.closest(self, 20), brute_force_closest(stored, self, 20));
  const NodeId excluded = stored.front().id;
  auto without = table.closest(excluded, 20, &excluded);
  EXPECT_TRUE(
      std::none_of(without.begin(), without.end(), [&](const Contact& c) { return c.id == excluded; }));
}

// A bucket holds at most k contacts; further sightings wait as replacement candidates and one is promoted
// when a member is removed.
TEST(RoutingTable, FullBucketKeepsReplacements) {
  const NodeId self = NodeId::from_seed(1);
  RoutingTable table(self, RoutingTableOptions{4, 2});
  for (uint8_t i = 1; i <= 4; ++i) {
    EXPECT_EQ(table.observe(contact_in_bucket(self, 100, i, 4000), Instant{}),
              RoutingTable::ObserveResult::kAdded);
  }
  EXPECT_EQ(table.bucket_size(100), 4u);
  EXPECT_EQ(table.observe(contact_in_bucket(self, 100, 5, 4000), Instant{}),
            RoutingTable::ObserveResult::kBucketFull);
  EXPECT_EQ(table.observe(contact_in_bucket(self, 100, 6, 4000), Instant{}),
            RoutingTable::ObserveResult::kBucketFull);
  EXPECT_EQ(table.observe(contact_in_bucket(self, 100, 7, 4000), Instant{}),
            RoutingTable::ObserveResult::kBucketFull);
  EXPECT_EQ(table.replacements_size(100), 2u);  // the stalest candidate (5) was dropped
  EXPECT_EQ(table.replacements_dropped(), 1u);
  EXPECT_EQ(table.size(), 4u);

  const NodeId oldest = table.least_recently_seen(100)->contact.id;
  EXPECT_EQ(oldest, contact_in_bucket(self, 100, 1, 4000).id);
  auto removal = table.remove(oldest, Instant{} + Duration::seconds(1), true);
  EXPECT_TRUE(removal.removed);
  ASSERT_TRUE(removal.promoted.has_value());
  EXPECT_EQ(removal.promoted->id, contact_in_bucket(self, 100, 7, 4000).id);  // the freshest candidate
  EXPECT_EQ(table.size(), 4u);
  EXPECT_EQ(table.replacements_size(100), 1u);
  EXPECT_EQ(table.find(oldest), nullptr);
}

// Observing a known contact moves it to the most recently seen end, refreshes its endpoint and clears its
// failures; the local id is never stored.
TEST(RoutingTable, ObserveRefreshesAndIgnoresSelf) {
  const NodeId self = NodeId::from_seed(1);
  RoutingTable table(self, RoutingTableOptions{20, 8});
  EXPECT_EQ(table.observe(Contact{self, Endpoint::ipv4(1, 1, 1, 1, 1)}, Instant{}),
            RoutingTable::ObserveResult::kSelf);
  const Contact a = contact_in_bucket(self, 200, 1, 4000);
  const Contact b = contact_in_bucket(self, 200, 2, 4000);
  table.observe(a, Instant{});
  table.observe(b, Instant{});
  EXPECT_EQ(table.least_recently_seen(200)->contact.id, a.id);
  EXPECT_EQ(table.record_failure(a.id), 1);
  EXPECT_EQ(table.record_failure(a.id), 2);
  Contact moved = a;
  moved.endpoint.port = 5000;
  EXPECT_EQ(table.observe(moved, Instant{} + Duration::seconds(5)), RoutingTable::ObserveResult::kUpdated);
  EXPECT_EQ(table.least_recently_seen(200)->contact.id, b.id);
  EXPECT_EQ(table.find(a.id)->failures, 0);
  EXPECT_EQ(table.find(a.id)->contact.endpoint.port, 5000);
  EXPECT_EQ(table.find(a.id)->last_seen, Instant{} + Duration::seconds(5));
  EXPECT_EQ(table.record_failure(NodeId::from_seed(999)), 0);
  EXPECT_EQ(table.nearest_bucket(), 200);
}

// The provider store refreshes existing records, refuses records beyond each cap and expires by time.
TEST(ProviderStore, CapsRefreshAndExpiry) {
  ProviderStore store(ProviderStoreOptions{2, 3, 5});
  const NodeId key1 = NodeId::hash_of("k1"), key2 = NodeId::hash_of("k2"), key3 = NodeId::hash_of("k3");
  const Instant t0;
  EXPECT_EQ(store.add(key1, contact(1), t0 + Duration::seconds(10)), ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.add(key1, contact(2), t0 + Duration::seconds(20)), ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.add(key1, contact(3), t0 + Duration::seconds(20)), ProviderStore::AddResult::kKeyFull);
  EXPECT_EQ(store.add(key1, contact(1), t0 + Duration::seconds(30)), ProviderStore::AddResult::kRefreshed);
  // Per peer: contact 1 may hold 3 records.
  EXPECT_EQ(store.add(key2, contact(1), t0 + Duration::seconds(30)), ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.add(key3, contact(1), t0 + Duration::seconds(30)), ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.add(NodeId::hash_of("k4"), contact(1), t0), ProviderStore::AddResult::kPeerFull);
  EXPECT_EQ(store.add(key2, contact(4), t0 + Duration::seconds(40)), ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.size(), 5u);
  EXPECT_EQ(store.add(key3, contact(5), t0 + Duration::seconds(40)), ProviderStore::AddResult::kStoreFull);

  std::vector<Contact> found;
  store.providers(key1, t0, 10, found);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].id, contact(1).id);  // most recently refreshed first

  // At t0+20 s the record of contact 2 (expiring at t0+20) is no longer served, even before the sweep.
  found.clear();
  store.providers(key1, t0 + Duration::seconds(20), 10, found);
  EXPECT_EQ(found.size(), 1u);
  EXPECT_EQ(store.next_expiry(), t0 + Duration::seconds(20));
  EXPECT_EQ(store.expire(t0 + Duration::seconds(20)), 1u);
  EXPECT_EQ(store.expire(t0 + Duration::seconds(30)), 3u);
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.keys(), 1u);
  // Expiry freed contact 1's per-peer budget.
  EXPECT_EQ(store.add(NodeId::hash_of("k4"), contact(1), t0 + Duration::seconds(50)),
            ProviderStore::AddResult::kAdded);
  EXPECT_EQ(store.expire(t0 + Duration::seconds(100)), 2u);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_FALSE(store.next_expiry().has_value());
}

// Lookup candidates stay in distance order, skip duplicates, and converge only when the closest results_max
// live candidates have all answered.
TEST(LookupCandidates, OrderingAndConvergence) {
  const NodeId target = NodeId::from_seed(42);
  LookupCandidates candidates(target, 3, 5);
  std::vector<Contact> all;
  for (uint64_t seed = 1; seed <= 8; ++seed) all.push_back(contact(seed));
  for (const auto& c : all) candidates.add(c, 1, 0);
  EXPECT_EQ(candidates.size(), 5u);  // capped; the farthest were dropped
  EXPECT_FALSE(candidates.add(candidates.candidates().front().contact, 2, 0));
  const auto sorted = brute_force_closest(all, target, 5);
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(candidates.candidates()[i].contact.id, sorted[i].id);

  EXPECT_FALSE(candidates.converged());
  // Ask the three closest; one fails, so the fourth must be asked too.
  for (int i = 0; i < 3; ++i) {
    LookupCandidate* next = candidates.next_to_query();
    ASSERT_NE(next, nullptr);
    EXPECT_EQ(next->contact.id, sorted[static_cast<size_t>(i)].id);
    next->state = LookupCandidate::State::kInFlight;
  }
  EXPECT_EQ(candidates.next_to_query(), nullptr);  // the closest three are all in flight
  candidates.answered(sorted[0].id, 1);
  candidates.failed(sorted[1].id);
  candidates.answered(sorted[2].id, 2);
  EXPECT_FALSE(candidates.converged());
  LookupCandidate* fourth = candidates.next_to_query();
  ASSERT_NE(fourth, nullptr);
  EXPECT_EQ(fourth->contact.id, sorted[3].id);
  fourth->state = LookupCandidate::State::kInFlight;
  EXPECT_FALSE(candidates.converged());
  const LookupCandidate* answered = candidates.answered(sorted[3].id, 1);
  ASSERT_NE(answered, nullptr);
  EXPECT_EQ(answered->round_trips, 1);
  EXPECT_TRUE(candidates.converged());
  const auto closest = candidates.closest_answered(3);
  ASSERT_EQ(closest.size(), 3u);
  EXPECT_EQ(closest[0].id, sorted[0].id);
  EXPECT_EQ(closest[1].id, sorted[2].id);
  EXPECT_EQ(closest[2].id, sorted[3].id);

  // A newly learnt closer node reopens the lookup; its path counts the round trips before it.
  NodeId closer_id = target;
  closer_id.bytes[31] ^= 1;
  EXPECT_TRUE(candidates.add(Contact{closer_id, Endpoint::ipv4(10, 9, 9, 9, 1)}, 2, 2));
  EXPECT_FALSE(candidates.converged());
  LookupCandidate* closer = candidates.next_to_query();
  ASSERT_NE(closer, nullptr);
  EXPECT_EQ(closer->contact.id, closer_id);
  closer->state = LookupCandidate::State::kInFlight;
  EXPECT_EQ(candidates.answered(closer_id, 1)->round_trips, 3);
  EXPECT_TRUE(candidates.converged());
  EXPECT_EQ(candidates.hops_max_answered(), 2);
}

// An empty lookup has converged at once (nothing to ask).
TEST(LookupCandidates, EmptyHasConverged) {
  LookupCandidates candidates(NodeId::from_seed(1), 20, 64);
  EXPECT_TRUE(candidates.converged());
  EXPECT_EQ(candidates.next_to_query(), nullptr);
}

}  // namespace
}  // namespace peerd::routing
