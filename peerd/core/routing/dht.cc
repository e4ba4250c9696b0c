#include "peerd/core/routing/dht.h"

#include <algorithm>
#include <cassert>

namespace peerd::routing {

namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

uint32_t ttl_to_millis(Duration ttl) {
  const int64_t millis = (ttl.micros + 999) / 1000;
  return static_cast<uint32_t>(std::clamp<int64_t>(millis, 1, wire::kProviderTtlMillisMax));
}

void mix_into(uint64_t& hash, uint64_t value) {
  hash ^= value;
  hash *= 1099511628211ull;
}

void mix_id(uint64_t& hash, const NodeId& id) {
  for (uint8_t byte : id.bytes) mix_into(hash, byte);
}

}  // namespace

Dht::Dht(DhtOptions options)
    : options_(options),
      rng_(options.seed),
      table_(options.self_id, RoutingTableOptions{options.bucket_peers_max, options.bucket_replacements_max}),
      store_(ProviderStoreOptions{options.providers_per_key_max, options.provider_records_per_peer_max,
                                  options.provider_records_max}) {
  assert(options_.bucket_peers_max > 0);
  assert(options_.lookup_parallelism > 0);
  assert(options_.request_timeout > Duration::zero());
  assert(options_.request_retries >= 0);
  assert(options_.contact_failures_max > 0);
  assert(options_.reprovide_interval > Duration::zero());
  assert(options_.bucket_refresh_interval > Duration::zero());
  assert(options_.bootstrap_retry_interval > Duration::zero());
  options_.providers_per_response_max = std::min(options_.providers_per_response_max, wire::kContactsMax);
}

// ---------------------------------------------------------------------------------------------------------
// Inputs

void Dht::bootstrap(Instant now, std::span<const Endpoint> seeds) {
  seeds_.clear();
  for (const auto& seed : seeds) {
    if (seed == options_.self_endpoint) continue;
    if (std::find(seeds_.begin(), seeds_.end(), seed) != seeds_.end()) continue;
    if (seeds_.size() >= options_.seeds_max) {
      ++stats_.seeds_dropped;
      continue;
    }
    seeds_.push_back(seed);
  }
  if (!bootstrap_started_) {
    bootstrap_started_ = true;
    bucket_last_lookup_.fill(now);
    refresh_at_ = now + options_.bucket_refresh_interval;
  }
  start_bootstrap(now);
}

void Dht::handle_datagram(Instant now, const Endpoint& from, std::span<const uint8_t> bytes) {
  ++stats_.datagrams_received;
  stats_.bytes_received += bytes.size();
  auto decoded = wire::decode(bytes);
  if (!decoded) {
    ++stats_.malformed_dropped;
    ++stats_.malformed_by_reason[static_cast<size_t>(decoded.error())];
    return;
  }
  const wire::Message& message = decoded.value();
  if (message.sender == options_.self_id || from == options_.self_endpoint) {
    ++stats_.self_datagrams_dropped;
    return;
  }
  if (wire::is_request(message.body)) {
    handle_request(now, from, message);
  } else {
    handle_response(now, from, message);
  }
}

void Dht::handle_timeout(Instant now) {
  expire_requests(now);
  if (size_t expired = store_.expire(now)) stats_.provider_records_expired += expired;
  reprovide_due(now);
  if (bootstrap_retry_at_ && *bootstrap_retry_at_ <= now) start_bootstrap(now);
  if (refresh_at_ && *refresh_at_ <= now) {
    refresh_at_ = now + options_.bucket_refresh_interval;
    if (table_.size() == 0 && !seeds_.empty()) {
      start_bootstrap(now);  // lost every peer: rejoin through the seeds
    } else {
      refresh_buckets(now, false);
    }
  }
}

void Dht::handle_request(Instant now, const Endpoint& from, const wire::Message& message) {
  ++stats_.requests_received;
  const Contact requester{message.sender, from};
  observe_contact(now, requester);
  std::visit(Overloaded{
                 [&](const wire::Ping&) { send_response(from, message.transaction_id, wire::Pong{}); },
                 [&](const wire::FindNode& find) {
                   wire::Nodes nodes;
                   table_.closest_into(find.target, std::min(options_.bucket_peers_max, wire::kContactsMax),
                                       &message.sender, nodes.contacts);
                   send_response(from, message.transaction_id, std::move(nodes));
                 },
                 [&](const wire::GetProviders& get) {
                   wire::Providers providers;
                   local_providers(now, get.key, options_.providers_per_response_max, providers.providers);
                   table_.closest_into(get.key, std::min(options_.bucket_peers_max, wire::kContactsMax),
                                       &message.sender, providers.closer);
                   wire::Message response{message.transaction_id, options_.self_id, std::move(providers)};
                   // Providers matter more than routing hints: trim closer nodes until the answer fits a
                   // datagram.
                   auto& closer = std::get<wire::Providers>(response.body).closer;
                   while (!closer.empty() && wire::encoded_size(response) > wire::kDatagramBytesMax)
                     closer.pop_back();
                   send_response(from, message.transaction_id, std::move(response.body));
                 },
                 [&](const wire::AddProvider& add) {
                   const Duration ttl =
                       std::min(Duration::milliseconds(add.ttl_millis), options_.provider_ttl_max);
                   const auto result = store_.add(add.key, requester, now + ttl);
                   bool stored = true;
                   switch (result) {
                     case ProviderStore::AddResult::kAdded:
                       ++stats_.provider_records_added;
                       break;
                     case ProviderStore::AddResult::kRefreshed:
                       ++stats_.provider_records_refreshed;
                       break;
                     case ProviderStore::AddResult::kKeyFull:
                       ++stats_.provider_records_refused_key_full;
                       stored = false;
                       break;
                     case ProviderStore::AddResult::kPeerFull:
                       ++stats_.provider_records_refused_peer_full;
                       stored = false;
                       break;
                     case ProviderStore::AddResult::kStoreFull:
                       ++stats_.provider_records_refused_store_full;
                       stored = false;
                       break;
                   }
                   send_response(from, message.transaction_id, wire::AddProviderAck{stored});
                 },
                 [&](const auto&) { assert(false && "handle_request called with a response"); },
             },
             message.body);
}

bool Dht::response_matches(RequestKind kind, const wire::Body& body) const {
  switch (kind) {
    case RequestKind::kPing:
      return std::holds_alternative<wire::Pong>(body);
    case RequestKind::kFindNode:
      return std::holds_alternative<wire::Nodes>(body);
    case RequestKind::kGetProviders:
      return std::holds_alternative<wire::Providers>(body);
    case RequestKind::kAddProvider:
      return std::holds_alternative<wire::AddProviderAck>(body);
  }
  return false;
}

void Dht::handle_response(Instant now, const Endpoint& from, const wire::Message& message) {
  auto it = requests_.find(message.transaction_id);
  if (it == requests_.end() || it->second.destination != from ||
      (it->second.peer && *it->second.peer != message.sender) ||
      !response_matches(it->second.kind, message.body)) {
    ++stats_.responses_unmatched;
    return;
  }
  Request request = std::move(it->second);
  requests_.erase(it);
  request_deadlines_.erase({request.deadline, message.transaction_id});
  observe_contact(now, Contact{message.sender, from});
  on_request_answered(now, request, message);
  advance_stalled_lookups(now);
}

void Dht::on_request_answered(Instant now, const Request& request, const wire::Message& message) {
  if (request.eviction_bucket >= 0) {
    // The least recently seen contact answered: observe_contact() already moved it to the fresh end of its
    // bucket, and the newcomer stays in the replacement cache.
    eviction_ping_pending_[static_cast<size_t>(request.eviction_bucket)] = false;
    return;
  }
  if (request.lookup == 0) return;
  auto lookup = lookups_.find(request.lookup);
  if (lookup == lookups_.end()) return;  // finished early; the answer still refreshed the routing table
  on_lookup_answer(now, lookup->second, request, message);
}

void Dht::on_request_failed(Instant now, const Request& request) {
  ++stats_.requests_failed;
  if (request.eviction_bucket >= 0) {
    eviction_ping_pending_[static_cast<size_t>(request.eviction_bucket)] = false;
    if (request.peer) remove_contact(now, *request.peer, true);
  } else if (request.peer && table_.record_failure(*request.peer) >= options_.contact_failures_max) {
    remove_contact(now, *request.peer, false);
  }
  if (request.lookup == 0) return;
  auto it = lookups_.find(request.lookup);
  if (it == lookups_.end()) return;
  Lookup& lookup = it->second;
  if (request.kind == RequestKind::kAddProvider) {
    --lookup.store_in_flight;
  } else if (!request.peer) {
    --lookup.seeds_in_flight;
  } else {
    --lookup.in_flight;
    lookup.candidates.failed(*request.peer);
  }
  advance_lookup(now, lookup.id);
}

// ---------------------------------------------------------------------------------------------------------
// Routing table upkeep

void Dht::observe_contact(Instant now, const Contact& contact) {
  switch (table_.observe(contact, now)) {
    case RoutingTable::ObserveResult::kAdded:
      ++stats_.peers_added;
      if (options_.peer_events) emit(PeerAdded{contact});
      break;
    case RoutingTable::ObserveResult::kBucketFull:
      on_bucket_full(now, bucket_index(options_.self_id, contact.id));
      break;
    case RoutingTable::ObserveResult::kUpdated:
    case RoutingTable::ObserveResult::kSelf:
      break;
  }
}

void Dht::on_bucket_full(Instant now, int bucket) {
  if (eviction_ping_pending_[static_cast<size_t>(bucket)]) return;
  const RoutingEntry* oldest = table_.least_recently_seen(bucket);
  assert(oldest != nullptr);
  if (oldest->failures > 0) {
    remove_contact(now, oldest->contact.id, true);  // already failing: no need to ask again
    return;
  }
  if (now - oldest->last_seen < options_.eviction_ping_after_silence) return;
  const Contact target = oldest->contact;
  if (send_request(now, RequestKind::kPing, target.endpoint, target.id, wire::Ping{}, 0, bucket)) {
    eviction_ping_pending_[static_cast<size_t>(bucket)] = true;
    ++stats_.eviction_pings_sent;
  }
}

void Dht::remove_contact(Instant now, const NodeId& id, bool stale) {
  const RoutingEntry* entry = table_.find(id);
  if (!entry) return;
  const Contact removed = entry->contact;
  const auto removal = table_.remove(id, now, true);
  if (!removal.removed) return;
  ++stats_.peers_removed;
  if (stale) ++stats_.peers_evicted_stale;
  if (options_.peer_events) emit(PeerRemoved{removed});
  if (removal.promoted) {
    ++stats_.peers_added;
    if (options_.peer_events) emit(PeerAdded{*removal.promoted});
  }
}

// ---------------------------------------------------------------------------------------------------------
// Requests and transmits

uint64_t Dht::new_transaction_id() {
  // 64 random bits: a collision with an outstanding id is astronomically unlikely, and a bounded retry makes
  // even that harmless.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const uint64_t id = rng_.next_u64();
    if (id != 0 && !requests_.contains(id)) return id;
  }
  return 0;
}

bool Dht::send_request(Instant now, RequestKind kind, const Endpoint& destination,
                       const std::optional<NodeId>& peer, wire::Body body, LookupId lookup,
                       int eviction_bucket) {
  if (requests_.size() >= options_.requests_outstanding_max) {
    ++stats_.requests_refused_outstanding_full;
    requests_saturated_ = true;
    return false;
  }
  const uint64_t transaction_id = new_transaction_id();
  if (transaction_id == 0) return false;
  Request request;
  request.kind = kind;
  request.destination = destination;
  request.peer = peer;
  request.lookup = lookup;
  request.eviction_bucket = eviction_bucket;
  request.deadline = now + options_.request_timeout;
  const wire::Message message{transaction_id, options_.self_id, std::move(body)};
  if (!wire::encode(message, request.payload)) {
    ++stats_.encode_failures;
    return false;
  }
  ++stats_.requests_sent;
  queue_transmit(destination, request.payload);
  request_deadlines_.insert({request.deadline, transaction_id});
  requests_.emplace(transaction_id, std::move(request));
  return true;
}

void Dht::send_response(const Endpoint& destination, uint64_t transaction_id, wire::Body body) {
  const wire::Message message{transaction_id, options_.self_id, std::move(body)};
  encode_buffer_.clear();
  if (!wire::encode(message, encode_buffer_)) {
    ++stats_.encode_failures;
    return;
  }
  queue_transmit(destination, encode_buffer_);
}

void Dht::queue_transmit(const Endpoint& destination, std::span<const uint8_t> payload) {
  if (transmits_.size() >= options_.transmit_queue_max) {
    ++stats_.transmits_dropped_queue_full;
    return;
  }
  ++stats_.datagrams_sent;
  stats_.bytes_sent += payload.size();
  transmits_.push_back(Transmit{destination, std::vector<uint8_t>(payload.begin(), payload.end())});
}

void Dht::expire_requests(Instant now) {
  // Bounded by the number of outstanding requests: each one is either re-armed into the future or removed.
  while (!request_deadlines_.empty() && request_deadlines_.begin()->first <= now) {
    const uint64_t transaction_id = request_deadlines_.begin()->second;
    request_deadlines_.erase(request_deadlines_.begin());
    auto it = requests_.find(transaction_id);
    assert(it != requests_.end());
    ++stats_.request_timeouts;
    Request& request = it->second;
    if (request.attempts <= options_.request_retries) {
      ++request.attempts;
      ++stats_.requests_retried;
      request.deadline = now + options_.request_timeout;
      request_deadlines_.insert({request.deadline, transaction_id});
      if (request.lookup != 0) {
        if (auto lookup = lookups_.find(request.lookup); lookup != lookups_.end()) ++lookup->second.rpcs;
      }
      queue_transmit(request.destination, request.payload);
      continue;
    }
    Request failed = std::move(request);
    requests_.erase(it);
    on_request_failed(now, failed);
  }
  advance_stalled_lookups(now);
}

// ---------------------------------------------------------------------------------------------------------
// Lookups

LookupId Dht::start_lookup(Instant now, LookupKind kind, const NodeId& target,
                           std::span<const Endpoint> seeds) {
  if (lookups_.size() >= options_.lookups_pending_max) {
    ++stats_.lookups_refused_pending_full;
    return 0;
  }
  const LookupId id = next_lookup_id_++;
  ++stats_.lookups_started;
  const int bucket = bucket_index(options_.self_id, target);
  if (bucket >= 0) bucket_last_lookup_[static_cast<size_t>(bucket)] = now;
  auto [it, inserted] = lookups_.try_emplace(id, id, kind, target, options_.bucket_peers_max,
                                             options_.lookup_candidates_max, now);
  assert(inserted);
  Lookup& lookup = it->second;
  table_.closest_into(target, options_.bucket_peers_max, nullptr, contacts_buffer_);
  for (const auto& contact : contacts_buffer_) lookup.candidates.add(contact, 1, 0);
  for (const auto& seed : seeds) {
    const auto body = kind == LookupKind::kFindProviders ? wire::Body{wire::GetProviders{target}}
                                                         : wire::Body{wire::FindNode{target}};
    const auto request_kind =
        kind == LookupKind::kFindProviders ? RequestKind::kGetProviders : RequestKind::kFindNode;
    if (send_request(now, request_kind, seed, std::nullopt, body, id, -1)) {
      ++lookup.seeds_in_flight;
      ++lookup.rpcs;
    }
  }
  return id;
}

void Dht::advance_lookup(Instant now, LookupId id) {
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return;
  Lookup& lookup = it->second;
  if (lookup.storing) {
    while (lookup.store_next < lookup.store_targets.size()) {
      const Contact& target = lookup.store_targets[lookup.store_next];
      if (!send_request(now, RequestKind::kAddProvider, target.endpoint, target.id,
                        wire::AddProvider{lookup.candidates.target(), ttl_to_millis(lookup.ttl)}, id, -1)) {
        break;
      }
      ++lookup.store_next;
      ++lookup.store_in_flight;
      ++lookup.rpcs;
    }
    if (lookup.store_in_flight == 0 && lookup.store_next == lookup.store_targets.size()) finish_lookup(id);
    return;
  }
  const bool wants_providers = lookup.kind == LookupKind::kFindProviders;
  while (lookup.in_flight < options_.lookup_parallelism) {
    LookupCandidate* candidate = lookup.candidates.next_to_query();
    if (!candidate) break;
    const NodeId& target = lookup.candidates.target();
    const bool sent = wants_providers
                          ? send_request(now, RequestKind::kGetProviders, candidate->contact.endpoint,
                                         candidate->contact.id, wire::GetProviders{target}, id, -1)
                          : send_request(now, RequestKind::kFindNode, candidate->contact.endpoint,
                                         candidate->contact.id, wire::FindNode{target}, id, -1);
    if (!sent) break;
    candidate->state = LookupCandidate::State::kInFlight;
    ++lookup.in_flight;
    ++lookup.rpcs;
  }
  // Done once the closest live candidates have all answered; answers still in flight from farther nodes
  // cannot change that. A lookup that could not send for lack of request slots waits for
  // advance_stalled_lookups().
  if (lookup.seeds_in_flight == 0 && lookup.candidates.converged()) on_lookup_converged(now, lookup);
}

void Dht::advance_stalled_lookups(Instant now) {
  if (!requests_saturated_ || requests_.size() >= options_.requests_outstanding_max) return;
  requests_saturated_ = false;
  // Bounded by lookups_pending_max. Ids are collected first because advancing may finish lookups.
  std::vector<LookupId> ids;
  ids.reserve(lookups_.size());
  for (const auto& [id, lookup] : lookups_) ids.push_back(id);
  for (LookupId id : ids) advance_lookup(now, id);
}

void Dht::add_provider_found(Lookup& lookup, const Contact& provider, int hops, int round_trips) {
  const size_t cap = std::min(lookup.want, options_.providers_per_lookup_max);
  if (lookup.providers.size() >= cap) return;
  for (const auto& known : lookup.providers) {
    if (known.id == provider.id) return;
  }
  lookup.providers.push_back(provider);
  lookup.result_hops = hops;
  lookup.result_round_trips = round_trips;
}

void Dht::on_lookup_answer(Instant now, Lookup& lookup, const Request& request,
                           const wire::Message& message) {
  if (request.kind == RequestKind::kAddProvider) {
    --lookup.store_in_flight;
    if (std::get<wire::AddProviderAck>(message.body).stored) ++lookup.stored_on;
    advance_lookup(now, lookup.id);
    return;
  }
  const Contact responder{message.sender, request.destination};
  LookupCandidate* answered = nullptr;
  if (!request.peer) {
    --lookup.seeds_in_flight;
    lookup.candidates.add(responder, 1, 0);
  } else {
    --lookup.in_flight;
  }
  answered = lookup.candidates.answered(message.sender, request.attempts);
  const int hops = answered ? answered->hops : 1;
  const int round_trips = answered ? answered->round_trips : request.attempts;
  const std::vector<Contact>* closer = nullptr;
  if (const auto* nodes = std::get_if<wire::Nodes>(&message.body)) closer = &nodes->contacts;
  if (const auto* providers = std::get_if<wire::Providers>(&message.body)) {
    closer = &providers->closer;
    if (lookup.kind == LookupKind::kFindProviders) {
      for (const auto& provider : providers->providers)
        add_provider_found(lookup, provider, hops, round_trips);
    }
  }
  if (closer) {
    for (const auto& contact : *closer) {
      if (contact.id == options_.self_id || contact.endpoint == options_.self_endpoint) continue;
      lookup.candidates.add(contact, hops + 1, round_trips);
    }
  }
  if (lookup.kind == LookupKind::kFindProviders &&
      lookup.providers.size() >= std::min(lookup.want, options_.providers_per_lookup_max)) {
    on_lookup_converged(now, lookup);
    return;
  }
  advance_lookup(now, lookup.id);
}

void Dht::on_lookup_converged(Instant now, Lookup& lookup) {
  const LookupId id = lookup.id;
  switch (lookup.kind) {
    case LookupKind::kProvide:
      lookup.storing = true;
      lookup.store_targets = lookup.candidates.closest_answered(options_.bucket_peers_max);
      advance_lookup(now, id);
      return;
    case LookupKind::kFindProviders:
      if (lookup.providers.empty()) {
        lookup.result_hops = lookup.candidates.hops_max_answered();
        lookup.result_round_trips = lookup.candidates.round_trips_max_answered();
      }
      if (lookup.emit_event) emit_providers_found(now, lookup);
      finish_lookup(id);
      return;
    case LookupKind::kBootstrap: {
      finish_lookup(id);
      if (table_.size() == 0) {
        bootstrap_retry_at_ = now + options_.bootstrap_retry_interval;
        return;
      }
      refresh_buckets(now, true);
      if (bootstrap_refreshes_pending_ == 0) complete_bootstrap();
      return;
    }
    case LookupKind::kRefresh: {
      const bool counts_for_bootstrap = lookup.counts_for_bootstrap;
      finish_lookup(id);
      if (counts_for_bootstrap && bootstrap_refreshes_pending_ > 0 && --bootstrap_refreshes_pending_ == 0) {
        complete_bootstrap();
      }
      return;
    }
  }
}

void Dht::finish_lookup(LookupId id) {
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return;
  Lookup& lookup = it->second;
  if (lookup.kind == LookupKind::kProvide && lookup.emit_event) {
    emit(ProvideDone{id, lookup.candidates.target(), lookup.stored_on});
  }
  ++stats_.lookups_completed;
  lookups_.erase(it);
}

void Dht::emit_providers_found(Instant now, const Lookup& lookup) {
  ProvidersFound found;
  found.lookup = lookup.id;
  found.key = lookup.candidates.target();
  found.providers = lookup.providers;
  found.hops = lookup.result_hops;
  found.round_trips = lookup.result_round_trips;
  found.rpcs = lookup.rpcs;
  found.elapsed = now - lookup.started;
  emit(std::move(found));
}

void Dht::local_providers(Instant now, const NodeId& key, size_t count, std::vector<Contact>& out) const {
  if (count == 0) return;
  if (provided_.contains(key)) out.push_back(Contact{options_.self_id, options_.self_endpoint});
  store_.providers(key, now, count - out.size(), out);
}

// ---------------------------------------------------------------------------------------------------------
// Commands

LookupId Dht::provide(Instant now, const NodeId& key, Duration ttl) {
  if (ttl <= Duration::zero()) ttl = options_.provider_ttl_default;
  ttl = std::min(ttl, options_.provider_ttl_max);
  auto existing = provided_.find(key);
  if (existing == provided_.end() && provided_.size() >= options_.provides_local_max) {
    ++stats_.provides_refused_local_full;
    const LookupId id = next_lookup_id_++;
    emit(ProvideDone{id, key, 0});
    return id;
  }
  if (existing != provided_.end()) reprovide_schedule_.erase({existing->second.next_reprovide, key});
  const Instant next = now + options_.reprovide_interval;
  provided_[key] = LocalProvide{ttl, next};
  reprovide_schedule_.insert({next, key});
  const LookupId id = start_lookup(now, LookupKind::kProvide, key, {});
  if (id == 0) {
    const LookupId refused = next_lookup_id_++;
    emit(ProvideDone{refused, key, 0});
    return refused;
  }
  lookups_.at(id).ttl = ttl;
  advance_lookup(now, id);
  return id;
}

void Dht::withdraw(const NodeId& key) {
  auto it = provided_.find(key);
  if (it == provided_.end()) return;
  reprovide_schedule_.erase({it->second.next_reprovide, key});
  provided_.erase(it);
}

LookupId Dht::find_providers(Instant now, const NodeId& key, size_t want) {
  if (want == 0) want = options_.providers_per_lookup_max;
  want = std::min(want, options_.providers_per_lookup_max);
  contacts_buffer_.clear();
  local_providers(now, key, want, contacts_buffer_);
  std::vector<Contact> local = contacts_buffer_;
  if (local.size() >= want || table_.size() == 0) {
    ProvidersFound found;
    found.lookup = next_lookup_id_++;
    found.key = key;
    found.providers = std::move(local);
    emit(std::move(found));
    return found.lookup;
  }
  const LookupId id = start_lookup(now, LookupKind::kFindProviders, key, {});
  if (id == 0) {
    ProvidersFound found;
    found.lookup = next_lookup_id_++;
    found.key = key;
    found.providers = std::move(local);
    emit(std::move(found));
    return found.lookup;
  }
  Lookup& lookup = lookups_.at(id);
  lookup.want = want;
  for (const auto& provider : local) add_provider_found(lookup, provider, 0, 0);
  advance_lookup(now, id);
  return id;
}

// ---------------------------------------------------------------------------------------------------------
// Timers

void Dht::reprovide_due(Instant now) {
  // Bounded by provides_local_max; stops when lookup slots run out (the timer re-arms once one frees up).
  while (!reprovide_schedule_.empty() && reprovide_schedule_.begin()->first <= now &&
         lookups_.size() < options_.lookups_pending_max) {
    const NodeId key = reprovide_schedule_.begin()->second;
    reprovide_schedule_.erase(reprovide_schedule_.begin());
    LocalProvide& local = provided_.at(key);
    local.next_reprovide = now + options_.reprovide_interval;
    reprovide_schedule_.insert({local.next_reprovide, key});
    const LookupId id = start_lookup(now, LookupKind::kProvide, key, {});
    if (id == 0) break;
    ++stats_.reprovides_started;
    Lookup& lookup = lookups_.at(id);
    lookup.ttl = local.ttl;
    lookup.emit_event = false;
    advance_lookup(now, id);
  }
}

NodeId Dht::random_id_in_bucket(int bucket) {
  // Distance with its highest set bit at `bucket` (counted from the least significant end), random below it.
  NodeId distance;
  for (size_t i = 0; i < NodeId::kBytes; i += 8) {
    const uint64_t word = rng_.next_u64();
    for (size_t j = 0; j < 8; ++j) distance.bytes[i + j] = static_cast<uint8_t>(word >> (8 * j));
  }
  const int top = NodeId::kBits - 1 - bucket;  // bit index from the most significant end
  for (int bit = 0; bit <= top; ++bit) {
    const uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    if (bit == top) {
      distance.bytes[static_cast<size_t>(bit / 8)] |= mask;
    } else {
      distance.bytes[static_cast<size_t>(bit / 8)] &= static_cast<uint8_t>(~mask);
    }
  }
  return options_.self_id.distance_to(distance);
}

void Dht::refresh_buckets(Instant now, bool for_bootstrap) {
  // Buckets nearer than the nearest known contact are empty for want of nodes, not of lookups. During
  // bootstrap every bucket beyond it is refreshed once; later only those no lookup touched for an interval.
  const int nearest = table_.nearest_bucket();
  if (nearest < 0) return;
  const int first = for_bootstrap ? nearest + 1 : nearest;
  for (int bucket = first; bucket < RoutingTable::kBucketCount; ++bucket) {
    if (!for_bootstrap &&
        bucket_last_lookup_[static_cast<size_t>(bucket)] + options_.bucket_refresh_interval > now) {
      continue;
    }
    const LookupId id = start_lookup(now, LookupKind::kRefresh, random_id_in_bucket(bucket), {});
    if (id == 0) break;
    ++stats_.refresh_lookups_started;
    if (for_bootstrap) {
      lookups_.at(id).counts_for_bootstrap = true;
      ++bootstrap_refreshes_pending_;
    }
    advance_lookup(now, id);
  }
}

void Dht::start_bootstrap(Instant now) {
  bootstrap_retry_at_.reset();
  ++stats_.bootstrap_attempts;
  if (seeds_.empty() && table_.size() == 0) {
    complete_bootstrap();  // the first node of a network
    return;
  }
  const LookupId id = start_lookup(now, LookupKind::kBootstrap, options_.self_id, seeds_);
  if (id == 0) {
    bootstrap_retry_at_ = now + options_.bootstrap_retry_interval;
    return;
  }
  advance_lookup(now, id);
}

void Dht::complete_bootstrap() {
  bootstrapped_ = true;
  emit(Bootstrapped{table_.size()});
}

// ---------------------------------------------------------------------------------------------------------
// Outputs

void Dht::emit(DhtEvent event) {
  if (events_.size() >= options_.events_queue_max) {
    ++stats_.events_dropped_queue_full;
    return;
  }
  events_.push_back(std::move(event));
}

std::optional<Transmit> Dht::poll_transmit() {
  if (transmits_.empty()) return std::nullopt;
  Transmit transmit = std::move(transmits_.front());
  transmits_.pop_front();
  return transmit;
}

std::optional<DhtEvent> Dht::poll_event() {
  if (events_.empty()) return std::nullopt;
  DhtEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

std::optional<Instant> Dht::next_timeout() const {
  std::optional<Instant> earliest;
  auto consider = [&earliest](std::optional<Instant> candidate) {
    if (candidate && (!earliest || *candidate < *earliest)) earliest = candidate;
  };
  if (!request_deadlines_.empty()) consider(request_deadlines_.begin()->first);
  consider(store_.next_expiry());
  if (!reprovide_schedule_.empty() && lookups_.size() < options_.lookups_pending_max) {
    consider(reprovide_schedule_.begin()->first);
  }
  consider(bootstrap_retry_at_);
  consider(refresh_at_);
  return earliest;
}

bool Dht::has_pending_work() const {
  return !requests_.empty() || !lookups_.empty() || !transmits_.empty() || !events_.empty();
}

uint64_t Dht::fingerprint() const {
  uint64_t hash = 1469598103934665603ull;
  mix_into(hash, table_.fingerprint());
  mix_into(hash, store_.fingerprint());
  for (const auto& [deadline, transaction_id] : request_deadlines_) {
    mix_into(hash, static_cast<uint64_t>(deadline.micros_since_epoch));
    mix_into(hash, transaction_id);
    const Request& request = requests_.at(transaction_id);
    mix_into(hash, static_cast<uint64_t>(request.kind));
    mix_into(hash, EndpointHash{}(request.destination));
    mix_into(hash, static_cast<uint64_t>(request.attempts));
    mix_into(hash, request.lookup);
  }
  for (const auto& [id, lookup] : lookups_) {
    mix_into(hash, id);
    mix_into(hash, lookup.in_flight);
    mix_into(hash, lookup.providers.size());
    for (const auto& candidate : lookup.candidates.candidates()) {
      mix_id(hash, candidate.contact.id);
      mix_into(hash, static_cast<uint64_t>(candidate.state));
    }
  }
  for (const auto& [key, local] : provided_) {
    mix_id(hash, key);
    mix_into(hash, static_cast<uint64_t>(local.next_reprovide.micros_since_epoch));
  }
  for (bool pending : eviction_ping_pending_) mix_into(hash, pending ? 1 : 0);
  for (const auto& instant : bucket_last_lookup_)
    mix_into(hash, static_cast<uint64_t>(instant.micros_since_epoch));
  mix_into(hash, transmits_.size());
  mix_into(hash, events_.size());
  mix_into(hash, next_lookup_id_);
  mix_into(hash, bootstrapped_ ? 1 : 0);
  mix_into(hash, bootstrap_retry_at_ ? static_cast<uint64_t>(bootstrap_retry_at_->micros_since_epoch) : 0);
  mix_into(hash, refresh_at_ ? static_cast<uint64_t>(refresh_at_->micros_since_epoch) : 0);
  // The RNG state is protocol state too: two xoshiro copies that agree on their next output agree forever.
  Rng probe = rng_;
  mix_into(hash, probe.next_u64());
  return hash;
}

}  // namespace peerd::routing
