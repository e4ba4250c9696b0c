#include "peerd/daemon/connection_tracker.h"

namespace peerd::daemon {

ConnectionTracker::ConnectionTracker(size_t connections_max, CloseIdle close_idle)
    : connections_max_(connections_max), close_idle_(std::move(close_idle)) {}

ConnectionTracker::Admission ConnectionTracker::admit() {
  std::shared_ptr<void> victim;
  {
    std::lock_guard lock(mutex_);
    if (connections_ < connections_max_) {
      ++connections_;
      return Admission::kAdmitted;
    }
    while (!idle_.empty() && !victim) {
      victim = idle_.begin()->second.lock();
      idle_.erase(idle_.begin());
    }
    if (!victim) return Admission::kRefused;
    // The victim still counts until it has closed; the newcomer overshoots the limit by one meanwhile, and
    // the overshoot is bounded by the number of idle connections being closed.
    ++connections_;
  }
  close_idle_(victim);
  return Admission::kAdmittedByEvicting;
}

void ConnectionTracker::release() {
  std::lock_guard lock(mutex_);
  if (connections_ > 0) --connections_;
}

uint64_t ConnectionTracker::mark_idle(std::weak_ptr<void> connection) {
  std::lock_guard lock(mutex_);
  const uint64_t ticket = next_ticket_++;
  idle_.emplace(ticket, std::move(connection));
  return ticket;
}

void ConnectionTracker::mark_busy(uint64_t ticket) {
  if (ticket == 0) return;
  std::lock_guard lock(mutex_);
  idle_.erase(ticket);
}

size_t ConnectionTracker::connection_count() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

size_t ConnectionTracker::idle_count() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

}  // namespace peerd::daemon
