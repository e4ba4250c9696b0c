// Tests of rendezvous ranking and of how the transfer engine keeps its member list: every node must pick the
// same owners from the same members, whatever the order of the list, and reach them at their listed address.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <vector>

#include "peerd/core/common/rng.h"
#include "peerd/core/transfer/engine.h"
#include "peerd/core/transfer/rendezvous.h"
#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {
namespace {

constexpr uint64_t kChunk = 1024 * 1024;
constexpr uint64_t kChunks = 64;

// The ranking by definition: positions by descending score, the lower position first among equal scores.
std::vector<uint32_t> reference_top(const std::vector<uint64_t>& hashes, uint64_t chunk_hash, size_t want) {
  std::vector<uint32_t> positions(hashes.size());
  std::iota(positions.begin(), positions.end(), 0);
  std::stable_sort(positions.begin(), positions.end(), [&](uint32_t a, uint32_t b) {
    return rendezvous_score(hashes[a], chunk_hash) > rendezvous_score(hashes[b], chunk_hash);
  });
  positions.resize(std::min(want, positions.size()));
  return positions;
}

// rendezvous_top agrees with a full sort for every list length around its 4-member groups and for 10 000
// members, every rank count, and lists full of duplicate hashes (equal scores), over seeded random inputs.
TEST(RendezvousTop, MatchesAFullSortIncludingTies) {
  Rng rng(7);
  std::vector<size_t> sizes(41);
  std::iota(sizes.begin(), sizes.end(), 0);
  sizes.push_back(10'000);
  for (const size_t size : sizes) {
    for (int trial = 0; trial < 20; ++trial) {
      // Odd trials draw from 3 distinct hashes, so most scores tie.
      const bool ties = trial % 2 == 1;
      std::vector<uint64_t> hashes(size);
      for (auto& hash : hashes) hash = ties ? mix64(rng.next_u64() % 3) : rng.next_u64();
      const uint64_t chunk_hash = rng.next_u64();
      for (size_t want = 0; want <= 8; ++want) {
        std::vector<uint32_t> out(want, UINT32_MAX);
        const size_t found = rendezvous_top(hashes, chunk_hash, out);
        out.resize(found);
        ASSERT_EQ(out, reference_top(hashes, chunk_hash, want)) << "size " << size << " want " << want;
      }
    }
  }
}

Peer make_peer(uint64_t seed, uint8_t host = 1) {
  return Peer{NodeId::from_seed(seed), Endpoint::ipv4(10, host, uint8_t(seed >> 8), uint8_t(seed), 5000)};
}

struct Node {
  explicit Node(EngineOptions options) : store(uint64_t{1} << 40), engine(options, store) {}
  VirtualChunkStore store;
  Engine engine;
};

EngineOptions options_for(const Peer& self) {
  EngineOptions options;
  options.self = self;
  options.chunk_bytes = kChunk;
  return options;
}

// Two engines given the same members, one as listed and one reversed, with duplicates and without itself,
// rank the same owners for every chunk; the list holds each member once, self included.
TEST(TransferMembership, OrderAndDuplicatesDoNotChangeOwners) {
  std::vector<Peer> members;
  for (uint64_t seed = 1; seed <= 50; ++seed) members.push_back(make_peer(seed));
  Node listed(options_for(members[0]));
  Node shuffled(options_for(members[0]));
  listed.engine.handle_membership(Instant{}, members);
  std::vector<Peer> others(members.rbegin(), members.rend() - 1);
  others.insert(others.end(), members.begin() + 10, members.begin() + 20);
  shuffled.engine.handle_membership(Instant{}, others);
  EXPECT_EQ(listed.engine.members(), members.size());
  EXPECT_EQ(shuffled.engine.members(), members.size());
  const ContentId content = ContentId::file("https://example.com/owners");
  for (uint64_t index = 0; index < 200; ++index) {
    const ChunkKey chunk{content, index, kChunk};
    EXPECT_EQ(listed.engine.owners_of(chunk, 3), shuffled.engine.owners_of(chunk, 3));
  }
}

// The chunk (of kChunks) whose first owner is `owner`.
std::optional<uint64_t> chunk_owned_by(const Engine& engine, const ContentId& content, const NodeId& owner,
                                       uint64_t after) {
  for (uint64_t index = after; index < kChunks; ++index) {
    if (engine.owners_of(ChunkKey{content, index, kChunk}, 1).at(0) == owner) return index;
  }
  return std::nullopt;
}

// Reads chunk `index` and answers the blob lookup with no holders: returns the StartFetch that follows.
std::optional<StartFetch> read_chunk(Engine& engine, Instant now, const ContentId& content, uint64_t index) {
  EXPECT_TRUE(engine.read(now, ContentRef{content, kChunks * kChunk, true}, index * kChunk, kChunk).ok());
  std::optional<StartFetch> fetch;
  for (int round = 0; round < 2 && !fetch; ++round) {
    while (auto action = engine.poll_action()) {
      if (auto* find = std::get_if<FindProviders>(&*action)) engine.handle_providers(now, find->key, {});
      if (auto* start = std::get_if<StartFetch>(&*action)) fetch = *start;
    }
  }
  return fetch;
}

// A fetch to an owner goes to the address of its latest listing: a member used before a new list is
// re-addressed, one first used after it gets the new address, and of an id listed twice the later address
// counts. Shown by reading chunks owned by two members across two membership lists.
TEST(TransferMembership, OwnerFetchesGoToTheLatestListedAddress) {
  const Peer self = make_peer(1);
  const Peer first = make_peer(2, 1);
  const Peer second = make_peer(3, 1);
  Node node(options_for(self));
  const ContentId content = ContentId::file("https://example.com/addresses");
  Instant now = Instant::from_micros(1'000'000);
  node.engine.handle_membership(now, std::vector<Peer>{self, first, second});

  const auto chunk_a = chunk_owned_by(node.engine, content, first.id, 0);
  const auto chunk_b = chunk_a ? chunk_owned_by(node.engine, content, first.id, *chunk_a + 1) : std::nullopt;
  const auto chunk_c = chunk_owned_by(node.engine, content, second.id, 0);
  ASSERT_TRUE(chunk_a && chunk_b && chunk_c);
  const auto fetch_a = read_chunk(node.engine, now, content, *chunk_a);
  ASSERT_TRUE(fetch_a);
  EXPECT_EQ(fetch_a->source.peer, first);

  const Peer first_moved{first.id, make_peer(2, 2).endpoint};
  const Peer second_moved{second.id, make_peer(3, 3).endpoint};
  now += Duration::milliseconds(1);
  node.engine.handle_membership(now, std::vector<Peer>{second, self, first, second_moved, first_moved});
  EXPECT_EQ(node.engine.members(), 3u);
  const auto fetch_b = read_chunk(node.engine, now, content, *chunk_b);
  ASSERT_TRUE(fetch_b);
  EXPECT_EQ(fetch_b->source.peer, first_moved);
  const auto fetch_c = read_chunk(node.engine, now, content, *chunk_c);
  ASSERT_TRUE(fetch_c);
  EXPECT_EQ(fetch_c->source.peer, second_moved);
}

// A member list longer than members_max is cut (the excess counted as dropped); this node is always a
// member, added when the cut or the list leaves it out.
TEST(TransferMembership, ListsBeyondMembersMaxAreCut) {
  std::vector<Peer> members;
  for (uint64_t seed = 2; seed <= 11; ++seed) members.push_back(make_peer(seed));
  EngineOptions options = options_for(make_peer(1));
  options.members_max = 4;
  Node node(options);
  node.engine.handle_membership(Instant{}, members);
  EXPECT_EQ(node.engine.members(), 5u);
  EXPECT_EQ(node.engine.stats().providers_dropped, 6u);
}

// A MemberList's memoised ranking is rendezvous_top's for every rank count, whatever was asked first.
TEST(MemberList, MemoisedTopMatchesRendezvousTop) {
  std::vector<Peer> members;
  for (uint64_t seed = 1; seed <= 300; ++seed) members.push_back(make_peer(seed));
  const auto list = MemberList::build(members, members.size());
  ASSERT_EQ(list->size(), members.size());
  const std::vector<uint64_t> hashes(list->hashes().begin(), list->hashes().end());
  Rng rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const uint64_t chunk_hash = rng.next_u64();
    // Ask with a growing, then a shrinking, rank count: each answer is computed from the first one's memo.
    for (const size_t want : {size_t{1}, size_t{3}, MemberList::kRanksMax, size_t{2}, size_t{0}}) {
      std::vector<uint32_t> memoised(want, UINT32_MAX);
      memoised.resize(list->top(chunk_hash, memoised));
      ASSERT_EQ(memoised, reference_top(hashes, chunk_hash, want)) << "want " << want;
    }
  }
}

// Engines handed one shared list rank the same owners as an engine handed the members as a span, and keep
// their own list when the shared one leaves them out.
TEST(MemberList, SharedListGivesTheSameOwnersAsACopy) {
  std::vector<Peer> members;
  for (uint64_t seed = 1; seed <= 50; ++seed) members.push_back(make_peer(seed));
  const auto shared = MemberList::build(members, EngineOptions{}.members_max);
  Node copied(options_for(members[7]));
  Node first(options_for(members[7]));
  Node second(options_for(members[30]));
  copied.engine.handle_membership(Instant{}, members);
  first.engine.handle_membership(Instant{}, shared);
  second.engine.handle_membership(Instant{}, shared);
  const ContentId content = ContentId::file("https://example.com/shared");
  for (uint64_t index = 0; index < 200; ++index) {
    const ChunkKey chunk{content, index, kChunk};
    EXPECT_EQ(first.engine.owners_of(chunk, 3), copied.engine.owners_of(chunk, 3));
    EXPECT_EQ(second.engine.owners_of(chunk, 3), copied.engine.owners_of(chunk, 3));
  }
  Node outsider(options_for(make_peer(99)));
  outsider.engine.handle_membership(Instant{}, shared);
  EXPECT_EQ(outsider.engine.members(), members.size() + 1);  // itself added, as with a span
}

}  // namespace
}  // namespace peerd::transfer
