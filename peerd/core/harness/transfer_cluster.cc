#include "peerd/core/harness/transfer_cluster.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "peerd/core/transfer/rendezvous.h"

namespace peerd::harness {

namespace {

DhtClusterOptions dht_options(const TransferClusterOptions& options) {
  DhtClusterOptions dht;
  dht.seed = options.seed;
  dht.nodes = options.nodes;
  dht.dht = options.dht;
  dht.join_interval = options.dht_join_interval;
  dht.network.latency_min = options.latency_min;
  dht.network.latency_max = options.latency_max;
  dht.network.latency_jitter_max = Duration::microseconds(20);
  return dht;
}

Duration percentile(std::vector<Duration> values, double fraction) {
  if (values.empty()) return Duration::zero();
  const size_t rank = std::min(values.size() - 1, static_cast<size_t>(fraction * double(values.size())));
  std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(rank), values.end());
  return values[rank];
}

// "12.34" without <cstdio>: the harness is core code.
std::string fixed(double value, int decimals) {
  if (value < 0) return "-" + fixed(-value, decimals);
  int64_t scale = 1;
  for (int i = 0; i < decimals; ++i) scale *= 10;
  const auto scaled = static_cast<int64_t>(std::llround(value * double(scale)));
  std::string fraction = std::to_string(scaled % scale);
  while (static_cast<int>(fraction.size()) < decimals) fraction = "0" + fraction;
  return std::to_string(scaled / scale) + (decimals > 0 ? "." + fraction : "");
}

std::string mebibytes(uint64_t bytes) {
  return fixed(double(bytes) / (1024.0 * 1024.0), 1) + " MiB";
}
std::string seconds(Duration duration) {
  return fixed(duration.as_seconds(), 3) + " s";
}
std::string millis(Duration duration) {
  return fixed(duration.as_milliseconds(), 2) + " ms";
}

}  // namespace

std::string TransferReport::summary() const {
  std::string text;
  text += "nodes=" + std::to_string(nodes) + " reads=" + std::to_string(reads_completed) + "/" +
          std::to_string(reads) + " completed, " + std::to_string(reads_failed) + " failed, " +
          std::to_string(reads_killed) + " lost with their node, " + std::to_string(reads_bad_bytes) +
          " with wrong bytes, " + std::to_string(reads_unverified) + " unverified\n";
  text += "  completion: p50=" + seconds(completion_p50) + " p90=" + seconds(completion_p90) +
          " max=" + seconds(completion_max) + "\n";
  text += "  upstream egress: " + mebibytes(upstream_egress_bytes) + " = " + fixed(upstream_ratio, 3) +
          " x content size (" + mebibytes(content_bytes) + ")\n";
  text += "  bytes served per node: max=" + mebibytes(node_egress_bytes_max) +
          " mean=" + mebibytes(node_egress_bytes_mean) + "\n";
  text += "  DHT: " + std::to_string(dht_datagrams) + " datagrams (" + fixed(dht_datagrams_per_node, 1) +
          " per node), " + std::to_string(dht_lookups) + " lookups\n";
  text += "  chunk wait: p50=" + millis(chunk_wait_p50) + " p99=" + millis(chunk_wait_p99) +
          "; pieces=" + std::to_string(pieces_delivered) + " corrupt=" + std::to_string(pieces_corrupt) +
          "; hedges=" + std::to_string(hedges) + " resumes=" + std::to_string(resumes) +
          " owner_timeouts=" + std::to_string(owner_timeouts) + " bans=" + std::to_string(bans) +
          " integrity_failures=" + std::to_string(integrity_failures);
  return text;
}

TransferCluster::TransferCluster(TransferClusterOptions options)
    : options_(std::move(options)), dht_(dht_options(options_)) {
  node_latency_multiplier_.assign(options_.nodes, 1.0);
  // One latency function for DHT datagrams and chunk transfers: a fixed base per pair from the seed, times
  // the slower end's multiplier.
  dht_.network().set_latency_function([this](const Endpoint& from, const Endpoint& to) {
    const auto a = dht_.index_of(from);
    const auto b = dht_.index_of(to);
    if (!a || !b) return options_.latency_max;
    return latency_between(*a, *b);
  });
  for (size_t index = 0; index < options_.nodes; ++index) {
    auto node = std::make_unique<Node>();
    node->peer = transfer::Peer{dht_.node_id(index), dht_.endpoint(index)};
    node->store = std::make_unique<transfer::VirtualChunkStore>(options_.store_capacity_bytes);
    transfer::EngineOptions engine = options_.engine;
    engine.self = node->peer;
    node->engine = std::make_unique<transfer::Engine>(engine, *node->store);
    node->egress.capacity_bytes_per_second = options_.node_egress_bytes_per_second;
    node_by_id_.emplace(node->peer.id, index);
    nodes_.push_back(std::move(node));
  }
  upstream_.capacity_bytes_per_second = options_.upstream_egress_bytes_per_second;
  dht_.set_event_hook([this](size_t node, Instant now, const routing::DhtEvent& event) {
    const auto* found = std::get_if<routing::ProvidersFound>(&event);
    if (!found) return;
    std::vector<transfer::Peer> providers;
    providers.reserve(found->providers.size());
    for (const auto& contact : found->providers)
      providers.push_back(transfer::Peer{contact.id, contact.endpoint});
    // Delivered from the clock, not from inside the DHT's flush, so no engine or DHT is re-entered.
    dht_.schedule(now, [this, node, key = found->key, providers = std::move(providers)] {
      if (!nodes_[node]->alive) return;
      nodes_[node]->engine->handle_providers(dht_.now(), key, providers);
      drive(node);
    });
  });
}

TransferCluster::~TransferCluster() = default;

Duration TransferCluster::latency_between(size_t a, size_t b) const {
  const size_t low = std::min(a, b), high = std::max(a, b);
  const uint64_t hash = transfer::mix64(options_.seed ^ transfer::mix64((uint64_t{low} << 32) | high));
  const int64_t span = options_.latency_max.micros - options_.latency_min.micros;
  const int64_t base = options_.latency_min.micros + (span > 0 ? int64_t(hash % uint64_t(span + 1)) : 0);
  const double multiplier = std::max(node_latency_multiplier_[a], node_latency_multiplier_[b]);
  return Duration::microseconds(static_cast<int64_t>(double(base) * multiplier));
}

void TransferCluster::add_content(const content::ContentId& id, uint64_t size_bytes) {
  assert(!content_index_.contains(id));
  content_index_.emplace(id, static_cast<uint32_t>(contents_.size()));
  contents_.push_back(ContentEntry{id, std::make_unique<VirtualContent>(id, size_bytes)});
}

uint32_t TransferCluster::content_slot(const content::ContentId& id) const {
  const auto it = content_index_.find(id);
  assert(it != content_index_.end());
  return it->second;
}

void TransferCluster::start() {
  assert(!started_);
  started_ = true;
  const Instant begin = now();
  dht_.schedule_joins(begin);
  const Instant settled =
      begin + options_.dht_join_interval * static_cast<int64_t>(nodes_.size()) + options_.dht_settle;
  dht_.run_until(settled, size_t{1} << 40);
  deliver_membership();
  begin_measurement();
}

void TransferCluster::begin_measurement() {
  upstream_egress_baseline_ = upstream_.egress_bytes;
  for (auto& node : nodes_) node->egress_baseline = node->egress.egress_bytes;
  const routing::DhtStats stats = dht_.total_stats();
  dht_datagrams_baseline_ = stats.datagrams_sent;
  dht_lookups_baseline_ = stats.lookups_started;
  pieces_delivered_ = 0;
  pieces_corrupt_ = 0;
  chunk_waits_.clear();
  for (auto& node : nodes_) {
    node->banned.clear();
    node->received_from.clear();
  }
  reads_.clear();
  reads_pending_ = 0;
}

void TransferCluster::set_member(size_t node, bool member) {
  nodes_.at(node)->member = member;
  deliver_membership();
}

void TransferCluster::deliver_membership() {
  if (!options_.swarm_membership) return;
  std::vector<transfer::Peer> members;
  for (const auto& node : nodes_) {
    if (node->alive && node->member) members.push_back(node->peer);
  }
  for (size_t index = 0; index < nodes_.size(); ++index) {
    if (!nodes_[index]->alive) continue;
    nodes_[index]->engine->handle_membership(now(), members);
    drive(index);
  }
}

void TransferCluster::read_at(Instant at, size_t node, const content::ContentId& id, uint64_t offset,
                              uint64_t length) {
  const size_t record = reads_.size();
  ReadRecord read;
  read.node = node;
  read.content = id;
  read.offset = offset;
  read.length = length;
  reads_.push_back(read);
  ++reads_pending_;
  dht_.schedule(at, [this, record] {
    ReadRecord& pending = reads_[record];
    if (pending.failed) return;  // its node died before the read was due
    pending.started = now();
    Node& reader = *nodes_[pending.node];
    if (!reader.alive) {
      pending.failed = true;
      --reads_pending_;
      return;
    }
    const uint64_t size = contents_[content_slot(pending.content)].bytes->size_bytes();
    auto read_id = reader.engine->read(now(), transfer::ContentRef{pending.content, size, true},
                                       pending.offset, pending.length);
    if (!read_id) {
      pending.error = read_id.error();
      pending.failed = true;
      pending.finished = now();
      --reads_pending_;
      return;
    }
    pending.accepted = true;
    reader.read_by_id[read_id->value] = record;
    drive(pending.node);
  });
}

void TransferCluster::read_whole_at(Instant at, size_t node, const content::ContentId& id) {
  read_at(at, node, id, 0, contents_[content_slot(id)].bytes->size_bytes());
}

void TransferCluster::kill_at(Instant at, size_t node) {
  dht_.schedule(at, [this, node] { kill(node); });
}

void TransferCluster::set_slow(size_t node, double latency_multiplier, double bandwidth_multiplier) {
  node_latency_multiplier_.at(node) = latency_multiplier;
  Link& link = nodes_.at(node)->egress;
  link_advance(link);
  link.capacity_bytes_per_second = options_.node_egress_bytes_per_second * bandwidth_multiplier;
  link_reschedule(node);
}

void TransferCluster::seed_content(size_t node, const content::ContentId& id) {
  const uint32_t slot = content_slot(id);
  const uint64_t size = contents_[slot].bytes->size_bytes();
  const uint64_t chunks = (size + chunk_bytes() - 1) / chunk_bytes();
  Node& state = *nodes_.at(node);
  for (uint64_t index = 0; index < chunks; ++index) {
    const content::ChunkKey key{id, index, chunk_bytes()};
    const uint64_t length = std::min(chunk_bytes(), size - index * chunk_bytes());
    if (state.store->reserve(key, length) != transfer::StoreStatus::kOk) continue;
    (void)state.store->commit(key);
    state.copies[{slot, index}] = {Piece{0, length, PieceKind::kGood}};
  }
  dht_.provide(node, id.dht_id(), Duration::zero());
}

// ---- Engine driving ----

void TransferCluster::drive(size_t index) {
  Node& node = *nodes_[index];
  if (!node.alive) return;
  for (;;) {
    bool any = false;
    while (auto action = node.engine->poll_action()) {
      any = true;
      handle_action(index, *action);
    }
    while (auto event = node.engine->poll_event()) {
      any = true;
      handle_event(index, *event);
    }
    if (!any) break;
  }
  arm(index);
}

void TransferCluster::arm(size_t index) {
  Node& node = *nodes_[index];
  const std::optional<Instant> next = node.engine->next_timeout();
  if (next == node.armed) return;
  node.armed = next;
  const uint64_t generation = ++node.timer_generation;
  if (!next) return;
  dht_.schedule(*next, [this, index, generation] {
    Node& armed = *nodes_[index];
    if (!armed.alive || armed.timer_generation != generation) return;
    armed.armed.reset();
    armed.engine->handle_timeout(now());
    drive(index);
  });
}

void TransferCluster::handle_action(size_t index, transfer::Action& action) {
  if (const auto* start = std::get_if<transfer::StartFetch>(&action)) {
    on_start_fetch(index, *start);
  } else if (const auto* cancel = std::get_if<transfer::CancelFetch>(&action)) {
    const auto it = nodes_[index]->transfer_by_fetch.find(cancel->fetch.value);
    if (it != nodes_[index]->transfer_by_fetch.end()) cancel_transfer(it->second);
  } else if (const auto* find = std::get_if<transfer::FindProviders>(&action)) {
    dht_.find_providers(index, find->key, options_.providers_want);
  } else if (const auto* provide = std::get_if<transfer::Provide>(&action)) {
    dht_.provide(index, provide->key, Duration::zero());
  } else if (const auto* withdraw = std::get_if<transfer::Withdraw>(&action)) {
    dht_.withdraw(index, withdraw->key);
  } else if (const auto* verify = std::get_if<transfer::VerifyContent>(&action)) {
    const uint32_t slot = content_slot(verify->content);
    const uint64_t size = contents_[slot].bytes->size_bytes();
    const auto hashing =
        Duration::microseconds(static_cast<int64_t>(double(size) / options_.verify_bytes_per_second * 1e6));
    dht_.schedule(now() + hashing, [this, index, slot] {
      Node& node = *nodes_[index];
      if (!node.alive) return;
      const ContentEntry& entry = contents_[slot];
      const uint64_t chunks = (entry.bytes->size_bytes() + chunk_bytes() - 1) / chunk_bytes();
      bool matched = true;
      for (uint64_t chunk = 0; chunk < chunks && matched; ++chunk) {
        matched = node.store->has(content::ChunkKey{entry.id, chunk, chunk_bytes()}) &&
                  copy_true(index, slot, chunk);
      }
      node.engine->handle_verify_result(now(), entry.id, matched);
      drive(index);
    });
  }
}

void TransferCluster::handle_event(size_t index, transfer::Event& event) {
  Node& node = *nodes_[index];
  if (const auto* ready = std::get_if<transfer::ServeReady>(&event)) {
    const auto it = node.transfer_by_serve.find(ready->serve.value);
    const uint64_t id = it == node.transfer_by_serve.end() ? 0 : it->second;
    if (it != node.transfer_by_serve.end()) node.transfer_by_serve.erase(it);
    const auto transfer = transfers_.find(id);
    if (transfer == transfers_.end() || !nodes_[transfer->second.requester]->alive) {
      node.engine->serve_done(now(), ready->serve, 0);  // the requester gave up meanwhile
      if (transfer != transfers_.end()) forget_transfer(id);
      return;
    }
    start_flow(id);
  } else if (const auto* pending = std::get_if<transfer::ServePending>(&event)) {
    // The owner answers with headers at once and delivers the body when its own fetch lands.
    const auto it = node.transfer_by_serve.find(pending->serve.value);
    if (it == node.transfer_by_serve.end()) return;
    const uint64_t id = it->second;
    const auto transfer = transfers_.find(id);
    if (transfer == transfers_.end()) return;
    dht_.schedule(now() + transfer->second.latency, [this, id] {
      const auto waiting = transfers_.find(id);
      if (waiting == transfers_.end() || !nodes_[waiting->second.requester]->alive) return;
      nodes_[waiting->second.requester]->engine->handle_fetch_data(now(), waiting->second.fetch, 0);
      drive(waiting->second.requester);
    });
  } else if (const auto* miss = std::get_if<transfer::ServeMiss>(&event)) {
    const auto it = node.transfer_by_serve.find(miss->serve.value);
    if (it == node.transfer_by_serve.end()) return;
    const uint64_t id = it->second;
    node.transfer_by_serve.erase(it);
    const auto transfer = transfers_.find(id);
    if (transfer == transfers_.end()) return;
    transfer->second.state = TransferState::kSilent;
    dht_.schedule(now() + transfer->second.latency,
                  [this, id] { fail_transfer(id, transfer::FetchFailure::kMiss); });
  } else if (const auto* complete = std::get_if<transfer::ReadComplete>(&event)) {
    const auto it = node.read_by_id.find(complete->read.value);
    if (it == node.read_by_id.end()) return;
    ReadRecord& read = reads_[it->second];
    node.read_by_id.erase(it);
    read.completed = true;
    read.verified = complete->verified;
    read.finished = now();
    const uint32_t slot = content_slot(read.content);
    read.bytes_ok = true;
    for (uint64_t chunk = read.offset / chunk_bytes();
         chunk <= (read.offset + read.length - 1) / chunk_bytes(); ++chunk) {
      read.bytes_ok = read.bytes_ok && copy_true(index, slot, chunk);
    }
    --reads_pending_;
    node.engine->release_read(now(), complete->read);
  } else if (const auto* failed = std::get_if<transfer::ReadFailed>(&event)) {
    const auto it = node.read_by_id.find(failed->read.value);
    if (it == node.read_by_id.end()) return;
    ReadRecord& read = reads_[it->second];
    node.read_by_id.erase(it);
    read.failed = true;
    read.failure = failed->reason;
    read.finished = now();
    --reads_pending_;
    node.engine->release_read(now(), failed->read);
  } else if (const auto* banned = std::get_if<transfer::PeerBanned>(&event)) {
    const auto it = node_by_id_.find(banned->peer.id);
    if (it != node_by_id_.end()) node.banned.insert(it->second);
  } else if (const auto* chunk = std::get_if<transfer::ChunkReady>(&event)) {
    if (options_.collect_chunk_waits) chunk_waits_.push_back(chunk->fetch);
  }
}

// ---- Transfers ----

void TransferCluster::on_start_fetch(size_t index, const transfer::StartFetch& start) {
  const uint64_t id = next_transfer_++;
  Transfer transfer;
  transfer.requester = index;
  transfer.fetch = start.fetch;
  transfer.content = content_slot(start.chunk.content);
  transfer.chunk_index = start.chunk.index;
  transfer.begin = start.begin_in_chunk;
  transfer.end = start.end_in_chunk;
  transfer.fetch_through = start.fetch_through;
  nodes_[index]->transfer_by_fetch[start.fetch.value] = id;
  if (start.source.is_upstream()) {
    transfer.source = kUpstream;
    transfer.latency = options_.upstream_latency;
    transfers_.emplace(id, transfer);
    dht_.schedule(now() + transfer.latency, [this, id] { on_arrival(id); });
    return;
  }
  const auto source = node_by_id_.find(start.source.peer.id);
  if (source == node_by_id_.end() || !nodes_[source->second]->alive) {
    transfer.source = source == node_by_id_.end() ? kUpstream : source->second;
    transfer.state = TransferState::kSilent;
    transfers_.emplace(id, transfer);
    dht_.schedule(now() + options_.connect_failure_delay,
                  [this, id] { fail_transfer(id, transfer::FetchFailure::kUnreachable); });
    return;
  }
  transfer.source = source->second;
  transfer.latency = latency_between(index, source->second);
  transfers_.emplace(id, transfer);
  dht_.schedule(now() + transfer.latency, [this, id] { on_arrival(id); });
}

void TransferCluster::on_arrival(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;  // cancelled on the way
  Transfer& transfer = it->second;
  if (!nodes_[transfer.requester]->alive) {
    forget_transfer(id);
    return;
  }
  if (transfer.source == kUpstream) {
    start_flow(id);
    return;
  }
  Node& source = *nodes_[transfer.source];
  if (!source.alive) {
    transfer.state = TransferState::kSilent;  // a black hole: the requester's timeouts decide
    return;
  }
  const ContentEntry& entry = contents_[transfer.content];
  auto serve = source.engine->serve(
      now(), transfer::ServeRequest{nodes_[transfer.requester]->peer,
                                    content::ChunkKey{entry.id, transfer.chunk_index, chunk_bytes()},
                                    entry.bytes->size_bytes(), transfer.fetch_through});
  if (!serve) {
    transfer.state = TransferState::kSilent;
    dht_.schedule(now() + transfer.latency,
                  [this, id] { fail_transfer(id, transfer::FetchFailure::kRefused); });
    return;
  }
  transfer.state = TransferState::kServing;
  transfer.serve = *serve;
  source.transfer_by_serve[serve->value] = id;
  drive(transfer.source);
}

void TransferCluster::start_flow(uint64_t id) {
  Transfer& transfer = transfers_.at(id);
  transfer.state = TransferState::kFlowing;
  if (transfer.source == kUpstream) {
    transfer.kind = PieceKind::kGood;
  } else if (nodes_[transfer.source]->corrupting) {
    transfer.kind = PieceKind::kFlipped;
  } else {
    transfer.kind = copy_kind(transfer.source, transfer.content, transfer.chunk_index);
  }
  Link& link = link_of(transfer.source);
  link_advance(link);
  transfer.finish_virtual = link.virtual_bytes + double(transfer.end - transfer.begin);
  link.flows.emplace(transfer.finish_virtual, id);
  link_reschedule(transfer.source);
  dht_.schedule(now() + transfer.latency, [this, id] { on_first_byte(id); });
  dht_.schedule(now() + options_.progress_interval, [this, id] { on_progress_tick(id); });
}

void TransferCluster::on_progress_tick(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end() || it->second.state != TransferState::kFlowing) return;
  Transfer& transfer = it->second;
  const uint64_t sent = flow_progress(link_of(transfer.source), transfer);
  if (sent > transfer.reported) {
    const uint64_t delta = sent - transfer.reported;
    transfer.reported = sent;
    dht_.schedule(now() + transfer.latency, [this, id, delta] {
      const auto flowing = transfers_.find(id);
      if (flowing == transfers_.end() || !nodes_[flowing->second.requester]->alive) return;
      nodes_[flowing->second.requester]->engine->handle_fetch_data(now(), flowing->second.fetch, delta);
      drive(flowing->second.requester);
    });
  }
  dht_.schedule(now() + options_.progress_interval, [this, id] { on_progress_tick(id); });
}

void TransferCluster::on_first_byte(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  const Transfer& transfer = it->second;
  if (transfer.state != TransferState::kFlowing && transfer.state != TransferState::kDelivering) return;
  Node& requester = *nodes_[transfer.requester];
  if (!requester.alive) return;
  requester.engine->handle_fetch_data(now(), transfer.fetch, 0);
  drive(transfer.requester);
}

void TransferCluster::on_delivered(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  const Transfer transfer = it->second;
  forget_transfer(id);
  Node& requester = *nodes_[transfer.requester];
  if (!requester.alive) return;
  record_piece(transfer.requester, transfer.content, transfer.chunk_index,
               Piece{transfer.begin, transfer.end, transfer.kind});
  if (transfer.source != kUpstream) requester.received_from.insert(transfer.source);
  requester.engine->handle_fetch_data(now(), transfer.fetch,
                                      transfer.end - transfer.begin - transfer.reported);
  requester.engine->handle_fetch_complete(
      now(), transfer.fetch, copy_checksum(transfer.requester, transfer.content, transfer.chunk_index));
  drive(transfer.requester);
}

void TransferCluster::fail_transfer(uint64_t id, transfer::FetchFailure failure) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  const Transfer transfer = it->second;
  forget_transfer(id);
  Node& requester = *nodes_[transfer.requester];
  if (!requester.alive) return;
  requester.engine->handle_fetch_failed(now(), transfer.fetch, failure);
  drive(transfer.requester);
}

void TransferCluster::cancel_transfer(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  const Transfer transfer = it->second;
  forget_transfer(id);
  const bool peer_source = transfer.source != kUpstream;
  if (transfer.state == TransferState::kServing && peer_source) {
    const size_t source = transfer.source;
    const transfer::ServeId serve = transfer.serve;
    dht_.schedule(now() + transfer.latency, [this, source, serve] {
      Node& node = *nodes_[source];
      if (!node.alive) return;
      node.transfer_by_serve.erase(serve.value);
      node.engine->serve_done(now(), serve, 0);
      drive(source);
    });
  } else if (transfer.state == TransferState::kFlowing) {
    Link& link = link_of(transfer.source);
    const uint64_t sent = flow_progress(link, transfer);
    link.egress_bytes += sent;
    link.flows.erase({transfer.finish_virtual, id});
    link_reschedule(transfer.source);
    if (peer_source) {
      const size_t source = transfer.source;
      const transfer::ServeId serve = transfer.serve;
      dht_.schedule(now() + transfer.latency, [this, source, serve, sent] {
        Node& node = *nodes_[source];
        if (!node.alive) return;
        node.engine->serve_done(now(), serve, sent);
        drive(source);
      });
    }
  }
}

void TransferCluster::forget_transfer(uint64_t id) {
  const auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  nodes_[it->second.requester]->transfer_by_fetch.erase(it->second.fetch.value);
  transfers_.erase(it);
}

void TransferCluster::record_piece(size_t node, uint32_t content, uint64_t chunk, const Piece& piece) {
  ++pieces_delivered_;
  if (piece.kind != PieceKind::kGood) ++pieces_corrupt_;
  if (piece.end <= piece.begin) return;
  // Writes always extend the chunk's contiguous prefix: whatever was written at or after `begin` before (an
  // earlier attempt of a chunk that started over) is overwritten.
  std::vector<Piece>& pieces = nodes_[node]->copies[{content, chunk}];
  std::erase_if(pieces, [&](const Piece& old) { return old.begin >= piece.begin; });
  for (Piece& old : pieces) old.end = std::min(old.end, piece.begin);
  pieces.push_back(piece);
}

TransferCluster::PieceKind TransferCluster::copy_kind(size_t node, uint32_t content, uint64_t chunk) const {
  const auto& copies = nodes_[node]->copies;
  const auto it = copies.find({content, chunk});
  if (it == copies.end() || it->second.empty()) return PieceKind::kGarbage;
  const PieceKind first = it->second.front().kind;
  for (const Piece& piece : it->second) {
    if (piece.kind != first) return PieceKind::kGarbage;
  }
  return first;
}

uint64_t TransferCluster::copy_checksum(size_t node, uint32_t content, uint64_t chunk) const {
  const auto& copies = nodes_[node]->copies;
  const auto it = copies.find({content, chunk});
  if (it == copies.end()) return 0;
  const VirtualContent& bytes = *contents_[content].bytes;
  const uint64_t base = chunk * chunk_bytes();
  uint64_t sum = 0;
  for (const Piece& piece : it->second) {
    switch (piece.kind) {
      case PieceKind::kGood:
        sum += bytes.checksum(base + piece.begin, base + piece.end);
        break;
      case PieceKind::kFlipped:
        sum += bytes.flipped_checksum(base + piece.begin, base + piece.end);
        break;
      case PieceKind::kGarbage:
        sum += transfer::mix64(base + piece.begin) ^ bytes.checksum(base + piece.begin, base + piece.end);
        break;
    }
  }
  return sum;
}

bool TransferCluster::copy_true(size_t node, uint32_t content, uint64_t chunk) const {
  const auto& copies = nodes_[node]->copies;
  const auto it = copies.find({content, chunk});
  if (it == copies.end()) return false;
  const VirtualContent& bytes = *contents_[content].bytes;
  const uint64_t base = chunk * chunk_bytes();
  const uint64_t length = std::min(chunk_bytes(), bytes.size_bytes() - base);
  uint64_t covered = 0;
  for (const Piece& piece : it->second) {
    if (piece.begin != covered) return false;
    covered = piece.end;
  }
  return covered == length && copy_checksum(node, content, chunk) == bytes.checksum(base, base + length);
}

bool TransferCluster::holds_true_copy(size_t node, const content::ContentId& id) const {
  const uint32_t slot = content_slot(id);
  const uint64_t size = contents_[slot].bytes->size_bytes();
  for (uint64_t chunk = 0; chunk * chunk_bytes() < size; ++chunk) {
    if (!nodes_[node]->store->has(content::ChunkKey{id, chunk, chunk_bytes()}) ||
        !copy_true(node, slot, chunk)) {
      return false;
    }
  }
  return true;
}

// ---- Links ----

void TransferCluster::link_advance(Link& link) {
  const Instant current = now();
  if (!link.flows.empty() && current > link.updated) {
    link.virtual_bytes +=
        (current - link.updated).as_seconds() * link.capacity_bytes_per_second / double(link.flows.size());
  }
  link.updated = current;
}

void TransferCluster::link_reschedule(size_t source) {
  Link& link = link_of(source);
  const uint64_t generation = ++link.generation;
  if (link.flows.empty()) return;
  const double remaining = std::max(0.0, link.flows.begin()->first - link.virtual_bytes);
  const double seconds = remaining * double(link.flows.size()) / link.capacity_bytes_per_second;
  const auto micros = static_cast<int64_t>(std::ceil(seconds * 1e6));
  dht_.schedule(now() + Duration::microseconds(micros),
                [this, source, generation] { on_link_timer(source, generation); });
}

void TransferCluster::on_link_timer(size_t source, uint64_t generation) {
  Link& link = link_of(source);
  if (generation != link.generation) return;
  link_advance(link);
  std::vector<uint64_t> finished;
  while (!link.flows.empty() && link.flows.begin()->first <= link.virtual_bytes + 0.5) {
    finished.push_back(link.flows.begin()->second);
    link.flows.erase(link.flows.begin());
  }
  link_reschedule(source);
  std::vector<std::pair<transfer::ServeId, uint64_t>> served;
  for (const uint64_t id : finished) {
    Transfer& transfer = transfers_.at(id);
    const uint64_t bytes = transfer.end - transfer.begin;
    link.egress_bytes += bytes;
    transfer.state = TransferState::kDelivering;
    if (source != kUpstream) served.emplace_back(transfer.serve, bytes);
    dht_.schedule(now() + transfer.latency, [this, id] { on_delivered(id); });
  }
  if (source == kUpstream || served.empty() || !nodes_[source]->alive) return;
  for (const auto& [serve, bytes] : served) nodes_[source]->engine->serve_done(now(), serve, bytes);
  drive(source);
}

uint64_t TransferCluster::flow_progress(Link& link, const Transfer& transfer) {
  link_advance(link);
  const double total = double(transfer.end - transfer.begin);
  const double left = std::max(0.0, transfer.finish_virtual - link.virtual_bytes);
  return static_cast<uint64_t>(std::max(0.0, std::min(total, total - left)));
}

uint64_t TransferCluster::node_egress_bytes(size_t node) const {
  return nodes_.at(node)->egress.egress_bytes - nodes_.at(node)->egress_baseline;
}

// ---- Faults ----

void TransferCluster::kill(size_t index) {
  Node& node = *nodes_[index];
  if (!node.alive) return;
  node.alive = false;
  ++node.timer_generation;
  node.armed.reset();
  dht_.kill(index);
  for (ReadRecord& read : reads_) {
    if (read.node == index && !read.completed && !read.failed) {
      read.failed = true;
      read.killed = true;
      read.finished = now();
      --reads_pending_;
    }
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, transfer] : transfers_) {
    if (transfer.requester == index || transfer.source == index) ids.push_back(id);
  }
  for (const uint64_t id : ids) {
    Transfer& transfer = transfers_.at(id);
    if (transfer.requester == index) {
      cancel_transfer(id);  // the server notices the closed connection
      continue;
    }
    if (transfer.state != TransferState::kFlowing) {
      if (transfer.state != TransferState::kDelivering) transfer.state = TransferState::kSilent;
      continue;
    }
    // The stream goes silent after the bytes already on the wire; the requester's stall timeout decides.
    Link& link = link_of(index);
    const uint64_t sent = flow_progress(link, transfer);
    link.egress_bytes += sent;
    link.flows.erase({transfer.finish_virtual, id});
    transfer.state = TransferState::kSilent;
    if (sent <= transfer.reported) continue;
    const uint64_t delta = sent - transfer.reported;
    transfer.reported = sent;
    dht_.schedule(now() + transfer.latency, [this, id, sent, delta] {
      const auto it = transfers_.find(id);
      if (it == transfers_.end()) return;
      Transfer& silent = it->second;
      Node& requester = *nodes_[silent.requester];
      if (!requester.alive) return;
      record_piece(silent.requester, silent.content, silent.chunk_index,
                   Piece{silent.begin, silent.begin + sent, silent.kind});
      requester.received_from.insert(silent.source);
      requester.engine->handle_fetch_data(now(), silent.fetch, delta);
      drive(silent.requester);
    });
  }
  link_reschedule(index);
  dht_.schedule(now() + options_.membership_delay, [this] { deliver_membership(); });
}

bool TransferCluster::banned_by(size_t node, size_t peer) const {
  return nodes_.at(node)->banned.contains(peer);
}

bool TransferCluster::received_from(size_t node, size_t source) const {
  return nodes_.at(node)->received_from.contains(source);
}

// ---- Running and reporting ----

bool TransferCluster::run_until_reads_done(Instant deadline, size_t steps_max) {
  return dht_.run_until([this] { return reads_pending_ == 0; }, deadline, steps_max);
}

TransferReport TransferCluster::report() const {
  TransferReport report;
  report.nodes = nodes_.size();
  report.reads = reads_.size();
  std::vector<Duration> durations;
  for (const ReadRecord& read : reads_) {
    if (read.completed) {
      ++report.reads_completed;
      durations.push_back(read.finished - read.started);
      if (!read.bytes_ok) ++report.reads_bad_bytes;
      const uint32_t slot = content_slot(read.content);
      const bool whole = read.offset == 0 && read.length == contents_[slot].bytes->size_bytes();
      if (whole && read.content.is_blob() && !read.verified) ++report.reads_unverified;
      report.content_bytes = std::max(report.content_bytes, contents_[slot].bytes->size_bytes());
    } else if (read.killed) {
      ++report.reads_killed;
    } else if (read.failed) {
      ++report.reads_failed;
    }
  }
  report.completion_p50 = percentile(durations, 0.5);
  report.completion_p90 = percentile(durations, 0.9);
  report.completion_max =
      durations.empty() ? Duration::zero() : *std::max_element(durations.begin(), durations.end());
  report.upstream_egress_bytes = upstream_egress_bytes();
  report.upstream_ratio =
      report.content_bytes == 0 ? 0 : double(report.upstream_egress_bytes) / double(report.content_bytes);
  uint64_t egress_total = 0;
  for (size_t node = 0; node < nodes_.size(); ++node) {
    const uint64_t egress = node_egress_bytes(node);
    report.node_egress_bytes_max = std::max(report.node_egress_bytes_max, egress);
    egress_total += egress;
  }
  report.node_egress_bytes_mean = nodes_.empty() ? 0 : egress_total / nodes_.size();
  const routing::DhtStats stats = dht_.total_stats();
  report.dht_datagrams = stats.datagrams_sent - dht_datagrams_baseline_;
  report.dht_datagrams_per_node = nodes_.empty() ? 0 : double(report.dht_datagrams) / double(nodes_.size());
  report.dht_lookups = stats.lookups_started - dht_lookups_baseline_;
  report.pieces_delivered = pieces_delivered_;
  report.pieces_corrupt = pieces_corrupt_;
  report.chunk_wait_p50 = percentile(chunk_waits_, 0.5);
  report.chunk_wait_p99 = percentile(chunk_waits_, 0.99);
  for (const auto& node : nodes_) {
    const transfer::EngineStats& engine = node->engine->stats();
    report.hedges += engine.hedges_started;
    report.resumes += engine.resumes;
    report.owner_timeouts += engine.owner_timeouts;
    report.bans += engine.peers_banned;
    report.integrity_failures += engine.integrity_failures;
  }
  return report;
}

}  // namespace peerd::harness
