// A memo in front of ns-3 3.37's IPv4 endpoint demultiplexer (C++17: includes ns-3).
//
// Why: `Ipv4EndPointDemux::Lookup` scans every endpoint of the receiving host for every TCP segment. In a
// synchronised pull an owner holds one connection per node, so the scan is O(N) per segment and O(N^2) per
// simulated GB: at 100 nodes it was a quarter of a packet-fidelity run. Debian's ns-3 is used as shipped, so
// instead of patching it this file interposes two of its exported functions (the library calls them through
// its PLT, so the executable's definitions win) and forwards to the originals, found with dlsym(RTLD_NEXT):
//
//   * Lookup: when the original's answer is a single endpoint whose 4-tuple equals the segment's, that is an
//     exact match, which ns-3 ranks above every wildcard match. It is remembered under (demux, 4-tuple). A
//     later segment with the same 4-tuple gets the remembered endpoint if it still has that 4-tuple, still
//     receives and is bound to no other device -- every condition the original checks for an exact match --
//     so the answer is the one the original would give (the original aborts on two exact matches for one
//     4-tuple; ns-3 never creates them for connected sockets). Anything else goes to the original.
//   * DeAllocate: forgets the endpoint before the original deletes it, so no remembered pointer dangles.
//
// The demultiplexers themselves die only in Simulator::Destroy, after which reset_endpoint_memo() drops
// everything. simulator/tests/ci_test.cc runs a packet scenario with and without the memo and requires
// byte-identical results.
#include "simulator/src/ns3_endpoint_memo.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <list>
#include <unordered_map>

#include "ns3/internet-module.h"
#include "ns3/ipv4-end-point-demux.h"
#include "ns3/ipv4-end-point.h"

namespace peerd::sim {
namespace {

struct TupleKey {
  const ns3::Ipv4EndPointDemux* demux = nullptr;
  uint32_t local_address = 0;
  uint32_t peer_address = 0;
  uint16_t local_port = 0;
  uint16_t peer_port = 0;
  bool operator==(const TupleKey& other) const {
    return demux == other.demux && local_address == other.local_address &&
           peer_address == other.peer_address && local_port == other.local_port &&
           peer_port == other.peer_port;
  }
};

struct TupleKeyHash {
  size_t operator()(const TupleKey& key) const {
    uint64_t value = reinterpret_cast<uintptr_t>(key.demux);
    value = value * 0x9e3779b97f4a7c15ull ^ (uint64_t{key.local_address} << 16 | key.local_port);
    value = value * 0x9e3779b97f4a7c15ull ^ (uint64_t{key.peer_address} << 16 | key.peer_port);
    value ^= value >> 29;
    return static_cast<size_t>(value * 0xbf58476d1ce4e5b9ull);
  }
};

struct Memo {
  bool enabled = true;
  std::unordered_map<TupleKey, ns3::Ipv4EndPoint*, TupleKeyHash> by_tuple;
  std::unordered_map<const ns3::Ipv4EndPoint*, TupleKey> by_endpoint;
  uint64_t hits = 0;
  uint64_t misses = 0;

  void forget(const ns3::Ipv4EndPoint* endpoint) {
    const auto it = by_endpoint.find(endpoint);
    if (it == by_endpoint.end()) return;
    by_tuple.erase(it->second);
    by_endpoint.erase(it);
  }
};

Memo& memo() {
  static Memo instance;
  return instance;
}

using LookupFunction = ns3::Ipv4EndPointDemux::EndPoints (*)(ns3::Ipv4EndPointDemux*, ns3::Ipv4Address,
                                                             uint16_t, ns3::Ipv4Address, uint16_t,
                                                             ns3::Ptr<ns3::Ipv4Interface>);
using DeAllocateFunction = void (*)(ns3::Ipv4EndPointDemux*, ns3::Ipv4EndPoint*);

// The library's own definition of a function this file interposes (the next one after the executable's).
void* original(const char* mangled_name) {
  void* function = dlsym(RTLD_NEXT, mangled_name);
  if (function == nullptr) {
    std::fprintf(stderr, "peerd-sim: ns-3's %s not found (not ns-3 3.37?): %s\n", mangled_name, dlerror());
    std::abort();
  }
  return function;
}

LookupFunction original_lookup() {
  static const auto function = reinterpret_cast<LookupFunction>(original(
      "_ZN3ns317Ipv4EndPointDemux6LookupB5cxx11ENS_11Ipv4AddressEtS1_tNS_3PtrINS_13Ipv4InterfaceEEE"));
  return function;
}

DeAllocateFunction original_deallocate() {
  static const auto function = reinterpret_cast<DeAllocateFunction>(
      original("_ZN3ns317Ipv4EndPointDemux10DeAllocateEPNS_12Ipv4EndPointE"));
  return function;
}

bool still_exact(ns3::Ipv4EndPoint* endpoint, const TupleKey& key,
                 const ns3::Ptr<ns3::Ipv4Interface>& incoming_interface) {
  if (!endpoint->IsRxEnabled()) return false;
  if (endpoint->GetLocalPort() != key.local_port || endpoint->GetPeerPort() != key.peer_port) return false;
  if (endpoint->GetLocalAddress().Get() != key.local_address) return false;
  if (endpoint->GetPeerAddress().Get() != key.peer_address) return false;
  const ns3::Ptr<ns3::NetDevice> bound = endpoint->GetBoundNetDevice();
  return !bound || (incoming_interface && bound == incoming_interface->GetDevice());
}

}  // namespace

void reset_endpoint_memo() {
  Memo& state = memo();
  state.by_tuple.clear();
  state.by_endpoint.clear();
}

void set_endpoint_memo_enabled(bool enabled) {
  reset_endpoint_memo();
  memo().enabled = enabled;
}

EndpointMemoStats endpoint_memo_stats() {
  return EndpointMemoStats{memo().hits, memo().misses};
}

}  // namespace peerd::sim

// ---- The interposed ns-3 functions ----

namespace ns3 {

Ipv4EndPointDemux::EndPoints Ipv4EndPointDemux::Lookup(Ipv4Address daddr, uint16_t dport, Ipv4Address saddr,
                                                       uint16_t sport, Ptr<Ipv4Interface> incomingInterface) {
  peerd::sim::Memo& state = peerd::sim::memo();
  if (!state.enabled)
    return peerd::sim::original_lookup()(this, daddr, dport, saddr, sport, incomingInterface);
  const peerd::sim::TupleKey key{this, daddr.Get(), saddr.Get(), dport, sport};
  const auto hit = state.by_tuple.find(key);
  if (hit != state.by_tuple.end() && peerd::sim::still_exact(hit->second, key, incomingInterface)) {
    ++state.hits;
    return EndPoints{hit->second};
  }
  ++state.misses;
  EndPoints found = peerd::sim::original_lookup()(this, daddr, dport, saddr, sport, incomingInterface);
  if (found.size() == 1) {
    Ipv4EndPoint* endpoint = found.front();
    if (endpoint->GetLocalAddress() == daddr && endpoint->GetLocalPort() == dport &&
        endpoint->GetPeerAddress() == saddr && endpoint->GetPeerPort() == sport) {
      state.forget(endpoint);
      const auto previous = state.by_tuple.find(key);
      if (previous != state.by_tuple.end()) state.forget(previous->second);
      state.by_tuple.emplace(key, endpoint);
      state.by_endpoint.emplace(endpoint, key);
    }
  }
  return found;
}

void Ipv4EndPointDemux::DeAllocate(Ipv4EndPoint* endPoint) {
  peerd::sim::memo().forget(endPoint);
  peerd::sim::original_deallocate()(this, endPoint);
}

}  // namespace ns3
