#pragma once
// Bounds the HTTP connections one server keeps. At the limit, a new connection evicts the connection that has
// been idle longest (waiting for the first byte of its next request), as nginx reuses keep-alive connections;
// with nothing idle it is refused. So idle connections can never starve a real request, while connections
// busy with a request are never cut. Thread-safe: sessions run on different strands.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace peerd::daemon {

class ConnectionTracker {
 public:
  // `close_idle` is called (outside the lock) on the evicted connection's token; it must hop to the
  // connection's own strand and close it only if it is still idle there.
  using CloseIdle = std::function<void(const std::shared_ptr<void>& connection)>;

  ConnectionTracker(size_t connections_max, CloseIdle close_idle);

  enum class Admission { kAdmitted, kAdmittedByEvicting, kRefused };
  // Counts a new connection in (or refuses it).
  Admission admit();
  // The connection ended (every admitted connection calls this exactly once).
  void release();

  // Idle bookkeeping: a connection waiting for a request is evictable. Returns the idle ticket to pass to
  // mark_busy (0 is never a ticket).
  uint64_t mark_idle(std::weak_ptr<void> connection);
  void mark_busy(uint64_t ticket);

  size_t connection_count() const;
  size_t idle_count() const;

 private:
  const size_t connections_max_;
  const CloseIdle close_idle_;
  mutable std::mutex mutex_;
  size_t connections_ = 0;
  uint64_t next_ticket_ = 1;
  std::map<uint64_t, std::weak_ptr<void>> idle_;  // oldest ticket first
};

}  // namespace peerd::daemon
