#include "peerd/core/harness/network.h"

#include <algorithm>
#include <cassert>

namespace peerd::harness {

Network::Network(NetworkOptions options) : options_(options), rng_(options.seed) {
  assert(options_.latency_min <= options_.latency_max);
  assert(options_.latency_jitter_max >= Duration::zero());
}

void Network::add_node(const Endpoint& endpoint) {
  nodes_.try_emplace(endpoint);
}

void Network::kill(const Endpoint& endpoint) {
  if (auto it = nodes_.find(endpoint); it != nodes_.end()) it->second.alive = false;
}

void Network::revive(const Endpoint& endpoint) {
  if (auto it = nodes_.find(endpoint); it != nodes_.end()) it->second.alive = true;
}

bool Network::is_alive(const Endpoint& endpoint) const {
  auto it = nodes_.find(endpoint);
  return it != nodes_.end() && it->second.alive;
}

void Network::set_partition_group(const Endpoint& endpoint, int group) {
  if (auto it = nodes_.find(endpoint); it != nodes_.end()) it->second.group = group;
}

void Network::isolate(std::span<const Endpoint> endpoints, int group) {
  for (const auto& endpoint : endpoints) set_partition_group(endpoint, group);
}

void Network::heal() {
  for (auto& [endpoint, state] : nodes_) state.group = 0;
}

Duration Network::link_latency(const Endpoint& from, const Endpoint& to) const {
  if (latency_function_) return latency_function_(from, to);
  // Symmetric and fixed per link: hash the unordered pair with the seed.
  const uint64_t a = EndpointHash{}(from);
  const uint64_t b = EndpointHash{}(to);
  Rng link_rng(options_.seed ^ (std::min(a, b) * 0x9e3779b97f4a7c15ull) ^ std::max(a, b));
  const int64_t span = options_.latency_max.micros - options_.latency_min.micros;
  return options_.latency_min +
         Duration::microseconds(
             span > 0 ? static_cast<int64_t>(link_rng.uniform(static_cast<uint64_t>(span) + 1)) : 0);
}

bool Network::send(Instant now, const Endpoint& from, const Endpoint& to, std::span<const uint8_t> payload) {
  ++stats_.sent;
  auto sender = nodes_.find(from);
  auto receiver = nodes_.find(to);
  if (sender == nodes_.end() || receiver == nodes_.end()) {
    ++stats_.dropped_unknown;
    return false;
  }
  if (!sender->second.alive || !receiver->second.alive) {
    ++stats_.dropped_dead;
    return false;
  }
  if (sender->second.group != receiver->second.group) {
    ++stats_.dropped_partition;
    return false;
  }
  if (payload.size() > options_.datagram_bytes_max) {
    ++stats_.dropped_oversized;
    return false;
  }
  // Always draw both numbers so that changing the loss rate does not shift the jitter sequence.
  const bool lost = rng_.chance(options_.loss_probability);
  const uint64_t jitter_bound =
      static_cast<uint64_t>(std::max<int64_t>(options_.latency_jitter_max.micros, 0));
  const Duration jitter =
      Duration::microseconds(jitter_bound ? static_cast<int64_t>(rng_.uniform(jitter_bound)) : 0);
  if (lost) {
    ++stats_.dropped_loss;
    return false;
  }
  if (queue_.size() >= options_.in_flight_max) {
    ++stats_.dropped_queue_full;
    return false;
  }
  const Instant at = now + link_latency(from, to) + jitter;
  queue_.push_back(Queued{at, next_sequence_++, Delivery{at, from, to, {payload.begin(), payload.end()}}});
  std::push_heap(queue_.begin(), queue_.end(), Later{});
  return true;
}

std::optional<Instant> Network::next_delivery() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.front().at;
}

std::optional<Delivery> Network::pop_due(Instant now) {
  // Bounded by the queue length: each iteration removes one entry.
  while (!queue_.empty() && queue_.front().at <= now) {
    std::pop_heap(queue_.begin(), queue_.end(), Later{});
    Delivery delivery = std::move(queue_.back().delivery);
    queue_.pop_back();
    auto receiver = nodes_.find(delivery.to);
    auto sender = nodes_.find(delivery.from);
    if (receiver == nodes_.end() || !receiver->second.alive) {
      ++stats_.dropped_dead;
      continue;
    }
    if (sender != nodes_.end() && sender->second.group != receiver->second.group) {
      ++stats_.dropped_partition;  // the partition formed while the datagram was in flight
      continue;
    }
    ++stats_.delivered;
    stats_.bytes_delivered += delivery.payload.size();
    return delivery;
  }
  return std::nullopt;
}

}  // namespace peerd::harness
