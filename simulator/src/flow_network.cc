// Flow fidelity: the same chunk protocol as the packet network, but a response is a fluid flow over the links
// of its path (host egress, rack uplink and downlink when they can bind, host ingress; the registry's egress
// for upstream responses), sharing capacity max-min fairly (flow_allocator.h). Datagrams and the request and
// the first and last byte of a response take the path's propagation delay. Timers and deliveries run on the
// ns-3 event scheduler. C++17: includes ns-3.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <deque>
#include <map>
#include <unordered_map>
#include <vector>

#include "ns3/core-module.h"
#include "simulator/src/flow_allocator.h"
#include "simulator/src/network.h"
#include "simulator/src/ns3_clock.h"

namespace peerd::sim {

namespace {

constexpr double kNanosPerSecond = 1e9;

// Live requests by id, without hashing: an id is a slot and the slot's generation (never 0, never reused),
// so a stale id finds nothing. Slots stay in place (a deque), so pointers to live requests stay valid.
template <typename Value>
class RequestTable {
 public:
  RequestId create() {
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& entry = slots_[slot];
    ++entry.generation;
    entry.live = true;
    entry.sequence = next_sequence_++;
    entry.value = Value{};
    return RequestId{entry.generation} << 32 | slot;
  }
  Value* find(RequestId id) {
    const uint32_t slot = static_cast<uint32_t>(id);
    if (slot >= slots_.size()) return nullptr;
    Slot& entry = slots_[slot];
    return entry.live && entry.generation == static_cast<uint32_t>(id >> 32) ? &entry.value : nullptr;
  }
  void erase(RequestId id) {
    if (find(id) == nullptr) return;
    slots_[static_cast<uint32_t>(id)].live = false;
    free_.push_back(static_cast<uint32_t>(id));
  }
  // Oldest first, whatever slots they reuse: a kill's consequences follow the order requests were made.
  template <typename Visit>
  void for_each_in_creation_order(Visit visit) const {
    std::vector<std::pair<uint64_t, uint32_t>> live;
    for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
      if (slots_[slot].live) live.emplace_back(slots_[slot].sequence, slot);
    }
    std::sort(live.begin(), live.end());
    for (const auto& [sequence, slot] : live) {
      visit(RequestId{slots_[slot].generation} << 32 | slot, slots_[slot].value);
    }
  }

 private:
  struct Slot {
    Value value;
    uint32_t generation = 0;
    bool live = false;
    uint64_t sequence = 0;
  };
  std::deque<Slot> slots_;
  std::vector<uint32_t> free_;
  uint64_t next_sequence_ = 0;
};

class FlowNetwork final : public Network {
 public:
  FlowNetwork(const TopologySpec& topology, const FlowOptions& options, NetworkHandler& handler)
      : topology_(topology), options_(options), handler_(handler), allocator_(options.share_tolerance) {
    ns3::Simulator::Destroy();  // a fresh scheduler at time 0
    // What TCP/IP leaves of a link for payload (the packet fidelity's headers: IP + TCP with timestamps,
    // PPP).
    const double efficiency = double(topology_.mtu_bytes - 52) / double(topology_.mtu_bytes + 2);
    dead_.assign(topology_.hosts, false);
    for (NodeIndex host = 0; host < topology_.hosts; ++host) {
      const double bytes_per_second = topology_.host_rate(host) / 8.0 * efficiency;
      egress_.push_back(allocator_.add_link(bytes_per_second));
      ingress_.push_back(allocator_.add_link(bytes_per_second));
    }
    if (topology_.kind == TopologySpec::Kind::kRacks && !topology_.uplink_nonblocking()) {
      for (uint32_t rack = 0; rack < topology_.racks(); ++rack) {
        const double bytes_per_second = topology_.uplink.rate_bits_per_second / 8.0 * efficiency;
        rack_up_.push_back(allocator_.add_link(bytes_per_second));
        rack_down_.push_back(allocator_.add_link(bytes_per_second));
      }
    }
    upstream_egress_ = allocator_.add_link(topology_.upstream_link.rate_bits_per_second / 8.0 * efficiency);
  }

  ~FlowNetwork() override { ns3::Simulator::Destroy(); }

  int64_t now_ns() const override { return ns3_now_ns(); }
  void schedule_at(int64_t at_ns, std::function<void()> callback) override {
    ns3_schedule_at(at_ns, std::move(callback));
  }
  void run(int64_t deadline_ns) override { ns3_run(deadline_ns); }
  void stop() override { ns3::Simulator::Stop(); }
  uint64_t events_executed() const override { return ns3::Simulator::GetEventCount(); }
  const NetworkStats& stats() const override { return stats_; }

  void send_datagram(NodeIndex from, NodeIndex to, const uint8_t* bytes, size_t size) override {
    ++stats_.datagrams_sent;
    if (is_dead(from) || is_dead(to)) {
      ++stats_.datagrams_dropped;
      return;
    }
    const int64_t serialisation =
        static_cast<int64_t>(double(size + 28) * 8.0 / topology_.host_rate(from) * 1e9);
    const int64_t at = now_ns() + topology_.path_delay_ns(from, to) + serialisation;
    schedule_at(at, [this, from, to, payload = std::vector<uint8_t>(bytes, bytes + size)] {
      if (is_dead(to) || is_dead(from)) {
        ++stats_.datagrams_dropped;
        return;
      }
      ++stats_.datagrams_delivered;
      handler_.on_datagram(to, from, payload.data(), payload.size());
    });
  }

  RequestId start_request(NodeIndex client, NodeIndex server, const ChunkRequest& chunk) override {
    ++stats_.requests;
    const RequestId id = requests_.create();
    Request& request = *requests_.find(id);
    request.client = client;
    request.server = server;
    request.chunk = chunk;
    request.latency_ns = topology_.path_delay_ns(server, client);
    if (is_dead(server)) {
      // Nobody answers the SYN: the connection attempt fails after the timeout.
      request.state = State::kDoomed;
      schedule_at(now_ns() + options_.connect_failure_ns,
                  [this, id] { fail(id, RequestFailure::kUnreachable); });
      return id;
    }
    schedule_at(now_ns() + request.latency_ns, [this, id] { arrive(id); });
    return id;
  }

  void cancel_request(RequestId id) override {
    Request* found = requests_.find(id);
    if (found == nullptr) return;
    Request& request = *found;
    request.client_gone = true;
    switch (request.state) {
      case State::kTravelling:
      case State::kDoomed:
        requests_.erase(id);  // the server never saw it
        return;
      case State::kAtServer: {
        // The server notices the closed connection one path delay later.
        schedule_at(now_ns() + request.latency_ns, [this, id] { notify_server(id, 0); });
        return;
      }
      case State::kFlowing: {
        const double sent = allocator_.remove_flow(seconds_now(), request.flow);
        forget_flow(request.flow);
        stats_.payload_bytes_sent += static_cast<uint64_t>(sent);
        mark_dirty();
        const uint64_t bytes = static_cast<uint64_t>(sent);
        schedule_at(now_ns() + request.latency_ns, [this, id, bytes] { notify_server(id, bytes); });
        return;
      }
      case State::kSilent:
        requests_.erase(id);
        return;
    }
  }

  void respond(RequestId id, uint64_t length_bytes, uint32_t taint) override {
    Request* found = requests_.find(id);
    if (found == nullptr || found->state != State::kAtServer || found->client_gone) return;
    Request& request = *found;
    request.length = length_bytes;
    deliver_header(id, ResponseStatus::kOk, taint);
    if (length_bytes == 0) {
      finish_response(id);
      return;
    }
    request.state = State::kFlowing;
    FlowAllocator::LinkId path[FlowAllocator::kPathLinksMax];
    const size_t hops = path_of(request.server, request.client, path);
    request.flow = allocator_.add_flow(seconds_now(), path, hops, double(length_bytes));
    const uint32_t slot = flow_slot(request.flow);
    if (slot >= flows_.size()) flows_.resize(slot + 1);
    flows_[slot] = FlowEntry{request.flow, id, &request};
    progress_due_.push_back(ProgressDue{now_ns() + options_.progress_interval_ns, request.flow});
    stats_.flows_max = std::max<uint64_t>(stats_.flows_max, allocator_.flow_count());
    mark_dirty();
    arm_progress();
  }

  void respond_status(RequestId id, ResponseStatus status) override {
    Request* request = requests_.find(id);
    if (request == nullptr || request->state != State::kAtServer || request->client_gone) return;
    request->state = State::kSilent;
    deliver_header(id, status, 0);
    const NodeIndex server = request->server;
    request->server_notified = true;
    if (!is_dead(server)) handler_.on_response_sent(server, id, 0);
  }

  void respond_pending(RequestId id) override {
    const Request* request = requests_.find(id);
    if (request == nullptr || request->state != State::kAtServer || request->client_gone) return;
    deliver_header(id, ResponseStatus::kPending, 0);
  }

  void kill(NodeIndex host) override {
    if (host >= dead_.size() || dead_[host]) return;
    dead_[host] = true;
    std::vector<RequestId> affected;
    requests_.for_each_in_creation_order([&](RequestId id, const Request& request) {
      if (request.client == host || request.server == host) affected.push_back(id);
    });
    for (const RequestId id : affected) {
      Request* found = requests_.find(id);
      if (found == nullptr) continue;
      Request& request = *found;
      if (request.client == host) {
        cancel_request(id);  // the server sees the connection die
        continue;
      }
      // The server died: what was on the wire still arrives, then silence (the client's timers decide).
      request.server_notified = true;
      if (request.state == State::kFlowing) {
        const double sent = allocator_.remove_flow(seconds_now(), request.flow);
        forget_flow(request.flow);
        mark_dirty();
        stats_.payload_bytes_sent += static_cast<uint64_t>(sent);
        const uint64_t delta =
            static_cast<uint64_t>(sent) - std::min<uint64_t>(request.reported, uint64_t(sent));
        request.reported += delta;
        if (delta > 0)
          schedule_at(now_ns() + request.latency_ns, [this, id, delta] { deliver_data(id, delta); });
      }
      request.state = State::kSilent;
    }
  }

 private:
  enum class State : uint8_t { kTravelling, kDoomed, kAtServer, kFlowing, kSilent };
  struct Request {
    NodeIndex client = 0;
    NodeIndex server = 0;
    ChunkRequest chunk;
    State state = State::kTravelling;
    int64_t latency_ns = 0;
    uint64_t length = 0;
    uint64_t reported = 0;  // payload bytes already scheduled for delivery to the client
    FlowAllocator::FlowId flow = 0;
    bool client_gone = false;
    bool server_notified = false;
  };

  struct FlowEntry {
    FlowAllocator::FlowId flow = 0;
    RequestId id = 0;
    Request* request = nullptr;
  };

  bool is_dead(NodeIndex host) const { return host != kUpstream && dead_[host]; }
  double seconds_now() const { return double(now_ns()) / kNanosPerSecond; }

  size_t path_of(NodeIndex from, NodeIndex to, FlowAllocator::LinkId* path) const {
    size_t hops = 0;
    const bool uplinks = !rack_up_.empty();
    if (from == kUpstream) {
      path[hops++] = upstream_egress_;
      if (uplinks) path[hops++] = rack_down_[topology_.rack_of(to)];
      path[hops++] = ingress_[to];
      return hops;
    }
    path[hops++] = egress_[from];
    if (uplinks && topology_.rack_of(from) != topology_.rack_of(to)) {
      path[hops++] = rack_up_[topology_.rack_of(from)];
      path[hops++] = rack_down_[topology_.rack_of(to)];
    }
    path[hops++] = ingress_[to];
    return hops;
  }

  void arrive(RequestId id) {
    Request* found = requests_.find(id);
    if (found == nullptr) return;
    Request& request = *found;
    if (is_dead(request.server) || is_dead(request.client)) {
      request.state = State::kSilent;  // a black hole
      return;
    }
    request.state = State::kAtServer;
    handler_.on_request(request.server, request.client, id, request.chunk);
  }

  void deliver_header(RequestId id, ResponseStatus status, uint32_t taint) {
    const Request& request = *requests_.find(id);
    schedule_at(now_ns() + request.latency_ns, [this, id, status, taint] {
      const Request* found = requests_.find(id);
      if (found == nullptr || found->client_gone || is_dead(found->client)) return;
      const NodeIndex client = found->client;
      if (status != ResponseStatus::kOk && status != ResponseStatus::kPending) requests_.erase(id);
      handler_.on_response_header(client, id, status, taint);
    });
  }

  void deliver_data(RequestId id, uint64_t bytes) {
    const Request* request = requests_.find(id);
    if (request == nullptr || request->client_gone || is_dead(request->client)) return;
    stats_.payload_bytes_received += bytes;
    handler_.on_response_data(request->client, id, bytes);
  }

  void notify_server(RequestId id, uint64_t bytes) {
    const Request* request = requests_.find(id);
    if (request == nullptr) return;
    const NodeIndex server = request->server;
    const bool notify = !request->server_notified;
    requests_.erase(id);
    if (notify && !is_dead(server)) handler_.on_response_sent(server, id, bytes);
  }

  void fail(RequestId id, RequestFailure failure) {
    const Request* request = requests_.find(id);
    if (request == nullptr || request->client_gone) return;
    const NodeIndex client = request->client;
    requests_.erase(id);
    if (!is_dead(client)) handler_.on_request_failed(client, id, failure);
  }

  // All payload left the server: it hears so now, the client gets the rest one path delay later.
  void finish_response(RequestId id) {
    Request& request = *requests_.find(id);
    request.state = State::kSilent;
    const uint64_t delta = request.length - request.reported;
    request.reported = request.length;
    request.server_notified = true;
    const NodeIndex server = request.server;
    const uint64_t length = request.length;
    schedule_at(now_ns() + request.latency_ns, [this, id, delta] {
      const Request* found = requests_.find(id);
      if (found == nullptr || found->client_gone || is_dead(found->client)) {
        if (found != nullptr) requests_.erase(id);
        return;
      }
      const NodeIndex client = found->client;
      requests_.erase(id);
      stats_.payload_bytes_received += delta;
      if (delta > 0) handler_.on_response_data(client, id, delta);
      handler_.on_response_complete(client, id);
    });
    if (!is_dead(server)) handler_.on_response_sent(server, id, length);
  }

  // Rate recomputation: once per instant (or quantum) in which flows started or ended.
  void mark_dirty() {
    if (recompute_pending_) return;
    recompute_pending_ = true;
    const int64_t at = std::max(now_ns(), last_recompute_ns_ + options_.recompute_quantum_ns);
    schedule_at(at, [this] { recompute(); });
  }

  void recompute() {
    recompute_pending_ = false;
    last_recompute_ns_ = now_ns();
    allocator_.recompute(seconds_now());
    stats_.flow_recomputations = allocator_.link_recomputations();
    if (!allocator_.settled() && !recompute_pending_) {
      // The propagation hit its budget: continue a microsecond later rather than spin at this instant.
      recompute_pending_ = true;
      schedule_at(now_ns() + std::max<int64_t>(1000, options_.recompute_quantum_ns), [this] { recompute(); });
    }
    arm_finish();
  }

  void arm_finish() {
    const double next = allocator_.next_finish_seconds();
    if (!std::isfinite(next)) return;
    int64_t at = std::max(now_ns(), static_cast<int64_t>(std::ceil(next * kNanosPerSecond)));
    // With a quantum, flows end on its grid too: those ending within one quantum share one wakeup.
    const int64_t quantum = options_.recompute_quantum_ns;
    if (quantum > 0) at = (at + quantum - 1) / quantum * quantum;
    if (finish_armed_ && finish_at_ns_ <= at) return;  // an earlier wakeup re-arms when it fires
    finish_armed_ = true;
    finish_at_ns_ = at;
    schedule_at(at, [this, at] {
      if (finish_at_ns_ == at) finish_armed_ = false;
      on_finish();
    });
  }

  void on_finish() {
    finished_.clear();
    allocator_.pop_finished(seconds_now(), finished_);
    for (const FlowAllocator::FlowId flow : finished_) {
      const FlowEntry* entry = flow_entry(flow);
      assert(entry != nullptr);
      const RequestId id = entry->id;
      forget_flow(flow);
      stats_.payload_bytes_sent += requests_.find(id)->length;
      finish_response(id);
    }
    if (!finished_.empty()) mark_dirty();
    arm_finish();
  }

  // Long flows report partial progress so a slow stream is not mistaken for a stalled one. Each flow is due
  // `progress_interval` after its start or its last report; due times are appended in order, so the queue is
  // a FIFO. One tick per quarter interval reports every flow due before the next tick (up to a quarter
  // early), so a flow hears at least every interval and flows that finish sooner cost nothing.
  int64_t progress_tick_ns() const { return std::max<int64_t>(1, options_.progress_interval_ns / 4); }

  void arm_progress() {
    if (progress_armed_ || options_.progress_interval_ns <= 0 || progress_due_.empty()) return;
    progress_armed_ = true;
    const int64_t at = std::max(now_ns(), progress_due_.front().at_ns - progress_tick_ns());
    schedule_at(at, [this] { on_progress(); });
  }

  void on_progress() {
    progress_armed_ = false;
    const double now = seconds_now();
    const int64_t horizon = now_ns() + progress_tick_ns();
    // One delivery event per distinct path delay, not one per flow: thousands of slow flows share a tick.
    std::map<int64_t, std::vector<std::pair<RequestId, uint64_t>>> batches;
    while (!progress_due_.empty() && progress_due_.front().at_ns <= horizon) {
      const FlowAllocator::FlowId flow = progress_due_.front().flow;
      progress_due_.pop_front();
      const FlowEntry* entry = flow_entry(flow);
      if (entry == nullptr) continue;  // finished or cancelled since
      Request& request = *entry->request;
      const uint64_t sent = static_cast<uint64_t>(allocator_.sent_bytes(now, flow));
      if (sent > request.reported) {
        batches[request.latency_ns].emplace_back(entry->id, sent - request.reported);
        request.reported = sent;
      }
      progress_due_.push_back(ProgressDue{now_ns() + options_.progress_interval_ns, flow});
    }
    for (auto& [latency, batch] : batches) {
      schedule_at(now_ns() + latency, [this, batch = std::move(batch)] {
        for (const auto& [id, delta] : batch) deliver_data(id, delta);
      });
    }
    arm_progress();
  }

  static uint32_t flow_slot(FlowAllocator::FlowId flow) { return static_cast<uint32_t>(flow); }
  const FlowEntry* flow_entry(FlowAllocator::FlowId flow) const {
    const uint32_t slot = flow_slot(flow);
    if (slot >= flows_.size() || flows_[slot].flow != flow || flows_[slot].request == nullptr) return nullptr;
    return &flows_[slot];
  }
  void forget_flow(FlowAllocator::FlowId flow) {
    const uint32_t slot = flow_slot(flow);
    if (slot < flows_.size() && flows_[slot].flow == flow) flows_[slot] = FlowEntry{};
  }

  TopologySpec topology_;
  FlowOptions options_;
  NetworkHandler& handler_;
  NetworkStats stats_;
  FlowAllocator allocator_;
  std::vector<FlowAllocator::LinkId> egress_;
  std::vector<FlowAllocator::LinkId> ingress_;
  std::vector<FlowAllocator::LinkId> rack_up_;
  std::vector<FlowAllocator::LinkId> rack_down_;
  FlowAllocator::LinkId upstream_egress_ = 0;
  std::vector<bool> dead_;
  RequestTable<Request> requests_;
  // Flowing requests by the allocator's flow slot. The pointer saves a lookup per flow on every progress
  // report (hundreds of thousands of flows at 10 000 nodes); requests_ keeps its elements in place and a
  // flowing request leaves flows_ before requests_.
  std::vector<FlowEntry> flows_;
  struct ProgressDue {
    int64_t at_ns = 0;
    FlowAllocator::FlowId flow = 0;
  };
  std::deque<ProgressDue> progress_due_;
  std::vector<FlowAllocator::FlowId> finished_;
  bool recompute_pending_ = false;
  int64_t last_recompute_ns_ = INT64_MIN / 2;
  bool finish_armed_ = false;
  int64_t finish_at_ns_ = 0;
  bool progress_armed_ = false;
};

}  // namespace

std::unique_ptr<Network> make_flow_network(const TopologySpec& topology, const FlowOptions& options,
                                           NetworkHandler& handler) {
  return std::make_unique<FlowNetwork>(topology, options, handler);
}

}  // namespace peerd::sim
