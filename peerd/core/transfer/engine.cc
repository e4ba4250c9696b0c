#include "peerd/core/transfer/engine.h"

#include <algorithm>
#include <cassert>

#include "peerd/core/transfer/rendezvous.h"

namespace peerd::transfer {

// ---- describe() ----

std::string_view describe(ReadError error) {
  switch (error) {
    case ReadError::kEmptyRange:
      return "empty range";
    case ReadError::kBeyondEnd:
      return "range beyond the end of the content";
    case ReadError::kUnknownSize:
      return "content size unknown";
    case ReadError::kSizeMismatch:
      return "content size contradicts the known size";
    case ReadError::kTooManyReads:
      return "too many reads in flight";
    case ReadError::kTooManyContents:
      return "too many content items tracked";
  }
  return "unknown";
}

std::string_view describe(ReadFailure failure) {
  switch (failure) {
    case ReadFailure::kNoSource:
      return "no source has the chunk";
    case ReadFailure::kIntegrity:
      return "content does not match its digest";
    case ReadFailure::kStoreFull:
      return "chunk store full";
  }
  return "unknown";
}

std::string_view describe(ServeError error) {
  switch (error) {
    case ServeError::kTooManyServes:
      return "too many serves in flight";
    case ServeError::kBadRequest:
      return "bad chunk request";
  }
  return "unknown";
}

std::string_view describe(FetchFailure failure) {
  switch (failure) {
    case FetchFailure::kUnreachable:
      return "unreachable";
    case FetchFailure::kMiss:
      return "not found";
    case FetchFailure::kRefused:
      return "refused";
    case FetchFailure::kBroken:
      return "broken stream";
    case FetchFailure::kUpstreamError:
      return "upstream error";
  }
  return "unknown";
}

std::string_view describe(BanReason reason) {
  switch (reason) {
    case BanReason::kUnreachable:
      return "unreachable";
    case BanReason::kRepeatedFailures:
      return "repeated failures";
    case BanReason::kCorruptData:
      return "corrupt data";
  }
  return "unknown";
}

// ---- Suppliers ----

bool Engine::Suppliers::any_peer() const {
  for (uint8_t i = 0; i < count; ++i) {
    if (peers[i] != kUpstream) return true;
  }
  return false;
}

bool Engine::Suppliers::contains(uint32_t peer) const {
  for (uint8_t i = 0; i < count; ++i) {
    if (peers[i] == peer) return true;
  }
  return false;
}

void Engine::Suppliers::add(uint32_t peer) {
  if (contains(peer)) return;
  assert(count < kSuppliersMax);
  peers[count++] = peer;
}

// ---- Construction ----

Engine::Engine(EngineOptions options, ChunkStore& store) : options_(options), store_(store) {
  assert(options_.chunk_bytes > 0);
  assert(options_.fetches_inflight_max > 0 && options_.per_peer_fetches_max > 0);
  assert(options_.upstream_fetches_max > 0);
  assert(options_.first_byte_samples_max > 0);
  options_.owner_ranks_max = std::min<uint32_t>(options_.owner_ranks_max, kOwnerRanksMax);
  options_.read_window_chunks = std::max<uint32_t>(options_.read_window_chunks, 1);
  options_.peers_max = std::max<uint32_t>(options_.peers_max, 2);
  peers_.push_back(PeerRecord{});  // kUpstream
  self_peer_ = intern_peer(options_.self);
  self_hash64_ = id_hash64(options_.self.id);
  members_ = MemberList::build({}, 0);
}

// ---- Peers ----

uint32_t Engine::intern_peer(const Peer& peer) {
  if (const auto it = peer_index_.find(peer.id); it != peer_index_.end()) {
    peers_[it->second].peer.endpoint = peer.endpoint;  // a node may come back at another address
    return it->second;
  }
  if (peers_.size() >= options_.peers_max) return kNone;
  const auto index = static_cast<uint32_t>(peers_.size());
  PeerRecord record;
  record.peer = peer;
  peers_.push_back(std::move(record));
  peer_index_.emplace(peer.id, index);
  return index;
}

// A member's peer record, created when the member is first ranked as an owner. An existing record keeps its
// address: handle_membership updated it, and a provider answer since then is newer.
uint32_t Engine::member_peer(size_t position) {
  const Peer& member = (*members_)[position];
  if (const auto it = peer_index_.find(member.id); it != peer_index_.end()) return it->second;
  return intern_peer(member);
}

const Peer* Engine::find_member(const NodeId& id) const {
  return members_->find(id);
}

bool Engine::has_capacity(uint32_t peer) const {
  const uint32_t limit = peer == kUpstream ? options_.upstream_fetches_max : options_.per_peer_fetches_max;
  return peers_[peer].fetches_inflight < limit;
}

double Engine::estimated_seconds(uint32_t peer, uint64_t bytes) const {
  const PeerRecord& record = peers_[peer];
  const double speed =
      record.bytes_per_second > 0 ? record.bytes_per_second : double(options_.peer_bytes_per_second_assumed);
  // Time to first byte plus time to drain what is queued there: a far or slow peer loses to a near one even
  // when both are idle.
  return record.first_byte_seconds + double(record.bytes_inflight + bytes) / speed;
}

void Engine::ban(Instant now, uint32_t peer, BanReason reason) {
  if (peer == kUpstream || peer == self_peer_) return;
  PeerRecord& record = peers_[peer];
  const bool already = banned(now, peer);
  record.banned_until = now + options_.ban_duration;
  record.consecutive_failures = 0;
  if (already) return;  // extended, already reported
  ++stats_.peers_banned;
  events_.push_back(PeerBanned{record.peer, record.banned_until, reason});
}

void Engine::note_failure(Instant now, uint32_t peer, FetchFailure failure) {
  if (peer == kUpstream) return;
  switch (failure) {
    case FetchFailure::kUnreachable:
      ban(now, peer, BanReason::kUnreachable);
      return;
    case FetchFailure::kBroken:
      if (++peers_[peer].consecutive_failures >= options_.peer_failures_before_ban) {
        ban(now, peer, BanReason::kRepeatedFailures);
      }
      return;
    case FetchFailure::kMiss:
    case FetchFailure::kRefused:
    case FetchFailure::kUpstreamError:
      return;
  }
}

void Engine::wake_parked(uint32_t peer) {
  PeerRecord& record = peers_[peer];
  if (record.wake_listed || record.parked.empty()) return;
  record.wake_listed = true;
  wake_list_.push_back(peer);
}

// Moves parked jobs back to the queue, as many per peer as it has slots not yet claimed by jobs woken
// earlier. A woken job may start elsewhere, leaving the slot free: the peer stays listed and pump() calls
// this again, so no job stays parked on an idle peer. Returns whether any job was woken.
bool Engine::run_wakes(Instant now) {
  bool woke = false;
  // Jobs parked for "any holder": as many as the holders have unclaimed slots.
  for (size_t i = 0; i < holder_parked_contents_.size();) {
    const uint32_t content_slot = holder_parked_contents_[i];
    ContentState& content = contents_[content_slot];
    const uint32_t free_total = holder_slots_free(now, content);
    uint32_t free_slots = free_total > content.woken ? free_total - content.woken : 0;
    while (free_slots > 0 && !content.parked_for_holders.empty()) {
      const auto [slot, generation] = content.parked_for_holders.front();
      content.parked_for_holders.pop_front();
      if (!jobs_.live[slot] || jobs_.generations[slot] != generation) continue;
      Job& job = jobs_[slot];
      if (job.state != JobState::kParked || job.parked_on != kParkedOnHolders) continue;
      if (job.woken_epoch == pump_epoch_) {
        // Woken once in this pump already and parked again (e.g. the free holder is one it excludes): it
        // waits for the next slot to free, which guarantees the pump ends.
        content.parked_for_holders.emplace_front(slot, generation);
        break;
      }
      job.woken_epoch = pump_epoch_;
      job.parked_on = kNone;
      job.woken_for_holders = true;
      ++content.woken;
      enqueue(slot);
      --free_slots;
      woke = true;
    }
    if (content.parked_for_holders.empty()) {
      holder_parked_contents_[i] = holder_parked_contents_.back();
      holder_parked_contents_.pop_back();
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < wake_list_.size();) {
    const uint32_t peer = wake_list_[i];
    PeerRecord& record = peers_[peer];
    const uint32_t limit = peer == kUpstream ? options_.upstream_fetches_max : options_.per_peer_fetches_max;
    const uint32_t claimed = record.fetches_inflight + record.woken;
    uint32_t free_slots = claimed < limit ? limit - claimed : 0;
    while (free_slots > 0 && !record.parked.empty()) {
      const auto [slot, generation] = record.parked.front();
      record.parked.pop_front();
      if (!jobs_.live[slot] || jobs_.generations[slot] != generation) continue;
      Job& job = jobs_[slot];
      if (job.state != JobState::kParked || job.parked_on != peer) continue;
      if (job.woken_epoch == pump_epoch_) {
        record.parked.emplace_front(slot, generation);
        break;
      }
      job.woken_epoch = pump_epoch_;
      job.parked_on = kNone;
      job.woken_from = peer;
      ++record.woken;
      enqueue(slot);
      --free_slots;
      woke = true;
    }
    if (record.parked.empty() || record.fetches_inflight >= limit) {
      record.wake_listed = false;
      wake_list_[i] = wake_list_.back();
      wake_list_.pop_back();
    } else {
      ++i;
    }
  }
  return woke;
}

bool Engine::is_banned(Instant now, const NodeId& peer) const {
  const auto it = peer_index_.find(peer);
  return it != peer_index_.end() && banned(now, it->second);
}

// ---- Contents ----

std::optional<uint32_t> Engine::find_content(const ContentId& id) const {
  const auto it = content_index_.find(id);
  if (it == content_index_.end()) return std::nullopt;
  return it->second;
}

Result<uint32_t, ReadError> Engine::content_for(Instant now, const ContentId& id, uint64_t size_bytes,
                                                bool upstream_allowed) {
  if (const auto existing = find_content(id)) {
    ContentState& content = contents_[*existing];
    if (content.size_bytes != size_bytes) return fail(ReadError::kSizeMismatch);
    content.upstream_allowed = upstream_allowed;
    content.last_used = now;
    return *existing;
  }
  if (content_index_.size() >= options_.contents_max && !forget_idle_content()) {
    return fail(ReadError::kTooManyContents);
  }
  const uint32_t slot = contents_.allocate();
  ContentState& content = contents_[slot];
  content.id = id;
  content.dht_id = id.dht_id();
  content.hash64 = id_hash64(content.dht_id);
  content.size_bytes = size_bytes;
  content.chunk_count = size_bytes == 0 ? 0 : (size_bytes - 1) / options_.chunk_bytes + 1;
  content.upstream_allowed = upstream_allowed;
  content.digest = id.is_blob();
  content.chunks.resize(content.chunk_count);
  content.last_used = now;
  // Chunks already on disk (from before a restart) count as trusted: the store keeps only chunks that were
  // trusted when committed or evicts the rest at startup (see chunk_store.h).
  for (uint64_t index = 0; index < content.chunk_count; ++index) {
    if (store_.has(chunk_key(content, index))) {
      content.chunks[index].present = true;
      content.chunks[index].trusted = true;
      ++content.chunks_present;
    }
  }
  content_index_.emplace(id, slot);
  return slot;
}

bool Engine::forget_idle_content() {
  uint32_t victim = kNone;
  for (const auto& [id, slot] : content_index_) {
    const ContentState& content = contents_[slot];
    if (!content.reads.empty() || content.jobs > 0 || content.serves > 0 || content.repairs_pending > 0 ||
        content.verify == Verify::kVerifying || content.blob_lookup_pending) {
      continue;
    }
    if (victim == kNone || content.last_used < contents_[victim].last_used) victim = slot;
  }
  if (victim == kNone) return false;
  content_index_.erase(contents_[victim].id);
  contents_.release(victim);
  return true;
}

ChunkKey Engine::chunk_key(const ContentState& content, uint64_t index) const {
  return ChunkKey{content.id, index, options_.chunk_bytes};
}

uint64_t Engine::chunk_length(const ContentState& content, uint64_t index) const {
  const uint64_t begin = index * options_.chunk_bytes;
  return std::min(options_.chunk_bytes, content.size_bytes - begin);
}

bool Engine::servable(const ContentState& content, const ChunkInfo& chunk) const {
  return chunk.present && chunk.audit == AuditStage::kNone && (chunk.trusted || !content.digest);
}

void Engine::maybe_lookup_blob(Instant now, uint32_t slot) {
  ContentState& content = contents_[slot];
  if (content.blob_lookup_pending) return;
  if (content.blob_looked_up && now - content.blob_providers_at < options_.providers_ttl) return;
  if (start_lookup(now, LookupKind::kBlob, content.dht_id, slot, kNone)) content.blob_lookup_pending = true;
}

void Engine::maybe_verify(uint32_t slot) {
  ContentState& content = contents_[slot];
  if (content.chunks_present != content.chunk_count || content.jobs > 0 || content.chunk_count == 0) return;
  if (!content.digest) {
    // Nothing to verify against: complete file blobs are advertised as they are.
    if (!content.blob_advertised) {
      content.blob_advertised = true;
      ++stats_.provides;
      actions_.push_back(Provide{content.dht_id});
    }
    return;
  }
  if (content.verify != Verify::kUnverified || content.repairs_pending > 0) return;
  content.verify = Verify::kVerifying;
  ++stats_.verifications;
  actions_.push_back(VerifyContent{content.id});
}

void Engine::drop_chunk(uint32_t slot, uint64_t index) {
  ContentState& content = contents_[slot];
  ChunkInfo& chunk = content.chunks[index];
  if (!chunk.present) return;
  chunk.present = false;
  chunk.trusted = false;
  --content.chunks_present;
  store_.evict(chunk_key(content, index));
  if (content.verify != Verify::kUnverified)
    content.verify = Verify::kUnverified;  // a pending result is stale
  if (content.blob_advertised) {
    content.blob_advertised = false;
    ++stats_.withdraws;
    actions_.push_back(Withdraw{content.dht_id});
  }
}

// ---- Reads ----

Result<ReadId, ReadError> Engine::read(Instant now, const ContentRef& ref, uint64_t offset, uint64_t length) {
  if (length == 0) {
    ++stats_.reads_refused;
    return fail(ReadError::kEmptyRange);
  }
  std::optional<uint64_t> size = ref.size_bytes;
  if (!size) {
    if (const auto known = find_content(ref.content)) size = contents_[*known].size_bytes;
  }
  if (!size) {
    ++stats_.reads_refused;
    return fail(ReadError::kUnknownSize);
  }
  if (offset >= *size || length > *size - offset) {
    ++stats_.reads_refused;
    return fail(ReadError::kBeyondEnd);
  }
  if (reads_active_ >= options_.reads_inflight_max) {
    ++stats_.reads_refused;
    return fail(ReadError::kTooManyReads);
  }
  auto content_slot = content_for(now, ref.content, *size, ref.upstream_allowed);
  if (!content_slot) {
    ++stats_.reads_refused;
    return fail(content_slot.error());
  }
  const uint32_t slot = reads_.allocate();
  ReadState& read = reads_[slot];
  read.content = *content_slot;
  read.offset = offset;
  read.length = length;
  read.first = offset / options_.chunk_bytes;
  read.last = (offset + length - 1) / options_.chunk_bytes;
  read.cursor = read.first;
  read.window_end = read.first;
  read.whole = offset == 0 && length == *size;
  ++reads_active_;
  ++stats_.reads_started;

  ContentState& content = contents_[*content_slot];
  content.reads.push_back(slot);
  bool missing = false;
  for (uint64_t index = read.first; index <= read.last; ++index) {
    if (!content.chunks[index].present) {
      missing = true;
      continue;
    }
    const uint64_t begin = std::max(offset, index * options_.chunk_bytes);
    const uint64_t end = std::min(offset + length, (index + 1) * options_.chunk_bytes);
    stats_.bytes_from_cache += end - begin;
  }
  if (missing) maybe_lookup_blob(now, *content_slot);
  if (!content.digest && options_.prefetch_workers > 0 && !content.prefetch) {
    content.prefetch = true;
    content.prefetch_next = 0;
  }
  const ReadId id{reads_.handle(slot)};
  advance_read(now, slot);
  feed_prefetch(now, *content_slot);
  maybe_verify(*content_slot);
  pump(now);
  return id;
}

uint64_t Engine::read_window() const {
  const uint64_t window = options_.read_window_chunks;
  if (options_.members_per_window_chunk == 0) return window;
  const uint64_t widened = members_->size() / options_.members_per_window_chunk;
  if (widened < 2 * window) return window;  // not worth leaving strict order for
  return std::max(window, std::min<uint64_t>(widened, options_.read_window_chunks_max));
}

void Engine::extend_window(Instant now, uint32_t slot) {
  ReadState& read = reads_[slot];
  const uint64_t window = read_window();
  const uint64_t target = std::min(read.last + 1, read.cursor + window);
  // In a small cluster every node taking the chunks in order is best: the owners' upstream fetches follow one
  // another. In a widened window (a large cluster) it would send all N nodes to the same few owners at once,
  // so each chunk is instead dispatched up to a window later than its place, by a hash of this node and the
  // chunk: a synchronised pull spreads over the window's owners, and the read still advances (a chunk waits
  // at most a window behind chunks created after it).
  const bool spread = window > options_.read_window_chunks;
  const uint64_t content_hash = contents_[read.content].hash64;
  for (uint64_t index = read.window_end; index < target; ++index) {
    if (contents_[read.content].chunks[index].present) continue;
    const uint64_t delay = spread ? mix64(self_hash64_ ^ chunk_hash64(content_hash, index)) % window : 0;
    ensure_job(now, read.content, index, Priority::kDemand, delay);
  }
  read.window_end = std::max(read.window_end, target);
}

void Engine::advance_read(Instant now, uint32_t slot) {
  ReadState& read = reads_[slot];
  if (read.finished) return;
  ContentState& content = contents_[read.content];
  while (read.cursor <= read.last && content.chunks[read.cursor].present) {
    store_.pin(chunk_key(content, read.cursor));
    ++read.cursor;
  }
  if (read.cursor > read.first) {
    const uint64_t ready_end = std::min(read.offset + read.length, read.cursor * options_.chunk_bytes);
    const uint64_t ready = ready_end - read.offset;
    if (ready > read.reported_bytes) {
      read.reported_bytes = ready;
      events_.push_back(ReadProgress{ReadId{reads_.handle(slot)}, ready});
    }
  }
  if (read.cursor > read.last) {
    // Reads of a whole digest-addressed blob complete only once it verified.
    if (content.digest && read.whole && content.verify != Verify::kVerified) return;
    finish_read(slot, std::nullopt);
    return;
  }
  // A chunk inside the window may have been evicted (or dropped for repair) since it was requested.
  if (content.chunks[read.cursor].job == kNone) ensure_job(now, read.content, read.cursor, Priority::kDemand);
  extend_window(now, slot);
}

void Engine::advance_reads_of(Instant now, uint32_t content_slot) {
  // finish_read does not change the list; copying guards against future edits that would.
  const std::vector<uint32_t> reads = contents_[content_slot].reads;
  for (const uint32_t slot : reads) advance_read(now, slot);
}

void Engine::finish_read(uint32_t slot, std::optional<ReadFailure> failure) {
  ReadState& read = reads_[slot];
  if (read.finished) return;
  read.finished = true;
  const ReadId id{reads_.handle(slot)};
  if (failure) {
    ++stats_.reads_failed;
    events_.push_back(ReadFailed{id, *failure});
    // Jobs only this read wanted are no longer needed.
    ContentState& content = contents_[read.content];
    for (uint64_t index = read.cursor; index < read.window_end; ++index) {
      if (content.chunks[index].job != kNone) release_job_if_unwanted(content.chunks[index].job);
    }
    return;
  }
  ++stats_.reads_completed;
  events_.push_back(ReadComplete{id, contents_[read.content].verify == Verify::kVerified});
}

void Engine::fail_reads_of(uint32_t content_slot, ReadFailure failure) {
  const std::vector<uint32_t> reads = contents_[content_slot].reads;
  for (const uint32_t slot : reads) finish_read(slot, failure);
}

void Engine::release_read(Instant now, ReadId id) {
  const auto resolved = reads_.resolve(id.value);
  if (!resolved) {
    ++stats_.stale_inputs;
    return;
  }
  const uint32_t slot = *resolved;
  ReadState& read = reads_[slot];
  ContentState& content = contents_[read.content];
  for (uint64_t index = read.first; index < read.cursor; ++index) store_.unpin(chunk_key(content, index));
  const uint64_t window_begin = read.cursor;
  const uint64_t window_end = read.window_end;
  std::erase(content.reads, slot);
  read.finished = true;
  reads_.release(slot);
  --reads_active_;
  for (uint64_t index = window_begin; index < window_end; ++index) {
    if (content.chunks[index].job != kNone) release_job_if_unwanted(content.chunks[index].job);
  }
  pump(now);
}

// ---- Jobs ----

uint32_t Engine::ensure_job(Instant now, uint32_t content_slot, uint64_t index, Priority priority,
                            uint64_t dispatch_delay) {
  ContentState& content = contents_[content_slot];
  ChunkInfo& chunk = content.chunks[index];
  if (chunk.job != kNone) {
    Job& job = jobs_[chunk.job];
    if (priority < job.priority) {
      const bool queued = job.state == JobState::kQueued;
      if (queued) dequeue(chunk.job);
      job.priority = priority;
      if (queued) enqueue(chunk.job);
    }
    return chunk.job;
  }
  const uint32_t slot = jobs_.allocate();
  Job& job = jobs_[slot];
  job.content = content_slot;
  job.index = index;
  job.length_bytes = chunk_length(content, index);
  job.priority = priority;
  job.created_at = now;
  job.sequence = ++queue_sequence_ + dispatch_delay;
  chunk.job = slot;
  ++content.jobs;
  ++jobs_active_;
  enqueue(slot);
  return slot;
}

void Engine::enqueue(uint32_t slot) {
  Job& job = jobs_[slot];
  job.state = JobState::kQueued;
  job.queue_key = (uint64_t(job.priority) << 56) | job.sequence;
  queue_.emplace(job.queue_key, slot);
}

void Engine::dequeue(uint32_t slot) {
  Job& job = jobs_[slot];
  if (job.state == JobState::kQueued) queue_.erase({job.queue_key, slot});
  job.state = JobState::kIdle;
  if (job.woken_from != kNone) {
    --peers_[job.woken_from].woken;
    wake_parked(job.woken_from);  // its claim on a slot there is gone
    job.woken_from = kNone;
  }
  if (job.woken_for_holders) {
    --contents_[job.content].woken;
    job.woken_for_holders = false;
  }
}

bool Engine::job_wanted(const Job& job) const {
  if (!job.serve_waiters.empty() || job.repair || job.prefetch) return true;
  for (const uint32_t slot : contents_[job.content].reads) {
    const ReadState& read = reads_[slot];
    if (!read.finished && read.cursor <= job.index && job.index < read.window_end) return true;
  }
  return false;
}

void Engine::release_job_if_unwanted(uint32_t slot) {
  if (!job_wanted(jobs_[slot])) destroy_job(slot);
}

void Engine::destroy_job(uint32_t slot) {
  Job& job = jobs_[slot];
  dequeue(slot);
  if (job.fetch_primary != kNone) cancel_fetch(job.fetch_primary);
  if (job.fetch_hedge != kNone) cancel_fetch(job.fetch_hedge);
  ContentState& content = contents_[job.content];
  ChunkInfo& chunk = content.chunks[job.index];
  if (job.reserved && !chunk.present) store_.evict(chunk_key(content, job.index));
  chunk.job = kNone;
  --content.jobs;
  if (job.prefetch) --content.prefetch_active;
  --jobs_active_;
  jobs_.release(slot);
}

void Engine::pump(Instant now) {
  assert(!pumping_);
  pumping_ = true;
  ++pump_epoch_;
  // Serve-driven jobs (other nodes wait on them) are ahead in the queue and do not count against
  // fetches_inflight_max: an owner whose slots are full of its own fetch-through requests must still be able
  // to fetch for others, or a synchronised cold pull deadlocks until owner timeouts.
  do {
    while (!queue_.empty()) {
      const auto [key, slot] = *queue_.begin();
      const bool serve = jobs_[slot].priority == Priority::kServe;
      if (!serve && demand_fetches_active_ >= options_.fetches_inflight_max) break;
      dequeue(slot);
      dispatch(now, slot);
    }
  } while (run_wakes(now));
  pumping_ = false;
}

void Engine::compute_owners(Job& job) {
  if (job.owners_generation == membership_generation_) return;
  job.owners_generation = membership_generation_;
  job.owner_rank_next = 0;
  std::array<uint32_t, kOwnerRanksMax> positions{};
  job.owner_count = static_cast<uint32_t>(owner_positions(
      contents_[job.content], job.index, std::span(positions.data(), options_.owner_ranks_max)));
  for (uint32_t rank = 0; rank < job.owner_count; ++rank) job.owners[rank] = member_peer(positions[rank]);
}

void Engine::dispatch(Instant now, uint32_t slot) {
  Job& job = jobs_[slot];
  if (job.attempts >= options_.fetch_attempts_max) {
    fail_job(now, slot, ReadFailure::kNoSource);
    return;
  }
  if (!reserve_for(now, slot)) {
    fail_job(now, slot, ReadFailure::kStoreFull);
    return;
  }
  Job& ready = jobs_[slot];
  ContentState& content = contents_[ready.content];
  if (!ready.upstream_only && !ready.owner_mode && content.blob_lookup_pending && !content.blob_looked_up) {
    // The first lookup of an item decides between holders (it is warm somewhere) and owners (cold): asking a
    // cold owner while holders exist would send it to the upstream for nothing. Bounded by lookup_timeout.
    ready.state = JobState::kLookup;
    content.waiting_for_blob_lookup.emplace_back(slot, jobs_.generations[slot]);
    return;
  }
  if (!ready.upstream_only && try_peers(now, slot, kNone, false) != Candidate::kNone) return;
  owner_path(now, slot);
}

Engine::Candidate Engine::try_peers(Instant now, uint32_t slot, uint32_t avoid, bool hedge) {
  Job& job = jobs_[slot];
  const ContentState& content = contents_[job.content];
  const uint64_t bytes = job.length_bytes - job.received_bytes;
  auto usable = [&](uint32_t peer) {
    return peer != kNone && peer != self_peer_ && peer != avoid && !banned(now, peer) &&
           std::find(job.excluded.begin(), job.excluded.end(), peer) == job.excluded.end();
  };

  uint32_t best = kNone;
  double best_seconds = 0;
  bool best_through = false;
  uint32_t best_rank = kNone;
  uint32_t busy = kNone;       // a usable source at its limit: where the job parks
  bool busy_specific = false;  // an owner or a chunk provider: the job parks on that peer
  auto consider = [&](uint32_t peer, bool through, uint32_t rank, bool blob_provider) {
    if (!has_capacity(peer)) {
      if (busy == kNone || !blob_provider) {
        busy = peer;
        busy_specific = !blob_provider;
      }
      return;
    }
    const double seconds = estimated_seconds(peer, bytes);
    if (best == kNone || seconds < best_seconds) {
      best = peer;
      best_seconds = seconds;
      best_through = through;
      best_rank = rank;
    }
  };
  for (const uint32_t peer : content.blob_providers) {
    if (usable(peer)) consider(peer, false, kNone, true);
  }
  for (const uint32_t peer : job.chunk_providers) {
    if (usable(peer)) consider(peer, false, kNone, false);
  }
  // Holders have the chunk; an owner only promises to get it (from the upstream if it is cold). So the owner
  // is asked only when no usable holder is known.
  const bool holders = best != kNone || busy != kNone;
  if (!job.owner_mode && !holders) {
    compute_owners(job);
    for (uint32_t rank = job.owner_rank_next; rank < job.owner_count; ++rank) {
      const uint32_t owner = job.owners[rank];
      if (owner == self_peer_) break;  // we are the owner: the owner path is ours
      if (!usable(owner)) continue;
      consider(owner, true, rank, false);
      break;
    }
  }
  if (best != kNone) {
    start_fetch(now, slot, best, best_through, best_rank, hedge);
    return Candidate::kStarted;
  }
  if (hedge || busy == kNone) return Candidate::kNone;
  // Blob providers are interchangeable, so the job waits for any of them; an owner or a chunk provider is one
  // specific peer.
  if (busy_specific) {
    park(slot, busy);
  } else {
    park_for_holders(slot);
  }
  return Candidate::kParked;
}

void Engine::owner_path(Instant now, uint32_t slot) {
  Job& job = jobs_[slot];
  ContentState& content = contents_[job.content];
  if (!job.upstream_only && options_.lookup_before_upstream && !job.looked_up) {
    job.looked_up = true;
    const NodeId key = job_dht_key(job);
    if (start_lookup(now, LookupKind::kChunk, key, job.content, slot)) {
      job.state = JobState::kLookup;
      return;
    }
  }
  if (!job.upstream_only && content.blob_lookup_pending) {
    // Complete holders may be about to appear; the upstream can wait that long.
    job.state = JobState::kLookup;
    content.waiting_for_blob_lookup.emplace_back(slot, jobs_.generations[slot]);
    return;
  }
  if (!content.upstream_allowed) {
    fail_job(now, slot, ReadFailure::kNoSource);
    return;
  }
  if (!has_capacity(kUpstream)) {
    park(slot, kUpstream);
    return;
  }
  start_fetch(now, slot, kUpstream, false, kNone, false);
}

bool Engine::reserve_for(Instant now, uint32_t slot) {
  Job& job = jobs_[slot];
  if (job.reserved) return true;
  const ChunkKey key = chunk_key(contents_[job.content], job.index);
  for (uint32_t round = 0; round <= options_.evictions_per_reserve_max; ++round) {
    const StoreStatus status = store_.reserve(key, job.length_bytes);
    if (status == StoreStatus::kOk) {
      jobs_[slot].reserved = true;
      return true;
    }
    if (status == StoreStatus::kInvalid) {
      // A leftover reservation (e.g. of a forgotten content state): start over.
      store_.evict(key);
      continue;
    }
    const auto victim = store_.eviction_candidate();
    if (!victim) break;
    ++stats_.evictions;
    const auto victim_content = find_content(victim->content);
    if (victim_content && victim->chunk_bytes == options_.chunk_bytes &&
        victim->index < contents_[*victim_content].chunk_count) {
      drop_chunk(*victim_content, victim->index);
    } else {
      store_.evict(*victim);
    }
  }
  (void)now;
  ++stats_.store_full;
  return false;
}

uint32_t Engine::start_fetch(Instant now, uint32_t job_slot, uint32_t source, bool fetch_through,
                             uint32_t owner_rank, bool hedge) {
  Job& job = jobs_[job_slot];
  if (job.received_bytes > 0 && job.suppliers.count >= kSuppliersMax) {
    // Too many sources for one chunk already: start it over rather than track a longer provenance.
    job.received_bytes = 0;
    job.suppliers.count = 0;
  }
  const uint32_t slot = fetches_.allocate();
  FetchState& fetch = fetches_[slot];
  fetch.job = job_slot;
  fetch.source = source;
  fetch.begin = job.received_bytes;
  fetch.end = job.length_bytes;
  fetch.fetch_through = fetch_through;
  fetch.hedge = hedge;
  fetch.demand = job.priority != Priority::kServe && !hedge;
  fetch.owner_rank = owner_rank;
  fetch.started_at = now;
  fetch.last_progress_at = now;
  ++job.attempts;
  if (!job.first_started_at) job.first_started_at = now;
  (hedge ? job.fetch_hedge : job.fetch_primary) = slot;
  job.state = JobState::kActive;

  PeerRecord& record = peers_[source];
  ++record.fetches_inflight;
  record.bytes_inflight += fetch.end - fetch.begin;
  ++fetches_active_;
  if (fetch.demand) ++demand_fetches_active_;
  if (hedge) ++hedges_active_;
  ++stats_.fetches_started;
  if (source == kUpstream) ++stats_.fetches_to_upstream;
  if (fetch_through) ++stats_.fetches_fetch_through;
  if (hedge) ++stats_.hedges_started;
  if (fetch.begin > 0) ++stats_.resumes;

  const ContentState& content = contents_[job.content];
  actions_.push_back(StartFetch{FetchId{fetches_.handle(slot)},
                                source == kUpstream ? Source::upstream() : Source::from_peer(record.peer),
                                chunk_key(content, job.index), content.size_bytes, fetch.begin, fetch.end,
                                fetch_through});
  arm_fetch_timer(slot);
  return slot;
}

void Engine::park_for_holders(uint32_t slot) {
  Job& job = jobs_[slot];
  job.state = JobState::kParked;
  job.parked_on = kParkedOnHolders;
  ContentState& content = contents_[job.content];
  if (content.parked_for_holders.empty()) holder_parked_contents_.push_back(job.content);
  content.parked_for_holders.emplace_back(slot, jobs_.generations[slot]);
}

uint32_t Engine::holder_slots_free(Instant now, const ContentState& content) const {
  uint32_t free_slots = 0;
  for (const uint32_t peer : content.blob_providers) {
    if (peer == self_peer_ || banned(now, peer)) continue;
    const uint32_t claimed = peers_[peer].fetches_inflight + peers_[peer].woken;
    if (claimed < options_.per_peer_fetches_max) free_slots += options_.per_peer_fetches_max - claimed;
  }
  return free_slots;
}

void Engine::park(uint32_t slot, uint32_t peer) {
  Job& job = jobs_[slot];
  job.state = JobState::kParked;
  job.parked_on = peer;
  peers_[peer].parked.emplace_back(slot, jobs_.generations[slot]);
}

void Engine::fail_job(Instant now, uint32_t slot, ReadFailure failure) {
  (void)now;
  Job& job = jobs_[slot];
  const uint32_t generation = jobs_.generations[slot];
  const std::vector<uint32_t> waiters = std::move(job.serve_waiters);
  job.serve_waiters.clear();
  const uint32_t content_slot = job.content;
  const uint64_t index = job.index;
  ContentState& content = contents_[content_slot];
  if (job.repair) {
    // A repair that finds no source cannot make the blob verify; the reads covering it fail below.
    content.chunks[index].audit = AuditStage::kNone;
    --content.repairs_pending;
    job.repair = false;
  }
  for (const uint32_t serve : waiters) answer_serve(serve, false);
  const std::vector<uint32_t> reads = content.reads;
  for (const uint32_t read_slot : reads) {
    const ReadState& read = reads_[read_slot];
    if (!read.finished && read.first <= index && index <= read.last) finish_read(read_slot, failure);
  }
  // finish_read may already have dropped the job as unwanted.
  if (jobs_.live[slot] && jobs_.generations[slot] == generation) destroy_job(slot);
}

void Engine::complete_job(Instant now, uint32_t slot, ChunkFingerprint fingerprint) {
  Job& job = jobs_[slot];
  const uint32_t content_slot = job.content;
  const uint64_t index = job.index;
  const Suppliers suppliers = job.suppliers;
  const Duration wait = now - job.created_at;
  const Duration fetch_duration = now - job.first_started_at.value_or(now);
  const bool prefetch = job.prefetch;
  const std::optional<NodeId> dht_key = job.dht_key;
  const std::vector<uint32_t> serve_waiters = std::move(job.serve_waiters);
  ContentState& content = contents_[content_slot];
  ChunkInfo& chunk = content.chunks[index];

  if (store_.commit(chunk_key(content, index)) != StoreStatus::kOk) ++stats_.protocol_violations;
  // The job record goes before anything that might create a new job for this chunk (arbitration).
  job.reserved = false;
  job.serve_waiters.clear();
  job.prefetch = false;
  chunk.job = kNone;
  --content.jobs;
  if (prefetch) --content.prefetch_active;
  --jobs_active_;
  jobs_.release(slot);

  chunk.present = true;
  ++content.chunks_present;
  chunk.suppliers = suppliers;
  chunk.fingerprint = fingerprint;
  const bool from_upstream = !suppliers.any_peer();
  chunk.trusted = from_upstream;
  events_.push_back(ChunkReady{content.id, index, wait, fetch_duration, from_upstream});
  if (from_upstream && options_.advertise_upstream_chunks && chunk.audit == AuditStage::kNone) {
    ++stats_.provides;
    actions_.push_back(Provide{dht_key ? *dht_key : chunk_key(content, index).dht_id()});
  }
  if (chunk.audit != AuditStage::kNone) audit_chunk_done(now, content_slot, index);
  if (!serve_waiters.empty() && !servable(contents_[content_slot], contents_[content_slot].chunks[index])) {
    // Peers wait on this chunk but the copy cannot be served on (it came from a peer and the blob is not
    // verified): fetch the owner's own copy, and keep the serves waiting on that (or on an arbitration).
    if (contents_[content_slot].chunks[index].job == kNone) {
      drop_chunk(content_slot, index);
      become_owner_fetcher(jobs_[ensure_job(now, content_slot, index, Priority::kServe)]);
    }
    const uint32_t next = contents_[content_slot].chunks[index].job;
    for (const uint32_t serve : serve_waiters) {
      jobs_[next].serve_waiters.push_back(serve);
      serves_[serve].job = next;
    }
  } else {
    for (const uint32_t serve : serve_waiters) answer_serve(serve, true);
  }
  advance_reads_of(now, content_slot);
  feed_prefetch(now, content_slot);
  maybe_verify(content_slot);
}

bool Engine::accepts_fetch_through(ContentState& content, uint64_t index) {
  if (members_->empty()) return true;
  ChunkInfo& chunk = content.chunks[index];
  if (chunk.owner_check_generation != membership_generation_) {
    // Only as one of the first owners by our own view (a little slack for views that differ): otherwise any
    // peer could use this node as a free proxy to the upstream. Balanced owners are always among the plain
    // rendezvous top MemberList::kRanksMax, which a slightly different view hardly changes, while the
    // balanced choice itself can shift with it (every chunk's choice depends on the loads before it).
    std::array<uint32_t, MemberList::kRanksMax> positions{};
    const size_t ranks =
        members_->top(chunk_hash64(content.hash64, index),
                      std::span(positions.data(),
                                balanced_owners() ? MemberList::kRanksMax : options_.owner_ranks_max + 1));
    chunk.owner_candidate = false;
    for (size_t rank = 0; rank < ranks; ++rank)
      chunk.owner_candidate |= (*members_)[positions[rank]].id == options_.self.id;
    chunk.owner_check_generation = membership_generation_;
  }
  return chunk.owner_candidate;
}

const NodeId& Engine::job_dht_key(Job& job) {
  if (!job.dht_key) job.dht_key = chunk_key(contents_[job.content], job.index).dht_id();
  return *job.dht_key;
}

void Engine::become_owner_fetcher(Job& job) {
  job.owner_mode = true;
  // What an owner fetches for others must be its own copy of the upstream's bytes: a copy relayed from
  // another peer is unverified, and repairs need copies independent of the suspect. File blobs have no
  // digest, so any holder will do for them.
  job.upstream_only = contents_[job.content].digest;
}

void Engine::feed_prefetch(Instant now, uint32_t content_slot) {
  ContentState& content = contents_[content_slot];
  if (!content.prefetch) return;
  while (content.prefetch_active < options_.prefetch_workers && content.prefetch_next < content.chunk_count) {
    const uint64_t index = content.prefetch_next++;
    const ChunkInfo& chunk = content.chunks[index];
    if (chunk.present || chunk.job != kNone) continue;
    const uint32_t slot = ensure_job(now, content_slot, index, Priority::kPrefetch);
    jobs_[slot].prefetch = true;
    ++content.prefetch_active;
  }
}

// ---- Fetches ----

void Engine::end_fetch(uint32_t slot) {
  FetchState& fetch = fetches_[slot];
  Job& job = jobs_[fetch.job];
  if (job.fetch_primary == slot) job.fetch_primary = kNone;
  if (job.fetch_hedge == slot) job.fetch_hedge = kNone;
  PeerRecord& record = peers_[fetch.source];
  --record.fetches_inflight;
  const uint64_t outstanding = fetch.end - fetch.begin - fetch.received;
  record.bytes_inflight -= std::min(record.bytes_inflight, outstanding);
  --fetches_active_;
  if (fetch.demand) --demand_fetches_active_;
  if (fetch.hedge) --hedges_active_;
  const uint32_t source = fetch.source;
  fetches_.release(slot);
  wake_parked(source);
}

void Engine::cancel_fetch(uint32_t slot) {
  ++stats_.fetches_cancelled;
  actions_.push_back(CancelFetch{FetchId{fetches_.handle(slot)}});
  end_fetch(slot);
}

void Engine::handle_fetch_data(Instant now, FetchId id, uint64_t bytes) {
  const auto resolved = fetches_.resolve(id.value);
  if (!resolved) {
    ++stats_.stale_inputs;
    return;
  }
  const uint32_t slot = *resolved;
  FetchState& fetch = fetches_[slot];
  if (!fetch.first_byte_seen) {
    fetch.first_byte_seen = true;
    fetch.first_byte_at = now;
    const Duration latency = now - fetch.started_at;
    if (fetch.fetch_through) through_first_byte_.add(latency, options_.first_byte_samples_max);
    if (!fetch.fetch_through && fetch.source != kUpstream) {
      first_byte_.add(latency, options_.first_byte_samples_max);
      double& average = peers_[fetch.source].first_byte_seconds;
      average = average > 0 ? 0.7 * average + 0.3 * latency.as_seconds() : latency.as_seconds();
    }
    Job& job = jobs_[fetch.job];
    const uint32_t sibling = job.fetch_primary == slot ? job.fetch_hedge : job.fetch_primary;
    if (sibling != kNone) {
      // The first source to answer wins; the loser never wrote a byte, so the chunk has one writer.
      if (fetch.hedge) ++stats_.hedges_won;
      if (job.fetch_primary != slot) {
        job.fetch_primary = slot;
        job.fetch_hedge = sibling;
      }
      cancel_fetch(sibling);
    }
  }
  const uint64_t remaining = fetch.end - fetch.begin - fetch.received;
  if (bytes > remaining) {
    ++stats_.protocol_violations;
    bytes = remaining;
  }
  fetch.received += bytes;
  fetch.last_progress_at = now;
  PeerRecord& record = peers_[fetch.source];
  record.bytes_inflight -= std::min(record.bytes_inflight, bytes);
  (fetch.source == kUpstream ? stats_.bytes_from_upstream : stats_.bytes_from_peers) += bytes;
  pump(now);
}

void Engine::handle_fetch_complete(Instant now, FetchId id, ChunkFingerprint fingerprint) {
  const auto resolved = fetches_.resolve(id.value);
  if (!resolved) {
    ++stats_.stale_inputs;
    return;
  }
  const uint32_t slot = *resolved;
  FetchState& fetch = fetches_[slot];
  if (fetch.begin + fetch.received < fetch.end) {
    ++stats_.protocol_violations;  // "complete" before the range ended: treat as a broken stream
    fetch_failed(now, slot, FetchFailure::kBroken, false);
    pump(now);
    return;
  }
  const uint32_t job_slot = fetch.job;
  PeerRecord& record = peers_[fetch.source];
  if (fetch.first_byte_seen && now > fetch.first_byte_at && fetch.received > 0) {
    const double seconds = (now - fetch.first_byte_at).as_seconds();
    const double sample = double(fetch.received) / seconds;
    record.bytes_per_second =
        record.bytes_per_second > 0 ? 0.7 * record.bytes_per_second + 0.3 * sample : sample;
  }
  record.consecutive_failures = 0;
  Job& job = jobs_[job_slot];
  job.suppliers.add(fetch.source);
  job.received_bytes = job.length_bytes;
  ++stats_.fetches_completed;
  end_fetch(slot);
  if (job.fetch_primary != kNone) cancel_fetch(job.fetch_primary);
  if (job.fetch_hedge != kNone) cancel_fetch(job.fetch_hedge);
  complete_job(now, job_slot, fingerprint);
  pump(now);
}

void Engine::handle_fetch_failed(Instant now, FetchId id, FetchFailure failure) {
  const auto resolved = fetches_.resolve(id.value);
  if (!resolved) {
    ++stats_.stale_inputs;
    return;
  }
  fetch_failed(now, *resolved, failure, false);
  pump(now);
}

void Engine::fetch_failed(Instant now, uint32_t slot, FetchFailure failure, bool timed_out) {
  FetchState& fetch = fetches_[slot];
  const uint32_t job_slot = fetch.job;
  const uint32_t source = fetch.source;
  Job& job = jobs_[job_slot];
  // A refusal (not a timeout) from an owner before any byte: it is busy, not gone. Ask it again later.
  const bool owner_busy = failure == FetchFailure::kRefused && !timed_out && fetch.owner_rank != kNone &&
                          fetch.received == 0 && job.owner_busy_refusals < options_.owner_busy_retries_max;
  if (owner_busy) {
    ++stats_.owner_busy_retries;
    ++job.owner_busy_refusals;
    --job.attempts;  // bounded by owner_busy_retries_max instead
  } else {
    if (fetch.received > 0) {
      // Only the winning fetch ever receives bytes, so the chunk's prefix is exactly this fetch's.
      job.received_bytes = fetch.begin + fetch.received;
      job.suppliers.add(source);
    }
    note_failure(now, source, failure);
    if (source != kUpstream &&
        std::find(job.excluded.begin(), job.excluded.end(), source) == job.excluded.end()) {
      job.excluded.push_back(source);
    }
    if (fetch.owner_rank != kNone) job.owner_rank_next = std::max(job.owner_rank_next, fetch.owner_rank + 1);
    if (failure == FetchFailure::kMiss) {
      std::erase(contents_[job.content].blob_providers, source);
      std::erase(job.chunk_providers, source);
    }
  }
  ++stats_.fetches_failed;
  if (timed_out) {
    cancel_fetch(slot);
    --stats_.fetches_cancelled;  // counted as a failure, not as a cancellation
  } else {
    end_fetch(slot);
  }
  if (job.fetch_primary == kNone && job.fetch_hedge != kNone) {
    job.fetch_primary = job.fetch_hedge;
    job.fetch_hedge = kNone;
  }
  if (job.fetch_primary != kNone) return;  // the hedge carries on
  if (!owner_busy) {
    enqueue(job_slot);
    return;
  }
  // Doubling, and spread over [1, 2) x the step by a hash of this node and the chunk, so refused nodes do not
  // come back all at once.
  const uint32_t refusals = job.owner_busy_refusals;
  const int64_t step = options_.owner_busy_backoff.micros << std::min<uint32_t>(refusals - 1, 6);
  const uint64_t spread =
      mix64(self_hash64_ ^ chunk_hash64(contents_[job.content].hash64, job.index) ^ refusals);
  const int64_t backoff = step + static_cast<int64_t>(spread % uint64_t(std::max<int64_t>(step, 1)));
  job.state = JobState::kBackoff;
  push_timer(now + Duration::microseconds(backoff), TimerKind::kRetry, job_slot, jobs_.generations[job_slot]);
}

Instant Engine::fetch_deadline(const FetchState& fetch) {
  if (fetch.fetch_through && fetch.received == 0) {
    // Answered (headers) but still fetching: the owner may be queued behind a saturated upstream.
    if (fetch.first_byte_seen) return fetch.started_at + options_.owner_fetch_timeout;
    return fetch.started_at + owner_answer_timeout();
  }
  if (fetch.first_byte_seen) return fetch.last_progress_at + options_.stall_timeout;
  const Instant stall = fetch.started_at + options_.stall_timeout;
  const bool may_hedge = options_.hedge_enabled && !fetch.hedge && !fetch.hedge_considered &&
                         fetch.source != kUpstream && jobs_[fetch.job].fetch_hedge == kNone;
  if (!may_hedge) return stall;
  return std::min(stall, fetch.started_at + hedge_delay());
}

void Engine::arm_fetch_timer(uint32_t slot) {
  push_timer(fetch_deadline(fetches_[slot]), TimerKind::kFetch, slot, fetches_.generations[slot]);
}

void Engine::on_fetch_timer(Instant now, uint32_t slot) {
  FetchState& fetch = fetches_[slot];
  const Instant deadline = fetch_deadline(fetch);
  if (now < deadline) {
    push_timer(deadline, TimerKind::kFetch, slot, fetches_.generations[slot]);
    return;
  }
  if (fetch.fetch_through && fetch.received == 0) {
    ++stats_.owner_timeouts;
    fetch_failed(now, slot, FetchFailure::kRefused, true);  // slow is not a fault: skip it, don't ban
    return;
  }
  if (!fetch.first_byte_seen && !fetch.hedge_considered && now < fetch.started_at + options_.stall_timeout &&
      options_.hedge_enabled && !fetch.hedge && fetch.source != kUpstream) {
    fetch.hedge_considered = true;
    const uint32_t job_slot = fetch.job;
    if (hedges_active_ < options_.hedges_inflight_max) try_peers(now, job_slot, fetch.source, true);
    // try_peers may have reallocated fetches_: look the fetch up again.
    if (fetches_.live[slot]) arm_fetch_timer(slot);
    return;
  }
  ++stats_.stalls;
  fetch_failed(now, slot, FetchFailure::kBroken, true);
}

void Engine::LatencyWindow::add(Duration sample, size_t samples_max) {
  if (samples.size() < samples_max) {
    samples.push_back(sample);
  } else {
    samples[next] = sample;
    next = (next + 1) % samples.size();
  }
  if (++since_estimate >= 8) valid = false;
}

std::optional<Duration> Engine::LatencyWindow::estimate_p90() {
  if (samples.empty()) return std::nullopt;
  if (!valid) {
    std::vector<Duration> scratch = samples;
    const size_t rank = (scratch.size() * 9) / 10;
    std::nth_element(scratch.begin(), scratch.begin() + static_cast<ptrdiff_t>(rank), scratch.end());
    p90 = scratch[rank];
    valid = true;
    since_estimate = 0;
  }
  return p90;
}

Duration Engine::hedge_delay() {
  const auto p90 = first_byte_.estimate_p90();
  return p90 ? std::max(*p90 * 2, options_.hedge_floor) : options_.hedge_floor;
}

Duration Engine::owner_answer_timeout() {
  const auto p90 = through_first_byte_.estimate_p90();
  return p90 ? std::max(*p90 * options_.owner_answer_p90_factor, options_.owner_answer_timeout)
             : options_.owner_answer_timeout;
}

// ---- Repairs ----

void Engine::start_repair(Instant now, uint32_t content_slot) {
  ContentState& content = contents_[content_slot];
  const uint32_t round = content.repair_round;
  std::vector<NodeId> suppliers;
  std::vector<uint32_t> sampled;  // peers whose sample chunk is chosen (round 1)
  std::vector<uint64_t> suspects;
  for (uint64_t index = 0; index < content.chunk_count; ++index) {
    const ChunkInfo& chunk = content.chunks[index];
    if (!chunk.suppliers.any_peer()) continue;
    bool sample = false;
    for (uint8_t i = 0; i < chunk.suppliers.count; ++i) {
      const uint32_t peer = chunk.suppliers.peers[i];
      if (peer == kUpstream) continue;
      if (std::find(sampled.begin(), sampled.end(), peer) == sampled.end()) {
        sampled.push_back(peer);
        suppliers.push_back(peers_[peer].peer.id);
        sample = true;
      }
    }
    if (round != 1 || sample) suspects.push_back(index);
  }
  std::sort(suppliers.begin(), suppliers.end());
  if (round > 3 || suspects.empty()) {
    // Even the upstream's bytes do not match the digest: nothing left to try.
    events_.push_back(IntegrityFailure{content.id, 4, std::move(suppliers)});
    for (uint64_t index = 0; index < content.chunk_count; ++index) drop_chunk(content_slot, index);
    content.repair_round = 0;
    fail_reads_of(content_slot, ReadFailure::kIntegrity);
    return;
  }
  events_.push_back(IntegrityFailure{content.id, round, std::move(suppliers)});
  for (const uint64_t index : suspects) {
    repair_chunk(now, content_slot, index, round == 3 ? AuditStage::kUpstream : AuditStage::kAudit);
  }
}

void Engine::repair_chunk(Instant now, uint32_t content_slot, uint64_t index, AuditStage stage) {
  ChunkInfo& chunk = contents_[content_slot].chunks[index];
  chunk.original_suppliers = chunk.suppliers;
  chunk.original_fingerprint = chunk.fingerprint;
  chunk.audit = stage;
  drop_chunk(content_slot, index);
  const uint32_t slot = ensure_job(now, content_slot, index, Priority::kRepair);
  Job& job = jobs_[slot];
  job.repair = true;
  job.upstream_only = stage == AuditStage::kUpstream || stage == AuditStage::kArbitrate;
  for (uint8_t i = 0; i < chunk.original_suppliers.count; ++i) {
    const uint32_t peer = chunk.original_suppliers.peers[i];
    if (peer != kUpstream) job.excluded.push_back(peer);
  }
  ++contents_[content_slot].repairs_pending;
  if (stage != AuditStage::kRefetch) ++stats_.chunks_audited;
}

void Engine::refetch_supplied_by(Instant now, uint32_t content_slot, uint32_t peer) {
  ContentState& content = contents_[content_slot];
  for (uint64_t index = 0; index < content.chunk_count; ++index) {
    const ChunkInfo& chunk = content.chunks[index];
    if (chunk.present && chunk.audit == AuditStage::kNone && chunk.suppliers.contains(peer)) {
      repair_chunk(now, content_slot, index, AuditStage::kRefetch);
    }
  }
}

void Engine::audit_chunk_done(Instant now, uint32_t content_slot, uint64_t index) {
  ChunkInfo& chunk = contents_[content_slot].chunks[index];
  std::vector<uint32_t> liars;
  auto convict = [&](const Suppliers& suppliers) {
    for (uint8_t i = 0; i < suppliers.count; ++i) {
      if (suppliers.peers[i] == kUpstream) continue;
      ban(now, suppliers.peers[i], BanReason::kCorruptData);
      liars.push_back(suppliers.peers[i]);
    }
  };
  switch (chunk.audit) {
    case AuditStage::kNone:
      return;
    case AuditStage::kAudit: {
      if (chunk.fingerprint == chunk.original_fingerprint) break;  // two independent copies agree
      // They differ: the upstream arbitrates.
      chunk.audit_suppliers = chunk.suppliers;
      chunk.audit_fingerprint = chunk.fingerprint;
      chunk.audit = AuditStage::kArbitrate;
      --contents_[content_slot].repairs_pending;  // repair_chunk counts the arbitration again
      const Suppliers original = chunk.original_suppliers;
      const ChunkFingerprint original_fingerprint = chunk.original_fingerprint;
      repair_chunk(now, content_slot, index, AuditStage::kArbitrate);
      // repair_chunk recorded the audit copy as "original": keep the first copy's provenance too.
      ChunkInfo& arbitrated = contents_[content_slot].chunks[index];
      arbitrated.original_suppliers = original;
      arbitrated.original_fingerprint = original_fingerprint;
      --stats_.chunks_audited;
      ++stats_.chunks_arbitrated;
      return;
    }
    case AuditStage::kArbitrate:
      if (chunk.original_fingerprint != chunk.fingerprint) convict(chunk.original_suppliers);
      if (chunk.audit_fingerprint != chunk.fingerprint) convict(chunk.audit_suppliers);
      break;
    case AuditStage::kUpstream:
      if (chunk.original_fingerprint != chunk.fingerprint) convict(chunk.original_suppliers);
      break;
    case AuditStage::kRefetch:
      break;
  }
  chunk.audit = AuditStage::kNone;
  --contents_[content_slot].repairs_pending;
  // Whatever else a convicted liar supplied is refetched elsewhere (it is banned, so not from it).
  for (const uint32_t liar : liars) refetch_supplied_by(now, content_slot, liar);
}

void Engine::handle_verify_result(Instant now, const ContentId& id, bool digest_matched) {
  const auto slot = find_content(id);
  if (!slot || contents_[*slot].verify != Verify::kVerifying) {
    ++stats_.stale_inputs;
    return;
  }
  ContentState& content = contents_[*slot];
  if (digest_matched) {
    content.verify = Verify::kVerified;
    content.repair_round = 0;
    for (ChunkInfo& chunk : content.chunks) chunk.trusted = true;
    events_.push_back(ContentVerified{content.id});
    if (!content.blob_advertised) {
      content.blob_advertised = true;
      ++stats_.provides;
      actions_.push_back(Provide{content.dht_id});
    }
    advance_reads_of(now, *slot);
  } else {
    ++stats_.integrity_failures;
    content.verify = Verify::kUnverified;
    ++content.repair_round;
    start_repair(now, *slot);
    maybe_verify(*slot);
  }
  pump(now);
}

// ---- Serves ----

Result<ServeId, ServeError> Engine::serve(Instant now, const ServeRequest& request) {
  if (serves_active_ >= options_.serves_inflight_max) {
    ++stats_.serves_refused;
    return fail(ServeError::kTooManyServes);
  }
  const uint64_t chunk_count =
      request.content_bytes == 0 ? 0 : (request.content_bytes - 1) / options_.chunk_bytes + 1;
  if (request.chunk.chunk_bytes != options_.chunk_bytes || request.chunk.index >= chunk_count) {
    ++stats_.serves_refused;
    return fail(ServeError::kBadRequest);
  }
  const uint32_t slot = serves_.allocate();
  ++serves_active_;
  const ServeId id{serves_.handle(slot)};
  auto content_slot = content_for(now, request.chunk.content, request.content_bytes, true);
  if (!content_slot) {
    serves_[slot].content = kNone;
    answer_serve(slot, false);
    return id;
  }
  ServeState& serve = serves_[slot];
  serve.content = *content_slot;
  serve.index = request.chunk.index;
  ContentState& content = contents_[*content_slot];
  ++content.serves;
  ChunkInfo& chunk = content.chunks[request.chunk.index];
  if (servable(content, chunk)) {
    answer_serve(slot, true);
    return id;
  }
  if (!request.fetch_through || !accepts_fetch_through(content, request.chunk.index)) {
    answer_serve(slot, false);
    return id;
  }
  if (chunk.present && chunk.job == kNone) {
    // An unverified copy from a peer is not served on: replace it with the upstream's.
    drop_chunk(*content_slot, request.chunk.index);
  }
  const bool joined = chunk.job != kNone;
  const uint32_t job_slot = ensure_job(now, *content_slot, request.chunk.index, Priority::kServe);
  if (joined) {
    ++stats_.serves_joined;
    Job& job = jobs_[job_slot];
    if (content.digest && !job.owner_mode) {
      // Others now wait on this job: fetch the owner's own copy from the upstream rather than keep them
      // waiting on a DHT lookup (slow while dead nodes linger in routing tables) for a copy we could not
      // serve on anyway.
      become_owner_fetcher(job);
      if (job.state == JobState::kLookup) enqueue(job_slot);
    }
  } else {
    become_owner_fetcher(jobs_[job_slot]);
  }
  jobs_[job_slot].serve_waiters.push_back(slot);
  serves_[slot].job = job_slot;
  events_.push_back(ServePending{id});
  pump(now);
  return id;
}

void Engine::answer_serve(uint32_t slot, bool ready) {
  ServeState& serve = serves_[slot];
  serve.job = kNone;
  const ServeId id{serves_.handle(slot)};
  if (ready) {
    ContentState& content = contents_[serve.content];
    store_.pin(chunk_key(content, serve.index));
    serve.ready = true;
    ++stats_.serves_ready;
    events_.push_back(ServeReady{id});
    return;
  }
  ++stats_.serves_missed;
  events_.push_back(ServeMiss{id});
  if (serve.content != kNone) --contents_[serve.content].serves;
  --serves_active_;
  serves_.release(slot);
}

void Engine::serve_done(Instant now, ServeId id, uint64_t bytes_sent) {
  const auto resolved = serves_.resolve(id.value);
  if (!resolved) {
    ++stats_.stale_inputs;
    return;
  }
  const uint32_t slot = *resolved;
  ServeState& serve = serves_[slot];
  ContentState& content = contents_[serve.content];
  if (serve.ready) {
    store_.unpin(chunk_key(content, serve.index));
    stats_.bytes_served += bytes_sent;
  } else if (serve.job != kNone) {
    std::erase(jobs_[serve.job].serve_waiters, slot);
    release_job_if_unwanted(serve.job);
  }
  --content.serves;
  --serves_active_;
  serves_.release(slot);
  pump(now);
}

// ---- Lookups ----

bool Engine::start_lookup(Instant now, LookupKind kind, const NodeId& key, uint32_t content_slot,
                          uint32_t job_slot) {
  if (lookups_active_ >= options_.lookups_inflight_max || lookup_index_.contains(key)) {
    ++stats_.lookups_refused;
    return false;
  }
  const uint32_t slot = lookups_.allocate();
  LookupState& lookup = lookups_[slot];
  lookup.kind = kind;
  lookup.key = key;
  lookup.content = content_slot;
  lookup.content_generation = contents_.generations[content_slot];
  lookup.job = job_slot;
  lookup.job_generation = job_slot == kNone ? 0 : jobs_.generations[job_slot];
  lookup.deadline = now + options_.lookup_timeout;
  lookup_index_.emplace(key, slot);
  ++lookups_active_;
  ++stats_.lookups_started;
  actions_.push_back(FindProviders{key});
  push_timer(lookup.deadline, TimerKind::kLookup, slot, lookups_.generations[slot]);
  return true;
}

void Engine::handle_providers(Instant now, const NodeId& key, std::span<const Peer> providers) {
  const auto it = lookup_index_.find(key);
  if (it == lookup_index_.end()) {
    ++stats_.stale_inputs;
    return;
  }
  finish_lookup(now, it->second, providers);
  pump(now);
}

void Engine::finish_lookup(Instant now, uint32_t slot, std::span<const Peer> providers) {
  const LookupState lookup = lookups_[slot];
  lookup_index_.erase(lookup.key);
  lookups_.release(slot);
  --lookups_active_;
  if (!contents_.live[lookup.content] || contents_.generations[lookup.content] != lookup.content_generation)
    return;
  std::vector<uint32_t> found;
  for (const Peer& provider : providers) {
    if (found.size() >= options_.providers_per_key_max) {
      ++stats_.providers_dropped;
      break;
    }
    const uint32_t peer = intern_peer(provider);
    if (peer == kNone) {
      ++stats_.providers_dropped;
      continue;
    }
    if (peer == self_peer_ || std::find(found.begin(), found.end(), peer) != found.end()) continue;
    found.push_back(peer);
  }
  ContentState& content = contents_[lookup.content];
  if (lookup.kind == LookupKind::kBlob) {
    content.blob_lookup_pending = false;
    content.blob_looked_up = true;
    content.blob_providers_at = now;
    content.blob_providers = std::move(found);
    for (const auto& [job_slot, generation] : content.waiting_for_blob_lookup) {
      if (jobs_.live[job_slot] && jobs_.generations[job_slot] == generation &&
          jobs_[job_slot].state == JobState::kLookup) {
        enqueue(job_slot);
      }
    }
    content.waiting_for_blob_lookup.clear();
    return;
  }
  if (!jobs_.live[lookup.job] || jobs_.generations[lookup.job] != lookup.job_generation) return;
  Job& job = jobs_[lookup.job];
  job.chunk_providers = std::move(found);
  if (job.state == JobState::kLookup) enqueue(lookup.job);
}

// ---- Membership ----

void Engine::handle_membership(Instant now, std::span<const Peer> members) {
  auto list = MemberList::build(members, options_.members_max, &peers_[self_peer_].peer);
  stats_.providers_dropped += list->dropped();
  adopt_membership(now, std::move(list));
}

void Engine::handle_membership(Instant now, std::shared_ptr<const MemberList> members) {
  if (!members || members->size() > options_.members_max || members->find(options_.self.id) == nullptr) {
    handle_membership(now, members ? members->peers() : std::span<const Peer>());
    return;
  }
  adopt_membership(now, std::move(members));
}

void Engine::adopt_membership(Instant now, std::shared_ptr<const MemberList> members) {
  members_ = std::move(members);
  // Members get a peer record only once used as a source (member_peer); those that have one take the
  // listed address now.
  for (uint32_t peer = kUpstream + 1; peer < peers_.size(); ++peer) {
    if (const Peer* member = find_member(peers_[peer].peer.id)) peers_[peer].peer.endpoint = member->endpoint;
  }
  ++membership_generation_;
  // The member list doubles as a failure detector: a peer that left it and has not sent a body byte yet, or
  // has been silent for departed_silence_timeout, is probably gone, so those requests go elsewhere (resuming
  // where they stopped) instead of waiting for their timeouts. Streams still delivering bytes carry on (a
  // peer leaving gracefully finishes what it serves).
  std::vector<uint32_t> orphaned;
  for (uint32_t slot = 0; slot < fetches_.items.size(); ++slot) {
    if (!fetches_.live[slot]) continue;
    const FetchState& fetch = fetches_[slot];
    const bool silent =
        fetch.received == 0 || now - fetch.last_progress_at >= options_.departed_silence_timeout;
    if (fetch.source != kUpstream && silent && find_member(peers_[fetch.source].peer.id) == nullptr)
      orphaned.push_back(slot);
  }
  for (const uint32_t slot : orphaned) {
    if (fetches_.live[slot]) fetch_failed(now, slot, FetchFailure::kRefused, true);
  }
  pump(now);
}

size_t Engine::owner_positions(const ContentState& content, uint64_t index, std::span<uint32_t> out) const {
  if (balanced_owners()) return members_->balanced_top(content.hash64, content.chunk_count, index, out);
  return members_->top(chunk_hash64(content.hash64, index), out);
}

std::vector<NodeId> Engine::owners_of(const ChunkKey& chunk, size_t count) const {
  std::array<uint32_t, kOwnerRanksMax> positions{};
  const std::span<uint32_t> out(positions.data(), std::min(count, kOwnerRanksMax));
  const auto content = find_content(chunk.content);
  const size_t found = content
                           ? owner_positions(contents_[*content], chunk.index, out)
                           : members_->top(chunk_hash64(id_hash64(chunk.content.dht_id()), chunk.index), out);
  std::vector<NodeId> owners;
  for (size_t rank = 0; rank < found; ++rank) owners.push_back((*members_)[positions[rank]].id);
  return owners;
}

// ---- Timers and outputs ----

void Engine::push_timer(Instant at, TimerKind kind, uint32_t slot, uint32_t generation) {
  timers_.push(Timer{at, kind, slot, generation});
}

void Engine::handle_timeout(Instant now) {
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    if (!timer_live(timer)) continue;
    switch (timer.kind) {
      case TimerKind::kFetch:
        on_fetch_timer(now, timer.slot);
        break;
      case TimerKind::kRetry:
        enqueue(timer.slot);
        break;
      case TimerKind::kLookup:
        if (lookups_[timer.slot].deadline <= now) {
          ++stats_.lookups_timed_out;
          finish_lookup(now, timer.slot, {});
        }
        break;
    }
  }
  pump(now);
}

bool Engine::timer_live(const Timer& timer) const {
  switch (timer.kind) {
    case TimerKind::kFetch:
      return fetches_.live[timer.slot] && fetches_.generations[timer.slot] == timer.generation;
    case TimerKind::kLookup:
      return lookups_.live[timer.slot] && lookups_.generations[timer.slot] == timer.generation;
    case TimerKind::kRetry:
      return jobs_.live[timer.slot] && jobs_.generations[timer.slot] == timer.generation &&
             jobs_[timer.slot].state == JobState::kBackoff;
  }
  return false;
}

std::optional<Instant> Engine::next_timeout() {
  while (!timers_.empty()) {
    if (timer_live(timers_.top())) return timers_.top().at;
    timers_.pop();
  }
  return std::nullopt;
}

std::optional<Action> Engine::poll_action() {
  if (actions_.empty()) return std::nullopt;
  Action action = std::move(actions_.front());
  actions_.pop_front();
  return action;
}

std::optional<Event> Engine::poll_event() {
  if (events_.empty()) return std::nullopt;
  Event event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool Engine::idle() const {
  return fetches_active_ == 0 && jobs_active_ == 0 && lookups_active_ == 0 && actions_.empty() &&
         events_.empty();
}

}  // namespace peerd::transfer

namespace peerd::transfer {

std::string Engine::debug_summary() const {
  std::array<size_t, 6> by_state{};
  size_t waiting_serves = 0;
  for (uint32_t slot = 0; slot < jobs_.items.size(); ++slot) {
    if (!jobs_.live[slot]) continue;
    ++by_state[static_cast<size_t>(jobs_[slot].state)];
    waiting_serves += jobs_[slot].serve_waiters.size();
  }
  return "jobs queued=" + std::to_string(by_state[0]) + " parked=" + std::to_string(by_state[1]) +
         " lookup=" + std::to_string(by_state[2]) + " active=" + std::to_string(by_state[3]) +
         " idle=" + std::to_string(by_state[4]) + " backoff=" + std::to_string(by_state[5]) +
         " waiting_serves=" + std::to_string(waiting_serves) + " fetches=" + std::to_string(fetches_active_) +
         " demand_fetches=" + std::to_string(demand_fetches_active_) +
         " lookups=" + std::to_string(lookups_active_) + " reads=" + std::to_string(reads_active_) +
         " serves=" + std::to_string(serves_active_) + " members=" + std::to_string(members_->size()) +
         " wake_list=" + std::to_string(wake_list_.size());
}

}  // namespace peerd::transfer
