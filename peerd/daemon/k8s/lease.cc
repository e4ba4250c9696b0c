#include "peerd/daemon/k8s/lease.h"

namespace peerd::daemon::k8s {
namespace {

// How long resolve() waits for the first election round before the refresher keeps its previous answer.
constexpr std::chrono::seconds kFirstRoundWaitMax{15};

std::string string_at(const nlohmann::json& object, const char* outer, const char* key) {
  if (!object.is_object() || !object.contains(outer) || !object[outer].is_object()) return "";
  const auto& inner = object[outer];
  if (!inner.contains(key) || !inner[key].is_string()) return "";
  return inner[key].get<std::string>();
}

}  // namespace

std::string lease_collection_path(const std::string& namespace_name) {
  return "/apis/coordination.k8s.io/v1/namespaces/" + namespace_name + "/leases";
}

std::string lease_path(const std::string& namespace_name, const std::string& name) {
  return lease_collection_path(namespace_name) + "/" + name;
}

std::optional<Endpoint> endpoint_from_identity(const std::string& identity) {
  const auto slash = identity.rfind('/');
  const std::string address = slash == std::string::npos ? identity : identity.substr(slash + 1);
  auto endpoint = Endpoint::parse(address);
  if (!endpoint || endpoint->port == 0) return std::nullopt;
  return *endpoint;
}

LeaseElector::LeaseElector(ApiClient& client, LeaseOptions options, Logger logger, SteadyClock steady,
                           WallClock wall)
    : client_(client),
      options_(std::move(options)),
      logger_(std::move(logger)),
      steady_(steady ? std::move(steady) : SteadyClock([] { return std::chrono::steady_clock::now(); })),
      wall_(wall ? std::move(wall) : WallClock([] { return std::chrono::system_clock::now(); })) {}

void LeaseElector::step_down_if_stale(std::chrono::steady_clock::time_point now) {
  if (state_.leader && now - renewed_at_ > options_.renew_deadline) {
    logger_.warn("lost the leader lease: not renewed within the renew deadline", {{"lease", options_.name}});
    state_.leader = false;
  }
}

LeaseElector::State LeaseElector::try_acquire_or_renew() {
  const auto now = steady_();
  const auto now_wall = wall_();
  const std::string path = lease_path(options_.namespace_name, options_.name);
  auto got = client_.get(path);
  if (!got) {
    logger_.warn("cannot read the leader lease", {{"error", got.error()}});
    step_down_if_stale(now);
    return state_;
  }
  if (got->status == 404) {
    if (write(nullptr, now_wall)) {
      state_ = {true, options_.identity};
      renewed_at_ = now;
      logger_.info("became the leader", {{"lease", options_.name}, {"identity", options_.identity}});
    }
    return state_;
  }
  if (got->status != 200) {
    logger_.warn("cannot read the leader lease",
                 {{"status", got->status}, {"error", got->error_message()}, {"lease", options_.name}});
    step_down_if_stale(now);
    return state_;
  }
  const auto lease = got->json();
  if (!lease.is_object()) {
    logger_.warn("the leader lease is not JSON", {{"lease", options_.name}});
    return state_;
  }
  const std::string holder = string_at(lease, "spec", "holderIdentity");
  const std::string key = holder + "|" + string_at(lease, "spec", "renewTime") + "|" +
                          string_at(lease, "metadata", "resourceVersion");
  if (key != observed_key_) {
    observed_key_ = key;
    observed_at_ = now;
    int64_t seconds = options_.lease_duration.count();
    if (lease["spec"].contains("leaseDurationSeconds") && lease["spec"]["leaseDurationSeconds"].is_number())
      seconds = lease["spec"]["leaseDurationSeconds"].get<int64_t>();
    observed_duration_ = std::chrono::seconds(std::clamp<int64_t>(seconds, 1, 3600));
  }
  observed_lease_ = lease;
  const bool mine = holder == options_.identity;
  if (!holder.empty() && !mine && now < observed_at_ + observed_duration_) {
    // Someone else holds a live lease.
    if (state_.leader) logger_.warn("lost the leader lease", {{"holder", holder}});
    state_ = {false, holder};
    return state_;
  }
  if (!mine) acquire_time_.clear();
  if (write(&observed_lease_, now_wall)) {
    if (!mine) logger_.info("became the leader", {{"lease", options_.name}, {"previous", holder}});
    state_ = {true, options_.identity};
    renewed_at_ = now;
  } else {
    step_down_if_stale(now);
    if (!state_.leader) state_.holder = holder;
  }
  return state_;
}

bool LeaseElector::write(const nlohmann::json* observed, std::chrono::system_clock::time_point now_wall) {
  const std::string now_text = format_micro_time(now_wall);
  const bool create = observed == nullptr;
  nlohmann::json lease;
  int64_t transitions = 0;
  std::string previous_holder;
  if (create) {
    lease = {{"apiVersion", "coordination.k8s.io/v1"},
             {"kind", "Lease"},
             {"metadata", {{"name", options_.name}, {"namespace", options_.namespace_name}}}};
  } else {
    lease = *observed;
    lease.erase("status");
    if (lease["metadata"].is_object()) lease["metadata"].erase("managedFields");
    const auto& spec = (*observed)["spec"];
    if (spec.is_object() && spec.contains("leaseTransitions") && spec["leaseTransitions"].is_number())
      transitions = spec["leaseTransitions"].get<int64_t>();
    previous_holder = string_at(*observed, "spec", "holderIdentity");
  }
  const bool taking_over = create || previous_holder != options_.identity;
  if (taking_over) {
    acquire_time_ = now_text;
    if (!create) ++transitions;
  } else if (acquire_time_.empty()) {
    acquire_time_ = string_at(*observed, "spec", "acquireTime");
    if (acquire_time_.empty()) acquire_time_ = now_text;
  }
  if (!lease.contains("spec") || !lease["spec"].is_object()) lease["spec"] = nlohmann::json::object();
  auto& spec = lease["spec"];
  spec["holderIdentity"] = options_.identity;
  spec["leaseDurationSeconds"] = options_.lease_duration.count();
  spec["acquireTime"] = acquire_time_;
  spec["renewTime"] = now_text;
  spec["leaseTransitions"] = transitions;

  const auto answer = create ? client_.post(lease_collection_path(options_.namespace_name), lease)
                             : client_.put(lease_path(options_.namespace_name, options_.name), lease);
  if (!answer) {
    logger_.warn("cannot write the leader lease", {{"error", answer.error()}});
    return false;
  }
  if (answer->status == 200 || answer->status == 201) {
    const auto written = answer->json();
    if (written.is_object()) {
      observed_lease_ = written;
      observed_key_ = string_at(written, "spec", "holderIdentity") + "|" +
                      string_at(written, "spec", "renewTime") + "|" +
                      string_at(written, "metadata", "resourceVersion");
      observed_at_ = steady_();
      observed_duration_ = options_.lease_duration;
    }
    return true;
  }
  if (answer->status == 409) {
    logger_.debug("leader lease conflict: another node wrote it first", {{"lease", options_.name}});
  } else if (answer->status == 403) {
    logger_.warn(
        "not allowed to write the leader lease: the service account needs create/update on "
        "leases.coordination.k8s.io",
        {{"error", answer->error_message()}});
  } else {
    logger_.warn("cannot write the leader lease",
                 {{"status", answer->status}, {"error", answer->error_message()}});
  }
  return false;
}

void LeaseElector::release() {
  if (!state_.leader || !observed_lease_.is_object()) return;
  nlohmann::json lease = observed_lease_;
  lease.erase("status");
  lease["spec"]["holderIdentity"] = "";
  lease["spec"]["leaseDurationSeconds"] = 1;
  lease["spec"]["renewTime"] = format_micro_time(wall_());
  const auto answer = client_.put(lease_path(options_.namespace_name, options_.name), lease);
  if (answer && answer->status == 200) logger_.info("released the leader lease", {{"lease", options_.name}});
  state_ = {false, ""};
}

LeasePeerSource::LeasePeerSource(std::unique_ptr<ApiClient> client, LeaseOptions options, Logger logger)
    : client_(std::move(client)),
      options_(std::move(options)),
      logger_(std::move(logger)),
      elector_(*client_, options_, logger_) {}

LeasePeerSource::~LeasePeerSource() {
  stop();
}

void LeasePeerSource::set_on_change(std::function<void()> on_change) {
  std::lock_guard lock(mutex_);
  on_change_ = std::move(on_change);
}

void LeasePeerSource::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void LeasePeerSource::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeasePeerSource::run() {
  while (true) {
    const auto state = elector_.try_acquire_or_renew();
    std::function<void()> notify;
    {
      std::lock_guard lock(mutex_);
      if (!observed_ || !(state == state_)) notify = on_change_;
      observed_ = true;
      state_ = state;
    }
    wake_.notify_all();
    if (notify) notify();
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, options_.retry_period, [this] { return stopping_; });
    if (stopping_) break;
  }
  elector_.release();
}

Result<std::vector<Endpoint>, std::string> LeasePeerSource::resolve() {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, kFirstRoundWaitMax, [this] { return observed_ || stopping_; });
  if (!observed_) return fail(std::string("no leader lease observed yet"));
  if (state_.leader) return std::vector<Endpoint>{};
  if (state_.holder.empty()) return fail(std::string("the leader lease has no holder yet"));
  auto endpoint = endpoint_from_identity(state_.holder);
  if (!endpoint) return fail("the leader's identity is not a DHT address: '" + state_.holder + "'");
  return std::vector<Endpoint>{*endpoint};
}

std::string LeasePeerSource::describe() const {
  return "k8s-lease:" + options_.namespace_name + "/" + options_.name;
}

LeaseElector::State LeasePeerSource::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

}  // namespace peerd::daemon::k8s
