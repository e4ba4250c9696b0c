#pragma once
// CoreDriver: runs the sans-IO core (routing::Dht and transfer::Engine) on Boost.Asio, the way the simulator
// and the harness run it on theirs. Everything the core touches lives on one strand: the DHT's UDP socket,
// the single timer and both state machines. Other threads hand work in with run(); after every input the
// driver follows the core's poll order (transmits and actions, timer, events).
//
// The driver performs the routing actions itself (FindProviders / Provide / Withdraw go to the DHT, providers
// come back to the engine) and hands every other action and every engine event to its Listener, on the
// strand. Membership for the engine's rendezvous hashing is the union of the bootstrap peers (the same list
// on every node: DNS of a headless Service, or a static list) and the DHT's routing table.
//
// Identity: a node's id is derived from the DHT endpoint it advertises (node_id_for), so a bootstrap list of
// endpoints is also a list of ids, and every node computes the same rendezvous owners from it. A peer's chunk
// server listens on the same address with the cluster's HTTP port.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/node_id.h"
#include "peerd/core/common/result.h"
#include "peerd/core/common/time.h"
#include "peerd/core/routing/dht.h"
#include "peerd/core/transfer/engine.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon {

// "peerd/node/<ip:port>" hashed: the id of the node whose DHT listens on `dht_endpoint`.
NodeId node_id_for(const Endpoint& dht_endpoint);
// The chunk server of the node whose DHT listens on `dht_endpoint`.
Endpoint http_endpoint_for(const Endpoint& dht_endpoint, uint16_t http_port);

struct CoreDriverOptions {
  Endpoint dht_listen;      // where the UDP socket binds (may be 0.0.0.0)
  Endpoint dht_advertised;  // this node's DHT address as peers see it (its id derives from it)
  uint16_t http_port = 5000;
  transfer::EngineOptions engine;  // `self` is filled in by the driver
  routing::DhtOptions dht;         // self_id / self_endpoint / seed are filled in by the driver
  std::chrono::milliseconds provider_ttl{std::chrono::minutes(30)};
};

class CoreDriver {
 public:
  // Called on the strand.
  struct Listener {
    virtual ~Listener() = default;
    // StartFetch, CancelFetch, VerifyContent.
    virtual void on_action(transfer::Action action) = 0;
    virtual void on_event(transfer::Event event) = 0;
  };
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using ProvidersCallback = std::function<void(std::vector<transfer::Peer>)>;

  CoreDriver(boost::asio::io_context& io, CoreDriverOptions options, transfer::ChunkStore& store,
             Logger logger, DaemonMetrics* metrics);
  ~CoreDriver();
  CoreDriver(const CoreDriver&) = delete;
  CoreDriver& operator=(const CoreDriver&) = delete;

  // Called on the strand whenever the DHT joins or loses its network (set before start()).
  void on_bootstrap_change(std::function<void(bool bootstrapped)> callback) {
    on_bootstrap_change_ = std::move(callback);
  }
  // Binds the UDP socket and starts receiving. `listener` must outlive the driver.
  Result<bool, std::string> start(Listener& listener);
  void stop();

  // Runs `work` on the strand with the engine and the current time, then flushes the core's outputs.
  void run(std::function<void(transfer::Engine&, Instant now)> work);
  // Bootstrap peers (DHT endpoints, from the bootstrap refresher; any thread). Starts or restarts the join
  // when the DHT is not bootstrapped yet, and updates the membership.
  void set_bootstrap_peers(std::vector<Endpoint> peers);
  // A DHT lookup for the service itself (any thread); `done` runs on the strand with providers other than
  // this node. Lookups for the same key share one DHT lookup.
  void find_providers(const NodeId& key, ProvidersCallback done);
  // Announces keys this node serves from outside the engine's store (containerd's content store; any
  // thread): provide stores the record on the DHT and re-provides it until withdraw, which only stops the
  // re-providing (the DHT has no remote delete: other nodes' records lapse with provider_ttl).
  void provide(const NodeId& key);
  void withdraw(const NodeId& key);

  bool bootstrapped() const { return bootstrapped_.load(); }
  const transfer::Peer& self() const { return self_; }
  const Strand& strand() const { return strand_; }
  Instant now() const;
  // Snapshots, taken on the strand by the metrics refresh (any thread may read them).
  struct Snapshot {
    size_t routing_table_peers = 0;
    size_t members = 0;
    size_t fetches_active = 0;
    size_t reads_active = 0;
    uint64_t dht_datagrams_sent = 0;
    uint64_t dht_datagrams_received = 0;
  };
  Snapshot snapshot() const;

 private:
  void receive();
  void flush();
  void arm_timer();
  void on_timer();
  void update_membership();
  void handle_dht_event(routing::DhtEvent event);
  std::optional<transfer::Peer> peer_of(const routing::Contact& contact) const;

  boost::asio::io_context& io_;
  Strand strand_;
  CoreDriverOptions options_;
  Logger logger_;
  DaemonMetrics* metrics_;
  transfer::Peer self_;
  routing::Dht dht_;
  transfer::Engine engine_;
  Listener* listener_ = nullptr;

  boost::asio::ip::udp::socket socket_;
  boost::asio::ip::udp::endpoint sender_;
  std::vector<uint8_t> receive_buffer_;
  boost::asio::steady_timer timer_;
  std::optional<Instant> timer_at_;
  const std::chrono::steady_clock::time_point epoch_;
  bool stopped_ = false;
  bool flushing_ = false;

  std::vector<Endpoint> bootstrap_peers_;
  std::set<Endpoint> dht_peers_;
  std::atomic<bool> bootstrapped_{false};
  std::function<void(bool)> on_bootstrap_change_;

  struct Lookup {
    NodeId key;
    bool for_engine = false;
    std::vector<ProvidersCallback> callbacks;
    Instant started;
  };
  std::map<routing::LookupId, Lookup> lookups_;
  std::map<NodeId, routing::LookupId> lookup_by_key_;

  mutable std::mutex snapshot_mutex_;
  Snapshot snapshot_;
};

}  // namespace peerd::daemon
