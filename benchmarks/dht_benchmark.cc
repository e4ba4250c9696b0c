// Benchmarks of the DHT: routing-table insert and closest-k, and a full provider lookup on the deterministic
// harness at N = 1 000 and N = 10 000 (the cluster is built and bootstrapped once, outside the timing loop).
// Counters: virtual hops, round trips and latency per lookup, and lookups per wall-clock second.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <variant>
#include <vector>

#include "peerd/core/common/rng.h"
#include "peerd/core/harness/dht_cluster.h"
#include "peerd/core/routing/routing_table.h"

namespace {

using peerd::Duration;
using peerd::Endpoint;
using peerd::Instant;
using peerd::NodeId;
using peerd::Rng;
using peerd::routing::Contact;
using peerd::routing::RoutingTable;
using peerd::routing::RoutingTableOptions;

std::vector<Contact> random_contacts(size_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<Contact> contacts;
  contacts.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    contacts.push_back(Contact{NodeId::from_seed(rng.next_u64()),
                               Endpoint::ipv4(10, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8),
                                              static_cast<uint8_t>(i), 4000)});
  }
  return contacts;
}

// Observing contacts into an empty table (most land in the far buckets, which fill and then only cache).
void BM_RoutingTableInsert(benchmark::State& state) {
  const auto contacts = random_contacts(static_cast<size_t>(state.range(0)), 1);
  for (auto _ : state) {
    RoutingTable table(NodeId::from_seed(99), RoutingTableOptions{});
    for (const auto& contact : contacts) table.observe(contact, Instant{});
    benchmark::DoNotOptimize(table.size());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RoutingTableInsert)->Arg(1000)->Arg(10000);

// closest(target, 20) on a table filled from `range(0)` random sightings.
void BM_RoutingTableClosestK(benchmark::State& state) {
  RoutingTable table(NodeId::from_seed(99), RoutingTableOptions{});
  for (const auto& contact : random_contacts(static_cast<size_t>(state.range(0)), 2))
    table.observe(contact, Instant{});
  Rng rng(3);
  std::vector<NodeId> targets;
  for (int i = 0; i < 1024; ++i) targets.push_back(NodeId::from_seed(rng.next_u64()));
  std::vector<Contact> out;
  size_t index = 0;
  for (auto _ : state) {
    table.closest_into(targets[index++ % targets.size()], 20, nullptr, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["table_size"] = static_cast<double>(table.size());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoutingTableClosestK)->Arg(1000)->Arg(100000);

// A bootstrapped cluster with 100 provided keys, built once per size.
struct LookupBench {
  std::unique_ptr<peerd::harness::DhtCluster> cluster;
  std::vector<std::pair<NodeId, size_t>> keys;
  std::map<std::pair<size_t, uint64_t>, peerd::routing::ProvidersFound> found;
  size_t bootstrapped = 0;
};

LookupBench& bench_for(size_t nodes) {
  static std::map<size_t, std::unique_ptr<LookupBench>> benches;
  auto& slot = benches[nodes];
  if (slot) return *slot;
  slot = std::make_unique<LookupBench>();
  LookupBench& bench = *slot;
  peerd::harness::DhtClusterOptions options;
  options.nodes = nodes;
  options.seed = 1;
  options.dht.peer_events = false;
  options.join_interval = Duration::milliseconds(2);
  // Thousands of lookups advance virtual time by minutes: keep periodic bucket refresh and re-provide out of
  // that window so the figures are those of the lookups alone.
  options.dht.bucket_refresh_interval = Duration::seconds(24 * 3600);
  options.dht.reprovide_interval = Duration::seconds(12 * 3600);
  options.dht.provider_ttl_default = Duration::seconds(24 * 3600);
  bench.cluster = std::make_unique<peerd::harness::DhtCluster>(options);
  auto& cluster = *bench.cluster;
  cluster.set_event_hook([&bench](size_t node, Instant, const peerd::routing::DhtEvent& event) {
    if (std::holds_alternative<peerd::routing::Bootstrapped>(event)) ++bench.bootstrapped;
    if (const auto* result = std::get_if<peerd::routing::ProvidersFound>(&event)) {
      bench.found[{node, result->lookup}] = *result;
    }
  });
  const size_t steps_max = 4'000'000'000;
  cluster.schedule_joins(Instant{});
  cluster.run_until([&] { return bench.bootstrapped == cluster.size(); }, Instant{} + Duration::seconds(7200),
                    steps_max);
  cluster.run_until_idle(cluster.now() + Duration::seconds(600), steps_max);
  Rng rng(7);
  for (int i = 0; i < 100; ++i) {
    const NodeId key = NodeId::hash_of("bench-key-" + std::to_string(i));
    const size_t provider = rng.uniform(cluster.size());
    bench.keys.emplace_back(key, provider);
    cluster.provide(provider, key, Duration::zero());
  }
  cluster.run_until_idle(cluster.now() + Duration::seconds(600), steps_max);
  return bench;
}

// One find_providers from a random node, run to completion on virtual time.
void BM_DhtLookup(benchmark::State& state) {
  LookupBench& bench = bench_for(static_cast<size_t>(state.range(0)));
  auto& cluster = *bench.cluster;
  Rng rng(11);
  double hops = 0, round_trips = 0, latency_ms = 0, rpcs = 0, found = 0, lookups = 0;
  const uint64_t steps_before = cluster.steps();
  for (auto _ : state) {
    const auto& [key, provider] = bench.keys[rng.uniform(bench.keys.size())];
    const size_t node = rng.uniform(cluster.size());
    const uint64_t lookup = cluster.find_providers(node, key, 1);
    cluster.run_until_idle(cluster.now() + Duration::seconds(600), 100'000'000);
    auto result = bench.found.find({node, lookup});
    if (result == bench.found.end()) continue;
    ++lookups;
    hops += result->second.hops;
    round_trips += result->second.round_trips;
    rpcs += result->second.rpcs;
    latency_ms += result->second.elapsed.as_milliseconds();
    found += result->second.providers.empty() ? 0 : 1;
    bench.found.erase(result);
  }
  state.counters["nodes"] = static_cast<double>(cluster.size());
  state.counters["harness_steps"] =
      lookups ? static_cast<double>(cluster.steps() - steps_before) / lookups : 0;
  state.counters["virtual_hops"] = lookups ? hops / lookups : 0;
  state.counters["round_trips"] = lookups ? round_trips / lookups : 0;
  state.counters["rpcs"] = lookups ? rpcs / lookups : 0;
  state.counters["virtual_latency_ms"] = lookups ? latency_ms / lookups : 0;
  state.counters["found_ratio"] = lookups ? found / lookups : 0;
  state.counters["lookups_per_s"] = benchmark::Counter(lookups, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DhtLookup)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
