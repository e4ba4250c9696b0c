#pragma once
// Kubernetes Events about this peerd, with the reasons and meanings of Azure/peerd (what its kind tests wait
// for):
//   P2PInitializing  Normal   peerd started and is looking for peers
//   P2PConnected     Normal   the DHT joined its network: ready to serve peers
//   P2PActive        Normal   content was downloaded from a peer (this node is actively sharing)
//   P2PDisconnected  Warning  the DHT lost its network after having joined it
//   P2PFailed        Warning  peerd could not start (the message says why)
//
// The Event is about the peerd Pod ($POD_NAME, from the downward API), or about the Node when peerd does not
// run in a pod. With hostNetwork the host name is the node's name, not the pod's (Azure/peerd#61), so the
// host name is only taken for a pod name after a GET shows that pod exists. The subject is looked up once, on
// the worker thread.
//
// record() never blocks on I/O: it updates one slot per reason under a mutex (the queue is bounded by the
// five reasons; a repeat while its slot is pending is coalesced into a count, never queued twice) and wakes
// the worker thread, which posts at most one Event per reason per `interval_min` (a repeat after that PATCHes
// the same Event's count and lastTimestamp, as client-go's correlator does).
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "peerd/daemon/k8s/api_client.h"
#include "peerd/daemon/log.h"

namespace peerd::daemon::k8s {

enum class P2PReason { kInitializing = 0, kConnected, kActive, kDisconnected, kFailed };
inline constexpr size_t kP2PReasonCount = 5;
std::string_view to_string(P2PReason reason);
// "Normal" or "Warning".
std::string_view event_type(P2PReason reason);

struct EventSubject {
  std::string kind;  // "Pod" or "Node"
  std::string name;
  std::string namespace_name;  // the pod's; empty for a Node
  std::string uid;             // empty when it could not be read
};

// Pod $POD_NAME if it exists; else a pod named like the host if one exists in the namespace; else Node
// $NODE_NAME (or the host name). `client` answers the GETs.
EventSubject find_event_subject(ApiClient& client, const std::string& namespace_name,
                                const std::optional<std::string>& pod_name,
                                const std::optional<std::string>& node_name, const std::string& host_name,
                                const Logger& logger);

struct EventRecord {
  P2PReason reason;
  std::string message;
  uint32_t count = 1;
  std::chrono::system_clock::time_point first_time;
  std::chrono::system_clock::time_point last_time;
};

// The core/v1 Event peerd creates (POST /api/v1/namespaces/<namespace>/events).
nlohmann::json make_event(const EventSubject& subject, const EventRecord& record,
                          const std::string& event_name, const std::string& namespace_name,
                          const std::string& reporting_instance);

struct EventRecorderOptions {
  std::string namespace_name = "default";  // where Events are created (the release namespace)
  std::optional<std::string> pod_name;     // $POD_NAME
  std::optional<std::string> node_name;    // $NODE_NAME
  std::string host_name;
  std::chrono::milliseconds interval_min{std::chrono::seconds(30)};  // per reason
  // P2PActive: peer_bytes() is polled this often on the worker thread (no hook on the data path).
  std::chrono::milliseconds activity_poll_interval{std::chrono::seconds(1)};
  std::function<uint64_t()> peer_bytes;  // bytes downloaded from peers so far; empty: no P2PActive
};

class EventRecorder {
 public:
  EventRecorder(std::unique_ptr<ApiClient> client, EventRecorderOptions options, Logger logger);
  ~EventRecorder();  // stop(0)
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  void start();
  // Any thread; never waits for the API.
  void record(P2PReason reason, std::string message);
  // Posts what is pending for up to `drain_limit` (ignoring the rate limit), then ends the thread.
  void stop(std::chrono::milliseconds drain_limit);

  uint64_t posted() const { return posted_; }
  uint64_t coalesced() const { return coalesced_; }
  uint64_t failed() const { return failed_; }

 private:
  struct Slot {
    bool pending = false;
    EventRecord record{};
    std::chrono::steady_clock::time_point recorded_at{};
    std::chrono::steady_clock::time_point sent_at{};
    bool ever_sent = false;
    std::string event_name;  // the Event created for this reason (PATCHed on repeats)
    uint32_t total_count = 0;
  };

  void run();
  // The pending slot due first, if any is due now (or any pending slot when draining).
  std::optional<size_t> next_due(std::chrono::steady_clock::time_point now, bool draining,
                                 std::chrono::steady_clock::time_point& wake_at) const;
  void send(size_t index, EventRecord record);
  void poll_activity();

  std::unique_ptr<ApiClient> client_;
  const EventRecorderOptions options_;
  const Logger logger_;
  EventSubject subject_;
  uint64_t peer_bytes_seen_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::array<Slot, kP2PReasonCount> slots_{};
  bool stopping_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point drain_until_{};
  std::thread thread_;

  std::atomic<uint64_t> posted_{0};
  std::atomic<uint64_t> coalesced_{0};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace peerd::daemon::k8s
