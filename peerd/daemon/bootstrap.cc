#include "peerd/daemon/bootstrap.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace peerd::daemon {

std::string StaticPeerSource::describe() const {
  std::string text = "static:";
  for (size_t i = 0; i < peers_.size(); ++i) text += (i ? "," : "") + peers_[i].to_string();
  return text;
}

Result<std::vector<Endpoint>, std::string> resolve_with_getaddrinfo(const std::string& name, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;      // A and AAAA
  hints.ai_socktype = SOCK_STREAM;  // one entry per address, not one per socket type
  addrinfo* results = nullptr;
  const int status = ::getaddrinfo(name.c_str(), nullptr, &hints, &results);
  if (status != 0) return fail("cannot resolve " + name + ": " + ::gai_strerror(status));
  std::set<Endpoint> unique;
  for (const addrinfo* entry = results; entry != nullptr && unique.size() < kPeersPerSourceMax;
       entry = entry->ai_next) {
    if (entry->ai_family == AF_INET) {
      const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
      const auto* bytes = reinterpret_cast<const uint8_t*>(&address->sin_addr.s_addr);
      unique.insert(Endpoint::ipv4(bytes[0], bytes[1], bytes[2], bytes[3], port));
    } else if (entry->ai_family == AF_INET6) {
      const auto* address = reinterpret_cast<const sockaddr_in6*>(entry->ai_addr);
      std::array<uint8_t, 16> bytes{};
      std::memcpy(bytes.data(), &address->sin6_addr, 16);
      unique.insert(Endpoint::ipv6(bytes, port));
    }
  }
  ::freeaddrinfo(results);
  return std::vector<Endpoint>(unique.begin(), unique.end());
}

std::vector<std::unique_ptr<PeerSource>> make_peer_sources(const std::vector<BootstrapEntry>& entries) {
  std::vector<std::unique_ptr<PeerSource>> sources;
  std::vector<Endpoint> static_peers;
  for (const auto& entry : entries) {
    if (entry.kind == BootstrapEntry::Kind::kStatic) {
      static_peers.push_back(entry.endpoint);
    } else if (entry.kind == BootstrapEntry::Kind::kDns) {
      sources.push_back(std::make_unique<DnsPeerSource>(entry.dns_name, entry.port));
    }
  }
  if (!static_peers.empty())
    sources.insert(sources.begin(), std::make_unique<StaticPeerSource>(static_peers));
  return sources;
}

BootstrapRefresher::BootstrapRefresher(std::vector<std::unique_ptr<PeerSource>> sources,
                                       std::chrono::milliseconds interval, OnPeers on_peers, Logger logger,
                                       DaemonMetrics* metrics)
    : sources_(std::move(sources)),
      last_by_source_(sources_.size()),
      interval_(interval),
      on_peers_(std::move(on_peers)),
      logger_(std::move(logger)),
      metrics_(metrics) {}

BootstrapRefresher::~BootstrapRefresher() {
  stop();
}

void BootstrapRefresher::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void BootstrapRefresher::refresh_now() {
  {
    std::lock_guard lock(mutex_);
    refresh_requested_ = true;
  }
  wake_.notify_all();
}

void BootstrapRefresher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<Endpoint> BootstrapRefresher::last_peers() const {
  std::lock_guard lock(mutex_);
  return last_peers_;
}

void BootstrapRefresher::run() {
  while (true) {
    resolve_round();
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, interval_, [this] { return stopping_ || refresh_requested_; });
    if (stopping_) return;
    refresh_requested_ = false;
  }
}

void BootstrapRefresher::resolve_round() {
  std::set<Endpoint> all;
  for (size_t i = 0; i < sources_.size(); ++i) {
    auto resolved = sources_[i]->resolve();
    if (metrics_ != nullptr) metrics_->bootstrap_resolutions.inc();
    if (resolved) {
      auto peers = std::move(resolved.value());
      if (peers.size() > kPeersPerSourceMax) peers.resize(kPeersPerSourceMax);
      last_by_source_[i] = std::move(peers);
    } else {
      if (metrics_ != nullptr) metrics_->bootstrap_failures.inc();
      logger_.warn("bootstrap resolution failed, keeping the previous peers",
                   {{"source", sources_[i]->describe()}, {"error", resolved.error()}});
    }
    all.insert(last_by_source_[i].begin(), last_by_source_[i].end());
  }
  std::vector<Endpoint> peers(all.begin(), all.end());
  if (metrics_ != nullptr) metrics_->bootstrap_peers.set(static_cast<int64_t>(peers.size()));
  {
    std::lock_guard lock(mutex_);
    last_peers_ = peers;
  }
  if (on_peers_) on_peers_(peers);
}

}  // namespace peerd::daemon
