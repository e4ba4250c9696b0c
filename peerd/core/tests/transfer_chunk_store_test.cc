// Runs the ChunkStore conformance suite (chunk_store_conformance.h) against VirtualChunkStore, plus the
// virtual-content checksums the transfer harness checks delivered bytes with.
#include <gtest/gtest.h>

#include <memory>

#include "peerd/core/harness/transfer_content.h"
#include "peerd/core/tests/chunk_store_conformance.h"
#include "peerd/core/transfer/rendezvous.h"
#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {
namespace {

struct VirtualStoreFactory {
  static std::unique_ptr<ChunkStore> make(uint64_t capacity_bytes) {
    return std::make_unique<VirtualChunkStore>(capacity_bytes);
  }
};

using namespace conformance;
INSTANTIATE_TYPED_TEST_SUITE_P(Virtual, ChunkStoreConformance, ::testing::Types<VirtualStoreFactory>);

// The fast checksum (block prefix sums plus direct edges) equals the byte-by-byte definition for aligned and
// unaligned ranges, is additive over adjacent pieces, and differs for flipped bytes.
TEST(VirtualContent, ChecksumsMatchTheDefinitionAndDetectFlips) {
  const harness::VirtualContent bytes(content::ContentId::file("https://example.com/v"), 300'000);
  const uint64_t block = harness::VirtualContent::kBlockBytes;
  for (const auto& [begin, end] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 1},
                                                                             {0, block},
                                                                             {7, 2 * block + 3},
                                                                             {block, 4 * block},
                                                                             {299'990, 300'000},
                                                                             {12345, 200'001}}) {
    EXPECT_EQ(bytes.checksum(begin, end), bytes.checksum_slow(begin, end)) << begin << ".." << end;
    uint64_t flipped = 0;
    for (uint64_t offset = begin; offset < end; ++offset) {
      flipped += uint64_t(bytes.byte_at(offset) ^ 0xff) * (2 * offset + 1);
    }
    EXPECT_EQ(bytes.flipped_checksum(begin, end), flipped);
    EXPECT_NE(bytes.flipped_checksum(begin, end), bytes.checksum(begin, end));
  }
  EXPECT_EQ(bytes.checksum(0, 100'000) + bytes.checksum(100'000, 300'000), bytes.checksum(0, 300'000));
}

// Rendezvous ranking is a deterministic top-k by score, and removing the owner only moves its chunks (every
// other chunk keeps its owner).
TEST(Rendezvous, TopRanksAreStableUnderRemoval) {
  std::vector<uint64_t> members;
  for (uint64_t seed = 1; seed <= 50; ++seed) members.push_back(id_hash64(NodeId::from_seed(seed)));
  std::vector<uint32_t> top(3);
  size_t moved = 0;
  for (uint64_t index = 0; index < 1000; ++index) {
    const uint64_t key = chunk_hash64(42, index);
    ASSERT_EQ(rendezvous_top(members, key, top), 3u);
    EXPECT_GT(rendezvous_score(members[top[0]], key), rendezvous_score(members[top[1]], key));
    EXPECT_GT(rendezvous_score(members[top[1]], key), rendezvous_score(members[top[2]], key));
    std::vector<uint64_t> without = members;
    without.erase(without.begin() + 7);
    std::vector<uint32_t> after(1);
    ASSERT_EQ(rendezvous_top(without, key, after), 1u);
    if (top[0] == 7) {
      ++moved;
      EXPECT_EQ(without[after[0]], members[top[1]]);  // to the second-ranked member
    } else {
      EXPECT_EQ(without[after[0]], members[top[0]]);
    }
  }
  EXPECT_GT(moved, 5u);
  EXPECT_LT(moved, 60u);
}

}  // namespace
}  // namespace peerd::transfer
