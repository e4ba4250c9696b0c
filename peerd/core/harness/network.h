#pragma once
// A deterministic in-process datagram network on virtual time. Nodes are identified by their Endpoint.
// send() decides a datagram's fate at once from a seeded Rng (loss, partition, dead endpoints) and queues
// survivors for delivery at now + latency(link); deliveries come out ordered by (time, sequence number), so
// one seed replays one run byte for byte. Protocol-agnostic: the DHT, transfer and daemon harnesses share it.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/rng.h"
#include "peerd/core/common/time.h"

namespace peerd::harness {

struct NetworkOptions {
  uint64_t seed = 1;
  // Each link (unordered endpoint pair) gets a fixed one-way base latency in [latency_min, latency_max],
  // derived from the seed and the pair, plus per-datagram jitter in [0, latency_jitter_max).
  Duration latency_min = Duration::milliseconds(5);
  Duration latency_max = Duration::milliseconds(40);
  Duration latency_jitter_max = Duration::milliseconds(2);
  double loss_probability = 0.0;
  size_t datagram_bytes_max = 65507;  // larger sends are dropped (and counted)
  size_t in_flight_max = 1 << 22;     // queued deliveries; beyond it sends are dropped (and counted)
};

struct Delivery {
  Instant at;
  Endpoint from;
  Endpoint to;
  std::vector<uint8_t> payload;
};

struct NetworkStats {
  uint64_t sent = 0;
  uint64_t delivered = 0;
  uint64_t bytes_delivered = 0;
  uint64_t dropped_loss = 0;
  uint64_t dropped_partition = 0;
  uint64_t dropped_dead = 0;     // sender or receiver dead (at send or at delivery time)
  uint64_t dropped_unknown = 0;  // no node at the destination
  uint64_t dropped_oversized = 0;
  uint64_t dropped_queue_full = 0;
};

class Network {
 public:
  // Overrides the base latency of a link; `jitter` is still added. Called with (from, to).
  using LatencyFunction = std::function<Duration(const Endpoint& from, const Endpoint& to)>;

  explicit Network(NetworkOptions options);

  void add_node(const Endpoint& endpoint);
  bool has_node(const Endpoint& endpoint) const { return nodes_.contains(endpoint); }

  // A dead node sends nothing and receives nothing (datagrams already in flight to it are lost).
  void kill(const Endpoint& endpoint);
  void revive(const Endpoint& endpoint);
  bool is_alive(const Endpoint& endpoint) const;

  // Partitions: every node is in group 0 until moved; datagrams between different groups are dropped.
  void set_partition_group(const Endpoint& endpoint, int group);
  void isolate(std::span<const Endpoint> endpoints, int group);
  void heal();  // everyone back to group 0

  void set_loss_probability(double probability) { options_.loss_probability = probability; }
  double loss_probability() const { return options_.loss_probability; }
  void set_latency_function(LatencyFunction function) { latency_function_ = std::move(function); }
  Duration link_latency(const Endpoint& from, const Endpoint& to) const;  // base, without jitter

  // Returns true if the datagram was queued for delivery.
  bool send(Instant now, const Endpoint& from, const Endpoint& to, std::span<const uint8_t> payload);

  std::optional<Instant> next_delivery() const;
  // The next delivery due at or before `now`, if any. Deliveries to a node that died meanwhile are dropped.
  std::optional<Delivery> pop_due(Instant now);

  size_t in_flight() const { return queue_.size(); }
  const NetworkStats& stats() const { return stats_; }
  uint64_t seed() const { return options_.seed; }

 private:
  struct NodeState {
    bool alive = true;
    int group = 0;
  };
  struct Queued {
    Instant at;
    uint64_t sequence;
    Delivery delivery;
  };
  struct Later {
    bool operator()(const Queued& a, const Queued& b) const {
      return a.at != b.at ? a.at > b.at : a.sequence > b.sequence;
    }
  };

  NetworkOptions options_;
  Rng rng_;
  LatencyFunction latency_function_;
  std::unordered_map<Endpoint, NodeState, EndpointHash> nodes_;
  std::vector<Queued> queue_;  // a binary heap under Later
  uint64_t next_sequence_ = 0;
  NetworkStats stats_;
};

}  // namespace peerd::harness
