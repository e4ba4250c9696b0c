#pragma once
// /readyz: named start-up conditions ("cache", "http", later "dht"), each set by the component that owns it.
// Ready when every registered condition holds. Thread-safe.
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace peerd::daemon {

class Readiness {
 public:
  // Registers `condition` as not yet met (no-op if already registered).
  void require(std::string_view condition);
  void set(std::string_view condition, bool met);
  bool ready() const;
  // The conditions not met yet, sorted.
  std::vector<std::string> pending() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, bool, std::less<>> conditions_;
};

}  // namespace peerd::daemon
