#include "peerd/daemon/bootstrap.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>

namespace peerd::daemon {
namespace {

Endpoint ep(uint8_t last, uint16_t port = 5003) {
  return Endpoint::ipv4(10, 0, 0, last, port);
}

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

// A resolver whose answer the test changes between rounds; an empty answer means failure.
struct ScriptedDns {
  std::mutex mutex;
  std::vector<Endpoint> answer;
  bool failing = false;
  int calls = 0;
  Result<std::vector<Endpoint>, std::string> operator()(const std::string&, uint16_t) {
    std::lock_guard lock(mutex);
    ++calls;
    if (failing) return fail(std::string("SERVFAIL"));
    return answer;
  }
};

// Collects the rounds the refresher reports and lets the test wait for the next one.
struct Rounds {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::vector<Endpoint>> seen;
  void add(const std::vector<Endpoint>& peers) {
    std::lock_guard lock(mutex);
    seen.push_back(peers);
    changed.notify_all();
  }
  // Waits (10 s guard against hangs, not a timing assertion) until `count` rounds were seen.
  std::vector<Endpoint> wait_for(size_t count) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, std::chrono::seconds(10), [&] { return seen.size() >= count; });
    return seen.size() >= count ? seen[count - 1] : std::vector<Endpoint>{};
  }
};

// Shows getaddrinfo finds localhost's A record from /etc/hosts and puts the port on it.
TEST(Bootstrap, ResolvesLocalhost) {
  auto resolved = resolve_with_getaddrinfo("localhost", 5003);
  ASSERT_TRUE(resolved.ok()) << resolved.error();
  EXPECT_NE(std::find(resolved->begin(), resolved->end(), Endpoint::ipv4(127, 0, 0, 1, 5003)),
            resolved->end());
}

// Shows --bootstrap entries become one static source plus one DNS source per name.
TEST(Bootstrap, SourcesFromOptions) {
  const auto sources =
      make_peer_sources({*parse_bootstrap_entry("10.0.0.1:5003"), *parse_bootstrap_entry("peerd.ns.svc:5003"),
                         *parse_bootstrap_entry("10.0.0.2:5003")});
  ASSERT_EQ(sources.size(), 2u);
  EXPECT_EQ(sources[0]->describe(), "static:10.0.0.1:5003,10.0.0.2:5003");
  EXPECT_EQ(sources[1]->describe(), "dns:peerd.ns.svc:5003");
}

// Shows the refresher reports the union of all sources, re-resolves DNS on every round (picking up new
// records), and keeps a failing source's previous answer.
TEST(Bootstrap, PeriodicReResolutionKeepsPeersOnFailure) {
  auto dns = std::make_shared<ScriptedDns>();
  dns->answer = {ep(2), ep(3)};
  std::vector<std::unique_ptr<PeerSource>> sources;
  sources.push_back(std::make_unique<StaticPeerSource>(std::vector<Endpoint>{ep(1), ep(2)}));
  sources.push_back(std::make_unique<DnsPeerSource>(
      "peers", 5003, [dns](const std::string& n, uint16_t p) { return (*dns)(n, p); }));
  Rounds rounds;
  MetricsRegistry registry;
  DaemonMetrics metrics(registry);
  // A long interval: rounds after the first are driven by refresh_now(), so the test does not depend on time.
  BootstrapRefresher refresher(
      std::move(sources), std::chrono::hours(1),
      [&](const std::vector<Endpoint>& peers) { rounds.add(peers); }, quiet(), &metrics);
  refresher.start();
  EXPECT_EQ(rounds.wait_for(1), (std::vector<Endpoint>{ep(1), ep(2), ep(3)}));

  {
    std::lock_guard lock(dns->mutex);
    dns->answer = {ep(4)};
  }
  refresher.refresh_now();
  EXPECT_EQ(rounds.wait_for(2), (std::vector<Endpoint>{ep(1), ep(2), ep(4)}));

  {
    std::lock_guard lock(dns->mutex);
    dns->failing = true;
  }
  refresher.refresh_now();
  EXPECT_EQ(rounds.wait_for(3), (std::vector<Endpoint>{ep(1), ep(2), ep(4)}));
  refresher.stop();
  EXPECT_EQ(refresher.last_peers(), (std::vector<Endpoint>{ep(1), ep(2), ep(4)}));
  EXPECT_EQ(metrics.bootstrap_failures.value(), 1u);
  EXPECT_EQ(metrics.bootstrap_peers.value(), 3);
}

// Shows the interval drives rounds by itself (short interval here), and stop() ends the thread promptly.
TEST(Bootstrap, IntervalDrivesRounds) {
  auto dns = std::make_shared<ScriptedDns>();
  dns->answer = {ep(9)};
  std::vector<std::unique_ptr<PeerSource>> sources;
  sources.push_back(std::make_unique<DnsPeerSource>(
      "peers", 5003, [dns](const std::string& n, uint16_t p) { return (*dns)(n, p); }));
  Rounds rounds;
  BootstrapRefresher refresher(
      std::move(sources), std::chrono::milliseconds(5),
      [&](const std::vector<Endpoint>& peers) { rounds.add(peers); }, quiet(), nullptr);
  refresher.start();
  EXPECT_EQ(rounds.wait_for(3), std::vector<Endpoint>{ep(9)});
  refresher.stop();
}

}  // namespace
}  // namespace peerd::daemon
