// Tests of the deterministic harness that every core test builds on: the virtual Network (ordering, latency,
// loss, partitions, death, bounds) and the DhtCluster plumbing (callbacks, step bounds, foreign datagrams).
#include <gtest/gtest.h>

#include <vector>

#include "peerd/core/harness/dht_cluster.h"
#include "peerd/core/harness/network.h"

namespace peerd::harness {
namespace {

const Endpoint kA = Endpoint::ipv4(10, 0, 0, 1, 1);
const Endpoint kB = Endpoint::ipv4(10, 0, 0, 2, 1);
const Endpoint kC = Endpoint::ipv4(10, 0, 0, 3, 1);

std::vector<uint8_t> bytes(uint8_t value) {
  return std::vector<uint8_t>(4, value);
}

Network three_nodes(NetworkOptions options) {
  Network network(options);
  network.add_node(kA);
  network.add_node(kB);
  network.add_node(kC);
  return network;
}

std::vector<Delivery> drain_all(Network& network) {
  std::vector<Delivery> out;
  while (auto next = network.next_delivery()) {
    while (auto delivery = network.pop_due(*next)) out.push_back(std::move(*delivery));
  }
  return out;
}

// Deliveries come out in (time, send order) order, each within the link's latency bounds; per-link base
// latency is fixed and symmetric.
TEST(Network, DeliversInTimeOrderWithinLatencyBounds) {
  NetworkOptions options;
  options.latency_min = Duration::milliseconds(5);
  options.latency_max = Duration::milliseconds(40);
  options.latency_jitter_max = Duration::milliseconds(2);
  Network network = three_nodes(options);
  EXPECT_EQ(network.link_latency(kA, kB), network.link_latency(kB, kA));
  const Instant start = Instant{} + Duration::seconds(1);
  for (uint8_t i = 0; i < 100; ++i) {
    EXPECT_TRUE(network.send(start, i % 2 ? kA : kC, kB, bytes(i)));
  }
  const auto delivered = drain_all(network);
  ASSERT_EQ(delivered.size(), 100u);
  for (size_t i = 0; i < delivered.size(); ++i) {
    const Duration latency = delivered[i].at - start;
    EXPECT_GE(latency, network.link_latency(delivered[i].from, kB));
    EXPECT_LT(latency, network.link_latency(delivered[i].from, kB) + options.latency_jitter_max);
    EXPECT_GE(latency, options.latency_min);
    if (i > 0) {
      EXPECT_GE(delivered[i].at, delivered[i - 1].at);
    }
  }
  EXPECT_EQ(network.stats().delivered, 100u);
}

// Loss drops about the configured fraction, and the same seed drops the very same datagrams.
TEST(Network, LossIsSeededAndProportional) {
  auto run = [](uint64_t seed) {
    NetworkOptions options;
    options.seed = seed;
    options.loss_probability = 0.1;
    Network network = three_nodes(options);
    std::vector<bool> kept;
    for (int i = 0; i < 10000; ++i) kept.push_back(network.send(Instant{}, kA, kB, bytes(1)));
    EXPECT_NEAR(static_cast<double>(network.stats().dropped_loss), 1000.0, 150.0);
    return kept;
  };
  EXPECT_EQ(run(3), run(3));
  EXPECT_NE(run(3), run(4));
}

// Partitions, dead nodes, unknown endpoints, oversized payloads and a full queue all drop (and count); a
// datagram in flight to a node that dies meanwhile is lost.
TEST(Network, PartitionsDeathAndBoundsDrop) {
  NetworkOptions options;
  options.datagram_bytes_max = 8;
  options.in_flight_max = 3;
  Network network = three_nodes(options);
  network.set_partition_group(kC, 1);
  EXPECT_FALSE(network.send(Instant{}, kA, kC, bytes(1)));
  EXPECT_EQ(network.stats().dropped_partition, 1u);
  network.heal();
  EXPECT_TRUE(network.send(Instant{}, kA, kC, bytes(1)));
  network.kill(kC);
  EXPECT_FALSE(network.is_alive(kC));
  EXPECT_FALSE(network.send(Instant{}, kC, kA, bytes(1)));  // a dead node sends nothing
  EXPECT_TRUE(drain_all(network).empty());                  // the one in flight died with its receiver
  EXPECT_EQ(network.stats().dropped_dead, 2u);
  network.revive(kC);
  EXPECT_FALSE(network.send(Instant{}, kA, Endpoint::ipv4(1, 2, 3, 4, 5), bytes(1)));
  EXPECT_EQ(network.stats().dropped_unknown, 1u);
  EXPECT_FALSE(network.send(Instant{}, kA, kB, std::vector<uint8_t>(9, 0)));
  EXPECT_EQ(network.stats().dropped_oversized, 1u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(network.send(Instant{}, kA, kB, bytes(1)));
  EXPECT_FALSE(network.send(Instant{}, kA, kB, bytes(1)));
  EXPECT_EQ(network.stats().dropped_queue_full, 1u);
  // A partition formed while datagrams are in flight drops them at delivery.
  network.isolate(std::vector<Endpoint>{kB}, 2);
  EXPECT_TRUE(drain_all(network).empty());
  EXPECT_EQ(network.stats().dropped_partition, 4u);
}

// Scheduled callbacks run in time order on the cluster clock; run_until stops on its step bound and reports
// it; datagrams that are not DHT traffic go to the foreign handler.
TEST(DhtClusterHarness, CallbacksStepBoundsAndForeignDatagrams) {
  DhtClusterOptions options;
  options.nodes = 3;
  DhtCluster cluster(options);
  std::vector<int> order;
  cluster.schedule(Instant{} + Duration::seconds(2), [&] { order.push_back(2); });
  cluster.schedule(Instant{} + Duration::seconds(1), [&] { order.push_back(1); });
  cluster.schedule(Instant{} + Duration::seconds(1), [&] { order.push_back(11); });
  EXPECT_TRUE(cluster.run_until(Instant{} + Duration::seconds(1), 100));
  EXPECT_EQ(order, (std::vector<int>{1, 11}));
  EXPECT_EQ(cluster.now(), Instant{} + Duration::seconds(1));
  EXPECT_TRUE(cluster.run_until(Instant{} + Duration::seconds(3), 100));
  EXPECT_EQ(order, (std::vector<int>{1, 11, 2}));
  EXPECT_EQ(cluster.now(), Instant{} + Duration::seconds(3));

  for (int i = 0; i < 10; ++i) cluster.schedule(cluster.now(), [] {});
  EXPECT_FALSE(cluster.run_until(cluster.now() + Duration::seconds(1), 5));
  EXPECT_TRUE(cluster.run_until(cluster.now() + Duration::seconds(1), 100));

  std::vector<std::vector<uint8_t>> foreign;
  cluster.set_foreign_datagram_handler(
      [&](Instant, const Endpoint&, const Endpoint&, std::span<const uint8_t> payload) {
        foreign.emplace_back(payload.begin(), payload.end());
      });
  const Endpoint transfer = Endpoint::ipv4(10, 0, 0, 1, 5000);
  cluster.network().add_node(transfer);
  cluster.network().send(cluster.now(), cluster.endpoint(1), transfer, bytes(7));  // not a DHT node
  cluster.network().send(cluster.now(), cluster.endpoint(1), cluster.endpoint(2), bytes(8));  // no DHT magic
  EXPECT_TRUE(cluster.run_until_idle(cluster.now() + Duration::seconds(1), 100));
  EXPECT_EQ(foreign, (std::vector<std::vector<uint8_t>>{bytes(7), bytes(8)}));
  EXPECT_EQ(cluster.node(2).stats().datagrams_received, 0u);
}

// Killing a node freezes it (no timers, no traffic); revive resumes it; DHT state survives both.
TEST(DhtClusterHarness, KillFreezesAndReviveResumes) {
  DhtClusterOptions options;
  options.nodes = 20;
  DhtCluster cluster(options);
  cluster.schedule_joins(Instant{});
  ASSERT_TRUE(cluster.run_until_idle(Instant{} + Duration::seconds(60), 1'000'000));
  for (size_t i = 0; i < cluster.size(); ++i) EXPECT_TRUE(cluster.node(i).is_bootstrapped());
  const size_t peers = cluster.node(5).routing_table().size();
  cluster.kill(5);
  const uint64_t received = cluster.node(5).stats().datagrams_received;
  cluster.find_providers(6, cluster.node_id(5), 1);  // a lookup aimed right at the dead node
  cluster.run_until(cluster.now() + Duration::seconds(700), 1'000'000);  // past a bucket refresh
  EXPECT_EQ(cluster.node(5).stats().datagrams_received, received);
  EXPECT_EQ(cluster.node(5).routing_table().size(), peers);
  cluster.revive(5);
  cluster.run_until(cluster.now() + Duration::seconds(1), 1'000'000);  // its overdue timers fire
  EXPECT_GT(cluster.node(5).stats().datagrams_sent, 0u);
}

}  // namespace
}  // namespace peerd::harness
