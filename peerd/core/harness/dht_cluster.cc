#include "peerd/core/harness/dht_cluster.h"

#include <algorithm>
#include <cassert>

#include "peerd/core/common/rng.h"
#include "peerd/core/routing/wire.h"

namespace peerd::harness {

namespace {

NetworkOptions seeded(NetworkOptions network, uint64_t seed) {
  network.seed = Rng(seed ^ 0x6e6574776f726bull).next_u64();  // "network"
  return network;
}

void mix_into(uint64_t& hash, uint64_t value) {
  hash ^= value;
  hash *= 1099511628211ull;
}

}  // namespace

DhtCluster::DhtCluster(DhtClusterOptions options)
    : options_(options), network_(seeded(options.network, options.seed)) {
  Rng rng(options_.seed);
  nodes_.resize(options_.nodes);
  dht_seeds_.resize(options_.nodes);
  for (size_t index = 0; index < nodes_.size(); ++index) {
    Node& node = nodes_[index];
    node.id = NodeId::from_seed(rng.next_u64());
    node.endpoint = make_endpoint(index);
    dht_seeds_[index] = rng.next_u64();
    node.dht = std::make_unique<routing::Dht>(node_options(index));
    network_.add_node(node.endpoint);
    index_by_endpoint_.emplace(node.endpoint, index);
  }
}

Endpoint DhtCluster::make_endpoint(size_t index) const {
  const auto a = static_cast<uint8_t>(index >> 16);
  const auto b = static_cast<uint8_t>(index >> 8);
  const auto c = static_cast<uint8_t>(index);
  if (!options_.ipv6) return Endpoint::ipv4(10, a, b, c, options_.port);
  std::array<uint8_t, 16> address{};
  address[0] = 0xfd;
  address[13] = a;
  address[14] = b;
  address[15] = c;
  return Endpoint::ipv6(address, options_.port);
}

routing::DhtOptions DhtCluster::node_options(size_t index) const {
  routing::DhtOptions options = options_.dht;
  options.self_id = nodes_[index].id;
  options.self_endpoint = nodes_[index].endpoint;
  options.seed = dht_seeds_[index];
  return options;
}

std::optional<size_t> DhtCluster::index_of(const Endpoint& endpoint) const {
  auto it = index_by_endpoint_.find(endpoint);
  if (it == index_by_endpoint_.end()) return std::nullopt;
  return it->second;
}

void DhtCluster::schedule_joins(Instant start, size_t seed_node) {
  assert(seed_node < nodes_.size());
  const Endpoint seed = endpoint(seed_node);
  schedule(start, [this, seed_node] { bootstrap(seed_node, {}); });
  size_t order = 1;
  for (size_t index = 0; index < nodes_.size(); ++index) {
    if (index == seed_node) continue;
    schedule(start + options_.join_interval * static_cast<int64_t>(order++),
             [this, index, seed] { bootstrap(index, std::span<const Endpoint>(&seed, 1)); });
  }
}

void DhtCluster::bootstrap(size_t index, std::span<const Endpoint> seeds) {
  with_node(index, [&](routing::Dht& dht, Instant now) { dht.bootstrap(now, seeds); });
}

routing::LookupId DhtCluster::provide(size_t index, const NodeId& key, Duration ttl) {
  routing::LookupId id = 0;
  with_node(index, [&](routing::Dht& dht, Instant now) { id = dht.provide(now, key, ttl); });
  return id;
}

routing::LookupId DhtCluster::find_providers(size_t index, const NodeId& key, size_t want) {
  routing::LookupId id = 0;
  with_node(index, [&](routing::Dht& dht, Instant now) { id = dht.find_providers(now, key, want); });
  return id;
}

void DhtCluster::withdraw(size_t index, const NodeId& key) {
  with_node(index, [&](routing::Dht& dht, Instant) { dht.withdraw(key); });
}

void DhtCluster::with_node(size_t index, const std::function<void(routing::Dht& dht, Instant now)>& action) {
  action(node(index), now_);
  flush(index);
}

void DhtCluster::set_busy(Node& node, bool busy) {
  if (node.busy == busy) return;
  node.busy = busy;
  if (busy) {
    ++busy_nodes_;
  } else {
    --busy_nodes_;
  }
}

void DhtCluster::flush(size_t index) {
  Node& node = nodes_.at(index);
  routing::Dht& dht = *node.dht;
  // Bounded by the Dht's transmit_queue_max and events_queue_max.
  while (auto transmit = dht.poll_transmit()) {
    network_.send(now_, node.endpoint, transmit->destination, transmit->payload);
  }
  const std::optional<Instant> deadline = node.alive ? dht.next_timeout() : std::nullopt;
  if (deadline != node.armed) {
    node.armed = deadline;
    ++node.timer_generation;
    if (deadline) {
      timers_.push_back(TimerEntry{*deadline, next_sequence_++, index, node.timer_generation});
      std::push_heap(timers_.begin(), timers_.end(), Later<TimerEntry>{});
    }
  }
  while (auto event = dht.poll_event()) {
    if (event_hook_) {
      event_hook_(index, now_, *event);
    } else if (event_log_.size() < options_.event_log_max) {
      event_log_.push_back(LoggedEvent{index, now_, std::move(*event)});
    } else {
      ++events_dropped_;
    }
  }
  set_busy(node, node.alive && dht.has_pending_work());
}

void DhtCluster::kill(size_t index) {
  Node& node = nodes_.at(index);
  node.alive = false;
  network_.kill(node.endpoint);
  flush(index);  // disarms the timer and clears the busy mark
}

void DhtCluster::revive(size_t index) {
  Node& node = nodes_.at(index);
  node.alive = true;
  network_.revive(node.endpoint);
  flush(index);
}

void DhtCluster::restart(size_t index, std::span<const Endpoint> seeds) {
  Node& node = nodes_.at(index);
  node.dht = std::make_unique<routing::Dht>(node_options(index));
  node.alive = true;
  node.armed.reset();
  ++node.timer_generation;
  network_.revive(node.endpoint);
  bootstrap(index, seeds);
}

void DhtCluster::schedule(Instant at, std::function<void()> callback) {
  callbacks_.push_back(CallbackEntry{std::max(at, now_), next_sequence_++, std::move(callback)});
  std::push_heap(callbacks_.begin(), callbacks_.end(), Later<CallbackEntry>{});
}

std::vector<DhtCluster::LoggedEvent> DhtCluster::drain_events() {
  std::vector<LoggedEvent> events;
  events.swap(event_log_);
  return events;
}

void DhtCluster::drop_stale_timers() {
  while (!timers_.empty()) {
    const TimerEntry& top = timers_.front();
    const Node& node = nodes_[top.node];
    if (node.alive && top.generation == node.timer_generation) return;
    std::pop_heap(timers_.begin(), timers_.end(), Later<TimerEntry>{});
    timers_.pop_back();
  }
}

std::optional<Instant> DhtCluster::next_action_time() {
  drop_stale_timers();
  std::optional<Instant> earliest = network_.next_delivery();
  if (!timers_.empty() && (!earliest || timers_.front().at < *earliest)) earliest = timers_.front().at;
  if (!callbacks_.empty() && (!earliest || callbacks_.front().at < *earliest))
    earliest = callbacks_.front().at;
  return earliest;
}

bool DhtCluster::step() {
  const std::optional<Instant> next = next_action_time();
  if (!next) return false;
  ++steps_;
  now_ = std::max(now_, *next);
  // Fixed precedence at equal times (timers, then datagrams, then callbacks) keeps runs reproducible.
  if (!timers_.empty() && timers_.front().at <= now_) {
    fire_timer();
  } else if (network_.next_delivery() && *network_.next_delivery() <= now_) {
    if (auto delivery = network_.pop_due(now_)) deliver(*delivery);
  } else {
    run_callback();
  }
  return true;
}

void DhtCluster::fire_timer() {
  std::pop_heap(timers_.begin(), timers_.end(), Later<TimerEntry>{});
  const TimerEntry entry = timers_.back();
  timers_.pop_back();
  Node& node = nodes_[entry.node];
  node.armed.reset();
  node.dht->handle_timeout(now_);
  flush(entry.node);
}

void DhtCluster::deliver(const Delivery& delivery) {
  const auto index = index_of(delivery.to);
  const bool dht_payload = delivery.payload.size() >= 2 && delivery.payload[0] == routing::wire::kMagic[0] &&
                           delivery.payload[1] == routing::wire::kMagic[1];
  if (!index || (foreign_handler_ && !dht_payload)) {
    if (foreign_handler_) {
      foreign_handler_(now_, delivery.from, delivery.to, delivery.payload);
    } else {
      ++foreign_dropped_;
    }
    return;
  }
  nodes_[*index].dht->handle_datagram(now_, delivery.from, delivery.payload);
  flush(*index);
}

void DhtCluster::run_callback() {
  std::pop_heap(callbacks_.begin(), callbacks_.end(), Later<CallbackEntry>{});
  std::function<void()> callback = std::move(callbacks_.back().callback);
  callbacks_.pop_back();
  callback();
}

bool DhtCluster::run_until(Instant deadline, size_t steps_max) {
  for (size_t steps = 0; steps < steps_max; ++steps) {
    const std::optional<Instant> next = next_action_time();
    if (!next || *next > deadline) {
      now_ = std::max(now_, deadline);
      return true;
    }
    step();
  }
  return false;
}

bool DhtCluster::run_until(const std::function<bool()>& done, Instant deadline, size_t steps_max) {
  for (size_t steps = 0; steps < steps_max; ++steps) {
    if (done()) return true;
    const std::optional<Instant> next = next_action_time();
    if (!next || *next > deadline) {
      now_ = std::max(now_, deadline);
      return done();
    }
    step();
  }
  return done();
}

bool DhtCluster::idle() const {
  return network_.in_flight() == 0 && callbacks_.empty() && busy_nodes_ == 0;
}

bool DhtCluster::run_until_idle(Instant deadline, size_t steps_max) {
  return run_until([this] { return idle(); }, deadline, steps_max);
}

routing::DhtStats DhtCluster::total_stats() const {
  routing::DhtStats total;
  for (const auto& node : nodes_) {
    const routing::DhtStats& stats = node.dht->stats();
    total.datagrams_received += stats.datagrams_received;
    total.datagrams_sent += stats.datagrams_sent;
    total.bytes_received += stats.bytes_received;
    total.bytes_sent += stats.bytes_sent;
    total.malformed_dropped += stats.malformed_dropped;
    total.self_datagrams_dropped += stats.self_datagrams_dropped;
    total.responses_unmatched += stats.responses_unmatched;
    total.requests_received += stats.requests_received;
    total.requests_sent += stats.requests_sent;
    total.requests_retried += stats.requests_retried;
    total.request_timeouts += stats.request_timeouts;
    total.requests_failed += stats.requests_failed;
    total.requests_refused_outstanding_full += stats.requests_refused_outstanding_full;
    total.transmits_dropped_queue_full += stats.transmits_dropped_queue_full;
    total.events_dropped_queue_full += stats.events_dropped_queue_full;
    total.lookups_started += stats.lookups_started;
    total.lookups_completed += stats.lookups_completed;
    total.lookups_refused_pending_full += stats.lookups_refused_pending_full;
    total.reprovides_started += stats.reprovides_started;
    total.refresh_lookups_started += stats.refresh_lookups_started;
    total.provider_records_added += stats.provider_records_added;
    total.provider_records_expired += stats.provider_records_expired;
    total.peers_added += stats.peers_added;
    total.peers_removed += stats.peers_removed;
    total.peers_evicted_stale += stats.peers_evicted_stale;
    total.eviction_pings_sent += stats.eviction_pings_sent;
  }
  return total;
}

uint64_t DhtCluster::fingerprint() const {
  uint64_t hash = 1469598103934665603ull;
  for (const auto& node : nodes_) {
    mix_into(hash, node.dht->fingerprint());
    mix_into(hash, node.dht->stats().datagrams_sent);
    mix_into(hash, node.dht->stats().datagrams_received);
  }
  const NetworkStats& stats = network_.stats();
  mix_into(hash, stats.sent);
  mix_into(hash, stats.delivered);
  mix_into(hash, stats.bytes_delivered);
  mix_into(hash, stats.dropped_loss);
  mix_into(hash, static_cast<uint64_t>(now_.micros_since_epoch));
  mix_into(hash, steps_);
  return hash;
}

}  // namespace peerd::harness
