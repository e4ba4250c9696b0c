#pragma once
// Many sans-IO Dht instances on one deterministic Network and one virtual clock. step() jumps the clock to
// the earliest of (next datagram delivery, any live node's next_timeout, any scheduled callback) and performs
// that one action; every run_* loop takes an explicit step bound. One u64 seed derives the node ids, every
// node's Dht seed and the network's seed: the same seed replays the same run byte for byte (fingerprint()
// proves it).
//
// Composition (e.g. the transfer-engine harness): node(i) exposes each Dht; after calling into one directly
// use flush(i) (or with_node()) so its transmits, timer and events are collected; schedule() runs callbacks
// on the same clock; set_event_hook() sees every DHT event as it happens (otherwise they go to a bounded log
// that drain_events() empties); datagrams to endpoints that are not DHT nodes, or that do not carry the DHT
// magic, go to set_foreign_datagram_handler(), so other protocols can share the Network
// (network().add_node()).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/common/time.h"
#include "peerd/core/harness/network.h"
#include "peerd/core/routing/dht.h"

namespace peerd::harness {

struct DhtClusterOptions {
  uint64_t seed = 1;
  size_t nodes = 100;
  bool ipv6 = false;  // endpoints fd00::a:b:4000 instead of 10.a.b.c:4000
  uint16_t port = 4000;
  NetworkOptions network;   // its seed is replaced by one derived from `seed`
  routing::DhtOptions dht;  // template: self_id, self_endpoint and seed are set per node
  Duration join_interval = Duration::milliseconds(10);  // schedule_joins(): node i joins at start + i * this
  size_t event_log_max = 1 << 20;
};

class DhtCluster {
 public:
  using EventHook = std::function<void(size_t node, Instant now, const routing::DhtEvent& event)>;
  using DatagramHandler = std::function<void(Instant now, const Endpoint& from, const Endpoint& to,
                                             std::span<const uint8_t> payload)>;
  struct LoggedEvent {
    size_t node = 0;
    Instant at;
    routing::DhtEvent event;
  };

  explicit DhtCluster(DhtClusterOptions options);

  size_t size() const { return nodes_.size(); }
  uint64_t seed() const { return options_.seed; }
  Instant now() const { return now_; }
  uint64_t steps() const { return steps_; }
  routing::Dht& node(size_t index) { return *nodes_.at(index).dht; }
  const routing::Dht& node(size_t index) const { return *nodes_.at(index).dht; }
  const Endpoint& endpoint(size_t index) const { return nodes_.at(index).endpoint; }
  const NodeId& node_id(size_t index) const { return nodes_.at(index).id; }
  std::optional<size_t> index_of(const Endpoint& endpoint) const;
  Network& network() { return network_; }
  const Network& network() const { return network_; }

  // Node `seed_node` starts alone at `start`; every other node i bootstraps from it at start + i *
  // join_interval.
  void schedule_joins(Instant start, size_t seed_node = 0);
  void bootstrap(size_t index, std::span<const Endpoint> seeds);

  // Commands at the current virtual time; the node is flushed afterwards.
  routing::LookupId provide(size_t index, const NodeId& key, Duration ttl);
  routing::LookupId find_providers(size_t index, const NodeId& key, size_t want);
  void withdraw(size_t index, const NodeId& key);
  void with_node(size_t index, const std::function<void(routing::Dht& dht, Instant now)>& action);
  // Collects a node's transmits (into the network), re-arms its timer and delivers its events.
  void flush(size_t index);

  // Churn. A killed node's traffic is dropped and its timers freeze; revive() resumes it with its old state;
  // restart() gives it a fresh Dht (same id and endpoint) that bootstraps from `seeds`.
  void kill(size_t index);
  void revive(size_t index);
  void restart(size_t index, std::span<const Endpoint> seeds);
  bool is_alive(size_t index) const { return nodes_.at(index).alive; }

  void schedule(Instant at, std::function<void()> callback);

  void set_event_hook(EventHook hook) { event_hook_ = std::move(hook); }
  std::vector<LoggedEvent> drain_events();
  uint64_t events_dropped() const { return events_dropped_; }
  void set_foreign_datagram_handler(DatagramHandler handler) { foreign_handler_ = std::move(handler); }
  uint64_t foreign_datagrams_dropped() const { return foreign_dropped_; }

  // Performs the earliest pending action; false when nothing at all is scheduled.
  bool step();
  // Runs every action due at or before `deadline`, then sets the clock to `deadline`. False if it stopped on
  // the step bound instead.
  bool run_until(Instant deadline, size_t steps_max);
  // Runs until `done()` holds (checked before each step); false on the deadline or the step bound.
  bool run_until(const std::function<bool()>& done, Instant deadline, size_t steps_max);
  // Runs until no datagram is in flight, no callback is pending and no node has requests or lookups
  // outstanding; false on the deadline or the step bound.
  bool run_until_idle(Instant deadline, size_t steps_max);
  bool idle() const;

  // Sum of every node's counters (datagrams, lookups, ...).
  routing::DhtStats total_stats() const;
  // Hash of every node's protocol state, the network counters and the clock.
  uint64_t fingerprint() const;
  // "seed=N": print it on failure; constructing a cluster with the same options and seed replays the run.
  std::string seed_text() const { return "seed=" + std::to_string(options_.seed); }

 private:
  struct Node {
    NodeId id;
    Endpoint endpoint;
    std::unique_ptr<routing::Dht> dht;
    bool alive = true;
    bool busy = false;  // has_pending_work() at the last flush
    std::optional<Instant> armed;
    uint64_t timer_generation = 0;
  };
  struct TimerEntry {
    Instant at;
    uint64_t sequence;
    size_t node;
    uint64_t generation;
  };
  struct CallbackEntry {
    Instant at;
    uint64_t sequence;
    std::function<void()> callback;
  };
  template <typename T>
  struct Later {
    bool operator()(const T& a, const T& b) const {
      return a.at != b.at ? a.at > b.at : a.sequence > b.sequence;
    }
  };

  routing::DhtOptions node_options(size_t index) const;
  Endpoint make_endpoint(size_t index) const;
  void drop_stale_timers();
  std::optional<Instant> next_action_time();
  void deliver(const Delivery& delivery);
  void fire_timer();
  void run_callback();
  void set_busy(Node& node, bool busy);

  DhtClusterOptions options_;
  Network network_;
  std::vector<Node> nodes_;
  std::vector<uint64_t> dht_seeds_;
  std::unordered_map<Endpoint, size_t, EndpointHash> index_by_endpoint_;
  Instant now_;
  uint64_t steps_ = 0;
  uint64_t next_sequence_ = 0;
  size_t busy_nodes_ = 0;
  std::vector<TimerEntry> timers_;        // heap under Later<TimerEntry>
  std::vector<CallbackEntry> callbacks_;  // heap under Later<CallbackEntry>
  EventHook event_hook_;
  DatagramHandler foreign_handler_;
  std::vector<LoggedEvent> event_log_;
  uint64_t events_dropped_ = 0;
  uint64_t foreign_dropped_ = 0;
};

}  // namespace peerd::harness
