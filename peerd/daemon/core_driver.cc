#include "peerd/daemon/core_driver.h"

#include <algorithm>
#include <utility>

#include <boost/asio/post.hpp>

namespace peerd::daemon {

namespace net = boost::asio;
using udp = net::ip::udp;

namespace {

constexpr size_t kDatagramBytesMax = 64 * 1024;

udp::endpoint to_udp(const Endpoint& endpoint) {
  if (endpoint.family == Endpoint::Family::kIpv4) {
    net::ip::address_v4::bytes_type bytes;
    std::copy_n(endpoint.address.begin(), 4, bytes.begin());
    return udp::endpoint(net::ip::address_v4(bytes), endpoint.port);
  }
  net::ip::address_v6::bytes_type bytes;
  std::copy_n(endpoint.address.begin(), 16, bytes.begin());
  return udp::endpoint(net::ip::address_v6(bytes), endpoint.port);
}

Endpoint from_udp(const udp::endpoint& endpoint) {
  const auto address = endpoint.address();
  if (address.is_v4()) {
    const auto bytes = address.to_v4().to_bytes();
    return Endpoint::ipv4(bytes[0], bytes[1], bytes[2], bytes[3], endpoint.port());
  }
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped())
    return from_udp(udp::endpoint(net::ip::make_address_v4(net::ip::v4_mapped, v6), endpoint.port()));
  std::array<uint8_t, 16> bytes;
  const auto raw = v6.to_bytes();
  std::copy(raw.begin(), raw.end(), bytes.begin());
  return Endpoint::ipv6(bytes, endpoint.port());
}

uint64_t seed_of(const NodeId& id) {
  uint64_t seed = 0;
  for (size_t i = 0; i < 8; ++i) seed = (seed << 8) | id.bytes[i];
  return seed;
}

}  // namespace

NodeId node_id_for(const Endpoint& dht_endpoint) {
  return NodeId::hash_of("peerd/node/" + dht_endpoint.to_string());
}

Endpoint http_endpoint_for(const Endpoint& dht_endpoint, uint16_t http_port) {
  Endpoint endpoint = dht_endpoint;
  endpoint.port = http_port;
  return endpoint;
}

CoreDriver::CoreDriver(net::io_context& io, CoreDriverOptions options, transfer::ChunkStore& store,
                       Logger logger, DaemonMetrics* metrics)
    : io_(io),
      strand_(net::make_strand(io)),
      options_([&] {
        options.dht.self_id = node_id_for(options.dht_advertised);
        options.dht.self_endpoint = options.dht_advertised;
        options.dht.seed = seed_of(options.dht.self_id);
        options.engine.self =
            transfer::Peer{options.dht.self_id, http_endpoint_for(options.dht_advertised, options.http_port)};
        return options;
      }()),
      logger_(std::move(logger)),
      metrics_(metrics),
      self_(options_.engine.self),
      dht_(options_.dht),
      engine_(options_.engine, store),
      socket_(strand_),
      receive_buffer_(kDatagramBytesMax),
      timer_(strand_),
      epoch_(std::chrono::steady_clock::now()) {}

CoreDriver::~CoreDriver() = default;

Instant CoreDriver::now() const {
  return Instant::from_micros(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - epoch_)
          .count());
}

Result<bool, std::string> CoreDriver::start(Listener& listener) {
  listener_ = &listener;
  boost::system::error_code error;
  const udp::endpoint local = to_udp(options_.dht_listen);
  socket_.open(local.protocol(), error);
  if (!error) socket_.bind(local, error);
  if (error)
    return fail("cannot bind the DHT socket to " + options_.dht_listen.to_string() + ": " + error.message());
  net::post(strand_, [this] {
    receive();
    flush();
  });
  return true;
}

void CoreDriver::stop() {
  net::post(strand_, [this] {
    stopped_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
  });
}

void CoreDriver::run(std::function<void(transfer::Engine&, Instant now)> work) {
  net::post(strand_, [this, work = std::move(work)] {
    if (stopped_) return;
    work(engine_, now());
    flush();
  });
}

void CoreDriver::set_bootstrap_peers(std::vector<Endpoint> peers) {
  net::post(strand_, [this, peers = std::move(peers)]() mutable {
    if (stopped_) return;
    std::erase(peers, options_.dht_advertised);
    const bool changed = peers != bootstrap_peers_;
    bootstrap_peers_ = std::move(peers);
    if (!dht_.is_bootstrapped() && (changed || bootstrap_peers_.empty())) {
      logger_.info("dht bootstrap", {{"seeds", bootstrap_peers_.size()}});
      dht_.bootstrap(now(), bootstrap_peers_);
    }
    if (changed) update_membership();
    flush();
  });
}

void CoreDriver::find_providers(const NodeId& key, ProvidersCallback done) {
  net::post(strand_, [this, key, done = std::move(done)]() mutable {
    if (stopped_) return done({});
    if (auto it = lookup_by_key_.find(key); it != lookup_by_key_.end()) {
      lookups_[it->second].callbacks.push_back(std::move(done));
      return;
    }
    const Instant at = now();
    const routing::LookupId id = dht_.find_providers(at, key, 0);
    Lookup& lookup = lookups_[id];
    lookup.key = key;
    lookup.started = at;
    lookup.callbacks.push_back(std::move(done));
    lookup_by_key_[key] = id;
    flush();
  });
}

void CoreDriver::provide(const NodeId& key) {
  net::post(strand_, [this, key] {
    if (stopped_) return;
    dht_.provide(now(), key, Duration::milliseconds(static_cast<int64_t>(options_.provider_ttl.count())));
    flush();
  });
}

void CoreDriver::withdraw(const NodeId& key) {
  net::post(strand_, [this, key] {
    if (stopped_) return;
    dht_.withdraw(key);
    flush();
  });
}

void CoreDriver::receive() {
  socket_.async_receive_from(
      net::buffer(receive_buffer_), sender_, [this](const boost::system::error_code& error, size_t bytes) {
        if (stopped_ || error == net::error::operation_aborted) return;
        if (!error) {
          dht_.handle_datagram(now(), from_udp(sender_),
                               std::span<const uint8_t>(receive_buffer_.data(), bytes));
          flush();
        }
        receive();
      });
}

std::optional<transfer::Peer> CoreDriver::peer_of(const routing::Contact& contact) const {
  if (contact.id == self_.id) return std::nullopt;
  return transfer::Peer{contact.id, http_endpoint_for(contact.endpoint, options_.http_port)};
}

void CoreDriver::update_membership() {
  std::set<Endpoint> endpoints(bootstrap_peers_.begin(), bootstrap_peers_.end());
  endpoints.insert(dht_peers_.begin(), dht_peers_.end());
  endpoints.insert(options_.dht_advertised);
  std::vector<transfer::Peer> members;
  members.reserve(endpoints.size());
  for (const Endpoint& endpoint : endpoints) {
    members.push_back(transfer::Peer{node_id_for(endpoint), http_endpoint_for(endpoint, options_.http_port)});
  }
  engine_.handle_membership(now(), members);
}

void CoreDriver::handle_dht_event(routing::DhtEvent event) {
  if (auto* found = std::get_if<routing::ProvidersFound>(&event)) {
    auto it = lookups_.find(found->lookup);
    if (it == lookups_.end()) return;
    Lookup lookup = std::move(it->second);
    lookups_.erase(it);
    lookup_by_key_.erase(lookup.key);
    std::vector<transfer::Peer> providers;
    for (const auto& contact : found->providers) {
      if (auto peer = peer_of(contact)) providers.push_back(*peer);
    }
    if (metrics_) {
      (providers.empty() ? metrics_->dht_lookups_not_found : metrics_->dht_lookups_found).inc();
      metrics_->dht_lookup_seconds.observe((now() - lookup.started).as_seconds());
    }
    if (lookup.for_engine) engine_.handle_providers(now(), lookup.key, providers);
    for (auto& callback : lookup.callbacks) callback(providers);
    return;
  }
  if (auto* added = std::get_if<routing::PeerAdded>(&event)) {
    if (dht_peers_.insert(added->contact.endpoint).second) update_membership();
    return;
  }
  if (auto* removed = std::get_if<routing::PeerRemoved>(&event)) {
    if (dht_peers_.erase(removed->contact.endpoint) > 0) update_membership();
    return;
  }
  if (std::holds_alternative<routing::Bootstrapped>(event)) {
    logger_.info("dht bootstrapped", {{"peers", std::get<routing::Bootstrapped>(event).routing_table_size}});
  }
}

void CoreDriver::flush() {
  if (flushing_) return;  // a listener called run() from inside a callback: the outer loop drains it
  flushing_ = true;
  for (bool progress = true; progress && !stopped_;) {
    progress = false;
    while (auto transmit = dht_.poll_transmit()) {
      progress = true;
      boost::system::error_code ignored;  // UDP: a lost datagram is a timeout to the DHT
      socket_.send_to(net::buffer(transmit->payload), to_udp(transmit->destination), 0, ignored);
    }
    while (auto event = dht_.poll_event()) {
      progress = true;
      handle_dht_event(std::move(*event));
    }
    while (auto action = engine_.poll_action()) {
      progress = true;
      if (auto* find = std::get_if<transfer::FindProviders>(&*action)) {
        if (auto it = lookup_by_key_.find(find->key); it != lookup_by_key_.end()) {
          lookups_[it->second].for_engine = true;
          continue;
        }
        const Instant at = now();
        const routing::LookupId id = dht_.find_providers(at, find->key, 0);
        Lookup& lookup = lookups_[id];
        lookup.key = find->key;
        lookup.for_engine = true;
        lookup.started = at;
        lookup_by_key_[find->key] = id;
      } else if (auto* provide = std::get_if<transfer::Provide>(&*action)) {
        dht_.provide(now(), provide->key,
                     Duration::milliseconds(static_cast<int64_t>(options_.provider_ttl.count())));
      } else if (auto* withdraw = std::get_if<transfer::Withdraw>(&*action)) {
        dht_.withdraw(withdraw->key);
      } else {
        listener_->on_action(std::move(*action));
      }
    }
    while (auto event = engine_.poll_event()) {
      progress = true;
      listener_->on_event(std::move(*event));
    }
  }
  flushing_ = false;
  const bool joined = dht_.is_bootstrapped();
  if (bootstrapped_.exchange(joined) != joined && on_bootstrap_change_) on_bootstrap_change_(joined);
  {
    std::lock_guard lock(snapshot_mutex_);
    snapshot_.routing_table_peers = dht_peers_.size();
    snapshot_.members = engine_.members();
    snapshot_.fetches_active = engine_.fetches_active();
    snapshot_.reads_active = engine_.reads_active();
    snapshot_.dht_datagrams_sent = dht_.stats().datagrams_sent;
    snapshot_.dht_datagrams_received = dht_.stats().datagrams_received;
  }
  if (metrics_) metrics_->active_transfers.set(static_cast<int64_t>(engine_.fetches_active()));
  arm_timer();
}

CoreDriver::Snapshot CoreDriver::snapshot() const {
  std::lock_guard lock(snapshot_mutex_);
  return snapshot_;
}

void CoreDriver::arm_timer() {
  if (stopped_) return;
  std::optional<Instant> next = dht_.next_timeout();
  if (auto engine_next = engine_.next_timeout()) next = next ? std::min(*next, *engine_next) : engine_next;
  if (next == timer_at_) return;
  timer_at_ = next;
  if (!next) {
    timer_.cancel();
    return;
  }
  timer_.expires_at(epoch_ + std::chrono::microseconds(next->micros_since_epoch));
  timer_.async_wait([this](const boost::system::error_code& error) {
    if (error == net::error::operation_aborted || stopped_) return;
    on_timer();
  });
}

void CoreDriver::on_timer() {
  timer_at_.reset();
  const Instant at = now();
  dht_.handle_timeout(at);
  engine_.handle_timeout(at);
  flush();
}

}  // namespace peerd::daemon
