#pragma once
// Leader election on the Lease `peerd-leader-election`, compatible with Azure/peerd (client-go's
// leaderelection with a 10 s lease, 5 s renew deadline and 2 s retry period): the leader's holderIdentity is
// its DHT address ("10.0.0.5:5003"), every other node bootstraps its DHT from that address, and the leader
// itself starts the network alone.
//
// LeaseElector is client-go's tryAcquireOrRenew, one round per call: GET the Lease; create it when missing
// (404); take it over when it expired (judged by the local time at which this node last saw the record
// change, not by the holder's clock, as client-go does) or renew it when held; PUT with the resourceVersion
// read, so a concurrent writer gets 409 Conflict and loses the round. A leader that cannot renew within the
// renew deadline steps down. LeasePeerSource runs rounds every retry period on its own thread and serves the
// result to the bootstrap refresher.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "peerd/core/common/endpoint.h"
#include "peerd/daemon/bootstrap.h"
#include "peerd/daemon/k8s/api_client.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon::k8s {

inline constexpr std::string_view kLeaseName = "peerd-leader-election";

struct LeaseOptions {
  std::string name{kLeaseName};
  std::string namespace_name = "default";
  std::string identity;  // this node's DHT address
  std::chrono::seconds lease_duration{10};
  std::chrono::milliseconds renew_deadline{5000};
  std::chrono::milliseconds retry_period{2000};
};

// The Lease's REST path: /apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>].
std::string lease_collection_path(const std::string& namespace_name);
std::string lease_path(const std::string& namespace_name, const std::string& name);

// The DHT address in a holderIdentity: "ip:port", or the text after the last '/' ("node-1/10.0.0.5:5003").
std::optional<Endpoint> endpoint_from_identity(const std::string& identity);

class LeaseElector {
 public:
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  struct State {
    bool leader = false;
    std::string holder;  // empty: no holder known
    bool operator==(const State&) const = default;
  };

  LeaseElector(ApiClient& client, LeaseOptions options, Logger logger, SteadyClock steady = {},
               WallClock wall = {});

  // One round; returns the state after it. Never throws; API errors keep the previous view (and make a
  // leader step down once its renew deadline passed).
  State try_acquire_or_renew();
  // Gives the lease up (holderIdentity "", as client-go's ReleaseOnCancel) when this node holds it.
  void release();
  State state() const { return state_; }

 private:
  bool write(const nlohmann::json* observed, std::chrono::system_clock::time_point now_wall);
  void step_down_if_stale(std::chrono::steady_clock::time_point now);

  ApiClient& client_;
  const LeaseOptions options_;
  const Logger logger_;
  SteadyClock steady_;
  WallClock wall_;

  State state_;
  std::string observed_key_;  // holder, renewTime and resourceVersion of the record last seen
  std::chrono::steady_clock::time_point observed_at_{};
  std::chrono::seconds observed_duration_{0};
  nlohmann::json observed_lease_;
  std::chrono::steady_clock::time_point renewed_at_{};
  std::string acquire_time_;
};

// A bootstrap source: the leader's DHT address for every node but the leader, which gets an empty list (the
// first node of its network). Runs the elector on its own thread; resolve() waits (bounded) for the first
// round. `on_change` runs on that thread when the leader changes (main asks the refresher for a new round).
class LeasePeerSource final : public PeerSource {
 public:
  LeasePeerSource(std::unique_ptr<ApiClient> client, LeaseOptions options, Logger logger);
  ~LeasePeerSource() override;  // stops the thread and releases the lease

  void set_on_change(std::function<void()> on_change);
  void start();
  void stop();

  Result<std::vector<Endpoint>, std::string> resolve() override;
  std::string describe() const override;
  LeaseElector::State state() const;

 private:
  void run();

  std::unique_ptr<ApiClient> client_;
  const LeaseOptions options_;
  const Logger logger_;
  LeaseElector elector_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool observed_ = false;
  LeaseElector::State state_;
  std::function<void()> on_change_;
  std::thread thread_;
};

}  // namespace peerd::daemon::k8s
