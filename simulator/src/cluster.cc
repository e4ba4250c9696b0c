// The adapter: it feeds network inputs and timers into each node's routing::Dht and transfer::Engine,
// performs their outputs on the Network, and records what happened. It decides nothing about routing or
// sources: the engine picks every source and the DHT every peer to ask. Its own choices are the scenario's
// (when a node arrives, which nodes fail) and the environment's (the member list, the registry answering
// every request, hashing speed).
//
// Loop per node, in the order the core documents:
//   engine: drain poll_action() (StartFetch -> Network::start_request, CancelFetch -> cancel_request,
//           FindProviders/Provide/Withdraw -> the node's Dht, VerifyContent -> a hashing delay), then
//           poll_event(), until both are empty; re-arm its timer to next_timeout().
//   dht:    drain poll_transmit() into UDP datagrams, re-arm its timer, drain poll_event() (ProvidersFound
//           goes to the engine from the scheduler, so no core is re-entered).
// Every input comes from the ns-3 scheduler (a timer, a datagram, a response byte), never synchronously from
// a core call.
#include "simulator/src/cluster.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <variant>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/common/rng.h"
#include "peerd/core/common/time.h"
#include "peerd/core/content/content_key.h"
#include "peerd/core/content/digest.h"
#include "peerd/core/routing/dht.h"
#include "peerd/core/transfer/engine.h"
#include "peerd/core/transfer/virtual_chunk_store.h"
#include "workloads/pattern/read_pattern.h"

namespace peerd::sim {

namespace {

constexpr uint16_t kDhtPort = 4000;
constexpr size_t kProvidersWant = 20;
constexpr uint64_t kStoreCapacityBytes = uint64_t{1} << 44;  // the experiments never evict
constexpr size_t kTimelineBucketsMax = 2048;

template <typename... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

// A map from ids of the form generation << 32 | slot (the engine's fetch and serve handles, the flow
// network's requests) to values, kept in a vector by slot: no hashing, and a node's few live entries sit
// together. Other ids work too (the packet network numbers its requests: slots never reused); slots past
// kSlotsMax go to a hash map. The subset of std::unordered_map's interface the cluster uses, with pointers
// for iterators.
template <typename Value>
class SlotMap {
 public:
  using Entry = std::pair<uint64_t, Value>;

  Entry* find(uint64_t id) {
    const uint64_t slot = static_cast<uint32_t>(id);
    if (slot >= kSlotsMax) {
      const auto it = overflow_.find(id);
      return it == overflow_.end() ? nullptr : &it->second;
    }
    if (slot >= slots_.size() || !used_[slot] || slots_[slot].first != id) return nullptr;
    return &slots_[slot];
  }
  Entry* end() { return nullptr; }
  Value& at(uint64_t id) { return find(id)->second; }
  Value& operator[](uint64_t id) {
    if (Entry* entry = find(id)) return entry->second;
    return emplace(id, Value{});
  }
  Value& emplace(uint64_t id, Value value) {
    const uint64_t slot = static_cast<uint32_t>(id);
    if (slot >= kSlotsMax)
      return overflow_.insert_or_assign(id, Entry{id, std::move(value)}).first->second.second;
    if (slot >= slots_.size()) {
      slots_.resize(slot + 1);
      used_.resize(slot + 1, false);
    }
    used_[slot] = true;
    slots_[slot] = Entry{id, std::move(value)};
    return slots_[slot].second;
  }
  void erase(Entry* entry) {
    if (entry != nullptr) erase(entry->first);
  }
  void erase(uint64_t id) {
    if (find(id) == nullptr) return;
    const uint64_t slot = static_cast<uint32_t>(id);
    if (slot >= kSlotsMax) {
      overflow_.erase(id);
    } else {
      used_[slot] = false;
    }
  }

 private:
  static constexpr uint64_t kSlotsMax = uint64_t{1} << 24;
  std::vector<Entry> slots_;
  std::vector<bool> used_;
  std::unordered_map<uint64_t, Entry> overflow_;
};

uint64_t mix(uint64_t value) {
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

// Engine options per mode: the three designs are configurations of one Engine.
transfer::EngineOptions mode_options(ModeBase base, const EngineOverrides& scenario_overrides,
                                     const EngineOverrides& mode_overrides) {
  transfer::EngineOptions options;
  if (base != ModeBase::kPeerd) {
    options.owner_ranks_max = 0;                // never fetch through an owner
    options.lookup_before_upstream = false;     // no per-chunk lookups
    options.advertise_upstream_chunks = false;  // advertise only complete, verified blobs
  }
  for (const EngineOverrides* overrides : {&scenario_overrides, &mode_overrides}) {
    for (const auto& [key, value] : *overrides) {
      const auto count = static_cast<uint32_t>(value);
      const auto millis = Duration::microseconds(static_cast<int64_t>(value * 1e3));
      if (key == "chunk_kib") options.chunk_bytes = static_cast<uint64_t>(value) * 1024;
      if (key == "fetches_inflight_max") options.fetches_inflight_max = count;
      if (key == "per_peer_fetches_max") options.per_peer_fetches_max = count;
      if (key == "upstream_fetches_max") options.upstream_fetches_max = count;
      if (key == "prefetch_workers") options.prefetch_workers = count;
      if (key == "read_window_chunks") options.read_window_chunks = count;
      if (key == "members_per_window_chunk") options.members_per_window_chunk = count;
      if (key == "read_window_chunks_max") options.read_window_chunks_max = count;
      if (key == "owner_ranks_max") options.owner_ranks_max = count;
      if (key == "balanced_owners_from_members") options.balanced_owners_from_members = count;
      if (key == "serves_inflight_max") options.serves_inflight_max = count;
      if (key == "fetch_attempts_max") options.fetch_attempts_max = count;
      if (key == "hedge_enabled") options.hedge_enabled = value != 0;
      if (key == "lookup_before_upstream") options.lookup_before_upstream = value != 0;
      if (key == "advertise_upstream_chunks") options.advertise_upstream_chunks = value != 0;
      if (key == "owner_answer_timeout_ms") options.owner_answer_timeout = millis;
      if (key == "owner_fetch_timeout_ms") options.owner_fetch_timeout = millis;
      if (key == "stall_timeout_ms") options.stall_timeout = millis;
      if (key == "hedge_floor_ms") options.hedge_floor = millis;
      if (key == "lookup_timeout_ms") options.lookup_timeout = millis;
      if (key == "providers_ttl_s") options.providers_ttl = millis * 1000;
    }
  }
  return options;
}

// Cumulative bytes over time in at most kTimelineBucketsMax buckets whose width doubles as the run grows.
class Timeline {
 public:
  void add(double seconds, uint64_t bytes) {
    if (seconds < 0) seconds = 0;
    auto bucket = static_cast<size_t>(seconds / width_seconds_);
    while (bucket >= kTimelineBucketsMax) {
      for (size_t i = 0; i < buckets_.size(); i += 2) {
        buckets_[i / 2] = buckets_[i] + (i + 1 < buckets_.size() ? buckets_[i + 1] : 0);
      }
      buckets_.resize((buckets_.size() + 1) / 2);
      width_seconds_ *= 2;
      bucket = static_cast<size_t>(seconds / width_seconds_);
    }
    if (bucket >= buckets_.size()) buckets_.resize(bucket + 1, 0);
    buckets_[bucket] += bytes;
  }
  std::vector<std::pair<double, uint64_t>> cumulative() const {
    std::vector<std::pair<double, uint64_t>> points{{0.0, 0}};
    uint64_t total = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      total += buckets_[i];
      points.emplace_back(double(i + 1) * width_seconds_, total);
    }
    return points;
  }

 private:
  double width_seconds_ = 0.001;
  std::vector<uint64_t> buckets_;
};

class Cluster final : public NetworkHandler {
 public:
  Cluster(const Scenario& scenario, const ModeSpec& mode, Fidelity fidelity, const ProgressCallback& progress)
      : scenario_(scenario),
        mode_(mode),
        fidelity_(fidelity),
        progress_(progress),
        peers_enabled_(mode.base != ModeBase::kUpstreamOnly),
        engine_options_(mode_options(mode.base, scenario.engine, mode.engine)) {}

  RunResult run();

  // ---- NetworkHandler ----
  void on_datagram(NodeIndex to, NodeIndex from, const uint8_t* bytes, size_t size) override;
  void on_request(NodeIndex server, NodeIndex client, RequestId request, const ChunkRequest& chunk) override;
  void on_response_sent(NodeIndex server, RequestId request, uint64_t bytes_sent) override;
  void on_response_header(NodeIndex client, RequestId request, ResponseStatus status,
                          uint32_t taint) override;
  void on_response_data(NodeIndex client, RequestId request, uint64_t bytes) override;
  void on_response_complete(NodeIndex client, RequestId request) override;
  void on_request_failed(NodeIndex client, RequestId request, RequestFailure failure) override;

 private:
  struct Item {
    content::ContentId id;
    uint64_t bytes = 0;
    uint64_t hash = 0;
  };
  struct Node {
    NodeIndex index = 0;
    transfer::Peer peer;
    std::unique_ptr<routing::Dht> dht;
    std::unique_ptr<transfer::VirtualChunkStore> store;
    std::unique_ptr<transfer::Engine> engine;
    bool alive = true;
    bool corrupting = false;
    bool slow = false;
    std::optional<Instant> engine_wakeup;
    std::optional<Instant> dht_wakeup;
    bool dht_input = false;               // the DHT was given input since its output was last drained
    SlotMap<RequestId> request_by_fetch;  // FetchId -> request
    SlotMap<RequestId> request_by_serve;  // ServeId -> request
    std::unordered_map<uint64_t, std::pair<size_t, uint64_t>> reads;  // ReadId -> (item, length)
    std::unordered_map<uint64_t, uint32_t> taint;  // (item, chunk) -> taint of the copy held
    // Workload.
    bool arrived = false;
    bool finished = false;
    Instant arrival;
    Instant finish;
    size_t next_item = 0;
    size_t reads_active = 0;
    size_t reads_completed = 0;
    size_t reads_failed = 0;
    size_t reads_wrong_bytes = 0;
    uint64_t stream_offset = 0;
    // Random workload: this node's plan_reads(), replayed by `concurrency` workers that each take one blob's
    // reads at a time, like peerd-random's threads.
    std::vector<workload::PlannedRead> plan;
    size_t next_plan_blob_start = 0;  // index into plan of the next blob no worker has taken
    uint32_t workers_busy = 0;
    std::vector<IssuedRead> issued;
    std::unordered_map<uint64_t, std::pair<size_t, size_t>> random_reads;  // ReadId -> (issued, plan index)
    uint64_t served_bytes = 0;
    uint64_t bytes_requested = 0;
    uint64_t bytes_delivered = 0;
    uint64_t dht_baseline = 0;
  };
  struct ClientRequest {
    NodeIndex node = 0;
    NodeIndex server = 0;
    transfer::FetchId fetch;
    uint32_t item = 0;
    uint64_t chunk = 0;
    uint64_t begin = 0;
    uint64_t received = 0;
    uint32_t taint = 0;
    bool headers_seen = false;
  };
  struct ServerRequest {
    NodeIndex node = 0;
    transfer::ServeId serve;
    uint32_t item = 0;
    uint64_t chunk = 0;
    uint64_t length = 0;
    bool ready = false;  // ServeReady answered: serve_done is owed
  };

  // Setup.
  void build_items();
  void build_nodes();
  TopologySpec topology_for_run();
  Instant now() const { return Instant::from_micros(network_->now_ns() / 1000); }
  void at(Instant when, std::function<void()> callback) {
    network_->schedule_at(when.micros_since_epoch * 1000, std::move(callback));
  }

  // Core driving.
  void drive(Node& node);
  void maybe_report_progress();
  void flush_dht(Node& node);
  void arm_engine(Node& node);
  void arm_dht(Node& node);
  void on_action(Node& node, transfer::Action& action);
  void on_event(Node& node, transfer::Event& event);
  void start_fetch(Node& node, const transfer::StartFetch& start);
  void verify(Node& node, const content::ContentId& id);

  // Scenario.
  void begin_measurement();
  void deliver_membership();
  void arrive(Node& node);
  void issue_reads(Node& node);
  void read_done(Node& node, transfer::ReadId read, uint64_t length, bool completed);
  void start_random(Node& node);
  bool take_next_blob(Node& node);
  void schedule_random_read(Node& node, size_t plan_index);
  void issue_random_read(Node& node, size_t plan_index);
  void random_read_done(Node& node, size_t issued_index, size_t plan_index, bool completed);
  void continue_random(Node& node, size_t plan_index);
  void maybe_finish(Node& node);
  void kill(Node& node);
  std::vector<NodeIndex> fault_order() const;

  uint64_t taint_key(uint32_t item, uint64_t chunk) const { return (uint64_t{item} << 40) | chunk; }
  uint32_t copy_taint(const Node& node, uint32_t item, uint64_t chunk) const;
  bool holds_true_bytes(const Node& node, size_t item, uint64_t read_length) const;
  transfer::ChunkFingerprint fingerprint(const Node& node, uint32_t item, uint64_t chunk) const;
  std::optional<uint32_t> item_of(const content::ContentId& id) const;
  RunResult collect();

  const Scenario& scenario_;
  const ModeSpec& mode_;
  Fidelity fidelity_;
  const ProgressCallback& progress_;
  uint64_t interactions_ = 0;
  bool peers_enabled_;
  transfer::EngineOptions engine_options_;
  std::unique_ptr<Network> network_;
  std::vector<Item> items_;
  std::map<content::ContentId, uint32_t> item_index_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unordered_map<NodeId, NodeIndex, NodeIdHash> node_by_id_;
  std::unordered_map<Endpoint, NodeIndex, EndpointHash> node_by_endpoint_;
  SlotMap<ClientRequest> client_requests_;
  SlotMap<ServerRequest> server_requests_;
  Instant measure_start_;
  size_t nodes_unfinished_ = 0;
  uint64_t upstream_egress_bytes_ = 0;
  uint64_t dht_warmup_total_ = 0;
  Timeline upstream_timeline_;
};

// ---- Setup ----

void Cluster::build_items() {
  for (const Layer& layer : scenario_.layers) {
    Item item;
    if (scenario_.workload.kind == Workload::Kind::kStream) {
      item.id = content::ContentId::file("https://registry.sim/files/" + layer.name);
    } else {
      item.id = content::ContentId::blob(content::Digest::of_bytes("peerd-sim/" + layer.name));
    }
    item.bytes = layer.bytes;
    item.hash = mix(NodeIdHash{}(item.id.dht_id()));
    item_index_.emplace(item.id, static_cast<uint32_t>(items_.size()));
    items_.push_back(std::move(item));
  }
}

std::vector<NodeIndex> Cluster::fault_order() const {
  // A seeded permutation: slow nodes first, then corrupting ones, then the killed ones.
  std::vector<NodeIndex> order(scenario_.nodes);
  for (NodeIndex i = 0; i < scenario_.nodes; ++i) order[i] = i;
  Rng rng(scenario_.seed ^ 0x6661756c7473ull);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.uniform(i)]);
  return order;
}

TopologySpec Cluster::topology_for_run() {
  TopologySpec topology = scenario_.topology;
  topology.hosts = scenario_.nodes;
  topology.host_rate_factor.assign(scenario_.nodes, 1.0);
  topology.host_delay_factor.assign(scenario_.nodes, 1.0);
  const std::vector<NodeIndex> order = fault_order();
  for (uint32_t i = 0; i < scenario_.faults.slow_count; ++i) {
    topology.host_rate_factor[order[i]] = scenario_.faults.slow_bandwidth_factor;
    topology.host_delay_factor[order[i]] = scenario_.faults.slow_latency_factor;
  }
  return topology;
}

void Cluster::build_nodes() {
  const TopologySpec topology = topology_for_run();
  const std::vector<NodeIndex> order = fault_order();
  for (NodeIndex index = 0; index < scenario_.nodes; ++index) {
    auto node = std::make_unique<Node>();
    node->index = index;
    const uint32_t address = topology.ipv4_of(index);
    const Endpoint endpoint = Endpoint::ipv4(uint8_t(address >> 24), uint8_t(address >> 16),
                                             uint8_t(address >> 8), uint8_t(address), kDhtPort);
    node->peer = transfer::Peer{NodeId::from_seed(mix(scenario_.seed) ^ mix(index + 1)), endpoint};
    routing::DhtOptions dht;
    dht.self_id = node->peer.id;
    dht.self_endpoint = endpoint;
    dht.seed = mix(scenario_.seed ^ (uint64_t{index} << 20) ^ 0x646874ull);
    dht.peer_events = false;
    node->dht = std::make_unique<routing::Dht>(dht);
    node->store = std::make_unique<transfer::VirtualChunkStore>(kStoreCapacityBytes);
    transfer::EngineOptions engine = engine_options_;
    engine.self = node->peer;
    node->engine = std::make_unique<transfer::Engine>(engine, *node->store);
    node_by_id_.emplace(node->peer.id, index);
    node_by_endpoint_.emplace(endpoint, index);
    nodes_.push_back(std::move(node));
  }
  for (uint32_t i = 0; i < scenario_.faults.slow_count; ++i) nodes_[order[i]]->slow = true;
  for (uint32_t i = 0; i < scenario_.faults.corrupt_count; ++i) {
    nodes_[order[scenario_.faults.slow_count + i]]->corrupting = true;
  }
}

RunResult Cluster::run() {
  build_items();
  build_nodes();
  const TopologySpec topology = topology_for_run();
  if (fidelity_ == Fidelity::kPacket) {
    PacketOptions packet = scenario_.packet;
    packet.seed = scenario_.seed;  // ns-3's own RNG follows the scenario's seed too
    network_ = make_packet_network(topology, packet, *this);
  } else {
    FlowOptions flow = scenario_.flow;
    // A stream that reports less often than the engine's stall_timeout would be taken for a stalled one.
    const int64_t stall_ns = engine_options_.stall_timeout.micros * 1000;
    flow.progress_interval_ns = std::min(flow.progress_interval_ns, stall_ns * 2 / 3);
    network_ = make_flow_network(topology, flow, *this);
  }
  // Warm-up: every daemon joins the DHT (node 0 first, the others through it), as a cluster's DaemonSet does
  // long before an image is pulled.
  const auto join_interval = Duration::microseconds(std::llround(scenario_.join_interval_seconds * 1e6));
  for (NodeIndex index = 0; index < scenario_.nodes; ++index) {
    const Instant when = Instant::from_micros(1000) + join_interval * int64_t(index);
    at(when, [this, index] {
      Node& node = *nodes_[index];
      std::vector<Endpoint> seeds;
      if (peers_enabled_ && index != 0) seeds.push_back(nodes_[0]->peer.endpoint);
      node.dht->bootstrap(now(), seeds);
      flush_dht(node);
    });
  }
  measure_start_ = Instant::from_micros(1000) + join_interval * int64_t(scenario_.nodes) +
                   Duration::microseconds(std::llround(scenario_.settle_seconds * 1e6));
  at(measure_start_, [this] { begin_measurement(); });
  const int64_t deadline_ns =
      measure_start_.micros_since_epoch * 1000 + static_cast<int64_t>(scenario_.sim_time_max_seconds * 1e9);
  network_->run(deadline_ns);
  RunResult result = collect();
  network_.reset();  // ends the ns-3 simulation
  return result;
}

// ---- Core driving ----

void Cluster::drive(Node& node) {
  if (!node.alive) return;
  maybe_report_progress();
  for (;;) {
    bool any = false;
    while (auto action = node.engine->poll_action()) {
      any = true;
      on_action(node, *action);
    }
    while (auto event = node.engine->poll_event()) {
      any = true;
      on_event(node, *event);
      if (!node.alive) return;
    }
    if (!any) break;
  }
  arm_engine(node);
  // The DHT has new output only when the engine gave it input (flush_dht's timer and datagram paths cover
  // the rest); asking it on every engine interaction cost 8 % of a 10 000-node run.
  if (node.dht_input) flush_dht(node);
}

// Every 16 384 core interactions, not on a clock, so the run stays deterministic.
void Cluster::maybe_report_progress() {
  if (!progress_ || ++interactions_ % 16384 != 0) return;
  RunProgress progress;
  const Instant time = now();
  progress.measuring = time >= measure_start_;
  progress.simulated_seconds = (progress.measuring ? time - measure_start_ : time - Instant{}).as_seconds();
  progress.nodes = static_cast<uint32_t>(nodes_.size());
  progress.nodes_finished = progress.measuring ? static_cast<uint32_t>(nodes_.size() - nodes_unfinished_) : 0;
  progress.events = network_->events_executed();
  progress_(progress);
}

void Cluster::flush_dht(Node& node) {
  if (!node.alive) return;
  node.dht_input = false;
  maybe_report_progress();
  while (auto transmit = node.dht->poll_transmit()) {
    const auto destination = node_by_endpoint_.find(transmit->destination);
    if (destination == node_by_endpoint_.end()) continue;  // not a simulated node: nothing to reach
    network_->send_datagram(node.index, destination->second, transmit->payload.data(),
                            transmit->payload.size());
  }
  arm_dht(node);
  while (auto event = node.dht->poll_event()) {
    const auto* found = std::get_if<routing::ProvidersFound>(&*event);
    if (!found) continue;
    std::vector<transfer::Peer> providers;
    providers.reserve(found->providers.size());
    for (const routing::Contact& contact : found->providers) {
      providers.push_back(transfer::Peer{contact.id, contact.endpoint});
    }
    at(now(), [this, index = node.index, key = found->key, providers = std::move(providers)] {
      Node& target = *nodes_[index];
      if (!target.alive) return;
      target.engine->handle_providers(now(), key, providers);
      drive(target);
    });
  }
}

void Cluster::arm_engine(Node& node) {
  const std::optional<Instant> next = node.engine->next_timeout();
  if (!next) return;
  if (node.engine_wakeup && *node.engine_wakeup <= *next) return;  // an earlier wakeup re-arms when it fires
  node.engine_wakeup = *next;
  at(*next, [this, index = node.index, when = *next] {
    Node& target = *nodes_[index];
    if (target.engine_wakeup == when) target.engine_wakeup.reset();
    if (!target.alive) return;
    target.engine->handle_timeout(now());
    drive(target);
  });
}

void Cluster::arm_dht(Node& node) {
  const std::optional<Instant> next = node.dht->next_timeout();
  if (!next) return;
  if (node.dht_wakeup && *node.dht_wakeup <= *next) return;
  node.dht_wakeup = *next;
  at(std::max(*next, now()), [this, index = node.index, when = *next] {
    Node& target = *nodes_[index];
    if (target.dht_wakeup == when) target.dht_wakeup.reset();
    if (!target.alive) return;
    target.dht->handle_timeout(now());
    flush_dht(target);
  });
}

// Every action kind has its own overload: an action the core adds later fails to compile here rather than
// being dropped silently.
void Cluster::on_action(Node& node, transfer::Action& action) {
  std::visit(Overloaded{
                 [&](const transfer::StartFetch& start) { start_fetch(node, start); },
                 [&](const transfer::CancelFetch& cancel) {
                   const auto it = node.request_by_fetch.find(cancel.fetch.value);
                   if (it == node.request_by_fetch.end()) return;
                   const RequestId request = it->second;
                   node.request_by_fetch.erase(it);
                   client_requests_.erase(request);
                   network_->cancel_request(request);
                 },
                 [&](const transfer::FindProviders& find) {
                   node.dht->find_providers(now(), find.key, kProvidersWant);
                   node.dht_input = true;
                 },
                 [&](const transfer::Provide& provide) {
                   node.dht->provide(now(), provide.key, Duration::zero());
                   node.dht_input = true;
                 },
                 [&](const transfer::Withdraw& withdraw) {
                   node.dht->withdraw(withdraw.key);
                   node.dht_input = true;
                 },
                 [&](const transfer::VerifyContent& verify_content) { verify(node, verify_content.content); },
             },
             action);
}

void Cluster::start_fetch(Node& node, const transfer::StartFetch& start) {
  const auto item = item_of(start.chunk.content);
  NodeIndex server = kUpstream;
  if (!start.source.is_upstream()) {
    const auto it = node_by_id_.find(start.source.peer.id);
    server = it == node_by_id_.end() ? kUpstream : it->second;
  }
  if (!item || (!start.source.is_upstream() && server == kUpstream)) {
    // Nothing the simulation can reach: report it like a refused connection.
    at(now(), [this, index = node.index, fetch = start.fetch] {
      Node& target = *nodes_[index];
      if (!target.alive) return;
      target.engine->handle_fetch_failed(now(), fetch, transfer::FetchFailure::kUnreachable);
      drive(target);
    });
    return;
  }
  ChunkRequest chunk;
  chunk.content = *item;
  chunk.chunk_index = start.chunk.index;
  chunk.begin_in_chunk = start.begin_in_chunk;
  chunk.end_in_chunk = start.end_in_chunk;
  chunk.content_bytes = start.content_bytes == 0 ? items_[*item].bytes : start.content_bytes;
  chunk.fetch_through = start.fetch_through;
  const RequestId request = network_->start_request(node.index, server, chunk);
  ClientRequest record;
  record.node = node.index;
  record.server = server;
  record.fetch = start.fetch;
  record.item = *item;
  record.chunk = start.chunk.index;
  record.begin = start.begin_in_chunk;
  client_requests_.emplace(request, record);
  node.request_by_fetch[start.fetch.value] = request;
}

void Cluster::verify(Node& node, const content::ContentId& id) {
  const auto item = item_of(id);
  if (!item) return;
  const auto hashing = Duration::microseconds(
      std::llround(double(items_[*item].bytes) / scenario_.verify_bytes_per_second * 1e6));
  at(now() + hashing, [this, index = node.index, item = *item] {
    Node& target = *nodes_[index];
    if (!target.alive) return;
    const uint64_t chunks = content::chunk_count(items_[item].bytes, engine_options_.chunk_bytes);
    bool matched = true;
    for (uint64_t chunk = 0; chunk < chunks && matched; ++chunk) {
      matched = target.store->has(content::ChunkKey{items_[item].id, chunk, engine_options_.chunk_bytes}) &&
                copy_taint(target, item, chunk) == 0;
    }
    target.engine->handle_verify_result(now(), items_[item].id, matched);
    drive(target);
  });
}

void Cluster::on_event(Node& node, transfer::Event& event) {
  if (const auto* ready = std::get_if<transfer::ServeReady>(&event)) {
    const auto it = node.request_by_serve.find(ready->serve.value);
    if (it == node.request_by_serve.end()) {
      node.engine->serve_done(now(), ready->serve, 0);
      return;
    }
    ServerRequest& request = server_requests_.at(it->second);
    request.ready = true;
    const uint32_t taint = node.corrupting ? node.index + 1 : copy_taint(node, request.item, request.chunk);
    network_->respond(it->second, request.length, taint);
  } else if (const auto* pending = std::get_if<transfer::ServePending>(&event)) {
    const auto it = node.request_by_serve.find(pending->serve.value);
    if (it != node.request_by_serve.end()) network_->respond_pending(it->second);
  } else if (const auto* miss = std::get_if<transfer::ServeMiss>(&event)) {
    const auto it = node.request_by_serve.find(miss->serve.value);
    if (it == node.request_by_serve.end()) return;
    const RequestId request = it->second;
    node.request_by_serve.erase(it);
    server_requests_.erase(request);
    network_->respond_status(request, ResponseStatus::kMiss);
  } else if (const auto* complete = std::get_if<transfer::ReadComplete>(&event)) {
    const auto it = node.reads.find(complete->read.value);
    if (it == node.reads.end()) return;
    const auto [item, length] = it->second;
    node.reads.erase(it);
    if (!holds_true_bytes(node, item, length)) ++node.reads_wrong_bytes;
    node.engine->release_read(now(), complete->read);
    read_done(node, complete->read, length, true);
  } else if (const auto* failed = std::get_if<transfer::ReadFailed>(&event)) {
    const auto it = node.reads.find(failed->read.value);
    if (it == node.reads.end()) return;
    const uint64_t length = it->second.second;
    node.reads.erase(it);
    node.engine->release_read(now(), failed->read);
    read_done(node, failed->read, length, false);
  }
  // ReadProgress, IntegrityFailure, PeerBanned, ContentVerified, ChunkReady: counted in the engine's stats.
}

// ---- NetworkHandler ----

void Cluster::on_datagram(NodeIndex to, NodeIndex from, const uint8_t* bytes, size_t size) {
  Node& node = *nodes_[to];
  if (!node.alive) return;
  node.dht->handle_datagram(now(), nodes_[from]->peer.endpoint, std::span<const uint8_t>(bytes, size));
  flush_dht(node);
}

void Cluster::on_request(NodeIndex server, NodeIndex client, RequestId request, const ChunkRequest& chunk) {
  const uint64_t length = chunk.end_in_chunk - chunk.begin_in_chunk;
  if (server == kUpstream) {
    network_->respond(request, length, 0);  // the registry serves every range of every item
    return;
  }
  Node& node = *nodes_[server];
  if (!node.alive || client == kUpstream || chunk.content >= items_.size()) return;
  transfer::ServeRequest serve_request;
  serve_request.from = nodes_[client]->peer;
  serve_request.chunk =
      content::ChunkKey{items_[chunk.content].id, chunk.chunk_index, engine_options_.chunk_bytes};
  serve_request.content_bytes = chunk.content_bytes;
  serve_request.fetch_through = chunk.fetch_through;
  const auto serve = node.engine->serve(now(), serve_request);
  if (!serve) {
    network_->respond_status(request, ResponseStatus::kRefused);
    return;
  }
  ServerRequest record;
  record.node = server;
  record.serve = *serve;
  record.item = chunk.content;
  record.chunk = chunk.chunk_index;
  record.length = length;
  server_requests_.emplace(request, record);
  node.request_by_serve[serve->value] = request;
  drive(node);
}

void Cluster::on_response_sent(NodeIndex server, RequestId request, uint64_t bytes_sent) {
  if (server == kUpstream) return;
  const auto it = server_requests_.find(request);
  if (it == server_requests_.end()) return;
  const ServerRequest record = it->second;
  server_requests_.erase(it);
  Node& node = *nodes_[server];
  node.request_by_serve.erase(record.serve.value);
  if (!node.alive) return;
  // May come from inside respond(), itself called while draining the engine's events: serve_done is a
  // command, which the engine accepts between poll_event() calls, and drive() drains what it produces (the
  // outer drain then finds the queues empty). serve_done also cancels a serve still waiting on a
  // fetch-through (the client went away).
  node.engine->serve_done(now(), record.serve, bytes_sent);
  drive(node);
}

void Cluster::on_response_header(NodeIndex client, RequestId request, ResponseStatus status, uint32_t taint) {
  const auto it = client_requests_.find(request);
  if (it == client_requests_.end()) return;
  Node& node = *nodes_[client];
  const transfer::FetchId fetch = it->second.fetch;
  if (status != ResponseStatus::kOk && status != ResponseStatus::kPending) {
    client_requests_.erase(it);
    node.request_by_fetch.erase(fetch.value);
    if (!node.alive) return;
    node.engine->handle_fetch_failed(
        now(), fetch,
        status == ResponseStatus::kMiss ? transfer::FetchFailure::kMiss : transfer::FetchFailure::kRefused);
    drive(node);
    return;
  }
  if (status == ResponseStatus::kOk) it->second.taint = taint;
  // The first header (interim or final) is the engine's "response headers arrived".
  if (it->second.headers_seen) return;
  it->second.headers_seen = true;
  if (!node.alive) return;
  node.engine->handle_fetch_data(now(), fetch, 0);
  drive(node);
}

void Cluster::on_response_data(NodeIndex client, RequestId request, uint64_t bytes) {
  const auto it = client_requests_.find(request);
  if (it == client_requests_.end() || bytes == 0) return;
  ClientRequest& record = it->second;
  Node& node = *nodes_[client];
  // The copy's provenance: a chunk written from byte 0 is exactly this response's bytes; a resumed one keeps
  // whatever the earlier source wrote.
  const uint64_t key = taint_key(record.item, record.chunk);
  if (record.received == 0 && record.begin == 0) {
    if (record.taint == 0) {
      node.taint.erase(key);
    } else {
      node.taint[key] = record.taint;
    }
  } else if (record.taint != 0) {
    node.taint.emplace(key, record.taint);
  }
  record.received += bytes;
  if (record.server == kUpstream) {
    upstream_egress_bytes_ += bytes;
    upstream_timeline_.add((now() - measure_start_).as_seconds(), bytes);
  } else {
    nodes_[record.server]->served_bytes += bytes;
  }
  if (!node.alive) return;
  node.engine->handle_fetch_data(now(), record.fetch, bytes);
  drive(node);
}

void Cluster::on_response_complete(NodeIndex client, RequestId request) {
  const auto it = client_requests_.find(request);
  if (it == client_requests_.end()) return;
  const ClientRequest record = it->second;
  client_requests_.erase(it);
  Node& node = *nodes_[client];
  node.request_by_fetch.erase(record.fetch.value);
  if (!node.alive) return;
  node.engine->handle_fetch_complete(now(), record.fetch, fingerprint(node, record.item, record.chunk));
  drive(node);
}

void Cluster::on_request_failed(NodeIndex client, RequestId request, RequestFailure failure) {
  const auto it = client_requests_.find(request);
  if (it == client_requests_.end()) return;
  const transfer::FetchId fetch = it->second.fetch;
  client_requests_.erase(it);
  Node& node = *nodes_[client];
  node.request_by_fetch.erase(fetch.value);
  if (!node.alive) return;
  node.engine->handle_fetch_failed(now(), fetch,
                                   failure == RequestFailure::kUnreachable
                                       ? transfer::FetchFailure::kUnreachable
                                       : transfer::FetchFailure::kBroken);
  drive(node);
}

// ---- Content provenance ----

uint32_t Cluster::copy_taint(const Node& node, uint32_t item, uint64_t chunk) const {
  const auto it = node.taint.find(taint_key(item, chunk));
  return it == node.taint.end() ? 0 : it->second;
}

// A completed whole-item read must find every chunk present with the true bytes (stream reads check their
// range only once the file is complete, so they are not checked here).
bool Cluster::holds_true_bytes(const Node& node, size_t item, uint64_t read_length) const {
  if (read_length != items_[item].bytes) return true;
  const uint64_t chunks = content::chunk_count(items_[item].bytes, engine_options_.chunk_bytes);
  for (uint64_t chunk = 0; chunk < chunks; ++chunk) {
    const content::ChunkKey key{items_[item].id, chunk, engine_options_.chunk_bytes};
    if (!node.store->has(key) || copy_taint(node, static_cast<uint32_t>(item), chunk) != 0) return false;
  }
  return true;
}

transfer::ChunkFingerprint Cluster::fingerprint(const Node& node, uint32_t item, uint64_t chunk) const {
  const uint64_t truth = mix(items_[item].hash ^ mix(chunk + 1));
  const uint32_t taint = copy_taint(node, item, chunk);
  return taint == 0 ? truth : truth ^ mix(uint64_t{taint} << 1 | 1);
}

std::optional<uint32_t> Cluster::item_of(const content::ContentId& id) const {
  const auto it = item_index_.find(id);
  if (it == item_index_.end()) return std::nullopt;
  return it->second;
}

// ---- Scenario ----

void Cluster::deliver_membership() {
  std::vector<transfer::Peer> members;
  for (const auto& node : nodes_) {
    if (node->alive) members.push_back(node->peer);
  }
  // One list for every engine, as if each had been handed `members` (Engine::handle_membership): 10 000
  // nodes would otherwise hold 10 000 copies, and rank every chunk's owners 10 000 times.
  const auto shared = transfer::MemberList::build(members, engine_options_.members_max);
  for (const auto& node : nodes_) {
    if (!node->alive) continue;
    if (peers_enabled_) {
      node->engine->handle_membership(now(), shared);
    } else {
      node->engine->handle_membership(now(), std::span<const transfer::Peer>(&node->peer, 1));
    }
    drive(*node);
  }
}

void Cluster::begin_measurement() {
  for (const auto& node : nodes_) {
    node->dht_baseline = node->dht->stats().datagrams_sent;
    dht_warmup_total_ += node->dht_baseline;
  }
  deliver_membership();
  nodes_unfinished_ = nodes_.size();
  Rng rng(scenario_.seed ^ 0x617272697661ull);
  double offset = 0;
  for (NodeIndex index = 0; index < scenario_.nodes; ++index) {
    switch (scenario_.arrival.pattern) {
      case Arrival::Pattern::kSimultaneous:
        offset = 0;
        break;
      case Arrival::Pattern::kRolling:
        offset = scenario_.arrival.interval_seconds * double(index);
        break;
      case Arrival::Pattern::kPoisson:
        offset += -std::log(1.0 - rng.unit()) / scenario_.arrival.rate_per_second;
        break;
    }
    at(measure_start_ + Duration::microseconds(std::llround(offset * 1e6)),
       [this, index] { arrive(*nodes_[index]); });
  }
  const std::vector<NodeIndex> order = fault_order();
  size_t next_victim = order.size();
  for (const KillFault& kill_fault : scenario_.faults.kills) {
    std::vector<NodeIndex> victims;
    for (uint32_t i = 0; i < kill_fault.count && next_victim > 0; ++i)
      victims.push_back(order[--next_victim]);
    at(measure_start_ + Duration::microseconds(std::llround(kill_fault.at_seconds * 1e6)), [this, victims] {
      for (const NodeIndex victim : victims) kill(*nodes_[victim]);
      at(now() + Duration::microseconds(std::llround(scenario_.membership_delay_seconds * 1e6)),
         [this] { deliver_membership(); });
    });
  }
}

void Cluster::arrive(Node& node) {
  if (!node.alive) return;
  node.arrived = true;
  node.arrival = now();
  if (scenario_.workload.kind == Workload::Kind::kRandom) {
    start_random(node);
  } else {
    issue_reads(node);
  }
  drive(node);
}

void Cluster::issue_reads(Node& node) {
  if (scenario_.workload.kind == Workload::Kind::kStream) {
    const Item& item = items_[0];
    if (node.reads_active > 0 || node.stream_offset >= item.bytes) {
      maybe_finish(node);
      return;
    }
    const uint64_t length = std::min(scenario_.workload.read_bytes, item.bytes - node.stream_offset);
    node.bytes_requested += length;
    auto read =
        node.engine->read(now(), transfer::ContentRef{item.id, item.bytes, true}, node.stream_offset, length);
    node.stream_offset += length;
    if (!read) {
      ++node.reads_failed;
      maybe_finish(node);
      return;
    }
    ++node.reads_active;
    node.reads[read->value] = {0, length};
    return;
  }
  while (node.reads_active < scenario_.workload.concurrent_layers && node.next_item < items_.size()) {
    const size_t index = node.next_item++;
    const Item& item = items_[index];
    node.bytes_requested += item.bytes;
    auto read = node.engine->read(now(), transfer::ContentRef{item.id, item.bytes, true}, 0, item.bytes);
    if (!read) {
      ++node.reads_failed;
      continue;
    }
    ++node.reads_active;
    node.reads[read->value] = {index, item.bytes};
  }
  maybe_finish(node);
}

void Cluster::read_done(Node& node, transfer::ReadId read, uint64_t length, bool completed) {
  --node.reads_active;
  if (completed) {
    ++node.reads_completed;
    node.bytes_delivered += length;
  } else {
    ++node.reads_failed;
  }
  if (scenario_.workload.kind == Workload::Kind::kRandom) {
    const auto it = node.random_reads.find(read.value);
    if (it == node.random_reads.end()) return;
    const auto [issued_index, plan_index] = it->second;
    node.random_reads.erase(it);
    random_read_done(node, issued_index, plan_index, completed);
    return;
  }
  // Another read: after the engine call returns (reads are commands; drive() delivers their outputs).
  at(now(), [this, index = node.index] {
    Node& target = *nodes_[index];
    if (!target.alive) return;
    issue_reads(target);
    drive(target);
  });
}

// ---- The random workload ----

void Cluster::start_random(Node& node) {
  const RandomWorkload& random = scenario_.workload.random;
  std::vector<uint64_t> blob_sizes;
  for (const Item& item : items_) blob_sizes.push_back(item.bytes);
  auto pattern =
      workload::plan_reads(random.pattern_options(random.seed_of(node.index), std::move(blob_sizes)));
  if (!pattern) {
    ++node.reads_failed;  // parse_scenario keeps the options in range; a hand-built scenario may not
  } else {
    node.plan = std::move(pattern->reads);
  }
  uint32_t workers = 0;
  while (workers < random.concurrency && take_next_blob(node)) ++workers;
  maybe_finish(node);
}

// A free worker takes the next blob's reads (the plan is grouped by blob). False when none is left.
bool Cluster::take_next_blob(Node& node) {
  const size_t begin = node.next_plan_blob_start;
  if (begin >= node.plan.size()) return false;
  size_t end = begin + 1;
  while (end < node.plan.size() && node.plan[end].blob_index == node.plan[begin].blob_index) ++end;
  node.next_plan_blob_start = end;
  ++node.workers_busy;
  schedule_random_read(node, begin);
  return true;
}

// A blob's first read waits the run's start delay, every later one its jitter pause after the previous read
// ended: exactly peerd-random's sleeps.
void Cluster::schedule_random_read(Node& node, size_t plan_index) {
  at(now() + node.plan[plan_index].start_delay, [this, index = node.index, plan_index] {
    Node& target = *nodes_[index];
    if (!target.alive) return;
    issue_random_read(target, plan_index);
    drive(target);
  });
}

void Cluster::issue_random_read(Node& node, size_t plan_index) {
  const workload::PlannedRead& planned = node.plan[plan_index];
  const Item& item = items_[planned.blob_index];
  IssuedRead issued;
  issued.blob_index = planned.blob_index;
  issued.read_index = planned.read_index;
  issued.offset_bytes = planned.offset_bytes;
  issued.length_bytes = planned.length_bytes;
  issued.issued_us = (now() - measure_start_).micros;
  const size_t issued_index = node.issued.size();
  node.issued.push_back(issued);
  node.bytes_requested += planned.length_bytes;
  auto read = node.engine->read(now(), transfer::ContentRef{item.id, item.bytes, true}, planned.offset_bytes,
                                planned.length_bytes);
  if (!read) {
    ++node.reads_failed;
    random_read_done(node, issued_index, plan_index, false);
    return;
  }
  ++node.reads_active;
  node.reads[read->value] = {planned.blob_index, planned.length_bytes};
  node.random_reads[read->value] = {issued_index, plan_index};
}

void Cluster::random_read_done(Node& node, size_t issued_index, size_t plan_index, bool completed) {
  IssuedRead& issued = node.issued[issued_index];
  int64_t finished_us = (now() - measure_start_).micros;
  if (completed) {
    const double local_seconds =
        double(issued.length_bytes) / scenario_.workload.random.local_read_bytes_per_second;
    finished_us = std::max<int64_t>(finished_us, issued.issued_us + std::llround(local_seconds * 1e6));
  }
  issued.finished_us = finished_us;
  issued.completed = completed;
  const Instant finished = measure_start_ + Duration::microseconds(finished_us);
  if (finished <= now()) {
    continue_random(node, plan_index);
    return;
  }
  at(finished, [this, index = node.index, plan_index] {
    Node& target = *nodes_[index];
    if (!target.alive) return;
    continue_random(target, plan_index);
    drive(target);
  });
}

// The worker that issued plan[plan_index] goes on: the blob's next read, else the next blob, else it stops.
void Cluster::continue_random(Node& node, size_t plan_index) {
  const size_t next = plan_index + 1;
  if (next < node.plan.size() && node.plan[next].blob_index == node.plan[plan_index].blob_index) {
    schedule_random_read(node, next);
    return;
  }
  --node.workers_busy;
  if (!take_next_blob(node)) maybe_finish(node);
}

void Cluster::maybe_finish(Node& node) {
  if (node.finished || !node.arrived || node.reads_active > 0) return;
  bool all_issued = false;
  switch (scenario_.workload.kind) {
    case Workload::Kind::kPull:
      all_issued = node.next_item >= items_.size();
      break;
    case Workload::Kind::kStream:
      all_issued = node.stream_offset >= items_[0].bytes;
      break;
    case Workload::Kind::kRandom:
      all_issued = node.workers_busy == 0 && node.next_plan_blob_start >= node.plan.size();
      break;
  }
  if (!all_issued) return;
  node.finished = true;
  node.finish = now();
  if (--nodes_unfinished_ == 0) network_->stop();
}

void Cluster::kill(Node& node) {
  if (!node.alive) return;
  node.alive = false;
  network_->kill(node.index);
  if (!node.finished) {
    node.finished = true;  // it no longer counts towards the end of the run
    if (--nodes_unfinished_ == 0) network_->stop();
  }
}

RunResult Cluster::collect() {
  RunResult result;
  result.scenario = scenario_.name;
  result.mode = mode_.name;
  result.base = mode_.base;
  result.fidelity = fidelity_;
  result.workload = scenario_.workload.kind;
  result.seed = scenario_.seed;
  result.nodes = scenario_.nodes;
  result.image_bytes = scenario_.image_bytes();
  const TopologySpec& topology = scenario_.topology;
  result.upstream_bits_per_second = topology.upstream_link.rate_bits_per_second;
  result.host_bits_per_second = topology.host_link.rate_bits_per_second;
  const double upstream_bytes_per_second =
      std::min(topology.upstream_link.rate_bits_per_second, topology.host_link.rate_bits_per_second) / 8;
  const double host_bytes_per_second = topology.host_link.rate_bits_per_second / 8;
  result.lower_bound_seconds = std::max(double(result.image_bytes) / upstream_bytes_per_second,
                                        double(result.image_bytes) / host_bytes_per_second);
  Instant last = measure_start_;
  for (const auto& node : nodes_) {
    NodeOutcome outcome;
    outcome.killed = !node->alive;
    outcome.slow = node->slow;
    outcome.corrupting = node->corrupting;
    outcome.arrival_seconds = (node->arrival - measure_start_).as_seconds();
    outcome.completed = node->alive && node->finished && node->reads_failed == 0 && node->arrived;
    outcome.failed = node->reads_failed > 0;
    outcome.reads_wrong_bytes = node->reads_wrong_bytes;
    if (outcome.completed) {
      outcome.completion_seconds = (node->finish - node->arrival).as_seconds();
      last = std::max(last, node->finish);
    }
    outcome.served_bytes = node->served_bytes;
    outcome.bytes_requested = node->bytes_requested;
    outcome.bytes_delivered = node->bytes_delivered;
    if (node->alive) {
      result.bytes_requested += node->bytes_requested;
      result.bytes_delivered += node->bytes_delivered;
    }
    outcome.dht_datagrams = node->dht->stats().datagrams_sent - node->dht_baseline;
    outcome.random_reads = node->issued;
    result.dht_datagrams += outcome.dht_datagrams;
    result.outcomes.push_back(outcome);
    const transfer::EngineStats& stats = node->engine->stats();
    EngineTotals& totals = result.engine;
    totals.fetches += stats.fetches_started;
    totals.fetches_to_upstream += stats.fetches_to_upstream;
    totals.fetches_fetch_through += stats.fetches_fetch_through;
    totals.fetches_failed += stats.fetches_failed;
    totals.hedges += stats.hedges_started;
    totals.resumes += stats.resumes;
    totals.owner_timeouts += stats.owner_timeouts;
    totals.stalls += stats.stalls;
    totals.serves += stats.serves_ready;
    totals.serves_joined += stats.serves_joined;
    totals.serves_refused += stats.serves_refused;
    totals.owner_busy_retries += stats.owner_busy_retries;
    totals.lookups += stats.lookups_started;
    totals.provides += stats.provides;
    totals.bans += stats.peers_banned;
    totals.integrity_failures += stats.integrity_failures;
    totals.bytes_from_upstream += stats.bytes_from_upstream;
    totals.bytes_from_peers += stats.bytes_from_peers;
  }
  result.dht_datagrams_warmup = dht_warmup_total_;
  result.upstream_egress_bytes = upstream_egress_bytes_;
  result.upstream_timeline = upstream_timeline_.cumulative();
  result.network = network_->stats();
  result.measured_seconds = (last - measure_start_).as_seconds();
  result.events = network_->events_executed();
  result.timed_out = nodes_unfinished_ > 0;
  return result;
}

}  // namespace

RunResult run_mode(const Scenario& scenario, const ModeSpec& mode, Fidelity fidelity,
                   const ProgressCallback& progress) {
  Cluster cluster(scenario, mode, fidelity, progress);
  return cluster.run();
}

}  // namespace peerd::sim
