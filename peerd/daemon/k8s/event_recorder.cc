#include "peerd/daemon/k8s/event_recorder.h"

#include <cstdio>

namespace peerd::daemon::k8s {
namespace {

constexpr std::string_view kComponent = "peerd";
constexpr size_t kMessageBytesMax = 1024;  // the API server caps Event messages; keep ours short

std::string uid_of(const ApiResponse& response) {
  const auto object = response.json();
  if (!object.is_object() || !object.contains("metadata") || !object["metadata"].is_object()) return "";
  const auto& metadata = object["metadata"];
  return metadata.contains("uid") && metadata["uid"].is_string() ? metadata["uid"].get<std::string>() : "";
}

std::string events_path(const std::string& namespace_name) {
  return "/api/v1/namespaces/" + namespace_name + "/events";
}

}  // namespace

std::string_view to_string(P2PReason reason) {
  switch (reason) {
    case P2PReason::kInitializing:
      return "P2PInitializing";
    case P2PReason::kConnected:
      return "P2PConnected";
    case P2PReason::kActive:
      return "P2PActive";
    case P2PReason::kDisconnected:
      return "P2PDisconnected";
    case P2PReason::kFailed:
      return "P2PFailed";
  }
  return "P2PUnknown";
}

std::string_view event_type(P2PReason reason) {
  return reason == P2PReason::kDisconnected || reason == P2PReason::kFailed ? "Warning" : "Normal";
}

EventSubject find_event_subject(ApiClient& client, const std::string& namespace_name,
                                const std::optional<std::string>& pod_name,
                                const std::optional<std::string>& node_name, const std::string& host_name,
                                const Logger& logger) {
  // A pod: $POD_NAME, else the host name (a pod's host name is its name unless it runs with hostNetwork).
  const std::string pod = pod_name.value_or(host_name);
  if (!pod.empty()) {
    auto answer = client.get("/api/v1/namespaces/" + namespace_name + "/pods/" + pod);
    if (answer && answer->status == 200) return {"Pod", pod, namespace_name, uid_of(*answer)};
    if (pod_name && !(answer && answer->status == 404)) {
      // The pod surely exists (downward API) but cannot be read (RBAC, API down): name it without its uid.
      logger.warn("cannot read this pod; events name it without its uid",
                  {{"pod", pod}, {"error", answer ? answer->error_message() : answer.error()}});
      return {"Pod", pod, namespace_name, ""};
    }
  }
  // Not in a pod, or hostNetwork (the host name is the node's): the node.
  const std::string node = node_name.value_or(host_name);
  auto answer = client.get("/api/v1/nodes/" + node);
  if (!answer || answer->status != 200) {
    logger.warn("cannot read this node; events name it without its uid",
                {{"node", node}, {"error", answer ? answer->error_message() : answer.error()}});
    return {"Node", node, "", ""};
  }
  return {"Node", node, "", uid_of(*answer)};
}

nlohmann::json make_event(const EventSubject& subject, const EventRecord& record,
                          const std::string& event_name, const std::string& namespace_name,
                          const std::string& reporting_instance) {
  nlohmann::json involved = {{"apiVersion", "v1"}, {"kind", subject.kind}, {"name", subject.name}};
  if (!subject.namespace_name.empty()) involved["namespace"] = subject.namespace_name;
  if (!subject.uid.empty()) involved["uid"] = subject.uid;
  nlohmann::json source = {{"component", kComponent}};
  if (!reporting_instance.empty()) source["host"] = reporting_instance;
  return {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"name", event_name}, {"namespace", namespace_name}}},
      {"involvedObject", involved},
      {"reason", to_string(record.reason)},
      {"message", record.message.substr(0, kMessageBytesMax)},
      {"type", event_type(record.reason)},
      {"source", source},
      {"firstTimestamp", format_time(record.first_time)},
      {"lastTimestamp", format_time(record.last_time)},
      {"count", record.count},
      {"reportingComponent", kComponent},
      {"reportingInstance", reporting_instance},
  };
}

EventRecorder::EventRecorder(std::unique_ptr<ApiClient> client, EventRecorderOptions options, Logger logger)
    : client_(std::move(client)), options_(std::move(options)), logger_(std::move(logger)) {}

EventRecorder::~EventRecorder() {
  stop(std::chrono::milliseconds(0));
}

void EventRecorder::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void EventRecorder::record(P2PReason reason, std::string message) {
  const auto index = static_cast<size_t>(reason);
  if (index >= kP2PReasonCount) return;
  const auto now_wall = std::chrono::system_clock::now();
  {
    std::lock_guard lock(mutex_);
    Slot& slot = slots_[index];
    if (slot.pending) {
      ++slot.record.count;
      slot.record.message = std::move(message);
      slot.record.last_time = now_wall;
      ++coalesced_;
    } else {
      slot.pending = true;
      slot.record = EventRecord{reason, std::move(message), 1, now_wall, now_wall};
      slot.recorded_at = std::chrono::steady_clock::now();
    }
  }
  wake_.notify_all();
}

void EventRecorder::stop(std::chrono::milliseconds drain_limit) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      stopping_ = true;
      drain_until_ = std::chrono::steady_clock::now() + drain_limit;
    }
  }
  wake_.notify_all();
  if (!thread_.joinable()) return;
  {
    // The worker may sit in a request or a retry wait: cancel the client once the drain time is over.
    std::unique_lock lock(mutex_);
    if (!wake_.wait_for(lock, drain_limit, [this] { return finished_; })) {
      lock.unlock();
      client_->cancel();
    }
  }
  thread_.join();
}

std::optional<size_t> EventRecorder::next_due(std::chrono::steady_clock::time_point now, bool draining,
                                              std::chrono::steady_clock::time_point& wake_at) const {
  std::optional<size_t> best;
  for (size_t i = 0; i < kP2PReasonCount; ++i) {
    const Slot& slot = slots_[i];
    if (!slot.pending) continue;
    const auto due = slot.ever_sent && !draining ? slot.sent_at + options_.interval_min : slot.recorded_at;
    if (due > now) {
      wake_at = std::min(wake_at, due);
      continue;
    }
    if (!best || slot.recorded_at < slots_[*best].recorded_at) best = i;
  }
  return best;
}

void EventRecorder::poll_activity() {
  if (!options_.peer_bytes) return;
  const uint64_t bytes = options_.peer_bytes();
  if (bytes > peer_bytes_seen_) {
    record(P2PReason::kActive, "downloaded " + std::to_string(bytes - peer_bytes_seen_) +
                                   " bytes from peers (" + std::to_string(bytes) + " in total)");
  }
  peer_bytes_seen_ = bytes;
}

void EventRecorder::run() {
  subject_ = find_event_subject(*client_, options_.namespace_name, options_.pod_name, options_.node_name,
                                options_.host_name, logger_);
  logger_.info("kubernetes events",
               {{"kind", subject_.kind}, {"name", subject_.name}, {"namespace", options_.namespace_name}});
  auto next_poll = std::chrono::steady_clock::now();
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_poll) {
      poll_activity();
      next_poll = now + options_.activity_poll_interval;
    }
    std::unique_lock lock(mutex_);
    const bool draining = stopping_;
    if (draining && now >= drain_until_) {
      lock.unlock();
      break;
    }
    auto wake_at = options_.peer_bytes ? next_poll : now + std::chrono::seconds(60);
    if (draining) wake_at = drain_until_;
    if (const auto index = next_due(now, draining, wake_at)) {
      Slot& slot = slots_[*index];
      EventRecord record = slot.record;
      slot.pending = false;
      slot.ever_sent = true;
      slot.sent_at = now;
      lock.unlock();
      send(*index, std::move(record));
      continue;
    }
    if (draining) break;  // nothing pending
    wake_.wait_until(lock, wake_at);
  }
  {
    std::lock_guard lock(mutex_);
    finished_ = true;
  }
  wake_.notify_all();
}

void EventRecorder::send(size_t index, EventRecord record) {
  Slot& slot = slots_[index];  // event_name and total_count are the worker's alone
  const std::string reason(to_string(record.reason));
  if (!slot.event_name.empty()) {
    const uint32_t count = slot.total_count + record.count;
    const nlohmann::json patch = {
        {"count", count}, {"lastTimestamp", format_time(record.last_time)}, {"message", record.message}};
    auto answer = client_->merge_patch(events_path(options_.namespace_name) + "/" + slot.event_name, patch);
    if (answer && answer->status == 200) {
      slot.total_count = count;
      ++posted_;
      return;
    }
    if (!answer || answer->status != 404) {
      ++failed_;
      logger_.warn("cannot update a kubernetes event",
                   {{"reason", reason}, {"error", answer ? answer->error_message() : answer.error()}});
      return;
    }
    slot.event_name.clear();  // expired (events live an hour): create a new one
  }
  char suffix[24];
  std::snprintf(suffix, sizeof(suffix), ".%llx",
                static_cast<unsigned long long>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(record.first_time.time_since_epoch())
                        .count()));
  const std::string name = subject_.name + suffix;
  const std::string instance = options_.node_name.value_or(options_.host_name);
  auto answer = client_->post(events_path(options_.namespace_name),
                              make_event(subject_, record, name, options_.namespace_name, instance));
  if (answer && (answer->status == 201 || answer->status == 200)) {
    slot.event_name = name;
    slot.total_count = record.count;
    ++posted_;
    logger_.debug("kubernetes event posted", {{"reason", reason}});
    return;
  }
  ++failed_;
  std::string error =
      answer ? std::to_string(answer->status) + ": " + answer->error_message() : answer.error();
  if (answer && answer->status == 403)
    error += " (the service account needs create on events in " + options_.namespace_name + ")";
  logger_.warn("cannot post a kubernetes event", {{"reason", reason}, {"error", error}});
}

}  // namespace peerd::daemon::k8s
