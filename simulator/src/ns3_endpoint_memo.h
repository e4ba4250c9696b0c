#pragma once
// The memo in front of ns-3's IPv4 endpoint demultiplexer (see ns3_endpoint_memo.cc). C++17-clean, no ns-3.
#include <cstdint>

namespace peerd::sim {

struct EndpointMemoStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
};

// Forgets every remembered endpoint: call when a simulation starts and after it is destroyed.
void reset_endpoint_memo();
// Off: every lookup goes to ns-3's own scan (the equivalence test compares both).
void set_endpoint_memo_enabled(bool enabled);
EndpointMemoStats endpoint_memo_stats();

}  // namespace peerd::sim
