#include "peerd/daemon/readiness.h"

namespace peerd::daemon {

void Readiness::require(std::string_view condition) {
  std::lock_guard lock(mutex_);
  conditions_.try_emplace(std::string(condition), false);
}

void Readiness::set(std::string_view condition, bool met) {
  std::lock_guard lock(mutex_);
  conditions_.insert_or_assign(std::string(condition), met);
}

bool Readiness::ready() const {
  std::lock_guard lock(mutex_);
  for (const auto& [name, met] : conditions_) {
    if (!met) return false;
  }
  return true;
}

std::vector<std::string> Readiness::pending() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (const auto& [name, met] : conditions_) {
    if (!met) names.push_back(name);
  }
  return names;
}

}  // namespace peerd::daemon
