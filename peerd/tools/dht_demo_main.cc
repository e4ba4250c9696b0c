// peerd-dht-demo: builds N DHT nodes on the deterministic harness, bootstraps them from one seed node, has
// random nodes provide keys and other nodes look them up, and prints lookup hops and virtual latency.
//
//   peerd-dht-demo [--nodes N] [--seed S] [--lookups L] [--loss P]
//
// Exit status: 0 when at least 99 % of lookups found their provider, 1 otherwise, 2 on bad arguments.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "peerd/core/common/rng.h"
#include "peerd/core/harness/dht_cluster.h"

namespace {

using peerd::Duration;
using peerd::Instant;
using peerd::NodeId;

struct Arguments {
  size_t nodes = 1000;
  uint64_t seed = 1;
  size_t lookups = 1000;
  double loss = 0.0;
};

template <typename T>
bool parse_number(std::string_view text, T& value) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

std::optional<std::string> parse_arguments(int argc, char** argv, Arguments& arguments) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") return std::string("usage");
    if (i + 1 >= argc) return "missing value after " + std::string(flag);
    const std::string_view value = argv[++i];
    if (flag == "--nodes") {
      if (!parse_number(value, arguments.nodes) || arguments.nodes < 2 || arguments.nodes > 100000) {
        return "--nodes wants an integer in [2, 100000], got '" + std::string(value) + "'";
      }
    } else if (flag == "--seed") {
      if (!parse_number(value, arguments.seed))
        return "--seed wants an unsigned integer, got '" + std::string(value) + "'";
    } else if (flag == "--lookups") {
      if (!parse_number(value, arguments.lookups) || arguments.lookups < 1 || arguments.lookups > 1000000) {
        return "--lookups wants an integer in [1, 1000000], got '" + std::string(value) + "'";
      }
    } else if (flag == "--loss") {
      if (!parse_number(value, arguments.loss) || !(arguments.loss >= 0.0 && arguments.loss < 1.0)) {
        return "--loss wants a probability in [0, 1), got '" + std::string(value) + "'";
      }
    } else {
      return "unknown argument '" + std::string(flag) +
             "' (usage: peerd-dht-demo [--nodes N] [--seed S] "
             "[--lookups L] [--loss P])";
    }
  }
  return std::nullopt;
}

template <typename T>
T percentile(std::vector<T> values, double fraction) {
  if (values.empty()) return T{};
  std::sort(values.begin(), values.end());
  const size_t index = static_cast<size_t>(std::ceil(fraction * static_cast<double>(values.size()))) - 1;
  return values[std::min(index, values.size() - 1)];
}

struct PendingLookup {
  NodeId key;
  NodeId provider;
};

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments;
  if (auto error = parse_arguments(argc, argv, arguments)) {
    if (*error == "usage") {
      std::cout << "usage: peerd-dht-demo [--nodes N] [--seed S] [--lookups L] [--loss P]\n";
      return 0;
    }
    std::cerr << "peerd-dht-demo: " << *error << "\n";
    return 2;
  }
  const auto wall_start = std::chrono::steady_clock::now();

  peerd::harness::DhtClusterOptions options;
  options.seed = arguments.seed;
  options.nodes = arguments.nodes;
  peerd::harness::DhtCluster cluster(options);

  size_t bootstrapped = 0;
  Instant converged_at;
  std::unordered_map<uint64_t, PendingLookup> pending;  // by (node << 32 | lookup id)
  std::vector<int> hops, round_trips;
  std::vector<double> latency_ms;
  size_t succeeded = 0, finished = 0;
  // find_providers() can finish synchronously (the key is stored on the asking node), so the hook sees the
  // result before the caller learns the lookup id: `issuing` covers that call.
  std::optional<std::pair<size_t, PendingLookup>> issuing;
  cluster.set_event_hook([&](size_t node, Instant now, const peerd::routing::DhtEvent& event) {
    if (std::holds_alternative<peerd::routing::Bootstrapped>(event)) {
      ++bootstrapped;
      converged_at = now;
      return;
    }
    const auto* found = std::get_if<peerd::routing::ProvidersFound>(&event);
    if (!found) return;
    if (issuing && issuing->first == node) {
      pending.emplace((static_cast<uint64_t>(node) << 32) | found->lookup, issuing->second);
      issuing.reset();
    }
    auto it = pending.find((static_cast<uint64_t>(node) << 32) | found->lookup);
    if (it == pending.end()) return;
    ++finished;
    const bool ok = std::any_of(found->providers.begin(), found->providers.end(),
                                [&](const auto& contact) { return contact.id == it->second.provider; });
    if (ok) {
      ++succeeded;
      hops.push_back(found->hops);
      round_trips.push_back(found->round_trips);
      latency_ms.push_back(found->elapsed.as_milliseconds());
    }
    pending.erase(it);
  });

  const size_t steps_max = 2'000'000'000;
  cluster.schedule_joins(Instant{});
  cluster.run_until([&] { return bootstrapped == cluster.size(); }, Instant{} + Duration::seconds(3600),
                    steps_max);
  const bool all_bootstrapped = bootstrapped == cluster.size();
  cluster.run_until_idle(cluster.now() + Duration::seconds(600), steps_max);
  const auto bootstrap_stats = cluster.total_stats();

  cluster.network().set_loss_probability(arguments.loss);
  peerd::Rng rng(arguments.seed ^ 0xdeadbeefull);
  const size_t key_count = std::max<size_t>(1, arguments.lookups / 10);
  std::vector<std::pair<NodeId, size_t>> keys;  // (key, provider node)
  for (size_t i = 0; i < key_count; ++i) {
    const NodeId key =
        NodeId::hash_of("demo-key-" + std::to_string(arguments.seed) + "-" + std::to_string(i));
    const size_t provider = rng.uniform(cluster.size());
    keys.emplace_back(key, provider);
    cluster.provide(provider, key, Duration::zero());
  }
  cluster.run_until_idle(cluster.now() + Duration::seconds(600), steps_max);

  const Instant lookups_start = cluster.now();
  for (size_t i = 0; i < arguments.lookups; ++i) {
    const auto& [key, provider] = keys[rng.uniform(keys.size())];
    size_t node = rng.uniform(cluster.size());
    if (node == provider) node = (node + 1) % cluster.size();
    const NodeId key_copy = key;
    const NodeId provider_id = cluster.node_id(provider);
    cluster.schedule(lookups_start + Duration::milliseconds(5) * static_cast<int64_t>(i),
                     [&, node, key_copy, provider_id] {
                       issuing.emplace(node, PendingLookup{key_copy, provider_id});
                       const auto id = cluster.find_providers(node, key_copy, 1);
                       if (issuing)
                         pending.emplace((static_cast<uint64_t>(node) << 32) | id, issuing->second);
                       issuing.reset();
                     });
  }
  cluster.run_until_idle(cluster.now() + Duration::seconds(3600), steps_max);
  const auto stats = cluster.total_stats();
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();

  const size_t lookups = arguments.lookups;
  const double success = 100.0 * static_cast<double>(succeeded) / static_cast<double>(lookups);
  const double datagrams_per_node =
      static_cast<double>(stats.datagrams_sent) / static_cast<double>(cluster.size());
  std::cout << std::fixed << std::setprecision(1);
  std::cout << "peerd DHT demo  (" << cluster.seed_text() << ", loss " << arguments.loss * 100
            << " %, k=" << cluster.node(0).options().bucket_peers_max
            << ", alpha=" << cluster.node(0).options().lookup_parallelism << ")\n";
  std::cout << "  nodes                      " << cluster.size()
            << (all_bootstrapped ? "" : "  (NOT all bootstrapped)") << "\n";
  std::cout << "  converge time (virtual)    " << peerd::to_string(converged_at - Instant{})
            << " (nodes join " << peerd::to_string(options.join_interval) << " apart)\n";
  std::cout << "  routing table size (avg)   " << [&] {
    size_t total = 0;
    for (size_t i = 0; i < cluster.size(); ++i) total += cluster.node(i).routing_table().size();
    return static_cast<double>(total) / static_cast<double>(cluster.size());
  }() << "\n";
  std::cout << "  keys provided              " << keys.size() << "\n";
  std::cout << "  lookups                    " << lookups << " (" << finished << " finished)\n";
  std::cout << "  success                    " << std::setprecision(2) << success << " %\n"
            << std::setprecision(1);
  std::cout << "  hops p50 / p90 / max       " << percentile(hops, 0.5) << " / " << percentile(hops, 0.9)
            << " / " << percentile(hops, 1.0) << "\n";
  std::cout << "  round trips p50 / p90      " << percentile(round_trips, 0.5) << " / "
            << percentile(round_trips, 0.9) << "\n";
  std::cout << "  latency p50 / p90 / p99    " << percentile(latency_ms, 0.5) << " / "
            << percentile(latency_ms, 0.9) << " / " << percentile(latency_ms, 0.99) << " ms (virtual)\n";
  std::cout << "  datagrams per node         " << datagrams_per_node << " (bootstrap "
            << static_cast<double>(bootstrap_stats.datagrams_sent) / static_cast<double>(cluster.size())
            << ")\n";
  std::cout << "  request timeouts           " << stats.request_timeouts << "\n";
  std::cout << "  wall time                  " << std::setprecision(2) << wall_seconds << " s\n";
  return success >= 99.0 ? 0 : 1;
}
