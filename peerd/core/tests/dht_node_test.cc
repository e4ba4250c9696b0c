// Tests of one Dht state machine driven by hand-made datagrams: input validation, response matching,
// timeouts and retries, stale-node eviction, provider records and bounds.
#include <gtest/gtest.h>

#include <optional>
#include <variant>
#include <vector>

#include "peerd/core/routing/dht.h"
#include "peerd/core/routing/wire.h"

namespace peerd::routing {
namespace {

const Instant kStart = Instant{} + Duration::seconds(1000);

Endpoint peer_endpoint(uint32_t index) {
  return Endpoint::ipv4(10, static_cast<uint8_t>(index >> 16), static_cast<uint8_t>(index >> 8),
                        static_cast<uint8_t>(index), 4000);
}

DhtOptions options_for(uint64_t seed) {
  DhtOptions options;
  options.self_id = NodeId::from_seed(seed);
  options.self_endpoint = Endpoint::ipv4(192, 168, 0, 1, 4000);
  options.seed = seed;
  return options;
}

std::vector<uint8_t> encode_message(const wire::Message& message) {
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(wire::encode(message, bytes).ok());
  return bytes;
}

struct Sent {
  Endpoint destination;
  wire::Message message;
};

std::vector<Sent> drain(Dht& dht) {
  std::vector<Sent> sent;
  while (auto transmit = dht.poll_transmit()) {
    auto decoded = wire::decode(transmit->payload);
    EXPECT_TRUE(decoded.ok());
    if (decoded) sent.push_back(Sent{transmit->destination, decoded.value()});
  }
  return sent;
}

std::vector<DhtEvent> events(Dht& dht) {
  std::vector<DhtEvent> out;
  while (auto event = dht.poll_event()) out.push_back(std::move(*event));
  return out;
}

// Answers every request in `sent` as a well-behaved peer would (empty routing answers, stored acks).
void answer_all(Dht& dht, Instant now, const std::vector<Sent>& sent, const std::vector<Contact>& peers) {
  for (const auto& request : sent) {
    const Contact* peer = nullptr;
    for (const auto& candidate : peers) {
      if (candidate.endpoint == request.destination) peer = &candidate;
    }
    if (!peer) continue;
    wire::Body body;
    if (std::holds_alternative<wire::Ping>(request.message.body)) body = wire::Pong{};
    if (std::holds_alternative<wire::FindNode>(request.message.body)) body = wire::Nodes{};
    if (std::holds_alternative<wire::GetProviders>(request.message.body)) body = wire::Providers{};
    if (std::holds_alternative<wire::AddProvider>(request.message.body)) body = wire::AddProviderAck{true};
    dht.handle_datagram(now, peer->endpoint,
                        encode_message(wire::Message{request.message.transaction_id, peer->id, body}));
  }
}

// A node that knows `count` peers (each introduced itself with a PING) and has answered them.
Dht node_with_peers(uint32_t count, std::vector<Contact>& peers, DhtOptions options = options_for(1)) {
  Dht dht(options);
  dht.bootstrap(kStart, {});
  for (uint32_t i = 0; i < count; ++i) {
    const Contact peer{NodeId::from_seed(1000 + i), peer_endpoint(i + 1)};
    peers.push_back(peer);
    dht.handle_datagram(kStart, peer.endpoint, encode_message(wire::Message{i + 1, peer.id, wire::Ping{}}));
  }
  drain(dht);
  events(dht);
  return dht;
}

// Garbage, truncated, oversized, self-addressed and unmatched datagrams change no protocol state: the
// fingerprint is unchanged, nothing is sent, no event is raised, and each is counted.
TEST(DhtNode, MalformedOrUnmatchedDatagramsChangeNoState) {
  std::vector<Contact> peers;
  Dht dht = node_with_peers(30, peers);
  // Leave a lookup and requests outstanding so there is state to disturb.
  dht.find_providers(kStart, NodeId::hash_of("key"), 1);
  const auto outstanding = drain(dht);
  ASSERT_FALSE(outstanding.empty());
  const uint64_t before = dht.fingerprint();
  const DhtStats stats_before = dht.stats();

  const Contact& peer = peers.front();
  const auto valid_ping = encode_message(wire::Message{77, peer.id, wire::Ping{}});
  std::vector<std::vector<uint8_t>> bad;
  bad.push_back({});
  bad.push_back({0x00});
  bad.push_back(std::vector<uint8_t>(valid_ping.begin(), valid_ping.end() - 1));  // truncated
  auto trailing = valid_ping;
  trailing.push_back(0);
  bad.push_back(trailing);
  auto wrong_version = valid_ping;
  wrong_version[2] = 9;
  bad.push_back(wrong_version);
  auto unknown_type = valid_ping;
  unknown_type[3] = 42;
  bad.push_back(unknown_type);
  bad.push_back(std::vector<uint8_t>(wire::kDatagramBytesMax + 1, 0));  // oversized
  bad.push_back(std::vector<uint8_t>(60000, 'P'));                      // very oversized
  const size_t malformed = bad.size();
  // Well-formed but unmatched: responses nobody asked for, from the wrong endpoint, with the wrong type or
  // the wrong sender id.
  const Sent& request = outstanding.front();
  const Contact* asked = nullptr;
  for (const auto& candidate : peers) {
    if (candidate.endpoint == request.destination) asked = &candidate;
  }
  ASSERT_NE(asked, nullptr);
  const uint64_t transaction = request.message.transaction_id;
  bad.push_back(encode_message(wire::Message{transaction + 1, asked->id, wire::Providers{}}));
  bad.push_back(encode_message(wire::Message{transaction, asked->id, wire::Pong{}}));
  bad.push_back(encode_message(wire::Message{transaction, NodeId::from_seed(5), wire::Providers{}}));
  const size_t unmatched = 3;
  for (const auto& bytes : bad) dht.handle_datagram(kStart, asked->endpoint, bytes);
  // The right answer from the wrong endpoint.
  dht.handle_datagram(kStart, peer_endpoint(999),
                      encode_message(wire::Message{transaction, asked->id, wire::Providers{}}));
  // Datagrams claiming our own id, or coming from our own endpoint.
  dht.handle_datagram(kStart, peer.endpoint, encode_message(wire::Message{1, dht.id(), wire::Ping{}}));
  dht.handle_datagram(kStart, dht.endpoint(), valid_ping);

  EXPECT_EQ(dht.fingerprint(), before);
  EXPECT_FALSE(dht.poll_transmit().has_value());
  EXPECT_FALSE(dht.poll_event().has_value());
  EXPECT_EQ(dht.stats().malformed_dropped - stats_before.malformed_dropped, malformed);
  EXPECT_EQ(dht.stats().responses_unmatched - stats_before.responses_unmatched, unmatched + 1);
  EXPECT_EQ(dht.stats().self_datagrams_dropped - stats_before.self_datagrams_dropped, 2u);
  EXPECT_EQ(dht.stats().malformed_by_reason[static_cast<size_t>(wire::DecodeError::kOversized)] -
                stats_before.malformed_by_reason[static_cast<size_t>(wire::DecodeError::kOversized)],
            2u);
  EXPECT_EQ(dht.stats().requests_received, stats_before.requests_received);
}

// Requests are answered with the matching type and transaction id: PING with PONG, FIND_NODE with the
// closest known nodes (never the asker), GET_PROVIDERS with records and closer nodes.
TEST(DhtNode, AnswersRequests) {
  std::vector<Contact> peers;
  Dht dht = node_with_peers(40, peers);
  const Contact& asker = peers[3];
  dht.handle_datagram(kStart, asker.endpoint, encode_message(wire::Message{5, asker.id, wire::Ping{}}));
  auto sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].destination, asker.endpoint);
  EXPECT_EQ(sent[0].message.transaction_id, 5u);
  EXPECT_EQ(sent[0].message.sender, dht.id());
  EXPECT_TRUE(std::holds_alternative<wire::Pong>(sent[0].message.body));

  const NodeId target = NodeId::hash_of("target");
  dht.handle_datagram(kStart, asker.endpoint,
                      encode_message(wire::Message{6, asker.id, wire::FindNode{target}}));
  sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);
  const auto& nodes = std::get<wire::Nodes>(sent[0].message.body).contacts;
  EXPECT_EQ(nodes.size(), 20u);
  auto expected = dht.closest_known(target, 21);
  std::erase_if(expected, [&](const Contact& c) { return c.id == asker.id; });
  expected.resize(20);
  EXPECT_EQ(nodes, expected);
}

// A provider record stores the endpoint the ADD_PROVIDER came from, and GET_PROVIDERS returns it; ttls
// above provider_ttl_max are clamped.
TEST(DhtNode, ProviderRecordUsesObservedEndpoint) {
  DhtOptions options = options_for(1);
  options.provider_ttl_max = Duration::seconds(60);
  std::vector<Contact> peers;
  Dht dht = node_with_peers(5, peers, options);
  const NodeId key = NodeId::hash_of("blob");
  const NodeId provider_id = NodeId::from_seed(77);
  const Endpoint observed = Endpoint::ipv4(172, 16, 0, 9, 31000);
  dht.handle_datagram(kStart, observed,
                      encode_message(wire::Message{9, provider_id, wire::AddProvider{key, 3600 * 1000}}));
  auto sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(std::get<wire::AddProviderAck>(sent[0].message.body).stored);
  EXPECT_EQ(dht.provider_records_stored(), 1u);

  dht.handle_datagram(kStart, peers[0].endpoint,
                      encode_message(wire::Message{10, peers[0].id, wire::GetProviders{key}}));
  sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);
  const auto& providers = std::get<wire::Providers>(sent[0].message.body);
  ASSERT_EQ(providers.providers.size(), 1u);
  EXPECT_EQ(providers.providers[0], (Contact{provider_id, observed}));

  // Clamped to 60 s: gone after that.
  ASSERT_TRUE(dht.next_timeout().has_value());
  dht.handle_timeout(kStart + Duration::seconds(61));
  EXPECT_EQ(dht.provider_records_stored(), 0u);
  EXPECT_EQ(dht.stats().provider_records_expired, 1u);
}

// Records beyond providers_per_key_max or provider_records_per_peer_max are refused with stored=false.
TEST(DhtNode, ProviderCapsAreEnforcedOnTheWire) {
  DhtOptions options = options_for(1);
  options.providers_per_key_max = 2;
  options.provider_records_per_peer_max = 3;
  Dht dht(options);
  dht.bootstrap(kStart, {});
  auto add = [&](uint64_t provider_seed, const std::string& key) {
    dht.handle_datagram(kStart, peer_endpoint(static_cast<uint32_t>(provider_seed)),
                        encode_message(wire::Message{provider_seed, NodeId::from_seed(100 + provider_seed),
                                                     wire::AddProvider{NodeId::hash_of(key), 60000}}));
    auto sent = drain(dht);
    EXPECT_EQ(sent.size(), 1u);
    return !sent.empty() && std::get<wire::AddProviderAck>(sent[0].message.body).stored;
  };
  EXPECT_TRUE(add(1, "a"));
  EXPECT_TRUE(add(2, "a"));
  EXPECT_FALSE(add(3, "a"));  // key full
  EXPECT_TRUE(add(1, "b"));
  EXPECT_TRUE(add(1, "c"));
  EXPECT_FALSE(add(1, "d"));  // peer full
  EXPECT_TRUE(add(1, "a"));   // refreshing an existing record is always allowed
  EXPECT_EQ(dht.stats().provider_records_refused_key_full, 1u);
  EXPECT_EQ(dht.stats().provider_records_refused_peer_full, 1u);
  EXPECT_EQ(dht.provider_records_stored(), 4u);
}

// A request that gets no answer is retransmitted request_retries times with the same transaction id, then
// fails; contact_failures_max failures remove the contact from the routing table.
TEST(DhtNode, TimeoutsRetryThenEvictFailingContacts) {
  DhtOptions options = options_for(1);
  options.request_retries = 2;
  options.contact_failures_max = 2;
  std::vector<Contact> peers;
  Dht dht = node_with_peers(1, peers, options);
  const Contact silent = peers[0];
  Instant now = kStart;
  for (int lookup = 0; lookup < 2; ++lookup) {
    dht.find_providers(now, NodeId::hash_of("k" + std::to_string(lookup)), 1);
    auto sent = drain(dht);
    ASSERT_EQ(sent.size(), 1u);
    const uint64_t transaction = sent[0].message.transaction_id;
    for (int retry = 0; retry < 2; ++retry) {
      // Early and repeated timeouts are no-ops.
      const uint64_t before = dht.fingerprint();
      dht.handle_timeout(now);
      dht.handle_timeout(now + options.request_timeout - Duration::microseconds(1));
      EXPECT_EQ(dht.fingerprint(), before);
      ASSERT_EQ(dht.next_timeout(), now + options.request_timeout);
      now = *dht.next_timeout();
      dht.handle_timeout(now);
      auto retransmitted = drain(dht);
      ASSERT_EQ(retransmitted.size(), 1u);
      EXPECT_EQ(retransmitted[0].message.transaction_id, transaction);
      EXPECT_EQ(retransmitted[0].destination, silent.endpoint);
    }
    now = *dht.next_timeout();
    dht.handle_timeout(now);
    EXPECT_TRUE(drain(dht).empty());
    auto raised = events(dht);
    ASSERT_FALSE(raised.empty());
    const auto* found = std::get_if<ProvidersFound>(&raised.back());
    ASSERT_NE(found, nullptr);
    EXPECT_TRUE(found->providers.empty());
    EXPECT_EQ(found->rpcs, 3);
    if (lookup == 0) {
      EXPECT_NE(dht.routing_table().find(silent.id), nullptr);
    }
  }
  EXPECT_EQ(dht.routing_table().find(silent.id), nullptr);
  EXPECT_EQ(dht.stats().requests_retried, 4u);
  EXPECT_EQ(dht.stats().requests_failed, 2u);
  EXPECT_EQ(dht.stats().peers_removed, 1u);
}

// Kademlia eviction: a newcomer to a full bucket triggers a PING of the least recently seen contact (if it
// has been silent long enough); if the ping fails the old contact is replaced by the newcomer, if it
// answers the old contact stays.
TEST(DhtNode, FullBucketPingsOldestAndReplacesItIfSilent) {
  DhtOptions options = options_for(1);
  options.bucket_peers_max = 2;
  options.request_retries = 0;
  Dht dht(options);
  dht.bootstrap(kStart, {});
  // Ids in the same bucket (255: top bit differs from self).
  auto id_in_far_bucket = [&](uint8_t low) {
    NodeId id = options.self_id;
    id.bytes[0] ^= 0x80;
    id.bytes[31] ^= low;
    return id;
  };
  const Contact a{id_in_far_bucket(1), peer_endpoint(1)};
  const Contact b{id_in_far_bucket(2), peer_endpoint(2)};
  const Contact c{id_in_far_bucket(3), peer_endpoint(3)};
  const Contact d{id_in_far_bucket(4), peer_endpoint(4)};
  auto ping_from = [&](const Contact& from, Instant at) {
    dht.handle_datagram(at, from.endpoint, encode_message(wire::Message{1, from.id, wire::Ping{}}));
  };
  ping_from(a, kStart);
  ping_from(b, kStart);
  drain(dht);
  // c arrives while a was heard from recently: no ping, c waits as a replacement.
  ping_from(c, kStart + Duration::seconds(1));
  auto sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);  // just the PONG to c
  EXPECT_EQ(dht.stats().eviction_pings_sent, 0u);

  // Later, d arrives: a has been silent for longer than eviction_ping_after_silence and gets pinged.
  auto ping_sent_to = [](const std::vector<Sent>& batch, const Contact& to) -> const Sent* {
    for (const auto& one : batch) {
      if (one.destination == to.endpoint && std::holds_alternative<wire::Ping>(one.message.body)) return &one;
    }
    return nullptr;
  };
  const Instant later = kStart + options.eviction_ping_after_silence + Duration::seconds(1);
  ping_from(d, later);
  sent = drain(dht);
  ASSERT_EQ(sent.size(), 2u);  // the PING to a and the PONG to d
  ASSERT_NE(ping_sent_to(sent, a), nullptr);
  EXPECT_EQ(dht.stats().eviction_pings_sent, 1u);
  // a does not answer: it is replaced by the freshest candidate, d.
  dht.handle_timeout(later + options.request_timeout);
  EXPECT_EQ(dht.routing_table().find(a.id), nullptr);
  EXPECT_NE(dht.routing_table().find(d.id), nullptr);
  EXPECT_EQ(dht.stats().peers_evicted_stale, 1u);
  auto raised = events(dht);
  bool removed_a = false, added_d = false;
  for (const auto& event : raised) {
    if (const auto* removed = std::get_if<PeerRemoved>(&event)) removed_a |= removed->contact.id == a.id;
    if (const auto* added = std::get_if<PeerAdded>(&event)) added_d |= added->contact.id == d.id;
  }
  EXPECT_TRUE(removed_a);
  EXPECT_TRUE(added_d);

  // A promoted replacement enters as the least recently seen, so d is pinged next; it answers and stays,
  // and the newcomer e does not get in.
  const Contact e{id_in_far_bucket(5), peer_endpoint(5)};
  const Instant much_later = later + options.eviction_ping_after_silence * 2;
  ping_from(e, much_later);
  sent = drain(dht);
  const Sent* ping_d = ping_sent_to(sent, d);
  ASSERT_NE(ping_d, nullptr);
  dht.handle_datagram(much_later, d.endpoint,
                      encode_message(wire::Message{ping_d->message.transaction_id, d.id, wire::Pong{}}));
  dht.handle_timeout(much_later + options.request_timeout);
  EXPECT_NE(dht.routing_table().find(d.id), nullptr);
  EXPECT_NE(dht.routing_table().find(b.id), nullptr);
  EXPECT_EQ(dht.routing_table().find(e.id), nullptr);
  EXPECT_EQ(dht.stats().peers_evicted_stale, 1u);
}

// find_providers succeeds from local state alone: a record stored here, or a key this node provides
// (which returns the node itself, with its own endpoint).
TEST(DhtNode, FindProvidersUsesLocalRecords) {
  Dht dht(options_for(1));
  dht.bootstrap(kStart, {});
  EXPECT_TRUE(dht.is_bootstrapped());
  const NodeId own_key = NodeId::hash_of("own");
  dht.provide(kStart, own_key, Duration::zero());
  const auto done = events(dht);
  ASSERT_FALSE(done.empty());
  const auto* provide_done = std::get_if<ProvideDone>(&done.back());
  ASSERT_NE(provide_done, nullptr);
  EXPECT_EQ(provide_done->stored_on, 0u);  // alone: stored only locally

  const LookupId lookup = dht.find_providers(kStart, own_key, 1);
  auto raised = events(dht);
  ASSERT_EQ(raised.size(), 1u);
  const auto& found = std::get<ProvidersFound>(raised[0]);
  EXPECT_EQ(found.lookup, lookup);
  ASSERT_EQ(found.providers.size(), 1u);
  EXPECT_EQ(found.providers[0], (Contact{dht.id(), dht.endpoint()}));
  EXPECT_EQ(found.hops, 0);

  const NodeId remote_key = NodeId::hash_of("remote");
  const Contact provider{NodeId::from_seed(9), peer_endpoint(9)};
  dht.handle_datagram(kStart, provider.endpoint,
                      encode_message(wire::Message{3, provider.id, wire::AddProvider{remote_key, 60000}}));
  drain(dht);
  events(dht);
  dht.find_providers(kStart, remote_key, 1);
  raised = events(dht);
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(std::get<ProvidersFound>(raised[0]).providers, std::vector<Contact>{provider});

  // After withdraw, the node no longer lists itself (and asks its one peer, which knows nothing either).
  dht.withdraw(own_key);
  EXPECT_FALSE(dht.provides(own_key));
  dht.find_providers(kStart, own_key, 1);
  answer_all(dht, kStart, drain(dht), {provider});
  raised = events(dht);
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_TRUE(std::get<ProvidersFound>(raised[0]).providers.empty());
}

// A lookup stores on the closest nodes that answered and reports how many acknowledged.
TEST(DhtNode, ProvideStoresOnAnsweringPeers) {
  std::vector<Contact> peers;
  Dht dht = node_with_peers(5, peers);
  const NodeId key = NodeId::hash_of("layer");
  const LookupId lookup = dht.provide(kStart, key, Duration::seconds(600));
  // Drive the exchange: FIND_NODE to every peer, then ADD_PROVIDER to every peer.
  for (int round = 0; round < 4; ++round) answer_all(dht, kStart, drain(dht), peers);
  auto raised = events(dht);
  ASSERT_FALSE(raised.empty());
  const auto* done = std::get_if<ProvideDone>(&raised.back());
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->lookup, lookup);
  EXPECT_EQ(done->key, key);
  EXPECT_EQ(done->stored_on, 5u);
  EXPECT_FALSE(dht.has_pending_work());
}

// Bounds: a find_providers beyond lookups_pending_max finishes at once, empty, and is counted; transmits
// beyond transmit_queue_max are dropped and counted.
TEST(DhtNode, BoundsRefuseAndCount) {
  DhtOptions options = options_for(1);
  options.lookups_pending_max = 2;
  options.transmit_queue_max = 4;
  std::vector<Contact> peers;
  Dht dht = node_with_peers(10, peers, options);
  dht.find_providers(kStart, NodeId::hash_of("a"), 1);
  dht.find_providers(kStart, NodeId::hash_of("b"), 1);
  EXPECT_EQ(dht.lookups_pending(), 2u);
  EXPECT_GT(dht.stats().transmits_dropped_queue_full, 0u);  // 2 lookups x 3 requests > 4 slots
  events(dht);
  const LookupId refused = dht.find_providers(kStart, NodeId::hash_of("c"), 1);
  auto raised = events(dht);
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(std::get<ProvidersFound>(raised[0]).lookup, refused);
  EXPECT_EQ(dht.stats().lookups_refused_pending_full, 1u);
}

// Without any answering seed, bootstrap retries every bootstrap_retry_interval and never claims success.
TEST(DhtNode, BootstrapRetriesWhileSeedsAreSilent) {
  DhtOptions options = options_for(1);
  options.request_retries = 0;
  Dht dht(options);
  const Endpoint seed = peer_endpoint(1);
  dht.bootstrap(kStart, std::span<const Endpoint>(&seed, 1));
  auto sent = drain(dht);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<wire::FindNode>(sent[0].message.body));
  Instant now = kStart;
  for (int attempt = 0; attempt < 3; ++attempt) {
    now = *dht.next_timeout();
    dht.handle_timeout(now);  // the seed request fails
    EXPECT_FALSE(dht.is_bootstrapped());
    EXPECT_EQ(dht.next_timeout(), now + options.bootstrap_retry_interval);
    now = *dht.next_timeout();
    dht.handle_timeout(now);
    sent = drain(dht);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].destination, seed);
  }
  EXPECT_EQ(dht.stats().bootstrap_attempts, 4u);
  // The seed finally answers (with its id, which we did not know): bootstrapped.
  const NodeId seed_id = NodeId::from_seed(500);
  dht.handle_datagram(now, seed,
                      encode_message(wire::Message{sent[0].message.transaction_id, seed_id, wire::Nodes{}}));
  for (int round = 0; round < 20 && !dht.is_bootstrapped(); ++round) {
    answer_all(dht, now, drain(dht), {Contact{seed_id, seed}});
  }
  EXPECT_TRUE(dht.is_bootstrapped());
  EXPECT_EQ(dht.known_peers(), std::vector<Contact>{(Contact{seed_id, seed})});
  bool bootstrapped_event = false;
  for (const auto& event : events(dht)) bootstrapped_event |= std::holds_alternative<Bootstrapped>(event);
  EXPECT_TRUE(bootstrapped_event);
}

}  // namespace
}  // namespace peerd::routing
