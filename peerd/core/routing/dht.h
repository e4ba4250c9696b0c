#pragma once
// The sans-IO Kademlia DHT of peerd: a state machine in the style of quinn-proto. It never touches a socket,
// a clock or a global RNG; the caller (daemon driver, simulator, test harness) owns time and I/O.
//
// Four kinds of methods:
//   inputs    bootstrap(), handle_datagram(), handle_timeout()
//   commands  provide(), withdraw(), find_providers()
//   outputs   poll_transmit(), next_timeout(), poll_event()
//   getters   known_peers(), stats(), is_bootstrapped(), ...
//
// Poll order. After every input or command the driver:
//   1. drains poll_transmit() until it returns nullopt and sends each datagram,
//   2. re-arms its single timer to next_timeout() (nullopt = nothing scheduled),
//   3. drains poll_event() and acts on the events.
// When the timer fires it calls handle_timeout(now) and repeats 1-3. Extra or early handle_timeout() calls
// are no-ops. `now` must never go backwards.
//
// Protocol: 256-bit ids, k-buckets (bucket_peers_max = k = 20), iterative lookups with lookup_parallelism
// (alpha = 3) requests in flight, PING / FIND_NODE / GET_PROVIDERS / ADD_PROVIDER (see wire.h). Provider
// records are kept for their ttl and the local node re-provides its keys every reprovide_interval until
// withdraw(). Buckets whose range saw no lookup for bucket_refresh_interval are refreshed with a lookup of a
// random id in them. A full bucket pings its least recently seen contact before admitting a newcomer and
// replaces it if the ping fails. Every request carries a random transaction id; a response is accepted only
// from the endpoint (and node id, when known) the request went to, with the matching message type.
// Everything from the network is validated first: malformed or unmatched datagrams are counted and dropped
// without touching any other state. Every table and queue is bounded by a named option; overflow is
// refused and counted in DhtStats.
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <variant>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/common/rng.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/contact.h"
#include "peerd/core/routing/lookup.h"
#include "peerd/core/routing/provider_store.h"
#include "peerd/core/routing/routing_table.h"
#include "peerd/core/routing/wire.h"

namespace peerd::routing {

struct Transmit {
  Endpoint destination;
  std::vector<uint8_t> payload;
};

struct DhtOptions {
  NodeId self_id;
  Endpoint self_endpoint;
  uint64_t seed = 1;  // transaction ids and refresh targets; the same seed replays the same run

  // Kademlia shape.
  size_t bucket_peers_max = 20;        // k; also the number of nodes a key is stored on
  size_t bucket_replacements_max = 8;  // cached candidates per full bucket
  size_t lookup_parallelism = 3;       // alpha
  size_t lookup_candidates_max = 64;   // candidates remembered per lookup

  // Requests.
  Duration request_timeout = Duration::seconds(1);
  int request_retries = 1;       // retransmissions after the first attempt times out
  int contact_failures_max = 3;  // consecutive failed requests before a contact leaves the routing table
  // A full bucket pings its least recently seen contact only if it has been silent this long; a contact heard
  // from more recently is presumed alive and the newcomer waits in the replacement cache.
  Duration eviction_ping_after_silence = Duration::seconds(30);

  // Provider records.
  Duration provider_ttl_default = Duration::seconds(30 * 60);
  Duration provider_ttl_max = Duration::seconds(24 * 3600);  // remote ttls are clamped to this
  Duration reprovide_interval = Duration::seconds(10 * 60);
  size_t providers_per_key_max = 64;
  size_t provider_records_per_peer_max = 8192;
  size_t provider_records_max = 100000;
  size_t provides_local_max = 65536;       // keys this node announces
  size_t providers_per_response_max = 20;  // <= wire::kContactsMax
  size_t providers_per_lookup_max = 64;    // providers a find_providers lookup collects at most

  // Maintenance.
  Duration bucket_refresh_interval = Duration::seconds(10 * 60);
  Duration bootstrap_retry_interval = Duration::seconds(5);
  size_t seeds_max = 16;

  // Bounds on tables and queues.
  size_t lookups_pending_max = 256;
  size_t requests_outstanding_max = 1024;
  size_t transmit_queue_max = 4096;
  size_t events_queue_max = 4096;
  bool peer_events = true;  // emit PeerAdded / PeerRemoved
};

// Final result of find_providers (providers may be empty: not found). `hops` is the discovery depth of the
// node whose answer completed the result (1 = a node from the local routing table, 0 = answered locally);
// `round_trips` counts the sequential request/response exchanges on that path, including retransmissions.
struct ProvidersFound {
  LookupId lookup = 0;
  NodeId key;
  std::vector<Contact> providers;
  int hops = 0;
  int round_trips = 0;
  int rpcs = 0;  // requests this lookup sent, retransmissions included
  Duration elapsed;
};
struct ProvideDone {
  LookupId lookup = 0;
  NodeId key;
  size_t stored_on = 0;  // remote nodes that acknowledged the record
};
struct Bootstrapped {
  size_t routing_table_size = 0;
};
struct PeerAdded {
  Contact contact;
};
struct PeerRemoved {
  Contact contact;
};
using DhtEvent = std::variant<ProvidersFound, ProvideDone, Bootstrapped, PeerAdded, PeerRemoved>;

struct DhtStats {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t malformed_dropped = 0;
  std::array<uint64_t, wire::kDecodeErrorCount> malformed_by_reason{};
  uint64_t self_datagrams_dropped = 0;  // claimed our own id or came from our own endpoint
  uint64_t responses_unmatched = 0;     // unknown transaction id, wrong endpoint, node id or type
  uint64_t requests_received = 0;
  uint64_t requests_sent = 0;  // first transmissions
  uint64_t requests_retried = 0;
  uint64_t request_timeouts = 0;  // attempts that timed out
  uint64_t requests_failed = 0;   // requests that exhausted their retries
  uint64_t requests_refused_outstanding_full = 0;
  uint64_t transmits_dropped_queue_full = 0;
  uint64_t encode_failures = 0;
  uint64_t events_dropped_queue_full = 0;
  uint64_t lookups_started = 0;
  uint64_t lookups_completed = 0;
  uint64_t lookups_refused_pending_full = 0;
  uint64_t provides_refused_local_full = 0;
  uint64_t reprovides_started = 0;
  uint64_t refresh_lookups_started = 0;
  uint64_t provider_records_added = 0;
  uint64_t provider_records_refreshed = 0;
  uint64_t provider_records_refused_key_full = 0;
  uint64_t provider_records_refused_peer_full = 0;
  uint64_t provider_records_refused_store_full = 0;
  uint64_t provider_records_expired = 0;
  uint64_t peers_added = 0;
  uint64_t peers_removed = 0;
  uint64_t peers_evicted_stale = 0;  // removed after a failed liveness ping from a full bucket
  uint64_t eviction_pings_sent = 0;
  uint64_t seeds_dropped = 0;
  uint64_t bootstrap_attempts = 0;
};

class Dht {
 public:
  explicit Dht(DhtOptions options);

  // Inputs.
  // Starts (or restarts) joining the network through `seeds` (endpoints only; their ids are learnt from their
  // answers). With no seeds this node is the first of its network and is bootstrapped at once. Retries every
  // bootstrap_retry_interval while no seed answers.
  void bootstrap(Instant now, std::span<const Endpoint> seeds);
  void handle_datagram(Instant now, const Endpoint& from, std::span<const uint8_t> bytes);
  void handle_timeout(Instant now);

  // Commands.
  // Announces that this node provides `key` (ttl zero = provider_ttl_default): stores the record on the k
  // closest nodes and locally, and re-provides it every reprovide_interval until withdraw(). Emits
  // ProvideDone.
  LookupId provide(Instant now, const NodeId& key, Duration ttl);
  // Stops re-providing `key`; remote records lapse with their ttl.
  void withdraw(const NodeId& key);
  // Iterative GET_PROVIDERS; ends early once `want` providers are known (0 = providers_per_lookup_max).
  // Includes records stored locally, and this node itself when it provides the key. Emits ProvidersFound.
  LookupId find_providers(Instant now, const NodeId& key, size_t want);

  // Outputs.
  std::optional<Transmit> poll_transmit();
  std::optional<Instant> next_timeout() const;
  std::optional<DhtEvent> poll_event();

  // Getters.
  std::vector<Contact> known_peers() const { return table_.contacts(); }
  std::vector<Contact> closest_known(const NodeId& target, size_t count) const {
    return table_.closest(target, count);
  }
  const DhtStats& stats() const { return stats_; }
  bool is_bootstrapped() const { return bootstrapped_; }
  const NodeId& id() const { return options_.self_id; }
  const Endpoint& endpoint() const { return options_.self_endpoint; }
  const DhtOptions& options() const { return options_; }
  const RoutingTable& routing_table() const { return table_; }
  size_t provider_records_stored() const { return store_.size(); }
  size_t lookups_pending() const { return lookups_.size(); }
  size_t requests_outstanding() const { return requests_.size(); }
  bool provides(const NodeId& key) const { return provided_.contains(key); }
  // True while requests, lookups, transmits or events are outstanding (periodic timers do not count).
  bool has_pending_work() const;
  // A hash of all protocol state (routing table, provider records, requests, lookups, timers, queues), not of
  // the counters: equal fingerprints mean the same state, so tests can prove an input changed nothing.
  uint64_t fingerprint() const;

 private:
  enum class RequestKind : uint8_t { kPing, kFindNode, kGetProviders, kAddProvider };
  enum class LookupKind : uint8_t { kBootstrap, kRefresh, kFindProviders, kProvide };

  struct Request {
    RequestKind kind = RequestKind::kPing;
    Endpoint destination;
    std::optional<NodeId> peer;  // unknown only for bootstrap seeds
    LookupId lookup = 0;         // 0 = not part of a lookup
    int eviction_bucket = -1;    // >= 0: liveness ping of a full bucket's least recently seen contact
    int attempts = 1;
    Instant deadline;
    std::vector<uint8_t> payload;
  };

  struct Lookup {
    Lookup(LookupId lookup_id, LookupKind lookup_kind, const NodeId& target, size_t results_max,
           size_t candidates_max, Instant now)
        : id(lookup_id), kind(lookup_kind), candidates(target, results_max, candidates_max), started(now) {}

    LookupId id;
    LookupKind kind;
    LookupCandidates candidates;
    Instant started;
    size_t in_flight = 0;
    size_t seeds_in_flight = 0;
    int rpcs = 0;
    bool emit_event = true;
    bool counts_for_bootstrap = false;
    // kFindProviders
    size_t want = 0;
    std::vector<Contact> providers;
    int result_hops = 0;
    int result_round_trips = 0;
    // kProvide: after the node lookup converges, ADD_PROVIDER goes to the closest answered nodes.
    bool storing = false;
    Duration ttl;
    std::vector<Contact> store_targets;
    size_t store_next = 0;
    size_t store_in_flight = 0;
    size_t stored_on = 0;
  };

  struct LocalProvide {
    Duration ttl;
    Instant next_reprovide;
  };

  // Incoming.
  void handle_request(Instant now, const Endpoint& from, const wire::Message& message);
  void handle_response(Instant now, const Endpoint& from, const wire::Message& message);
  void on_request_answered(Instant now, const Request& request, const wire::Message& message);
  void on_request_failed(Instant now, const Request& request);
  bool response_matches(RequestKind kind, const wire::Body& body) const;

  // Routing table upkeep.
  void observe_contact(Instant now, const Contact& contact);
  void on_bucket_full(Instant now, int bucket);
  void remove_contact(Instant now, const NodeId& id, bool stale);

  // Requests and transmits.
  bool send_request(Instant now, RequestKind kind, const Endpoint& destination,
                    const std::optional<NodeId>& peer, wire::Body body, LookupId lookup, int eviction_bucket);
  void send_response(const Endpoint& destination, uint64_t transaction_id, wire::Body body);
  void queue_transmit(const Endpoint& destination, std::span<const uint8_t> payload);
  void expire_requests(Instant now);
  uint64_t new_transaction_id();

  // Lookups.
  LookupId start_lookup(Instant now, LookupKind kind, const NodeId& target, std::span<const Endpoint> seeds);
  void advance_lookup(Instant now, LookupId id);
  void advance_stalled_lookups(Instant now);
  void on_lookup_answer(Instant now, Lookup& lookup, const Request& request, const wire::Message& message);
  void on_lookup_converged(Instant now, Lookup& lookup);
  void finish_lookup(LookupId id);
  void emit_providers_found(Instant now, const Lookup& lookup);
  void add_provider_found(Lookup& lookup, const Contact& provider, int hops, int round_trips);
  void local_providers(Instant now, const NodeId& key, size_t count, std::vector<Contact>& out) const;

  // Timers.
  void reprovide_due(Instant now);
  void refresh_buckets(Instant now, bool for_bootstrap);
  void start_bootstrap(Instant now);
  void complete_bootstrap();
  NodeId random_id_in_bucket(int bucket);

  void emit(DhtEvent event);

  DhtOptions options_;
  Rng rng_;
  RoutingTable table_;
  ProviderStore store_;
  DhtStats stats_;

  std::deque<Transmit> transmits_;
  std::deque<DhtEvent> events_;

  std::unordered_map<uint64_t, Request> requests_;  // by transaction id
  std::set<std::pair<Instant, uint64_t>> request_deadlines_;
  bool requests_saturated_ = false;  // a lookup could not send for lack of request slots

  std::map<LookupId, Lookup> lookups_;
  LookupId next_lookup_id_ = 1;

  std::map<NodeId, LocalProvide> provided_;
  std::set<std::pair<Instant, NodeId>> reprovide_schedule_;

  std::array<bool, RoutingTable::kBucketCount> eviction_ping_pending_{};
  std::array<Instant, RoutingTable::kBucketCount> bucket_last_lookup_{};

  std::vector<Endpoint> seeds_;
  bool bootstrap_started_ = false;
  bool bootstrapped_ = false;
  size_t bootstrap_refreshes_pending_ = 0;
  std::optional<Instant> bootstrap_retry_at_;
  std::optional<Instant> refresh_at_;

  std::vector<uint8_t> encode_buffer_;
  std::vector<Contact> contacts_buffer_;
};

}  // namespace peerd::routing
