#pragma once
// Where the first peers come from, behind one small interface: a static list (--bootstrap ip:port) or DNS
// (--bootstrap name:port: every A and AAAA record, e.g. a Kubernetes headless service). The refresher
// resolves every source on a worker thread of its own (getaddrinfo blocks), at start and then every interval,
// and hands the union to a callback. A source that fails keeps its previous answer, so a DNS hiccup never
// empties the peer list.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/options.h"

namespace peerd::daemon {

inline constexpr size_t kPeersPerSourceMax = 256;

class PeerSource {
 public:
  virtual ~PeerSource() = default;
  // May block; called on the refresher's thread only.
  virtual Result<std::vector<Endpoint>, std::string> resolve() = 0;
  virtual std::string describe() const = 0;
};

class StaticPeerSource final : public PeerSource {
 public:
  explicit StaticPeerSource(std::vector<Endpoint> peers) : peers_(std::move(peers)) {}
  Result<std::vector<Endpoint>, std::string> resolve() override { return peers_; }
  std::string describe() const override;

 private:
  std::vector<Endpoint> peers_;
};

// Every A and AAAA record of `name`, with `port`, sorted and deduplicated, at most kPeersPerSourceMax.
Result<std::vector<Endpoint>, std::string> resolve_with_getaddrinfo(const std::string& name, uint16_t port);

class DnsPeerSource final : public PeerSource {
 public:
  using Resolver =
      std::function<Result<std::vector<Endpoint>, std::string>(const std::string& name, uint16_t port)>;
  DnsPeerSource(std::string name, uint16_t port, Resolver resolver = resolve_with_getaddrinfo)
      : name_(std::move(name)), port_(port), resolver_(std::move(resolver)) {}
  Result<std::vector<Endpoint>, std::string> resolve() override { return resolver_(name_, port_); }
  std::string describe() const override { return "dns:" + name_ + ":" + std::to_string(port_); }

 private:
  std::string name_;
  uint16_t port_;
  Resolver resolver_;
};

// One source for all static entries (if any) plus one DNS source per name. Kubernetes entries (k8s-lease,
// dns, auto) are left to k8s::make_kubernetes_sources, which needs the API.
std::vector<std::unique_ptr<PeerSource>> make_peer_sources(const std::vector<BootstrapEntry>& entries);

class BootstrapRefresher {
 public:
  // Called on the refresher's thread after every round with the union of all sources (sorted, unique).
  using OnPeers = std::function<void(const std::vector<Endpoint>& peers)>;

  BootstrapRefresher(std::vector<std::unique_ptr<PeerSource>> sources, std::chrono::milliseconds interval,
                     OnPeers on_peers, Logger logger, DaemonMetrics* metrics);
  ~BootstrapRefresher();  // stop()
  BootstrapRefresher(const BootstrapRefresher&) = delete;
  BootstrapRefresher& operator=(const BootstrapRefresher&) = delete;

  void start();        // resolves at once, then every interval
  void refresh_now();  // wakes the thread for an extra round
  void stop();         // waits for a running resolution to finish
  std::vector<Endpoint> last_peers() const;

 private:
  void run();
  void resolve_round();

  std::vector<std::unique_ptr<PeerSource>> sources_;
  std::vector<std::vector<Endpoint>> last_by_source_;
  const std::chrono::milliseconds interval_;
  const OnPeers on_peers_;
  const Logger logger_;
  DaemonMetrics* const metrics_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool refresh_requested_ = false;
  std::vector<Endpoint> last_peers_;
  std::thread thread_;
};

}  // namespace peerd::daemon
