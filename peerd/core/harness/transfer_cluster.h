#pragma once
// The transfer harness: every node runs the real sans-IO DHT (through DhtCluster, which owns the virtual
// clock and the datagram network) and a transfer::Engine over a VirtualChunkStore. Chunk transfers are
// modelled, not sent: each node has an egress link of node_egress_bytes_per_second, the upstream registry one
// of upstream_egress_bytes_per_second (the cap), and the flows on a link share it by processor sharing (every
// active flow gets capacity / n; completions are computed in O(log n) with a per-link virtual-time counter).
// Requests and responses also pay the network's per-link latency (the same latency function the DHT's
// datagrams use), so a slow node is slow for both.
//
// Bytes are virtual (transfer_content.h): every delivered piece carries how its bytes relate to the truth
// (good, flipped by a corrupting node, or garbage relayed from a mixed copy), each node keeps the pieces of
// every chunk it wrote, the chunk fingerprint the engine gets is the pieces' checksum, and VerifyContent is
// answered by comparing every chunk's checksum with the truth. A read's bytes are checked when it completes.
//
// Faults: kill (the node's DHT and engine freeze; connection attempts to it fail after connect_failure_delay;
// streams from it go silent after the bytes already sent; the member list drops it after membership_delay),
// slow nodes (latency and bandwidth multipliers), corrupting nodes (every byte they serve is flipped).
//
// Adapter rules (what the daemon will do too): every engine output is drained after every input; cross-node
// effects (a request arriving, a cancel reaching the server) are scheduled with the link latency, never
// called synchronously, so no engine is re-entered.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "peerd/core/harness/dht_cluster.h"
#include "peerd/core/harness/transfer_content.h"
#include "peerd/core/transfer/engine.h"
#include "peerd/core/transfer/virtual_chunk_store.h"

namespace peerd::harness {

struct TransferClusterOptions {
  uint64_t seed = 1;
  size_t nodes = 100;
  double node_egress_bytes_per_second = 1.25e9;     // 10 Gbit/s
  double upstream_egress_bytes_per_second = 125e6;  // 1 Gbit/s: the registry's cap
  Duration latency_min =
      Duration::microseconds(200);  // one-way, per node pair (fixed per pair, from the seed)
  Duration latency_max = Duration::microseconds(800);
  Duration upstream_latency = Duration::milliseconds(10);
  Duration connect_failure_delay = Duration::seconds(1);     // connecting to a dead node fails after this
  Duration membership_delay = Duration::seconds(2);          // the member list drops a dead node after this
  double verify_bytes_per_second = 2e9;                      // the adapter's hashing speed
  Duration progress_interval = Duration::milliseconds(250);  // a flowing stream reports its bytes this often
  uint64_t store_capacity_bytes = uint64_t{1} << 42;
  transfer::EngineOptions engine;  // template: `self` is set per node
  routing::DhtOptions dht;         // template
  Duration dht_join_interval = Duration::milliseconds(2);
  Duration dht_settle = Duration::seconds(3);  // after the last join, before start() returns
  size_t providers_want = 20;
  bool collect_chunk_waits = true;
  // Hand engines the member list (rendezvous owners). Off emulates designs without a swarm.
  bool swarm_membership = true;
};

struct TransferReport {
  size_t nodes = 0;
  size_t reads = 0;
  size_t reads_completed = 0;
  size_t reads_failed = 0;
  size_t reads_killed = 0;      // reads on nodes that were killed
  size_t reads_bad_bytes = 0;   // completed reads whose bytes did not match the truth (must stay 0)
  size_t reads_unverified = 0;  // completed whole-blob reads without verification (must stay 0)
  Duration completion_p50;      // read durations (start to complete) of completed reads
  Duration completion_p90;
  Duration completion_max;
  uint64_t content_bytes = 0;  // size of the largest content read (the ratio's denominator)
  uint64_t upstream_egress_bytes = 0;
  double upstream_ratio = 0;  // upstream egress / content_bytes
  uint64_t node_egress_bytes_max = 0;
  uint64_t node_egress_bytes_mean = 0;
  uint64_t dht_datagrams = 0;  // sent by all nodes during the measurement window
  double dht_datagrams_per_node = 0;
  uint64_t dht_lookups = 0;
  uint64_t pieces_delivered = 0;
  uint64_t pieces_corrupt = 0;  // pieces whose bytes were not the truth when delivered
  Duration chunk_wait_p50;
  Duration chunk_wait_p99;
  uint64_t hedges = 0;
  uint64_t resumes = 0;
  uint64_t owner_timeouts = 0;
  uint64_t bans = 0;
  uint64_t integrity_failures = 0;

  std::string summary() const;
};

class TransferCluster {
 public:
  struct ReadRecord {
    size_t node = 0;
    content::ContentId content;
    uint64_t offset = 0;
    uint64_t length = 0;
    Instant started;
    Instant finished;
    bool accepted = false;
    bool completed = false;
    bool failed = false;
    bool killed = false;  // the node died before the read finished
    bool verified = false;
    bool bytes_ok = false;
    std::optional<transfer::ReadError> error;
    std::optional<transfer::ReadFailure> failure;
  };

  explicit TransferCluster(TransferClusterOptions options);
  ~TransferCluster();
  TransferCluster(const TransferCluster&) = delete;
  TransferCluster& operator=(const TransferCluster&) = delete;

  size_t size() const { return nodes_.size(); }
  Instant now() const { return dht_.now(); }
  DhtCluster& dht() { return dht_; }
  transfer::Engine& engine(size_t node) { return *nodes_.at(node)->engine; }
  const transfer::Peer& peer(size_t node) const { return nodes_.at(node)->peer; }
  bool is_alive(size_t node) const { return nodes_.at(node)->alive; }
  std::string seed_text() const { return dht_.seed_text(); }

  // Registers an item the upstream serves.
  void add_content(const content::ContentId& id, uint64_t size_bytes);

  // Joins every node to the DHT, hands every engine the member list and runs until the DHT settled; then
  // starts the measurement window.
  void start();
  // Zeroes the counters the report measures (upstream egress, node egress, DHT datagrams, read records).
  void begin_measurement();

  // Scenario, at virtual instants (>= now).
  void read_at(Instant at, size_t node, const content::ContentId& id, uint64_t offset, uint64_t length);
  void read_whole_at(Instant at, size_t node, const content::ContentId& id);
  void kill_at(Instant at, size_t node);
  // Nodes that are not members are left out of the member list every engine gets (they still run and read).
  // Takes effect at once for every live node.
  void set_member(size_t node, bool member);
  void set_corrupting(size_t node, bool corrupting) { nodes_.at(node)->corrupting = corrupting; }
  // Latency multiplies every link of the node (DHT datagrams included); bandwidth its egress capacity.
  void set_slow(size_t node, double latency_multiplier, double bandwidth_multiplier);
  // Marks every chunk of the item as present (and trusted) at `node`, as if pulled long ago, and advertises
  // it.
  void seed_content(size_t node, const content::ContentId& id);

  // Runs until every scheduled read finished (completed or failed); false on the deadline or step bound.
  bool run_until_reads_done(Instant deadline, size_t steps_max);
  bool run_until(Instant deadline, size_t steps_max) { return dht_.run_until(deadline, steps_max); }

  TransferReport report() const;
  const std::vector<ReadRecord>& reads() const { return reads_; }
  const std::vector<Duration>& chunk_waits() const { return chunk_waits_; }
  uint64_t upstream_egress_bytes() const { return upstream_.egress_bytes - upstream_egress_baseline_; }
  uint64_t node_egress_bytes(size_t node) const;
  // Ever banned by `node` during the run / ever received bytes from `source` (a peer) during the run.
  bool banned_by(size_t node, size_t peer) const;
  bool received_from(size_t node, size_t source) const;
  // Every chunk of the item present at `node` holds the true bytes, and all chunks are present.
  bool holds_true_copy(size_t node, const content::ContentId& id) const;

 private:
  static constexpr size_t kUpstream = SIZE_MAX;

  enum class PieceKind : uint8_t { kGood, kFlipped, kGarbage };
  struct Piece {
    uint64_t begin = 0;  // within the chunk
    uint64_t end = 0;
    PieceKind kind = PieceKind::kGood;
  };
  struct Link {
    double capacity_bytes_per_second = 0;
    double virtual_bytes = 0;  // bytes each active flow has received since the link was created
    Instant updated;
    std::set<std::pair<double, uint64_t>> flows;  // (virtual finish, transfer id)
    uint64_t generation = 0;
    uint64_t egress_bytes = 0;
  };
  struct Node {
    transfer::Peer peer;
    std::unique_ptr<transfer::VirtualChunkStore> store;
    std::unique_ptr<transfer::Engine> engine;
    bool alive = true;
    bool member = true;
    bool corrupting = false;
    Link egress;
    uint64_t egress_baseline = 0;
    std::map<std::pair<uint32_t, uint64_t>, std::vector<Piece>> copies;  // (content, chunk) -> pieces written
    std::unordered_map<uint64_t, uint64_t> transfer_by_fetch;            // FetchId -> transfer id
    std::unordered_map<uint64_t, uint64_t> transfer_by_serve;            // ServeId -> transfer id
    std::unordered_map<uint64_t, size_t> read_by_id;                     // ReadId -> index in reads_
    std::optional<Instant> armed;
    uint64_t timer_generation = 0;
    std::set<size_t> banned;
    std::set<size_t> received_from;
  };
  enum class TransferState : uint8_t { kRequesting, kServing, kFlowing, kDelivering, kSilent };
  struct Transfer {
    size_t requester = 0;
    transfer::FetchId fetch;
    size_t source = kUpstream;
    uint32_t content = 0;
    uint64_t chunk_index = 0;
    uint64_t begin = 0;
    uint64_t end = 0;
    bool fetch_through = false;
    Duration latency;
    TransferState state = TransferState::kRequesting;
    transfer::ServeId serve;
    double finish_virtual = 0;
    uint64_t reported = 0;  // bytes already reported to the requester (progress)
    PieceKind kind = PieceKind::kGood;
  };
  struct ContentEntry {
    content::ContentId id;
    std::unique_ptr<VirtualContent> bytes;
  };

  // Engine driving.
  void drive(size_t node);
  void arm(size_t node);
  void handle_action(size_t node, transfer::Action& action);
  void handle_event(size_t node, transfer::Event& event);
  void deliver_membership();

  // Transfers.
  void on_start_fetch(size_t node, const transfer::StartFetch& start);
  void on_arrival(uint64_t id);
  void start_flow(uint64_t id);
  void on_first_byte(uint64_t id);
  void on_progress_tick(uint64_t id);
  void on_delivered(uint64_t id);
  void fail_transfer(uint64_t id, transfer::FetchFailure failure);
  void cancel_transfer(uint64_t id);
  void forget_transfer(uint64_t id);
  void record_piece(size_t node, uint32_t content, uint64_t chunk, const Piece& piece);
  PieceKind copy_kind(size_t node, uint32_t content, uint64_t chunk) const;
  uint64_t copy_checksum(size_t node, uint32_t content, uint64_t chunk) const;
  bool copy_true(size_t node, uint32_t content, uint64_t chunk) const;

  // Links.
  Link& link_of(size_t source) { return source == kUpstream ? upstream_ : nodes_[source]->egress; }
  void link_advance(Link& link);
  void link_reschedule(size_t source);
  void on_link_timer(size_t source, uint64_t generation);
  uint64_t flow_progress(Link& link, const Transfer& transfer);

  void kill(size_t node);
  uint32_t content_slot(const content::ContentId& id) const;
  Duration latency_between(size_t a, size_t b) const;
  uint64_t chunk_bytes() const { return options_.engine.chunk_bytes; }

  TransferClusterOptions options_;
  DhtCluster dht_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unordered_map<NodeId, size_t, NodeIdHash> node_by_id_;
  std::vector<ContentEntry> contents_;
  std::map<content::ContentId, uint32_t> content_index_;
  Link upstream_;
  uint64_t upstream_egress_baseline_ = 0;
  std::map<uint64_t, Transfer> transfers_;
  uint64_t next_transfer_ = 1;
  std::vector<ReadRecord> reads_;
  size_t reads_pending_ = 0;
  std::vector<Duration> chunk_waits_;
  uint64_t dht_datagrams_baseline_ = 0;
  uint64_t dht_lookups_baseline_ = 0;
  uint64_t pieces_delivered_ = 0;
  uint64_t pieces_corrupt_ = 0;
  std::vector<double> node_latency_multiplier_;
  bool started_ = false;
};

}  // namespace peerd::harness
