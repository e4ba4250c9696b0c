#pragma once
// The ChunkStore conformance suite: every implementation (VirtualChunkStore here, the daemon's DiskChunkStore
// later) must pass it. To run it against an implementation, define a factory and instantiate the suite:
//
//   struct DiskStoreFactory {
//     static std::unique_ptr<peerd::transfer::ChunkStore> make(uint64_t capacity_bytes) { ... }
//   };
//   using namespace peerd::transfer::conformance;
//   INSTANTIATE_TYPED_TEST_SUITE_P(Disk, ChunkStoreConformance, ::testing::Types<DiskStoreFactory>);
//
// The suite checks the contract in chunk_store.h only (what the transfer engine relies on), never bytes.
#include <gtest/gtest.h>

#include <memory>

#include "peerd/core/transfer/chunk_store.h"

namespace peerd::transfer::conformance {

inline content::ChunkKey conformance_key(uint64_t index, const char* name = "conformance") {
  return content::ChunkKey{content::ContentId::blob(content::Digest::of_bytes(name)), index, 1024};
}

template <typename Factory>
class ChunkStoreConformance : public ::testing::Test {
 protected:
  std::unique_ptr<ChunkStore> make(uint64_t capacity_bytes) { return Factory::make(capacity_bytes); }
};

TYPED_TEST_SUITE_P(ChunkStoreConformance);

// A chunk is visible only once reserved and committed; reserving accounts its size immediately.
TYPED_TEST_P(ChunkStoreConformance, ReserveThenCommitMakesAChunkVisible) {
  auto store = this->make(10'000);
  const auto key = conformance_key(0);
  EXPECT_FALSE(store->has(key));
  EXPECT_EQ(store->reserve(key, 1024), StoreStatus::kOk);
  EXPECT_FALSE(store->has(key));
  EXPECT_EQ(store->used_bytes(), 1024u);
  EXPECT_EQ(store->commit(key), StoreStatus::kOk);
  EXPECT_TRUE(store->has(key));
  EXPECT_EQ(store->used_bytes(), 1024u);
  EXPECT_EQ(store->capacity_bytes(), 10'000u);
}

// Invalid operations are refused with typed statuses: zero length, double reservation, commit without one.
TYPED_TEST_P(ChunkStoreConformance, InvalidOperationsAreRefused) {
  auto store = this->make(10'000);
  EXPECT_EQ(store->reserve(conformance_key(0), 0), StoreStatus::kInvalid);
  EXPECT_EQ(store->reserve(conformance_key(1), 100), StoreStatus::kOk);
  EXPECT_EQ(store->reserve(conformance_key(1), 100), StoreStatus::kInvalid);
  EXPECT_EQ(store->commit(conformance_key(2)), StoreStatus::kNotReserved);
  EXPECT_EQ(store->commit(conformance_key(1)), StoreStatus::kOk);
  EXPECT_EQ(store->commit(conformance_key(1)), StoreStatus::kNotReserved);
  EXPECT_EQ(store->reserve(conformance_key(1), 100), StoreStatus::kInvalid);  // already committed
}

// The capacity is never exceeded: a reservation that does not fit is refused (the store does not evict on
// its own), and evicting frees the space again.
TYPED_TEST_P(ChunkStoreConformance, CapacityIsEnforcedAndEvictionFreesSpace) {
  auto store = this->make(3000);
  EXPECT_EQ(store->reserve(conformance_key(0), 1024), StoreStatus::kOk);
  EXPECT_EQ(store->reserve(conformance_key(1), 1024), StoreStatus::kOk);
  EXPECT_EQ(store->reserve(conformance_key(2), 1024), StoreStatus::kFull);
  EXPECT_EQ(store->commit(conformance_key(0)), StoreStatus::kOk);
  EXPECT_TRUE(store->has(conformance_key(0)));
  EXPECT_EQ(store->reserve(conformance_key(2), 1024), StoreStatus::kFull);
  store->evict(conformance_key(1));  // a reservation (a fetch given up)
  EXPECT_EQ(store->used_bytes(), 1024u);
  EXPECT_EQ(store->reserve(conformance_key(2), 1024), StoreStatus::kOk);
  store->evict(conformance_key(0));  // a committed chunk
  EXPECT_FALSE(store->has(conformance_key(0)));
  EXPECT_EQ(store->used_bytes(), 1024u);
  store->evict(conformance_key(7));  // absent: no-op
  EXPECT_EQ(store->used_bytes(), 1024u);
}

// Eviction candidates are committed, unpinned chunks, least recently committed or pinned first; pins are
// counted.
TYPED_TEST_P(ChunkStoreConformance, EvictionCandidatesSkipPinnedAndFollowRecency) {
  auto store = this->make(1 << 20);
  EXPECT_FALSE(store->eviction_candidate().has_value());
  for (uint64_t index = 0; index < 3; ++index) {
    ASSERT_EQ(store->reserve(conformance_key(index), 100), StoreStatus::kOk);
    ASSERT_EQ(store->commit(conformance_key(index)), StoreStatus::kOk);
  }
  ASSERT_EQ(store->reserve(conformance_key(9), 100), StoreStatus::kOk);  // reserved only: never a candidate
  EXPECT_EQ(store->eviction_candidate(), conformance_key(0));
  store->pin(conformance_key(0));
  store->pin(conformance_key(0));
  EXPECT_EQ(store->eviction_candidate(), conformance_key(1));
  store->unpin(conformance_key(0));
  EXPECT_EQ(store->eviction_candidate(), conformance_key(1));  // still pinned once
  store->unpin(conformance_key(0));
  // Chunk 0 was used (pinned) after 1 and 2: it is now the most recent.
  EXPECT_EQ(store->eviction_candidate(), conformance_key(1));
  store->evict(conformance_key(1));
  store->evict(conformance_key(2));
  EXPECT_EQ(store->eviction_candidate(), conformance_key(0));
  store->pin(conformance_key(0));
  EXPECT_FALSE(store->eviction_candidate().has_value());
  // Pins on absent chunks are no-ops; evicting a pinned chunk drops it with its pins.
  store->pin(conformance_key(5));
  store->unpin(conformance_key(5));
  store->evict(conformance_key(0));
  EXPECT_FALSE(store->has(conformance_key(0)));
}

// Chunks of different items, and of the same item with different chunk sizes, are distinct keys.
TYPED_TEST_P(ChunkStoreConformance, KeysAreDistinctByItemIndexAndChunkSize) {
  auto store = this->make(1 << 20);
  const auto a = conformance_key(0, "a");
  const auto b = conformance_key(0, "b");
  auto a_other_size = a;
  a_other_size.chunk_bytes = 2048;
  const content::ChunkKey file{content::ContentId::file("https://example.com/x"), 0, 1024};
  ASSERT_EQ(store->reserve(a, 10), StoreStatus::kOk);
  ASSERT_EQ(store->commit(a), StoreStatus::kOk);
  EXPECT_FALSE(store->has(b));
  EXPECT_FALSE(store->has(a_other_size));
  EXPECT_FALSE(store->has(file));
  EXPECT_EQ(store->reserve(b, 10), StoreStatus::kOk);
  EXPECT_EQ(store->reserve(a_other_size, 10), StoreStatus::kOk);
  EXPECT_EQ(store->reserve(file, 10), StoreStatus::kOk);
  EXPECT_EQ(store->used_bytes(), 40u);
}

REGISTER_TYPED_TEST_SUITE_P(ChunkStoreConformance, ReserveThenCommitMakesAChunkVisible,
                            InvalidOperationsAreRefused, CapacityIsEnforcedAndEvictionFreesSpace,
                            EvictionCandidatesSkipPinnedAndFollowRecency,
                            KeysAreDistinctByItemIndexAndChunkSize);

}  // namespace peerd::transfer::conformance
