// Tests of the DHT at scale on the deterministic harness: convergence of 1 000 nodes bootstrapped from one
// seed, provider lookups from every node, hop and round-trip bounds, loss plus churn, record expiry,
// partitions, IPv6, and byte-for-byte determinism. Measured figures are printed and recorded as properties.
//
// PEERD_TEST_SCALE=small shrinks the 1 000-node tests to 200 nodes (for sanitizer builds);
// PEERD_TEST_SEED=N replays a run with another seed (every failure prints the seed in use).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "peerd/core/common/rng.h"
#include "peerd/core/harness/dht_cluster.h"

namespace peerd::harness {
namespace {

using routing::LookupId;

size_t scaled(size_t nodes) {
  const char* scale = std::getenv("PEERD_TEST_SCALE");
  if (scale && std::string(scale) == "small") return std::min<size_t>(nodes, 200);
  return nodes;
}

uint64_t test_seed(uint64_t fallback) {
  const char* seed = std::getenv("PEERD_TEST_SEED");
  return seed ? std::strtoull(seed, nullptr, 10) : fallback;
}

constexpr size_t kStepsMax = 500'000'000;

// Collects the events every test needs through the cluster's event hook.
struct Observer {
  size_t bootstrapped = 0;
  std::map<std::pair<size_t, LookupId>, routing::ProvidersFound> found;
  std::map<std::pair<size_t, LookupId>, routing::ProvideDone> provided;

  void attach(DhtCluster& cluster) {
    cluster.set_event_hook([this](size_t node, Instant, const routing::DhtEvent& event) {
      if (std::holds_alternative<routing::Bootstrapped>(event)) ++bootstrapped;
      if (const auto* result = std::get_if<routing::ProvidersFound>(&event))
        found[{node, result->lookup}] = *result;
      if (const auto* done = std::get_if<routing::ProvideDone>(&event))
        provided[{node, done->lookup}] = *done;
    });
  }
};

DhtClusterOptions cluster_options(size_t nodes, uint64_t seed) {
  DhtClusterOptions options;
  options.nodes = nodes;
  options.seed = seed;
  options.dht.peer_events = false;
  return options;
}

// Joins every node through node 0 and waits until all are bootstrapped and the network is quiet.
void join_all(DhtCluster& cluster, Observer& observer) {
  cluster.schedule_joins(cluster.now());
  const Instant deadline = cluster.now() + Duration::seconds(3600);
  ASSERT_TRUE(cluster.run_until([&] { return observer.bootstrapped == cluster.size(); }, deadline, kStepsMax))
      << cluster.seed_text() << ": " << observer.bootstrapped << " of " << cluster.size() << " bootstrapped";
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax))
      << cluster.seed_text();
}

template <typename T>
T percentile(std::vector<T> values, double fraction) {
  if (values.empty()) return T{};
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(fraction * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

bool contains_provider(const routing::ProvidersFound& found, const NodeId& provider) {
  return std::any_of(found.providers.begin(), found.providers.end(),
                     [&](const routing::Contact& contact) { return contact.id == provider; });
}

struct LookupFigures {
  size_t issued = 0;
  size_t succeeded = 0;
  std::vector<int> hops;
  std::vector<int> round_trips;
  std::vector<double> latency_ms;

  void add(const routing::ProvidersFound& found, bool success) {
    ++issued;
    if (!success) return;
    ++succeeded;
    hops.push_back(found.hops);
    round_trips.push_back(found.round_trips);
    latency_ms.push_back(found.elapsed.as_milliseconds());
  }
  double success_rate() const {
    return issued ? static_cast<double>(succeeded) / static_cast<double>(issued) : 0;
  }
  std::string summary() const {
    std::ostringstream out;
    out << "lookups " << issued << ", success " << 100.0 * success_rate() << " %, hops p50/p90/max "
        << percentile(hops, 0.5) << "/" << percentile(hops, 0.9) << "/" << percentile(hops, 1.0)
        << ", round trips p50/p90 " << percentile(round_trips, 0.5) << "/" << percentile(round_trips, 0.9)
        << ", virtual latency p50/p90/p99 " << percentile(latency_ms, 0.5) << "/"
        << percentile(latency_ms, 0.9) << "/" << percentile(latency_ms, 0.99) << " ms";
    return out.str();
  }
};

// The k true closest nodes to `target` among all nodes, by brute force.
std::vector<NodeId> true_closest(const DhtCluster& cluster, const NodeId& target, size_t count, size_t skip) {
  std::vector<NodeId> ids;
  for (size_t i = 0; i < cluster.size(); ++i) {
    if (i != skip) ids.push_back(cluster.node_id(i));
  }
  const size_t keep = std::min(count, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(keep), ids.end(),
                    [&](const NodeId& a, const NodeId& b) { return closer_to(target, a, b); });
  ids.resize(keep);
  return ids;
}

// One 1 000-node network, bootstrapped once and shared by the read-mostly tests below.
class LargeCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = std::make_unique<DhtCluster>(cluster_options(scaled(1000), test_seed(1)));
    observer_ = std::make_unique<Observer>();
    observer_->attach(*cluster_);
    join_all(*cluster_, *observer_);
  }
  static void TearDownTestSuite() {
    cluster_.reset();
    observer_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(cluster_);
    ASSERT_EQ(observer_->bootstrapped, cluster_->size()) << cluster_->seed_text();
    RecordProperty("seed", std::to_string(cluster_->seed()));
    RecordProperty("nodes", std::to_string(cluster_->size()));
  }

  static std::unique_ptr<DhtCluster> cluster_;
  static std::unique_ptr<Observer> observer_;
};
std::unique_ptr<DhtCluster> LargeCluster::cluster_;
std::unique_ptr<Observer> LargeCluster::observer_;

// N nodes joined through one seed all converge: every node is bootstrapped, knows its true nearest
// neighbour, and holds most of its true k closest nodes (checked against a brute-force sort of all ids).
TEST_F(LargeCluster, AllNodesBootstrappedFromOneSeedConverge) {
  DhtCluster& cluster = *cluster_;
  SCOPED_TRACE(cluster.seed_text());
  size_t nearest_known = 0, closest_known = 0, closest_total = 0, table_total = 0, empty = 0;
  for (size_t i = 0; i < cluster.size(); ++i) {
    const routing::Dht& dht = cluster.node(i);
    EXPECT_TRUE(dht.is_bootstrapped()) << "node " << i;
    table_total += dht.routing_table().size();
    empty += dht.routing_table().size() == 0;
    const auto closest = true_closest(cluster, cluster.node_id(i), dht.options().bucket_peers_max, i);
    nearest_known += dht.routing_table().find(closest.front()) != nullptr;
    for (const auto& id : closest) closest_known += dht.routing_table().find(id) != nullptr;
    closest_total += closest.size();
  }
  const double closest_fraction = static_cast<double>(closest_known) / static_cast<double>(closest_total);
  std::cout << "[ figures  ] converge: nodes " << cluster.size() << ", virtual time "
            << to_string(cluster.now() - Instant{}) << ", routing table avg "
            << static_cast<double>(table_total) / static_cast<double>(cluster.size())
            << ", nodes knowing their nearest neighbour " << nearest_known << ", true k-closest known "
            << 100.0 * closest_fraction << " %, datagrams/node "
            << static_cast<double>(cluster.total_stats().datagrams_sent) / static_cast<double>(cluster.size())
            << "\n";
  RecordProperty("k_closest_known_percent", std::to_string(100.0 * closest_fraction));
  EXPECT_EQ(empty, 0u);
  EXPECT_EQ(nearest_known, cluster.size());
  EXPECT_GE(closest_fraction, 0.9);
}

// Every node finds the providers of a key announced by another node, with median hops <= ceil(log2 N) and
// median round trips <= 4: 20 random nodes provide one key each, then every node looks up one of them.
TEST_F(LargeCluster, EveryNodeFindsProvidersWithinHopBounds) {
  DhtCluster& cluster = *cluster_;
  SCOPED_TRACE(cluster.seed_text());
  Rng rng(cluster.seed() ^ 0x5eed);
  std::vector<std::pair<NodeId, size_t>> keys;
  for (int i = 0; i < 20; ++i) {
    const NodeId key = NodeId::hash_of("large-cluster-key-" + std::to_string(i));
    const size_t provider = rng.uniform(cluster.size());
    keys.emplace_back(key, provider);
    const LookupId lookup = cluster.provide(provider, key, Duration::zero());
    ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
    auto done = observer_->provided.find({provider, lookup});
    ASSERT_NE(done, observer_->provided.end());
    EXPECT_GE(done->second.stored_on, cluster.node(0).options().bucket_peers_max - 2);
  }
  std::vector<std::pair<size_t, LookupId>> lookups;
  std::vector<size_t> expected_provider;
  const Instant start = cluster.now();
  for (size_t node = 0; node < cluster.size(); ++node) {
    const size_t key = node % keys.size();
    cluster.schedule(start + Duration::milliseconds(2) * static_cast<int64_t>(node), [&, node, key] {
      lookups.emplace_back(node, cluster.find_providers(node, keys[key].first, 1));
      expected_provider.push_back(keys[key].second);
    });
  }
  ASSERT_TRUE(cluster.run_until_idle(start + Duration::seconds(600), kStepsMax));
  LookupFigures figures;
  for (size_t i = 0; i < lookups.size(); ++i) {
    auto result = observer_->found.find(lookups[i]);
    ASSERT_NE(result, observer_->found.end());
    const bool success = contains_provider(result->second, cluster.node_id(expected_provider[i]));
    EXPECT_TRUE(success) << "node " << lookups[i].first;
    figures.add(result->second, success);
  }
  const int hops_bound = static_cast<int>(std::ceil(std::log2(static_cast<double>(cluster.size()))));
  std::cout << "[ figures  ] find providers, N=" << cluster.size() << ": " << figures.summary() << "\n";
  RecordProperty("lookup_success_percent", std::to_string(100.0 * figures.success_rate()));
  RecordProperty("hops_p50", std::to_string(percentile(figures.hops, 0.5)));
  RecordProperty("hops_p90", std::to_string(percentile(figures.hops, 0.9)));
  RecordProperty("round_trips_p50", std::to_string(percentile(figures.round_trips, 0.5)));
  RecordProperty("round_trips_p90", std::to_string(percentile(figures.round_trips, 0.9)));
  RecordProperty("latency_ms_p50", std::to_string(percentile(figures.latency_ms, 0.5)));
  EXPECT_EQ(figures.succeeded, cluster.size());
  EXPECT_LE(percentile(figures.hops, 0.5), hops_bound);
  EXPECT_LE(percentile(figures.round_trips, 0.5), 4);
}

// With 10 % datagram loss and 20 % of the nodes killed in the middle of a stream of lookups, at least 99 % of
// the lookups (by live nodes, for keys whose provider is alive) still find the provider.
TEST(DhtCluster, LookupsSurviveLossAndChurn) {
  DhtCluster cluster(cluster_options(scaled(1000), test_seed(2)));
  SCOPED_TRACE(cluster.seed_text());
  RecordProperty("seed", std::to_string(cluster.seed()));
  Observer observer;
  observer.attach(cluster);
  join_all(cluster, observer);

  Rng rng(cluster.seed() ^ 0xc4a05);
  std::vector<std::pair<NodeId, size_t>> keys;
  for (int i = 0; i < 50; ++i) {
    const NodeId key = NodeId::hash_of("churn-key-" + std::to_string(i));
    const size_t provider = rng.uniform(cluster.size());
    keys.emplace_back(key, provider);
    cluster.provide(provider, key, Duration::zero());
  }
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));

  cluster.network().set_loss_probability(0.10);
  const Instant start = cluster.now();
  const size_t lookups_total = cluster.size();
  const Duration spacing = Duration::milliseconds(10);
  struct Issued {
    size_t node;
    LookupId lookup;
    size_t key;
  };
  std::vector<Issued> issued;
  for (size_t i = 0; i < lookups_total; ++i) {
    const size_t node = rng.uniform(cluster.size());
    const size_t key = rng.uniform(keys.size());
    cluster.schedule(start + spacing * static_cast<int64_t>(i), [&, node, key] {
      if (!cluster.is_alive(node)) return;
      issued.push_back(Issued{node, cluster.find_providers(node, keys[key].first, 1), key});
    });
  }
  // Midway, kill 20 % of the nodes at once.
  std::vector<size_t> order(cluster.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.uniform(i)]);
  const size_t killed = cluster.size() / 5;
  cluster.schedule(start + spacing * static_cast<int64_t>(lookups_total / 2), [&] {
    for (size_t i = 0; i < killed; ++i) cluster.kill(order[i]);
  });
  ASSERT_TRUE(cluster.run_until_idle(start + Duration::seconds(3600), kStepsMax));

  LookupFigures figures;
  size_t excluded = 0;
  for (const auto& lookup : issued) {
    const size_t provider = keys[lookup.key].second;
    if (!cluster.is_alive(lookup.node) || !cluster.is_alive(provider)) {
      ++excluded;
      continue;
    }
    auto result = observer.found.find({lookup.node, lookup.lookup});
    ASSERT_NE(result, observer.found.end());
    figures.add(result->second, contains_provider(result->second, cluster.node_id(provider)));
  }
  const auto stats = cluster.total_stats();
  std::cout << "[ figures  ] loss 10 % + " << killed << " of " << cluster.size()
            << " nodes killed: " << figures.summary() << " (" << excluded
            << " excluded: dead asker or provider; request timeouts " << stats.request_timeouts << ")\n";
  RecordProperty("churn_lookup_success_percent", std::to_string(100.0 * figures.success_rate()));
  EXPECT_GT(figures.issued, lookups_total / 2);
  EXPECT_GE(figures.success_rate(), 0.99);
}

// Provider records lapse with their ttl once the provider stops re-providing: a kept key is still found
// after several ttls (periodic re-provide works), a withdrawn key is found by nobody, and once everything is
// withdrawn no node holds any record.
TEST(DhtCluster, ExpiredProviderRecordsDisappear) {
  DhtClusterOptions options = cluster_options(100, test_seed(3));
  options.dht.reprovide_interval = Duration::seconds(20);
  DhtCluster cluster(options);
  SCOPED_TRACE(cluster.seed_text());
  Observer observer;
  observer.attach(cluster);
  join_all(cluster, observer);

  const Duration ttl = Duration::seconds(60);
  const NodeId kept = NodeId::hash_of("kept"), withdrawn = NodeId::hash_of("withdrawn");
  const size_t provider = 17;
  cluster.provide(provider, kept, ttl);
  cluster.provide(provider, withdrawn, ttl);
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(60), kStepsMax));
  size_t stored_both = 0;
  for (size_t i = 0; i < cluster.size(); ++i) stored_both += cluster.node(i).provider_records_stored();
  EXPECT_GE(stored_both, 2 * (cluster.node(0).options().bucket_peers_max - 2));

  auto found_by = [&](const NodeId& key, size_t node) {
    const LookupId lookup = cluster.find_providers(node, key, 1);
    EXPECT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(60), kStepsMax));
    auto result = observer.found.find({node, lookup});
    return result != observer.found.end() && contains_provider(result->second, cluster.node_id(provider));
  };
  EXPECT_TRUE(found_by(withdrawn, 3));
  cluster.withdraw(provider, withdrawn);

  cluster.run_until(cluster.now() + ttl * 3, kStepsMax);
  for (size_t node = 0; node < cluster.size(); node += 9) {
    if (node == provider) continue;
    EXPECT_TRUE(found_by(kept, node)) << "node " << node;
    EXPECT_FALSE(found_by(withdrawn, node)) << "node " << node;
  }
  cluster.withdraw(provider, kept);
  cluster.run_until(cluster.now() + ttl + Duration::seconds(1), kStepsMax);
  size_t stored = 0;
  uint64_t expired = 0;
  for (size_t i = 0; i < cluster.size(); ++i) {
    stored += cluster.node(i).provider_records_stored();
    expired += cluster.node(i).stats().provider_records_expired;
  }
  EXPECT_EQ(stored, 0u);
  EXPECT_GE(expired, stored_both);
  EXPECT_FALSE(found_by(kept, 5));
}

// A partition hides the providers on the other side; after healing, a fresh announcement is found.
TEST(DhtCluster, PartitionHidesProvidersUntilHealed) {
  DhtCluster cluster(cluster_options(100, test_seed(4)));
  SCOPED_TRACE(cluster.seed_text());
  Observer observer;
  observer.attach(cluster);
  join_all(cluster, observer);
  std::vector<Endpoint> island;
  for (size_t i = 50; i < cluster.size(); ++i) island.push_back(cluster.endpoint(i));
  cluster.network().isolate(island, 1);

  const NodeId key = NodeId::hash_of("partitioned");
  const size_t provider = 10, asker = 80;
  cluster.provide(provider, key, Duration::zero());
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  LookupId lookup = cluster.find_providers(asker, key, 1);
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  EXPECT_FALSE(contains_provider(observer.found.at({asker, lookup}), cluster.node_id(provider)));
  EXPECT_GT(cluster.network().stats().dropped_partition, 0u);

  cluster.network().heal();
  cluster.provide(provider, key, Duration::zero());
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  lookup = cluster.find_providers(asker, key, 1);
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  EXPECT_TRUE(contains_provider(observer.found.at({asker, lookup}), cluster.node_id(provider)));
}

// The same protocol works over IPv6 endpoints, and a restarted node (fresh state, same id) rejoins and
// finds providers again.
TEST(DhtCluster, Ipv6AndRestartedNodes) {
  DhtClusterOptions options = cluster_options(60, test_seed(5));
  options.ipv6 = true;
  DhtCluster cluster(options);
  SCOPED_TRACE(cluster.seed_text());
  Observer observer;
  observer.attach(cluster);
  join_all(cluster, observer);
  EXPECT_EQ(cluster.endpoint(7).family, Endpoint::Family::kIpv6);
  const NodeId key = NodeId::hash_of("v6");
  cluster.provide(3, key, Duration::zero());
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  const Endpoint seed = cluster.endpoint(0);
  cluster.restart(40, std::span<const Endpoint>(&seed, 1));
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  EXPECT_TRUE(cluster.node(40).is_bootstrapped());
  const LookupId lookup = cluster.find_providers(40, key, 1);
  ASSERT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(600), kStepsMax));
  const auto& found = observer.found.at({40, lookup});
  ASSERT_TRUE(contains_provider(found, cluster.node_id(3)));
  EXPECT_EQ(found.providers.front().endpoint, cluster.endpoint(3));
}

// One faulty run (loss, a partition, kills, provides and lookups): everything that happens in it, as text.
std::string faulty_run(uint64_t seed, uint64_t& fingerprint) {
  DhtClusterOptions options = cluster_options(200, seed);
  options.dht.peer_events = true;
  options.network.loss_probability = 0.05;
  DhtCluster cluster(options);
  std::ostringstream log;
  size_t bootstrapped = 0;
  cluster.set_event_hook([&](size_t node, Instant now, const routing::DhtEvent& event) {
    log << now.micros_since_epoch << " " << node << " " << event.index();
    if (const auto* found = std::get_if<routing::ProvidersFound>(&event)) {
      log << " found " << found->providers.size() << " " << found->hops << " " << found->rpcs;
    }
    if (const auto* added = std::get_if<routing::PeerAdded>(&event))
      log << " + " << added->contact.id.short_hex();
    if (std::holds_alternative<routing::Bootstrapped>(event)) ++bootstrapped;
    log << "\n";
  });
  cluster.schedule_joins(Instant{});
  cluster.run_until([&] { return bootstrapped == cluster.size(); }, Instant{} + Duration::seconds(600),
                    kStepsMax);
  Rng rng(seed);
  for (int i = 0; i < 20; ++i)
    cluster.provide(rng.uniform(200), NodeId::from_seed(rng.next_u64()), Duration::zero());
  for (size_t i = 0; i < 20; ++i) cluster.kill(rng.uniform(200));
  std::vector<Endpoint> island = {cluster.endpoint(1), cluster.endpoint(2), cluster.endpoint(3)};
  cluster.network().isolate(island, 7);
  for (int i = 0; i < 100; ++i) {
    const size_t node = rng.uniform(200);
    const NodeId key = NodeId::from_seed(rng.next_u64());
    cluster.schedule(cluster.now() + Duration::milliseconds(7) * i, [&cluster, node, key] {
      if (cluster.is_alive(node)) cluster.find_providers(node, key, 1);
    });
  }
  cluster.run_until(cluster.now() + Duration::seconds(120), kStepsMax);
  fingerprint = cluster.fingerprint();
  log << "network " << cluster.network().stats().sent << " " << cluster.network().stats().dropped_loss;
  return log.str();
}

// Same seed, same run, byte for byte: two faulty runs with one seed produce identical event logs, counters
// and state fingerprints; another seed produces a different run.
TEST(DhtCluster, SameSeedReplaysByteForByte) {
  const uint64_t seed = test_seed(6);
  SCOPED_TRACE("seed=" + std::to_string(seed));
  uint64_t first_fingerprint = 0, second_fingerprint = 0, other_fingerprint = 0;
  const std::string first = faulty_run(seed, first_fingerprint);
  const std::string second = faulty_run(seed, second_fingerprint);
  const std::string other = faulty_run(seed + 1, other_fingerprint);
  EXPECT_GT(first.size(), 10000u);
  EXPECT_EQ(first, second);
  EXPECT_EQ(first_fingerprint, second_fingerprint);
  EXPECT_NE(first, other);
  EXPECT_NE(first_fingerprint, other_fingerprint);
}

}  // namespace
}  // namespace peerd::harness
