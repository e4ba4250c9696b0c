#pragma once
// The sans-IO transfer engine of peerd: given reads of byte ranges of content items, it decides which chunks
// to fetch from whom and reacts to what arrives. It never does I/O: the daemon (Boost.Asio), the ns-3
// simulator and the deterministic harness drive this same state machine, quinn-proto style.
//
// Four kinds of methods:
//   commands  read(), release_read(), serve(), serve_done()
//   inputs    handle_fetch_data/complete/failed(), handle_providers(), handle_membership(),
//             handle_verify_result(), handle_timeout()
//   outputs   poll_action(), poll_event(), next_timeout()
//   getters   stats(), is_banned(), ...
//
// Poll order. After every command or input the driver:
//   1. drains poll_action() and performs each action (start or cancel an HTTP range request, pass a routing
//      request to the DHT, hash an assembled blob),
//   2. re-arms its single timer to next_timeout() (nullopt = nothing scheduled),
//   3. drains poll_event() and delivers each event (stream ready bytes to the client, answer a peer, log).
// When the timer fires it calls handle_timeout(now) and repeats. Extra or early handle_timeout() calls are
// no-ops; `now` must never go backwards. Actions and events may be produced by any call, including commands.
// Both queues are bounded by the entities they describe (fetches, reads, serves, lookups are all capped).
//
// How a chunk is found (the design, in order of preference):
//   * the local chunk store (reads of present chunks complete at once and count as cache bytes);
//   * a *holder*: a peer the DHT lists as providing the whole blob, or (after a chunk lookup) the chunk. The
//     first read of an item waits for its blob lookup (at most lookup_timeout) so that a warm item is pulled
//     from holders and not through cold owners. Holders compete on spare capacity: the engine tracks
//     in-flight bytes, observed speed and first-byte latency per peer and picks the smallest estimated
//     completion time; when every holder is at per_peer_fetches_max the job parks until any holder frees a
//     slot;
//   * when no holder is known (a cold item), the chunk's *owner*: the highest-ranked live member by
//   rendezvous
//     hashing of the chunk key over the membership (rendezvous.h), asked with fetch-through semantics. The
//     owner serves the chunk if it holds a copy it may serve on, otherwise fetches it once from the upstream
//     (single-flight: every concurrent ask waits on the same fetch) and then serves everyone. A cold pull by
//     N nodes thus costs about one upstream copy of each chunk, where designs that advertise only complete
//     content cost N. An owner answers a fetch-through at once (ServePending: the adapter sends response
//     headers) and delivers when its fetch lands, so a busy owner behind a saturated upstream is not mistaken
//     for a dead one (which would send every requester to the upstream exactly when it is overloaded);
//   * when the owner fails, does not answer within owner_answer_timeout, does not deliver within
//     owner_fetch_timeout, or leaves the member list, the next-ranked owner (owner_ranks_max of them), which
//     every node picks alike, so the upstream is still asked about once per chunk. An owner that refuses
//     (at serves_inflight_max) is busy, not failed: it is asked again after a backoff;
//   * the owner path, when this node ranks first: a DHT lookup of the chunk (another node may hold it after a
//     membership change), then the upstream. The upstream is always the last resort, so a swarm never fails a
//     pull the upstream alone would have served.
// Serve-driven fetches (other nodes wait on them) go ahead of demand and are not limited by
// fetches_inflight_max, only by per-source limits: otherwise owners whose slots are all taken by their own
// fetch-through asks would deadlock a synchronised cold pull.

// Membership comes in through handle_membership() rather than from the DHT's routing table: rendezvous
// hashing needs every node to see (nearly) the same list, which a Kademlia table is not. In production the
// list is the bootstrap provider's (DNS of a headless Service listing all pods); in the harness it is the
// live node list.
//
// Routing. The engine does not depend on the DHT: it emits FindProviders / Provide / Withdraw actions and
// takes handle_providers(now, key, providers). DHT cost per content item: one FindProviders of the blob key
// per node that reads it, one Provide of the blob key per node once it holds the verified blob, and per chunk
// only on the owner path: a FindProviders when the owner reads its own chunk (skipped once others wait on
// it), and a Provide of the chunk key by whoever fetched it from the upstream. That is about one provide and
// at most one lookup per chunk for the whole cluster, not per node: a 100-node cold pull of a 512-chunk blob
// measured ~470 DHT datagrams per node in the harness (bootstrap excluded). Chunks a node received from peers
// are not advertised one by one: until the blob verifies they are unverified (see provenance below), and
// afterwards the blob record covers them.
//
// Integrity and provenance. A chunk is *trusted* when it came from the upstream, when its content item has no
// digest (file blobs: nothing to verify against), or once its blob verified. Only trusted chunks are served
// to peers, so corruption does not spread through honest relays; for the same reason an owner fetching for
// others takes a digest-addressed chunk from the upstream, never from another peer. When every chunk of a
// digest-addressed item is present the engine asks the adapter to hash it (VerifyContent). On a mismatch it
// reports IntegrityFailure and repairs in rounds, never reporting the blob complete until it verifies:
//   round 1: one sample chunk per supplier (its lowest-index chunk, so every node samples the same chunks and
//            their refetches share single-flight fetches) is refetched from a different source and the
//            adapter's fingerprints of the two copies are compared; where they differ the upstream
//            arbitrates, the supplier whose copy differs from the upstream's is banned (only liars, not every
//            supplier), and every chunk a banned peer supplied is refetched elsewhere;
//   round 2: if the blob still does not verify (a liar that corrupts only some chunks), every chunk a peer
//            supplied is audited the same way;
//   round 3: every chunk not from the upstream is refetched from it, banning suppliers whose copy differs;
//   then:    the reads fail with kIntegrity (the upstream's bytes do not match the digest).
// Reads that stream bytes before verification (ReadProgress) stay open through the repair; an adapter that
// already sent unverified bytes to a client must abort that response when IntegrityFailure arrives.
//
// Hedging and resume. A plain (not fetch-through) fetch that has not produced its first byte within
// max(2 x p90 of observed first-byte latency, hedge_floor) gets a second request elsewhere (up to
// hedges_inflight_max hedges, beyond fetches_inflight_max); the first to produce a byte wins and the other is
// cancelled, so each chunk has one writer. A stream that breaks or stalls (stall_timeout) mid-chunk resumes
// from the last byte received at another source (the reservation keeps the bytes written so far).
//
// Prefetch. After the first read of a file blob, with prefetch_workers > 0, the remaining chunks are fetched
// in the background by at most prefetch_workers jobs, queued behind every demand read.
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "peerd/core/common/result.h"
#include "peerd/core/common/time.h"
#include "peerd/core/transfer/chunk_store.h"
#include "peerd/core/transfer/member_list.h"
#include "peerd/core/transfer/types.h"

namespace peerd::transfer {

struct EngineOptions {
  Peer self;
  uint64_t chunk_bytes = content::kDefaultChunkBytes;

  // Concurrency.
  uint32_t fetches_inflight_max = 32;  // demand and prefetch fetches (serve-driven fetches: see pump())
  uint32_t hedges_inflight_max = 8;    // hedge fetches, on top of fetches_inflight_max (they exist because
                                       // everything is busy, so they cannot wait for a free slot)
  uint32_t per_peer_fetches_max = 4;   // towards one peer
  uint32_t upstream_fetches_max = 16;  // towards the upstream
  uint32_t prefetch_workers = 0;       // background fetches of file blobs; 0 = no prefetch
  uint32_t read_window_chunks = 64;    // chunks ahead of a read's first missing chunk that get fetch jobs
  // A synchronised cold pull asks each chunk's owner to send it to every reader (N x chunk / B per chunk),
  // so the cluster's pace is the number of owners busy at once (about N x U / B are needed). Once members /
  // members_per_window_chunk reaches twice read_window_chunks the window widens to it (at most
  // read_window_chunks_max; 0 = never), and a widened window is taken in a per-node order (extend_window).
  // Measured in the simulator (1 GiB, U = 1 Gbit/s, B = 10 Gbit/s): at 1 000 nodes strict order and a spread
  // window finish alike; at 3 000 the spread cuts the pull from 30 s to about 17 s.
  uint32_t members_per_window_chunk = 8;
  uint32_t read_window_chunks_max = 1024;

  // Tables.
  uint32_t reads_inflight_max = 1024;
  uint32_t serves_inflight_max = 4096;
  uint32_t contents_max = 4096;
  uint32_t peers_max = 65536;    // peer records: sources and providers (members get one when first used)
  uint32_t members_max = 65536;  // entries of the member list (handle_membership)
  uint32_t providers_per_key_max = 32;
  uint32_t lookups_inflight_max = 256;
  uint32_t evictions_per_reserve_max = 64;

  // Source choice.
  uint32_t owner_ranks_max = 2;  // ranked owners tried (fetch-through) before the owner path
  // From this many members chunk owners have a bounded load (MemberList::balanced_top): plain rendezvous
  // leaves a few members with 3-6 chunks of a big blob, and each must send all of them to every reader.
  // Below it owners hold many chunks each anyway and keep plain rendezvous; 0 = never. Items of more than
  // MemberList::kBalancedChunksMax chunks keep plain rendezvous too.
  uint32_t balanced_owners_from_members = 1024;
  // An owner that refuses a fetch-through ask (503: at serves_inflight_max) is asked again after a backoff
  // (doubling from owner_busy_backoff, jittered per node) up to owner_busy_retries_max times before the
  // next owner: skipping it would move the same load to the next owner and then to the upstream, where
  // thousands of refused nodes cost the registry a copy each.
  uint32_t owner_busy_retries_max = 8;
  uint32_t fetch_attempts_max = 12;                      // sources tried for one chunk before its reads fail
  uint32_t peer_failures_before_ban = 2;                 // consecutive broken/stalled fetches
  uint64_t peer_bytes_per_second_assumed = 100'000'000;  // speed of a peer never measured
  bool lookup_before_upstream = true;     // the owner path asks the DHT for the chunk before the upstream
  bool advertise_upstream_chunks = true;  // Provide the chunk key after fetching it from the upstream

  // Time.
  // An owner asked to fetch through answers (headers) at once and delivers when its fetch lands. The answer
  // must come within max(owner_answer_timeout, owner_answer_p90_factor x p90 of observed answer latency); the
  // first body byte within owner_fetch_timeout of the request (the owner may wait on a saturated upstream).
  Duration owner_answer_timeout = Duration::seconds(1);
  uint32_t owner_answer_p90_factor = 4;
  Duration owner_fetch_timeout = Duration::seconds(30);
  Duration owner_busy_backoff = Duration::milliseconds(250);
  Duration stall_timeout = Duration::seconds(3);  // no byte for this long: the fetch failed, resume elsewhere
  Duration departed_silence_timeout = Duration::milliseconds(500);  // see handle_membership
  Duration hedge_floor = Duration::milliseconds(20);  // hedge no sooner than this, however fast peers are
  bool hedge_enabled = true;
  Duration ban_duration = Duration::seconds(60);
  Duration lookup_timeout = Duration::seconds(1);  // a DHT answer later than this is not waited for
  Duration providers_ttl = Duration::seconds(30);  // blob providers are looked up again after this
  uint32_t first_byte_samples_max = 128;           // window of the p90 estimate
};

// ---- Actions (poll_action) ----

// Start an HTTP range request for bytes [begin_in_chunk, end_in_chunk) of `chunk` (absolute offsets:
// chunk.offset() + begin ...). Report bytes with handle_fetch_data (0 bytes = response headers arrived), then
// handle_fetch_complete or handle_fetch_failed. The adapter writes the bytes into the reserved chunk in the
// store at their offsets. fetch_through asks the peer to fetch the chunk from the upstream if it lacks it.
struct StartFetch {
  FetchId fetch;
  Source source;
  ChunkKey chunk;
  uint64_t content_bytes =
      0;  // size of the whole item (peers need it for the last chunk, the upstream doesn't)
  uint64_t begin_in_chunk = 0;
  uint64_t end_in_chunk = 0;
  bool fetch_through = false;
};
// Abort the request; no further input about it is expected (late inputs are ignored).
struct CancelFetch {
  FetchId fetch;
};
// Routing requests: answer FindProviders with handle_providers(now, key, providers) (an empty list is an
// answer).
struct FindProviders {
  NodeId key;
};
struct Provide {
  NodeId key;
};
struct Withdraw {
  NodeId key;
};
// Every chunk of this digest-addressed item is in the store: hash them in order and answer with
// handle_verify_result(now, content, digest matched).
struct VerifyContent {
  ContentId content;
};
using Action = std::variant<StartFetch, CancelFetch, FindProviders, Provide, Withdraw, VerifyContent>;

// ---- Events (poll_event) ----

// The first `ready_bytes` bytes of the read are in the store (pinned until release_read).
struct ReadProgress {
  ReadId read;
  uint64_t ready_bytes = 0;
};
// All bytes are ready. `verified`: the item's digest was checked (reads covering a whole blob wait for it;
// partial reads of a blob complete unverified unless it was verified before).
struct ReadComplete {
  ReadId read;
  bool verified = false;
};
struct ReadFailed {
  ReadId read;
  ReadFailure reason = ReadFailure::kNoSource;
};
// A serve() can be answered from the store (the chunk is pinned until serve_done).
struct ServeReady {
  ServeId serve;
};
// A fetch-through serve() is being fetched for the peer: send the response headers now (so the peer knows
// this owner is alive and working); ServeReady or ServeMiss follows.
struct ServePending {
  ServeId serve;
};
// A serve() cannot be answered: reply 404. serve_done is not needed.
struct ServeMiss {
  ServeId serve;
};
// The assembled item did not match its digest. `round` is the repair round that starts now (1-3; 4 means
// giving up: the reads fail). `suppliers` are the peers whose chunks are being rechecked.
struct IntegrityFailure {
  ContentId content;
  uint32_t round = 1;
  std::vector<NodeId> suppliers;
};
struct PeerBanned {
  Peer peer;
  Instant until;
  BanReason reason = BanReason::kRepeatedFailures;
};
struct ContentVerified {
  ContentId content;
};
// A chunk became available. `wait` runs from when a read or serve first needed it, `fetch` from its first
// request (for latency reports).
struct ChunkReady {
  ContentId content;
  uint64_t index = 0;
  Duration wait;
  Duration fetch;
  bool from_upstream = false;
};
using Event = std::variant<ReadProgress, ReadComplete, ReadFailed, ServeReady, ServePending, ServeMiss,
                           IntegrityFailure, PeerBanned, ContentVerified, ChunkReady>;

// A peer's request for a chunk (from the wire). `content_bytes` is the whole item's size (for the last
// chunk's length when fetching through).
struct ServeRequest {
  Peer from;
  ChunkKey chunk;
  uint64_t content_bytes = 0;
  bool fetch_through = false;
};

struct EngineStats {
  // Bytes of reads by where they came from.
  uint64_t bytes_from_cache = 0;     // present in the store when the read needed them
  uint64_t bytes_from_peers = 0;     // every byte received from peers (serves' fetches included)
  uint64_t bytes_from_upstream = 0;  // every byte received from the upstream

  uint64_t reads_started = 0;
  uint64_t reads_completed = 0;
  uint64_t reads_failed = 0;
  uint64_t reads_refused = 0;

  uint64_t fetches_started = 0;
  uint64_t fetches_to_upstream = 0;
  uint64_t fetches_fetch_through = 0;
  uint64_t fetches_completed = 0;
  uint64_t fetches_failed = 0;
  uint64_t fetches_cancelled = 0;
  uint64_t hedges_started = 0;
  uint64_t hedges_won = 0;
  uint64_t resumes = 0;  // fetches that continued a chunk from a byte > 0
  uint64_t owner_timeouts = 0;
  uint64_t owner_busy_retries = 0;  // fetch-through asks repeated after the owner refused (busy)
  uint64_t stalls = 0;

  uint64_t serves_ready = 0;
  uint64_t serves_missed = 0;
  uint64_t serves_joined = 0;   // fetch-through serves that waited on a fetch already running
  uint64_t serves_refused = 0;  // ServeError
  uint64_t bytes_served = 0;    // as reported by serve_done

  uint64_t lookups_started = 0;
  uint64_t lookups_timed_out = 0;
  uint64_t lookups_refused = 0;  // lookups_inflight_max
  uint64_t provides = 0;
  uint64_t withdraws = 0;

  uint64_t peers_banned = 0;
  uint64_t verifications = 0;
  uint64_t integrity_failures = 0;
  uint64_t chunks_audited = 0;
  uint64_t chunks_arbitrated = 0;
  uint64_t evictions = 0;
  uint64_t store_full = 0;

  uint64_t stale_inputs = 0;         // inputs about fetches/serves/lookups that no longer exist
  uint64_t protocol_violations = 0;  // e.g. more bytes than requested
  uint64_t providers_dropped = 0;    // providers_per_key_max / peers_max
};

class Engine {
 public:
  Engine(EngineOptions options, ChunkStore& store);

  // ---- Commands ----

  // Starts reading [offset, offset + length) of an item. Errors are typed; an accepted read ends with exactly
  // one ReadComplete or ReadFailed, and holds its chunks pinned until release_read.
  Result<ReadId, ReadError> read(Instant now, const ContentRef& ref, uint64_t offset, uint64_t length);
  // The adapter is done with a read (completed, failed or abandoned by the client): unpins its chunks and
  // cancels the fetches only it needed. Stale ids are ignored.
  void release_read(Instant now, ReadId read);

  // A peer asks for a chunk. Always followed by exactly one ServeReady or ServeMiss event (possibly later,
  // when fetching through). After ServeReady the adapter streams the chunk and calls serve_done.
  Result<ServeId, ServeError> serve(Instant now, const ServeRequest& request);
  // The answer was sent (or the peer went away): unpins the chunk. Also cancels a serve still waiting.
  void serve_done(Instant now, ServeId serve, uint64_t bytes_sent);

  // ---- Inputs ----

  void handle_fetch_data(Instant now, FetchId fetch, uint64_t bytes);
  void handle_fetch_complete(Instant now, FetchId fetch, ChunkFingerprint fingerprint);
  void handle_fetch_failed(Instant now, FetchId fetch, FetchFailure failure);
  void handle_providers(Instant now, const NodeId& key, std::span<const Peer> providers);
  // The full list of live nodes (this node may or may not be in it). Kept as a sorted copy, about 60 bytes a
  // member (a member gets a peer record only once fetched from); at most members_max entries, the rest
  // counted in providers_dropped.
  void handle_membership(Instant now, std::span<const Peer> members);
  // The same with a list built once and shared by engines driven from one thread (member_list.h): no copy,
  // and each chunk's owners are ranked once for all of them. Same outcome as the span overload given
  // members->peers(); a list without this node or longer than members_max is copied through that overload.
  void handle_membership(Instant now, std::shared_ptr<const MemberList> members);
  void handle_verify_result(Instant now, const ContentId& content, bool digest_matched);
  void handle_timeout(Instant now);

  // ---- Outputs ----

  std::optional<Action> poll_action();
  std::optional<Event> poll_event();
  std::optional<Instant> next_timeout();

  // ---- Getters ----

  const EngineStats& stats() const { return stats_; }
  const EngineOptions& options() const { return options_; }
  bool is_banned(Instant now, const NodeId& peer) const;
  // The owner ranking this node currently computes for a chunk (tests and diagnostics): balanced for a
  // content it knows once the cluster is large enough (EngineOptions::balanced_owners_from_members).
  std::vector<NodeId> owners_of(const ChunkKey& chunk, size_t count) const;
  size_t fetches_active() const { return fetches_active_; }
  size_t reads_active() const { return reads_active_; }
  size_t jobs_active() const { return jobs_active_; }
  size_t members() const { return members_->size(); }
  // read_window_chunks widened with the member count (see members_per_window_chunk).
  uint64_t read_window() const;
  // max(2 x p90 first-byte latency, hedge_floor).
  Duration hedge_delay();
  // max(owner_answer_timeout, owner_answer_p90_factor x p90 fetch-through answer latency).
  Duration owner_answer_timeout();
  // True when nothing is in flight: no fetches, jobs, lookups or queued outputs.
  bool idle() const;
  // One line of internal counts (jobs by state, fetches, lookups) for failure messages.
  std::string debug_summary() const;

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  static constexpr uint32_t kUpstream = 0;  // peer index of the upstream pseudo-source
  static constexpr size_t kSuppliersMax = 3;
  static constexpr size_t kOwnerRanksMax = 4;
  static constexpr uint32_t kParkedOnHolders = UINT32_MAX - 1;

  // A slab of records addressed by 32-bit slots, with generations so 64-bit handles detect reuse.
  template <typename T>
  struct Slab {
    std::vector<T> items;
    std::vector<uint32_t> generations;
    std::vector<uint32_t> free_slots;
    std::vector<bool> live;

    uint32_t allocate() {
      uint32_t slot;
      if (!free_slots.empty()) {
        slot = free_slots.back();
        free_slots.pop_back();
        items[slot] = T{};
      } else {
        slot = static_cast<uint32_t>(items.size());
        items.emplace_back();
        generations.push_back(0);
        live.push_back(false);
      }
      ++generations[slot];
      live[slot] = true;
      return slot;
    }
    void release(uint32_t slot) {
      live[slot] = false;
      free_slots.push_back(slot);
    }
    uint64_t handle(uint32_t slot) const { return (uint64_t{generations[slot]} << 32) | slot; }
    // The slot a handle names, if still live.
    std::optional<uint32_t> resolve(uint64_t handle) const {
      const uint32_t slot = static_cast<uint32_t>(handle);
      if (slot >= items.size() || !live[slot] || generations[slot] != static_cast<uint32_t>(handle >> 32)) {
        return std::nullopt;
      }
      return slot;
    }
    T& operator[](uint32_t slot) { return items[slot]; }
    const T& operator[](uint32_t slot) const { return items[slot]; }
  };

  // A FIFO of (job slot, job generation), validated lazily by whoever pops it. Unlike std::deque, which
  // allocates ~600 bytes even when empty, it costs nothing until used: there is one per peer record, and a
  // simulation runs an engine per node.
  struct JobFifo {
    std::vector<std::pair<uint32_t, uint32_t>> items;
    size_t head = 0;  // entries before it were popped

    bool empty() const { return head == items.size(); }
    const std::pair<uint32_t, uint32_t>& front() const { return items[head]; }
    void pop_front() { ++head; }
    void emplace_front(uint32_t slot, uint32_t generation) {
      if (head == 0) {
        items.emplace(items.begin(), slot, generation);
      } else {
        items[--head] = {slot, generation};
      }
    }
    void emplace_back(uint32_t slot, uint32_t generation) {
      // Drop the popped prefix once it is half the storage: amortised O(1), memory bounded by the queue.
      if (2 * head >= items.size()) {
        items.erase(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(head));
        head = 0;
      }
      items.emplace_back(slot, generation);
    }
  };

  struct PeerRecord {
    Peer peer;
    uint32_t fetches_inflight = 0;
    uint64_t bytes_inflight = 0;
    double bytes_per_second = 0;    // EWMA of completed fetches; 0 = never measured
    double first_byte_seconds = 0;  // EWMA of first-byte latency of plain fetches; 0 = never measured
    Instant banned_until = Instant::from_micros(INT64_MIN);
    uint32_t consecutive_failures = 0;
    JobFifo parked;
    uint32_t woken = 0;        // parked jobs woken for a free slot here and still queued
    bool wake_listed = false;  // in wake_list_
  };

  struct Suppliers {
    std::array<uint32_t, kSuppliersMax> peers{};
    uint8_t count = 0;
    bool any_peer() const;
    bool contains(uint32_t peer) const;
    void add(uint32_t peer);
  };

  enum class AuditStage : uint8_t {
    kNone,
    kAudit,      // rounds 1-2: refetch from a source other than the suppliers, compare fingerprints
    kArbitrate,  // the two copies differ: refetch from the upstream, ban whichever differs from it
    kUpstream,   // round 3: refetch from the upstream, ban suppliers whose copy differs
    kRefetch,    // supplied by a peer found lying: refetch elsewhere, nothing to compare
  };

  struct ChunkInfo {
    bool present = false;
    bool trusted = false;
    AuditStage audit = AuditStage::kNone;
    uint32_t job = kNone;
    Suppliers suppliers;
    ChunkFingerprint fingerprint = 0;
    // The copies being compared during a repair.
    Suppliers original_suppliers;
    ChunkFingerprint original_fingerprint = 0;
    Suppliers audit_suppliers;
    ChunkFingerprint audit_fingerprint = 0;
    // Whether this node is among the first owners (fetch-through asks are accepted), cached per membership.
    uint64_t owner_check_generation = 0;
    bool owner_candidate = false;
  };

  enum class Verify : uint8_t { kUnverified, kVerifying, kVerified };

  struct ContentState {
    ContentId id;
    NodeId dht_id;
    uint64_t hash64 = 0;
    uint64_t size_bytes = 0;
    uint64_t chunk_count = 0;
    bool upstream_allowed = true;
    bool digest = false;
    std::vector<ChunkInfo> chunks;
    uint64_t chunks_present = 0;
    Verify verify = Verify::kUnverified;
    uint32_t repair_round = 0;
    uint32_t repairs_pending = 0;
    std::vector<uint32_t> blob_providers;
    Instant blob_providers_at;
    bool blob_lookup_pending = false;
    bool blob_looked_up = false;
    bool blob_advertised = false;
    std::vector<uint32_t> reads;  // read slots
    uint32_t jobs = 0;
    uint32_t serves = 0;
    bool prefetch = false;
    uint64_t prefetch_next = 0;
    uint32_t prefetch_active = 0;
    std::vector<std::pair<uint32_t, uint32_t>> waiting_for_blob_lookup;  // (job slot, generation)
    // Jobs waiting for a free slot at any holder of this item (job slot, generation), and how many of them
    // were woken and are still queued.
    JobFifo parked_for_holders;
    uint32_t woken = 0;
    Instant last_used;
  };

  struct ReadState {
    uint32_t content = kNone;
    uint64_t offset = 0;
    uint64_t length = 0;
    uint64_t first = 0;       // first chunk index
    uint64_t last = 0;        // last chunk index (inclusive)
    uint64_t cursor = 0;      // first chunk not yet ready (pinned below it)
    uint64_t window_end = 0;  // chunks below this have been requested (job or present)
    uint64_t reported_bytes = 0;
    bool whole = false;     // covers the whole item
    bool finished = false;  // ReadComplete or ReadFailed sent
  };

  enum class JobState : uint8_t { kQueued, kParked, kLookup, kActive, kIdle, kBackoff };
  enum class Priority : uint8_t { kServe = 0, kDemand = 1, kRepair = 1, kPrefetch = 2 };

  struct Job {
    uint32_t content = kNone;
    uint64_t index = 0;
    uint64_t length_bytes = 0;
    Priority priority = Priority::kDemand;
    JobState state = JobState::kIdle;
    bool owner_mode = false;     // fetching for a fetch-through serve: never ask another owner
    bool upstream_only = false;  // owner fetches of digest content, repair arbitration, round 3
    bool reserved = false;
    bool looked_up = false;
    bool prefetch = false;
    bool repair = false;
    uint32_t read_waiters = 0;
    std::vector<uint32_t> serve_waiters;  // serve slots
    std::array<uint32_t, kOwnerRanksMax> owners{};
    uint32_t owner_count = 0;
    uint64_t owners_generation = 0;
    uint32_t owner_rank_next = 0;
    std::vector<uint32_t> excluded;
    std::vector<uint32_t> chunk_providers;
    std::optional<NodeId> dht_key;  // the chunk's DHT key, hashed once (lookups and provides need it)
    uint64_t received_bytes = 0;    // contiguous bytes written so far: where the next fetch resumes
    Suppliers suppliers;
    uint32_t fetch_primary = kNone;
    uint32_t fetch_hedge = kNone;
    uint32_t attempts = 0;
    uint32_t owner_busy_refusals = 0;
    uint64_t sequence = 0;  // creation order (+ dispatch delay): FIFO within a priority, kept when it wakes
    uint64_t queue_key = 0;
    uint32_t parked_on = kNone;      // a peer, or kParkedOnHolders
    uint32_t woken_from = kNone;     // queued because a slot freed at this peer (see PeerRecord::woken)
    bool woken_for_holders = false;  // queued because a holder of its item had a free slot
    uint64_t woken_epoch = 0;        // the pump() that last woke it (a job is woken once per pump)
    Instant created_at;
    std::optional<Instant> first_started_at;
  };

  struct FetchState {
    uint32_t job = kNone;
    uint32_t source = kNone;
    uint64_t begin = 0;
    uint64_t end = 0;
    uint64_t received = 0;
    bool fetch_through = false;
    bool first_byte_seen = false;
    bool hedge = false;
    bool hedge_considered = false;  // the hedge deadline passed (a hedge started, or no source was free)
    bool demand = false;            // counts against fetches_inflight_max (serve-driven fetches do not)
    uint32_t owner_rank = kNone;    // rank this fetch asked, if it asked an owner
    Instant started_at;
    Instant first_byte_at;
    Instant last_progress_at;
  };

  struct ServeState {
    uint32_t content = kNone;
    uint64_t index = 0;
    uint32_t job = kNone;
    bool ready = false;
  };

  enum class LookupKind : uint8_t { kBlob, kChunk };
  struct LookupState {
    LookupKind kind = LookupKind::kBlob;
    NodeId key;
    uint32_t content = kNone;
    uint32_t content_generation = 0;
    uint32_t job = kNone;
    uint32_t job_generation = 0;
    Instant deadline;
  };

  enum class TimerKind : uint8_t { kFetch, kLookup, kRetry };
  struct Timer {
    Instant at;
    TimerKind kind = TimerKind::kFetch;
    uint32_t slot = 0;
    uint32_t generation = 0;
    bool operator>(const Timer& other) const { return at > other.at; }
  };

  enum class Candidate : uint8_t { kNone, kStarted, kParked };

  // Peers.
  uint32_t intern_peer(const Peer& peer);
  uint32_t member_peer(size_t position);
  const Peer* find_member(const NodeId& id) const;
  void adopt_membership(Instant now, std::shared_ptr<const MemberList> members);
  bool banned(Instant now, uint32_t peer) const { return now < peers_[peer].banned_until; }
  bool has_capacity(uint32_t peer) const;
  double estimated_seconds(uint32_t peer, uint64_t bytes) const;
  void ban(Instant now, uint32_t peer, BanReason reason);
  void note_failure(Instant now, uint32_t peer, FetchFailure failure);
  void wake_parked(uint32_t peer);
  bool run_wakes(Instant now);

  // Contents.
  std::optional<uint32_t> find_content(const ContentId& id) const;
  Result<uint32_t, ReadError> content_for(Instant now, const ContentId& id, uint64_t size_bytes,
                                          bool upstream_allowed);
  bool forget_idle_content();
  ChunkKey chunk_key(const ContentState& content, uint64_t index) const;
  uint64_t chunk_length(const ContentState& content, uint64_t index) const;
  bool servable(const ContentState& content, const ChunkInfo& chunk) const;
  void maybe_lookup_blob(Instant now, uint32_t content);
  void maybe_verify(uint32_t content);
  void drop_chunk(uint32_t content, uint64_t index);

  // Reads.
  void extend_window(Instant now, uint32_t read);
  void advance_read(Instant now, uint32_t read);
  void advance_reads_of(Instant now, uint32_t content);
  void finish_read(uint32_t read, std::optional<ReadFailure> failure);
  void fail_reads_of(uint32_t content, ReadFailure failure);

  // Jobs.
  // dispatch_delay: queue positions this job goes behind jobs created after it (see extend_window).
  uint32_t ensure_job(Instant now, uint32_t content, uint64_t index, Priority priority,
                      uint64_t dispatch_delay = 0);
  void enqueue(uint32_t job);
  void dequeue(uint32_t job);
  bool job_wanted(const Job& job) const;
  void release_job_if_unwanted(uint32_t job);
  void destroy_job(uint32_t job);
  void pump(Instant now);
  void dispatch(Instant now, uint32_t job);
  void compute_owners(Job& job);
  // The owners of a content's chunk, best first (balanced or plain rendezvous: see EngineOptions).
  size_t owner_positions(const ContentState& content, uint64_t index, std::span<uint32_t> out) const;
  bool balanced_owners() const {
    return options_.balanced_owners_from_members != 0 &&
           members_->size() >= options_.balanced_owners_from_members;
  }
  Candidate try_peers(Instant now, uint32_t job, uint32_t avoid, bool hedge);
  void owner_path(Instant now, uint32_t job);
  bool reserve_for(Instant now, uint32_t job);
  uint32_t start_fetch(Instant now, uint32_t job, uint32_t source, bool fetch_through, uint32_t owner_rank,
                       bool hedge);
  void park(uint32_t job, uint32_t peer);
  void park_for_holders(uint32_t job);
  uint32_t holder_slots_free(Instant now, const ContentState& content) const;
  void fail_job(Instant now, uint32_t job, ReadFailure failure);
  void complete_job(Instant now, uint32_t job, ChunkFingerprint fingerprint);
  void feed_prefetch(Instant now, uint32_t content);
  const NodeId& job_dht_key(Job& job);
  bool accepts_fetch_through(ContentState& content, uint64_t index);
  void become_owner_fetcher(Job& job);

  // Fetches.
  void end_fetch(uint32_t fetch);
  void cancel_fetch(uint32_t fetch);
  void fetch_failed(Instant now, uint32_t fetch, FetchFailure failure, bool timed_out);
  void arm_fetch_timer(uint32_t fetch);
  Instant fetch_deadline(const FetchState& fetch);
  void on_fetch_timer(Instant now, uint32_t fetch);

  // Repairs.
  void start_repair(Instant now, uint32_t content);
  void audit_chunk_done(Instant now, uint32_t content, uint64_t index);
  void repair_chunk(Instant now, uint32_t content, uint64_t index, AuditStage stage);
  void refetch_supplied_by(Instant now, uint32_t content, uint32_t peer);

  // Lookups.
  bool start_lookup(Instant now, LookupKind kind, const NodeId& key, uint32_t content, uint32_t job);
  void finish_lookup(Instant now, uint32_t lookup, std::span<const Peer> providers);

  // Serves.
  void answer_serve(uint32_t serve, bool ready);

  void push_timer(Instant at, TimerKind kind, uint32_t slot, uint32_t generation);
  bool timer_live(const Timer& timer) const;  // its fetch, lookup or backed-off job still exists

  EngineOptions options_;
  ChunkStore& store_;
  EngineStats stats_;

  std::deque<Action> actions_;
  std::deque<Event> events_;

  std::vector<PeerRecord> peers_;
  std::unordered_map<NodeId, uint32_t, NodeIdHash> peer_index_;
  uint32_t self_peer_ = kNone;
  uint64_t self_hash64_ = 0;  // id_hash64 of options_.self.id

  // The member list, sorted by id, apart from peers_: an engine ranks every member for every chunk but
  // fetches from few of them, and a peer record per member made 10 000 simulated engines need ~90 GB.
  // The list (and its rendezvous memo) may be shared with other engines.
  std::shared_ptr<const MemberList> members_;
  uint64_t membership_generation_ = 1;

  Slab<ContentState> contents_;
  std::map<ContentId, uint32_t> content_index_;
  Slab<ReadState> reads_;
  Slab<Job> jobs_;
  Slab<FetchState> fetches_;
  Slab<ServeState> serves_;
  Slab<LookupState> lookups_;
  std::unordered_map<NodeId, uint32_t, NodeIdHash> lookup_index_;

  std::set<std::pair<uint64_t, uint32_t>> queue_;  // (priority << 56 | sequence, job slot)
  std::vector<uint32_t> wake_list_;                // peers with parked jobs and possibly free slots
  std::vector<uint32_t> holder_parked_contents_;   // contents with jobs parked for holders
  uint64_t queue_sequence_ = 0;

  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;

  // A bounded window of latency samples with a p90 re-estimated every few samples (keeps events O(1)).
  struct LatencyWindow {
    std::vector<Duration> samples;
    size_t next = 0;
    size_t since_estimate = 0;
    Duration p90;
    bool valid = false;

    void add(Duration sample, size_t samples_max);
    std::optional<Duration> estimate_p90();
  };
  LatencyWindow first_byte_;          // plain fetches from peers: drives hedging
  LatencyWindow through_first_byte_;  // fetch-through requests to owners: drives the owner timeout

  size_t fetches_active_ = 0;
  size_t demand_fetches_active_ = 0;
  size_t hedges_active_ = 0;
  size_t reads_active_ = 0;
  size_t jobs_active_ = 0;
  size_t serves_active_ = 0;
  size_t lookups_active_ = 0;
  bool pumping_ = false;
  uint64_t pump_epoch_ = 0;
};

}  // namespace peerd::transfer
