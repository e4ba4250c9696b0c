// Unit tests of the sans-IO transfer engine, driven by hand: each test feeds inputs at chosen instants and
// checks the actions and events that come out. No harness, no network, no DHT.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "peerd/core/transfer/engine.h"
#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::transfer {
namespace {

constexpr uint64_t kChunk = 1024 * 1024;

Peer make_peer(uint64_t seed) {
  return Peer{NodeId::from_seed(seed), Endpoint::ipv4(10, 0, uint8_t(seed >> 8), uint8_t(seed), 5000)};
}

ContentId blob(const char* name) {
  return ContentId::blob(content::Digest::of_bytes(name));
}

// A minimal driver: it owns the clock and the store, collects actions and events, and offers helpers to
// answer them.
class Driver {
 public:
  explicit Driver(EngineOptions options = {}, uint64_t capacity_bytes = uint64_t{1} << 40)
      : store(capacity_bytes), engine(with_self(options), store) {}

  static EngineOptions with_self(EngineOptions options) {
    if (options.self.id.is_zero()) options.self = make_peer(1);
    return options;
  }

  void drain() {
    while (auto action = engine.poll_action()) actions.push_back(std::move(*action));
    while (auto event = engine.poll_event()) events.push_back(std::move(*event));
  }

  template <typename T>
  std::vector<T> take_actions() {
    drain();
    std::vector<T> out;
    std::vector<Action> rest;
    for (auto& action : actions) {
      if (auto* typed = std::get_if<T>(&action)) {
        out.push_back(*typed);
      } else {
        rest.push_back(std::move(action));
      }
    }
    actions = std::move(rest);
    return out;
  }

  template <typename T>
  std::vector<T> take_events() {
    drain();
    std::vector<T> out;
    std::vector<Event> rest;
    for (auto& event : events) {
      if (auto* typed = std::get_if<T>(&event)) {
        out.push_back(*typed);
      } else {
        rest.push_back(std::move(event));
      }
    }
    events = std::move(rest);
    return out;
  }

  // Answers every pending FindProviders with `providers` (empty: not found).
  void answer_lookups(const std::vector<Peer>& providers = {}) {
    for (const auto& find : take_actions<FindProviders>()) engine.handle_providers(now, find.key, providers);
  }

  // Delivers a whole StartFetch: headers, all bytes, complete.
  void deliver(const StartFetch& start, ChunkFingerprint fingerprint = 7) {
    engine.handle_fetch_data(now, start.fetch, 0);
    engine.handle_fetch_data(now, start.fetch, start.end_in_chunk - start.begin_in_chunk);
    engine.handle_fetch_complete(now, start.fetch, fingerprint);
  }

  void advance(Duration duration) {
    now += duration;
    engine.handle_timeout(now);
  }

  Instant now = Instant::from_micros(1'000'000);
  VirtualChunkStore store;
  Engine engine;
  std::vector<Action> actions;
  std::vector<Event> events;
};

// Runs a read of a content with no peers at all to completion through the upstream.
StartFetch single_upstream_fetch(Driver& driver) {
  driver.answer_lookups();
  driver.answer_lookups();
  auto starts = driver.take_actions<StartFetch>();
  EXPECT_EQ(starts.size(), 1u);
  return starts.empty() ? StartFetch{} : starts[0];
}

// Range reads of one byte, of the last byte and of the whole item succeed and fetch exactly the chunks they
// cover; empty, beyond-the-end, unknown-size and contradicting-size reads are refused with typed errors.
TEST(TransferEngine, RangeReadsAndTypedErrors) {
  Driver driver;
  const uint64_t size = 3 * kChunk + 100;
  const ContentRef ref{blob("range"), size, true};

  auto one = driver.engine.read(driver.now, ref, 0, 1);
  ASSERT_TRUE(one.ok());
  auto start = single_upstream_fetch(driver);
  EXPECT_TRUE(start.source.is_upstream());
  EXPECT_EQ(start.chunk.index, 0u);
  EXPECT_EQ(start.begin_in_chunk, 0u);
  EXPECT_EQ(start.end_in_chunk, kChunk);
  driver.deliver(start);
  auto progress = driver.take_events<ReadProgress>();
  ASSERT_EQ(progress.size(), 1u);
  EXPECT_EQ(progress[0].ready_bytes, 1u);
  auto complete = driver.take_events<ReadComplete>();
  ASSERT_EQ(complete.size(), 1u);
  EXPECT_EQ(complete[0].read, *one);
  EXPECT_FALSE(complete[0].verified);  // a partial read of a digest blob cannot be verified

  auto last = driver.engine.read(driver.now, ref, size - 1, 1);
  ASSERT_TRUE(last.ok());
  start = single_upstream_fetch(driver);
  EXPECT_EQ(start.chunk.index, 3u);
  EXPECT_EQ(start.end_in_chunk, 100u);  // the short last chunk
  driver.deliver(start);
  ASSERT_EQ(driver.take_events<ReadComplete>().size(), 1u);

  // The whole item: two chunks are missing, the other two come from the cache.
  auto whole = driver.engine.read(driver.now, ref, 0, size);
  ASSERT_TRUE(whole.ok());
  driver.answer_lookups();
  driver.answer_lookups();
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 2u);
  for (const auto& s : starts) driver.deliver(s);
  auto verify = driver.take_actions<VerifyContent>();
  ASSERT_EQ(verify.size(), 1u);
  EXPECT_TRUE(driver.take_events<ReadComplete>().empty());  // waits for the digest
  driver.engine.handle_verify_result(driver.now, ref.content, true);
  complete = driver.take_events<ReadComplete>();
  ASSERT_EQ(complete.size(), 1u);
  EXPECT_TRUE(complete[0].verified);
  EXPECT_EQ(driver.take_actions<Provide>().size(), 5u);  // 4 chunks fetched from the upstream + the blob
  EXPECT_EQ(driver.engine.stats().bytes_from_cache, kChunk + 100);

  EXPECT_EQ(driver.engine.read(driver.now, ref, 0, 0).error(), ReadError::kEmptyRange);
  EXPECT_EQ(driver.engine.read(driver.now, ref, size, 1).error(), ReadError::kBeyondEnd);
  EXPECT_EQ(driver.engine.read(driver.now, ref, size - 1, 2).error(), ReadError::kBeyondEnd);
  EXPECT_EQ(driver.engine.read(driver.now, ref, 1, UINT64_MAX).error(), ReadError::kBeyondEnd);
  EXPECT_EQ(driver.engine.read(driver.now, ContentRef{blob("unknown"), std::nullopt, true}, 0, 1).error(),
            ReadError::kUnknownSize);
  EXPECT_EQ(driver.engine.read(driver.now, ContentRef{ref.content, size + 1, true}, 0, 1).error(),
            ReadError::kSizeMismatch);
  // Once the size is known, a ContentRef without one is fine.
  EXPECT_TRUE(driver.engine.read(driver.now, ContentRef{ref.content, std::nullopt, true}, 5, 5).ok());
}

// A read whose chunks are all in the store completes at once without any fetch, and counts as cache bytes.
TEST(TransferEngine, CachedReadNeedsNoFetch) {
  Driver driver;
  const ContentRef ref{ContentId::file("https://example.com/f"), 2 * kChunk, true};
  for (uint64_t index = 0; index < 2; ++index) {
    const ChunkKey key{ref.content, index, kChunk};
    ASSERT_EQ(driver.store.reserve(key, kChunk), StoreStatus::kOk);
    ASSERT_EQ(driver.store.commit(key), StoreStatus::kOk);
  }
  auto read = driver.engine.read(driver.now, ref, 10, 2 * kChunk - 20);
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(driver.take_actions<StartFetch>().empty());
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  EXPECT_EQ(driver.engine.stats().bytes_from_cache, 2 * kChunk - 20);
  // Pinned while the read is held, unpinned after release.
  EXPECT_EQ(driver.store.pins(ChunkKey{ref.content, 0, kChunk}), 1u);
  driver.engine.release_read(driver.now, *read);
  EXPECT_EQ(driver.store.pins(ChunkKey{ref.content, 0, kChunk}), 0u);
}

// With a membership, a missing chunk goes to its rendezvous owner with fetch-through; a chunk this node owns
// goes through the owner path instead (DHT lookup, then the upstream), and the node never asks itself.
TEST(TransferEngine, ChunksGoToTheirRendezvousOwner) {
  Driver driver;
  std::vector<Peer> members{driver.engine.options().self};
  for (uint64_t seed = 2; seed < 6; ++seed) members.push_back(make_peer(seed));
  driver.engine.handle_membership(driver.now, members);
  const ContentRef ref{blob("owners"), 16 * kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 16 * kChunk).ok());
  // Nothing goes out before the blob lookup answers: holders, if any, would be preferred over owners.
  EXPECT_TRUE(driver.take_actions<StartFetch>().empty());
  auto blob_lookup = driver.take_actions<FindProviders>();
  ASSERT_EQ(blob_lookup.size(), 1u);
  driver.engine.handle_providers(driver.now, blob_lookup[0].key, {});
  auto starts = driver.take_actions<StartFetch>();
  size_t self_owned = 0;
  for (uint64_t index = 0; index < 16; ++index) {
    const auto owners = driver.engine.owners_of(ChunkKey{ref.content, index, kChunk}, 1);
    ASSERT_EQ(owners.size(), 1u);
    if (owners[0] == driver.engine.options().self.id) ++self_owned;
  }
  // Per-peer limit 4: at most 4 requests per owner go out at once.
  std::map<NodeId, int> per_owner;
  for (const auto& start : starts) {
    ASSERT_FALSE(start.source.is_upstream());
    EXPECT_NE(start.source.peer.id, driver.engine.options().self.id);
    EXPECT_TRUE(start.fetch_through);
    const auto owners = driver.engine.owners_of(start.chunk, 1);
    EXPECT_EQ(owners[0], start.source.peer.id);
    EXPECT_LE(++per_owner[start.source.peer.id], 4);
  }
  EXPECT_GT(self_owned, 0u);
  EXPECT_LT(self_owned, 16u);
  // The self-owned chunks were looked up (one FindProviders each).
  auto finds = driver.take_actions<FindProviders>();
  EXPECT_EQ(finds.size(), self_owned);
  for (const auto& find : finds) driver.engine.handle_providers(driver.now, find.key, {});
  auto upstream = driver.take_actions<StartFetch>();
  EXPECT_EQ(upstream.size(), self_owned);
  for (const auto& start : upstream) EXPECT_TRUE(start.source.is_upstream());
}

// Which chunks a node asks for first, of a cold 512-chunk read among `member_count` members (self included).
std::vector<uint64_t> first_chunk_requests(uint64_t self_seed, uint64_t member_count) {
  EngineOptions options;
  options.self = make_peer(self_seed);
  options.fetches_inflight_max = 16;
  Driver driver(options);
  std::vector<Peer> members{options.self};
  for (uint64_t seed = 1000; members.size() < member_count; ++seed) members.push_back(make_peer(seed));
  driver.engine.handle_membership(driver.now, members);
  const ContentRef ref{blob("spread"), 512 * kChunk, true};
  EXPECT_TRUE(driver.engine.read(driver.now, ref, 0, 512 * kChunk - 1).ok());
  driver.answer_lookups();  // the blob lookup: cold
  std::vector<uint64_t> indexes;
  for (const auto& start : driver.take_actions<StartFetch>()) indexes.push_back(start.chunk.index);
  std::sort(indexes.begin(), indexes.end());
  return indexes;
}

// A small cluster takes a read's chunks in order. In a large one every node asking for the same first chunks
// would queue N requests at each of a few owners, so from 1 024 members the window widens (members / 8
// chunks) and each node takes it in its own order; the read still completes.
TEST(TransferEngine, LargeClusterSpreadsAWidenedWindowPerNode) {
  for (const uint64_t seed : {1, 2}) {
    const auto small = first_chunk_requests(seed, 1023);  // 127 < 2 x 64: the window stays 64
    ASSERT_GE(small.size(), 14u);
    EXPECT_LT(small.back(), 20u)
        << "in order, but for the few chunks this node owns (looked up, not fetched)";
  }
  for (const auto& [members, window] :
       {std::pair<uint64_t, uint64_t>{1023, 64}, {1024, 128}, {20000, 1024}}) {
    Driver sized;
    std::vector<Peer> list{sized.engine.options().self};
    for (uint64_t seed = 1000; list.size() < members; ++seed) list.push_back(make_peer(seed));
    sized.engine.handle_membership(sized.now, list);
    EXPECT_EQ(sized.engine.read_window(), window) << members << " members";
  }
  const auto one = first_chunk_requests(1, 2049);  // window 256
  const auto two = first_chunk_requests(2, 2049);
  ASSERT_EQ(one.size(), 16u);
  ASSERT_EQ(two.size(), 16u);
  EXPECT_LT(one.back(), 256u);
  EXPECT_GE(one.back(), 32u);
  EXPECT_NE(one, two);

  // Delivering whatever is asked for completes the read: no chunk is left behind by later ones.
  EngineOptions options;
  options.fetches_inflight_max = 16;
  Driver driver(options);
  std::vector<Peer> members{driver.engine.options().self};
  for (uint64_t seed = 1000; members.size() < 2049; ++seed) members.push_back(make_peer(seed));
  driver.engine.handle_membership(driver.now, members);
  EXPECT_EQ(driver.engine.read_window(), 256u);
  const ContentRef ref{blob("spread"), 512 * kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 512 * kChunk - 1).ok());
  for (int round = 0; round < 2000 && driver.take_events<ReadComplete>().empty(); ++round) {
    driver.answer_lookups();
    for (const auto& start : driver.take_actions<StartFetch>()) driver.deliver(start);
  }
  EXPECT_EQ(driver.engine.stats().reads_completed, 1u);
}

// Shows that from balanced_owners_from_members members a big blob's chunks go to owners with a bounded
// load, where plain rendezvous gives some members several (each of which a cold pull makes them send to
// every node): the fetch-through asks follow that ranking, and the chosen owner accepts them, also where
// plain rendezvous ranks it too low to take fetch-through asks.
TEST(TransferEngine, LargeClusterBalancesChunkOwners) {
  constexpr uint64_t kMembers = 2000;
  const ContentRef ref{blob("balanced"), 3000 * kChunk, true};
  std::vector<Peer> members{EngineOptions{}.self};
  for (uint64_t seed = 1000; members.size() < kMembers; ++seed) members.push_back(make_peer(seed));
  auto owner_loads = [&](uint32_t balanced_from, uint64_t chunks) {
    EngineOptions options;
    options.balanced_owners_from_members = balanced_from;
    Driver driver(options);
    driver.engine.handle_membership(driver.now, members);
    const ContentRef sized{blob("balanced"), chunks * kChunk, true};
    EXPECT_TRUE(driver.engine.read(driver.now, sized, 0, 1).ok());  // makes the content known
    std::map<NodeId, uint32_t> loads;
    for (uint64_t index = 0; index < chunks; ++index)
      ++loads[driver.engine.owners_of(ChunkKey{sized.content, index, kChunk}, 1).at(0)];
    uint32_t most = 0;
    for (const auto& [owner, load] : loads) most = std::max(most, load);
    return most;
  };
  EXPECT_GE(owner_loads(0, 300), 2u);  // plain rendezvous: 300 chunks over 2 000 members collide
  EXPECT_EQ(owner_loads(1024, 300), 1u);
  EXPECT_GE(owner_loads(0, 3000), 6u);
  // Cap ceil(1.25 x 3 000 / 2 000) = 2; a chunk whose five best members are all at the cap goes over it.
  EXPECT_LE(owner_loads(1024, 3000), 3u);
  // Past MemberList::kBalancedChunksMax chunks (ranking them all would be too slow): plain rendezvous.
  EXPECT_EQ(owner_loads(1024, MemberList::kBalancedChunksMax + 1),
            owner_loads(0, MemberList::kBalancedChunksMax + 1));

  Driver driver;
  driver.engine.handle_membership(driver.now, members);
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 64 * kChunk - 1).ok());
  driver.answer_lookups();  // the blob lookup: cold, so owners are asked
  const auto starts = driver.take_actions<StartFetch>();
  ASSERT_FALSE(starts.empty());
  for (const auto& start : starts) {
    if (!start.fetch_through) continue;
    EXPECT_EQ(start.source.peer.id, driver.engine.owners_of(start.chunk, 1).at(0)) << start.chunk.index;
  }

  // A chunk whose balanced owner is not among plain rendezvous's first owner_ranks_max + 1: that owner
  // still takes the ask, by the same ranking.
  Driver plain_view([] {
    EngineOptions options;
    options.balanced_owners_from_members = 0;
    return options;
  }());
  plain_view.engine.handle_membership(plain_view.now, members);
  ASSERT_TRUE(plain_view.engine.read(plain_view.now, ref, 0, 1).ok());
  const size_t accepted_ranks = EngineOptions{}.owner_ranks_max + 1;
  std::optional<uint64_t> moved;
  for (uint64_t index = 0; index < 3000 && !moved; ++index) {
    const ChunkKey key{ref.content, index, kChunk};
    const auto plain = plain_view.engine.owners_of(key, accepted_ranks);
    if (std::find(plain.begin(), plain.end(), driver.engine.owners_of(key, 1).at(0)) == plain.end())
      moved = index;
  }
  ASSERT_TRUE(moved.has_value());
  const ChunkKey key{ref.content, *moved, kChunk};
  const NodeId owner_id = driver.engine.owners_of(key, 1).at(0);
  EngineOptions owner_options;
  owner_options.self =
      *std::find_if(members.begin(), members.end(), [&](const Peer& m) { return m.id == owner_id; });
  Driver owner(owner_options);
  owner.engine.handle_membership(owner.now, members);
  ASSERT_TRUE(owner.engine.serve(owner.now, ServeRequest{members[0], key, *ref.size_bytes, true}).ok());
  EXPECT_TRUE(owner.take_events<ServeMiss>().empty());
  const auto upstream = owner.take_actions<StartFetch>();
  ASSERT_EQ(upstream.size(), 1u);
  EXPECT_TRUE(upstream[0].source.is_upstream());
}

// A fetch-through ask to an owner that lacks the chunk makes it fetch from the upstream once: concurrent asks
// for the same chunk join that fetch (single-flight) and are all answered when it lands.
TEST(TransferEngine, OwnerServesFetchThroughSingleFlight) {
  EngineOptions options;
  options.lookup_before_upstream = false;
  Driver driver(options);
  const ContentId id = blob("single-flight");
  const ChunkKey key{id, 2, kChunk};
  std::vector<ServeId> serves;
  for (uint64_t seed = 10; seed < 15; ++seed) {
    auto serve = driver.engine.serve(driver.now, ServeRequest{make_peer(seed), key, 8 * kChunk, true});
    ASSERT_TRUE(serve.ok());
    serves.push_back(*serve);
  }
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_TRUE(starts[0].source.is_upstream());
  EXPECT_EQ(driver.engine.stats().serves_joined, 4u);
  EXPECT_TRUE(driver.take_events<ServeReady>().empty());
  EXPECT_EQ(driver.take_events<ServePending>().size(), 5u);  // each asker gets headers at once
  driver.deliver(starts[0]);
  auto ready = driver.take_events<ServeReady>();
  ASSERT_EQ(ready.size(), 5u);
  EXPECT_EQ(driver.store.pins(key), 5u);
  for (const auto serve : serves) driver.engine.serve_done(driver.now, serve, kChunk);
  EXPECT_EQ(driver.store.pins(key), 0u);
  // The upstream copy is advertised.
  EXPECT_EQ(driver.take_actions<Provide>().size(), 1u);
  // A plain ask for a missing chunk is a miss; a malformed one is refused.
  auto miss = driver.engine.serve(driver.now,
                                  ServeRequest{make_peer(10), ChunkKey{id, 3, kChunk}, 8 * kChunk, false});
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(driver.take_events<ServeMiss>().size(), 1u);
  EXPECT_EQ(
      driver.engine.serve(driver.now, ServeRequest{make_peer(10), ChunkKey{id, 9, kChunk}, 8 * kChunk, true})
          .error(),
      ServeError::kBadRequest);
  EXPECT_EQ(
      driver.engine.serve(driver.now, ServeRequest{make_peer(10), ChunkKey{id, 0, 4096}, 8 * kChunk, true})
          .error(),
      ServeError::kBadRequest);
}

// Among 39 members, starts a 10-byte read of a chunk this node ranks third or lower for; returns the chunk's
// first two owners (empty if the read was refused).
std::vector<NodeId> read_chunk_owned_elsewhere(Driver& driver, const char* name) {
  std::vector<Peer> members{driver.engine.options().self};
  for (uint64_t seed = 2; seed < 40; ++seed) members.push_back(make_peer(seed));
  driver.engine.handle_membership(driver.now, members);
  const ContentId id = blob(name);
  const NodeId& self = driver.engine.options().self.id;
  for (uint64_t index = 0;; ++index) {
    const auto owners = driver.engine.owners_of(ChunkKey{id, index, kChunk}, 2);
    if (owners[0] == self || owners[1] == self) continue;
    if (!driver.engine.read(driver.now, ContentRef{id, 64 * kChunk, true}, index * kChunk, 10).ok())
      return {};
    return owners;
  }
}

// An owner that does not answer within owner_answer_timeout is skipped for the next-ranked owner; when that
// one fails too, the node takes the owner path itself and fetches from the upstream. The swarm never fails a
// read the upstream could serve.
TEST(TransferEngine, SlowOwnerFallsBackToNextOwnerThenUpstream) {
  EngineOptions options;
  options.owner_answer_timeout = Duration::seconds(2);
  options.owner_ranks_max = 2;
  options.lookup_before_upstream = false;
  Driver driver(options);
  const auto owners = read_chunk_owned_elsewhere(driver, "fallback");
  ASSERT_EQ(owners.size(), 2u);
  driver.answer_lookups();
  auto first = driver.take_actions<StartFetch>();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].source.peer.id, owners[0]);
  driver.advance(Duration::seconds(2));
  auto cancels = driver.take_actions<CancelFetch>();
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].fetch, first[0].fetch);
  EXPECT_EQ(driver.engine.stats().owner_timeouts, 1u);
  EXPECT_FALSE(driver.engine.is_banned(driver.now, owners[0]));  // slow is not banned
  auto second = driver.take_actions<StartFetch>();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].source.peer.id, owners[1]);
  EXPECT_TRUE(second[0].fetch_through);
  driver.engine.handle_fetch_failed(driver.now, second[0].fetch, FetchFailure::kUnreachable);
  EXPECT_TRUE(driver.engine.is_banned(driver.now, owners[1]));
  ASSERT_EQ(driver.take_events<PeerBanned>().size(), 1u);
  auto third = driver.take_actions<StartFetch>();
  ASSERT_EQ(third.size(), 1u);
  EXPECT_TRUE(third[0].source.is_upstream());
  driver.deliver(third[0]);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  // Bans expire.
  driver.advance(driver.engine.options().ban_duration);
  EXPECT_FALSE(driver.engine.is_banned(driver.now, owners[1]));
}

// An owner that refuses (503: its serve limit) is busy, not gone: the ask is repeated after a growing,
// jittered backoff, not sent to the next owner and then the upstream; only after owner_busy_retries_max
// refusals does the job move on. The refusals do not use up the job's fetch attempts.
TEST(TransferEngine, BusyOwnerIsAskedAgainLater) {
  EngineOptions options;
  options.owner_busy_retries_max = 3;
  options.fetch_attempts_max = 2;
  options.lookup_before_upstream = false;
  Driver driver(options);
  const auto owners = read_chunk_owned_elsewhere(driver, "busy");
  ASSERT_EQ(owners.size(), 2u);
  driver.answer_lookups();
  auto ask = driver.take_actions<StartFetch>();
  const Duration step = driver.engine.options().owner_busy_backoff;
  for (uint32_t refusal = 1; refusal <= 3; ++refusal) {
    ASSERT_EQ(ask.size(), 1u);
    EXPECT_EQ(ask[0].source.peer.id, owners[0]);
    driver.engine.handle_fetch_failed(driver.now, ask[0].fetch, FetchFailure::kRefused);
    EXPECT_TRUE(driver.take_actions<StartFetch>().empty()) << "no immediate retry, no other source";
    const Duration backoff = step * (int64_t{1} << (refusal - 1));
    driver.advance(backoff - Duration::microseconds(1));  // the backoff is at least the step
    EXPECT_TRUE(driver.take_actions<StartFetch>().empty());
    driver.advance(backoff + Duration::microseconds(1));  // and less than twice the step
    ask = driver.take_actions<StartFetch>();
  }
  EXPECT_EQ(driver.engine.stats().owner_busy_retries, 3u);
  ASSERT_EQ(ask.size(), 1u);
  EXPECT_EQ(ask[0].source.peer.id, owners[0]);
  driver.engine.handle_fetch_failed(driver.now, ask[0].fetch, FetchFailure::kRefused);
  auto next = driver.take_actions<StartFetch>();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].source.peer.id, owners[1]);
  EXPECT_TRUE(next[0].fetch_through);
  driver.deliver(next[0]);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  EXPECT_EQ(driver.engine.stats().fetches_to_upstream, 0u);
}

// A plain fetch from a holder that has not produced its first byte within the hedge delay gets a second
// request at another holder; the first to answer wins and the other is cancelled.
TEST(TransferEngine, HedgesSlowFirstByteAndCancelsTheLoser) {
  EngineOptions options;
  options.hedge_floor = Duration::milliseconds(100);
  Driver driver(options);
  const ContentRef ref{ContentId::file("https://example.com/hedge"), kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, kChunk).ok());
  const Peer a = make_peer(20), b = make_peer(21);
  driver.answer_lookups({a, b});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_FALSE(starts[0].fetch_through);
  const Peer first = starts[0].source.peer;
  ASSERT_EQ(driver.engine.next_timeout(), driver.now + Duration::milliseconds(100));
  driver.advance(Duration::milliseconds(100));
  auto hedge = driver.take_actions<StartFetch>();
  ASSERT_EQ(hedge.size(), 1u);
  EXPECT_NE(hedge[0].source.peer.id, first.id);
  EXPECT_EQ(driver.engine.stats().hedges_started, 1u);
  driver.engine.handle_fetch_data(driver.now, hedge[0].fetch, 4096);
  auto cancels = driver.take_actions<CancelFetch>();
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].fetch, starts[0].fetch);
  EXPECT_EQ(driver.engine.stats().hedges_won, 1u);
  // Late input about the loser is ignored.
  driver.engine.handle_fetch_data(driver.now, starts[0].fetch, 10);
  EXPECT_EQ(driver.engine.stats().stale_inputs, 1u);
  driver.engine.handle_fetch_data(driver.now, hedge[0].fetch, kChunk - 4096);
  driver.engine.handle_fetch_complete(driver.now, hedge[0].fetch, 1);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
}

// A stream that breaks mid-chunk resumes from the last byte received, at another source.
TEST(TransferEngine, BrokenStreamResumesFromLastByteElsewhere) {
  Driver driver;
  const ContentRef ref{ContentId::file("https://example.com/resume"), kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, kChunk).ok());
  const Peer a = make_peer(30), b = make_peer(31);
  driver.answer_lookups({a, b});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 1u);
  driver.engine.handle_fetch_data(driver.now, starts[0].fetch, 300'000);
  driver.engine.handle_fetch_failed(driver.now, starts[0].fetch, FetchFailure::kBroken);
  auto resumed = driver.take_actions<StartFetch>();
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_NE(resumed[0].source.peer.id, starts[0].source.peer.id);
  EXPECT_EQ(resumed[0].begin_in_chunk, 300'000u);
  EXPECT_EQ(resumed[0].end_in_chunk, kChunk);
  EXPECT_EQ(driver.engine.stats().resumes, 1u);
  driver.deliver(resumed[0]);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  EXPECT_EQ(driver.engine.stats().bytes_from_peers, kChunk);
}

// A stalled stream (no byte for stall_timeout) is abandoned and resumed elsewhere; a peer that keeps failing
// is banned after peer_failures_before_ban failures.
TEST(TransferEngine, StallsAreResumedAndRepeatedFailuresBan) {
  EngineOptions options;
  options.stall_timeout = Duration::seconds(1);
  options.peer_failures_before_ban = 2;
  options.hedge_enabled = false;
  Driver driver(options);
  const Peer bad = make_peer(40);
  const ContentRef ref{ContentId::file("https://example.com/stall"), 2 * kChunk, false};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 2 * kChunk).ok());
  driver.answer_lookups({bad});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 2u);
  for (const auto& start : starts) driver.engine.handle_fetch_data(driver.now, start.fetch, 1000);
  driver.advance(Duration::seconds(1));
  EXPECT_EQ(driver.engine.stats().stalls, 2u);
  EXPECT_TRUE(driver.engine.is_banned(driver.now, bad.id));
  // No other source and no upstream: the read fails with a typed reason.
  driver.answer_lookups();
  auto failed = driver.take_events<ReadFailed>();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].reason, ReadFailure::kNoSource);
}

// After a digest mismatch the engine refetches every peer-supplied chunk elsewhere, lets the upstream
// arbitrate where the two copies differ, bans only the supplier whose copy was wrong, and reports the blob
// complete only once it verifies.
TEST(TransferEngine, IntegrityFailureBansOnlyTheLiar) {
  Driver driver;
  const Peer honest = make_peer(50), liar = make_peer(51);
  const ContentRef ref{blob("integrity"), 2 * kChunk, true};
  auto read = driver.engine.read(driver.now, ref, 0, 2 * kChunk);
  ASSERT_TRUE(read.ok());
  driver.answer_lookups({honest, liar});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 2u);
  // Chunk 0 from the honest peer (fingerprint 100), chunk 1 from the liar (wrong: 666, truth is 101).
  std::map<uint64_t, Peer> supplier;
  for (const auto& start : starts) {
    const bool from_liar = start.source.peer.id == liar.id;
    driver.deliver(start, from_liar ? 666 : 100 + start.chunk.index);
    supplier[start.chunk.index] = start.source.peer;
  }
  ASSERT_NE(supplier[0].id, supplier[1].id);
  ASSERT_EQ(driver.take_actions<VerifyContent>().size(), 1u);
  EXPECT_TRUE(driver.take_events<ReadComplete>().empty());
  driver.engine.handle_verify_result(driver.now, ref.content, false);
  auto failures = driver.take_events<IntegrityFailure>();
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].round, 1u);
  EXPECT_EQ(failures[0].suppliers.size(), 2u);
  // Round 1: both chunks are refetched from a source other than their supplier.
  auto audits = driver.take_actions<StartFetch>();
  ASSERT_EQ(audits.size(), 2u);
  for (const auto& audit : audits) {
    EXPECT_NE(audit.source.peer.id, supplier[audit.chunk.index].id);
    const bool from_liar = !audit.source.is_upstream() && audit.source.peer.id == liar.id;
    driver.deliver(audit, from_liar ? 666 : 100 + audit.chunk.index);
  }
  // Wherever the liar supplied one of the two copies they disagree, and the upstream arbitrates.
  auto arbitration = driver.take_actions<StartFetch>();
  ASSERT_GE(arbitration.size(), 1u);
  for (const auto& start : arbitration) {
    EXPECT_TRUE(start.source.is_upstream());
    driver.deliver(start, 100 + start.chunk.index);
  }
  auto banned = driver.take_events<PeerBanned>();
  ASSERT_EQ(banned.size(), 1u);
  EXPECT_EQ(banned[0].peer.id, liar.id);
  EXPECT_EQ(banned[0].reason, BanReason::kCorruptData);
  EXPECT_FALSE(driver.engine.is_banned(driver.now, honest.id));
  ASSERT_EQ(driver.take_actions<VerifyContent>().size(), 1u);
  driver.engine.handle_verify_result(driver.now, ref.content, true);
  auto complete = driver.take_events<ReadComplete>();
  ASSERT_EQ(complete.size(), 1u);
  EXPECT_TRUE(complete[0].verified);
  EXPECT_EQ(driver.engine.stats().integrity_failures, 1u);
  EXPECT_EQ(driver.engine.stats().chunks_arbitrated, arbitration.size());
}

// If the upstream's own bytes do not match the digest, the engine gives up after its repair rounds and fails
// the read with kIntegrity instead of reporting a corrupt blob complete.
TEST(TransferEngine, UnrepairableBlobFailsTheRead) {
  Driver driver;
  const ContentRef ref{blob("hopeless"), kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, kChunk).ok());
  driver.deliver(single_upstream_fetch(driver));
  ASSERT_EQ(driver.take_actions<VerifyContent>().size(), 1u);
  driver.engine.handle_verify_result(driver.now, ref.content, false);
  auto failed = driver.take_events<ReadFailed>();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].reason, ReadFailure::kIntegrity);
  EXPECT_TRUE(driver.take_events<ReadComplete>().empty());
  EXPECT_FALSE(driver.store.has(ChunkKey{ref.content, 0, kChunk}));
}

// After the first read of a file blob, the rest is prefetched by at most prefetch_workers fetches, queued
// behind demand reads.
TEST(TransferEngine, PrefetchIsBoundedAndBehindDemand) {
  EngineOptions options;
  options.prefetch_workers = 2;
  options.lookup_before_upstream = false;
  Driver driver(options);
  const ContentRef ref{ContentId::file("https://example.com/prefetch"), 10 * kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 5 * kChunk, 10).ok());
  driver.answer_lookups();
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 3u);
  EXPECT_EQ(starts[0].chunk.index, 5u);  // demand first
  EXPECT_EQ(starts[1].chunk.index, 0u);
  EXPECT_EQ(starts[2].chunk.index, 1u);
  size_t fetched = 0;
  std::vector<StartFetch> pending = starts;
  while (!pending.empty()) {
    const StartFetch start = pending.front();
    pending.erase(pending.begin());
    driver.deliver(start);
    ++fetched;
    for (const auto& next : driver.take_actions<StartFetch>()) pending.push_back(next);
    EXPECT_LE(pending.size(), 2u);
  }
  EXPECT_EQ(fetched, 10u);
  EXPECT_EQ(driver.take_actions<Provide>().size(), 11u);  // ten chunks from the upstream + the blob
}

// The per-peer limit holds back requests to a busy holder; completing one lets the next start.
TEST(TransferEngine, PerPeerLimitParksJobs) {
  EngineOptions options;
  options.per_peer_fetches_max = 2;
  Driver driver(options);
  const Peer holder = make_peer(60);
  const ContentRef ref{ContentId::file("https://example.com/limit"), 5 * kChunk, false};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 5 * kChunk).ok());
  driver.answer_lookups({holder});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 2u);
  size_t total = 2;
  while (!starts.empty()) {
    driver.deliver(starts.front());
    starts.erase(starts.begin());
    auto next = driver.take_actions<StartFetch>();
    total += next.size();
    starts.insert(starts.end(), next.begin(), next.end());
    EXPECT_LE(starts.size(), 2u);
  }
  EXPECT_EQ(total, 5u);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
}

// A job parked on a busy holder may, once woken, start at a faster holder instead; the freed slot then goes
// to the next parked job, so no job stays parked on an idle peer (a regression: reads used to hang that way).
TEST(TransferEngine, WokenJobsThatGoElsewhereWakeTheNext) {
  EngineOptions options;
  options.per_peer_fetches_max = 1;
  options.hedge_enabled = false;
  Driver driver(options);
  const Peer a = make_peer(80), b = make_peer(81);
  const ContentRef ref{ContentId::file("https://example.com/wake"), 4 * kChunk, false};
  ASSERT_TRUE(driver.engine.read(driver.now, ref, 0, 4 * kChunk).ok());
  driver.answer_lookups({a, b});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 2u);  // one per holder; two jobs park
  const StartFetch at_a = starts[0].source.peer.id == a.id ? starts[0] : starts[1];
  const StartFetch at_b = starts[0].source.peer.id == a.id ? starts[1] : starts[0];
  // B proves fast (1 MiB in 1 ms); A slow (1 MiB in 1 s).
  driver.engine.handle_fetch_data(driver.now, at_a.fetch, 0);
  driver.engine.handle_fetch_data(driver.now, at_b.fetch, 0);
  driver.now += Duration::milliseconds(1);
  driver.engine.handle_fetch_data(driver.now, at_b.fetch, kChunk);
  driver.engine.handle_fetch_complete(driver.now, at_b.fetch, 1);
  auto next = driver.take_actions<StartFetch>();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].source.peer.id, b.id);
  driver.now += Duration::seconds(1);
  driver.engine.handle_fetch_data(driver.now, at_a.fetch, kChunk);
  driver.engine.handle_fetch_complete(driver.now, at_a.fetch, 1);
  // A's slot freed: the job woken for it prefers B (busy, so it parks there) or A; either way A is not left
  // idle while a job is parked.
  auto after = driver.take_actions<StartFetch>();
  ASSERT_EQ(after.size(), 1u);
  driver.deliver(next[0]);
  for (auto more = driver.take_actions<StartFetch>(); !more.empty();
       more = driver.take_actions<StartFetch>()) {
    after.insert(after.end(), more.begin(), more.end());
    driver.deliver(more[0]);
  }
  driver.deliver(after[0]);
  EXPECT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  EXPECT_EQ(driver.engine.jobs_active(), 0u);
}

// Releasing an unfinished read cancels the fetches only it needed and unpins its chunks.
TEST(TransferEngine, ReleaseCancelsUnneededFetches) {
  Driver driver;
  const Peer holder = make_peer(70);
  const ContentRef ref{ContentId::file("https://example.com/release"), 3 * kChunk, true};
  auto read = driver.engine.read(driver.now, ref, 0, 3 * kChunk);
  ASSERT_TRUE(read.ok());
  driver.answer_lookups({holder});
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 3u);
  driver.deliver(starts[0]);
  driver.engine.release_read(driver.now, *read);
  EXPECT_EQ(driver.take_actions<CancelFetch>().size(), 2u);
  EXPECT_TRUE(driver.engine.idle() || driver.engine.jobs_active() == 0);
  EXPECT_EQ(driver.engine.jobs_active(), 0u);
  EXPECT_EQ(driver.store.used_bytes(), kChunk);  // the partial reservations were dropped
}

// When the store is full, the least recently used unpinned chunk is evicted to make room, and the engine
// withdraws what it no longer holds.
TEST(TransferEngine, FullStoreEvictsLeastRecentlyUsed) {
  EngineOptions options;
  options.lookup_before_upstream = false;
  Driver driver(options, 2 * kChunk);
  const ContentRef first{ContentId::file("https://example.com/a"), 2 * kChunk, true};
  auto read = driver.engine.read(driver.now, first, 0, 2 * kChunk);
  ASSERT_TRUE(read.ok());
  driver.answer_lookups();
  for (const auto& start : driver.take_actions<StartFetch>()) driver.deliver(start);
  ASSERT_EQ(driver.take_events<ReadComplete>().size(), 1u);
  driver.engine.release_read(driver.now, *read);
  const ContentRef second{ContentId::file("https://example.com/b"), kChunk, true};
  ASSERT_TRUE(driver.engine.read(driver.now, second, 0, kChunk).ok());
  driver.answer_lookups();
  auto starts = driver.take_actions<StartFetch>();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(driver.engine.stats().evictions, 1u);
  EXPECT_FALSE(driver.store.has(ChunkKey{first.content, 0, kChunk}));
  EXPECT_TRUE(driver.store.has(ChunkKey{first.content, 1, kChunk}));
  EXPECT_EQ(driver.take_actions<Withdraw>().size(), 1u);  // the complete file blob is no longer complete
}

// Chunk-event bookkeeping stays bounded: after many reads and fetches the engine is idle again and its timer
// queue holds nothing live.
TEST(TransferEngine, ReturnsToIdle) {
  Driver driver;
  std::vector<Peer> members{driver.engine.options().self};
  for (uint64_t seed = 2; seed < 10; ++seed) members.push_back(make_peer(seed));
  driver.engine.handle_membership(driver.now, members);
  const ContentRef ref{ContentId::file("https://example.com/idle"), 40 * kChunk, true};
  auto read = driver.engine.read(driver.now, ref, 0, 40 * kChunk);
  ASSERT_TRUE(read.ok());
  for (int round = 0; round < 100 && !driver.engine.idle(); ++round) {
    driver.answer_lookups();
    for (const auto& start : driver.take_actions<StartFetch>()) driver.deliver(start);
    driver.take_actions<Provide>();
    driver.events.clear();
  }
  EXPECT_TRUE(driver.engine.idle());
  EXPECT_EQ(driver.engine.fetches_active(), 0u);
  driver.engine.release_read(driver.now, *read);
  EXPECT_EQ(driver.engine.reads_active(), 0u);
  EXPECT_FALSE(driver.engine.next_timeout().has_value());
}

}  // namespace
}  // namespace peerd::transfer
