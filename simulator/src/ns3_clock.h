#pragma once
// The ns-3 event scheduler as the simulator's clock: shared by both network fidelities (C++17, includes
// ns-3).
#include <cstdint>
#include <functional>
#include <utility>

#include "ns3/nstime.h"
#include "ns3/simulator.h"

namespace peerd::sim {

inline int64_t ns3_now_ns() {
  return ns3::Simulator::Now().GetNanoSeconds();
}

inline void ns3_schedule_at(int64_t at_ns, std::function<void()> callback) {
  const int64_t delay = at_ns > ns3_now_ns() ? at_ns - ns3_now_ns() : 0;
  ns3::Simulator::Schedule(ns3::NanoSeconds(delay), [callback = std::move(callback)] { callback(); });
}

// Runs until stop() or until the next event lies past `deadline_ns`.
inline void ns3_run(int64_t deadline_ns) {
  ns3::Simulator::Stop(ns3::NanoSeconds(deadline_ns > ns3_now_ns() ? deadline_ns - ns3_now_ns() : 0));
  ns3::Simulator::Run();
}

}  // namespace peerd::sim
