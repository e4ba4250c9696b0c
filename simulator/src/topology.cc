// TopologySpec helpers shared by both fidelities (C++17: compiled with the ns-3 half).
#include <algorithm>

#include "simulator/src/network.h"

namespace peerd::sim {

namespace {

// Address plan: block b (a rack, or 4096 hosts of a star) is 10.0.0.0 + (b << 14) /18; host k of the block
// sits at offset (k << 2) + 1 on its /30 host link (the switch side is + 2). The registry link is
// 10.255.255.252/30.
constexpr uint32_t kHostBase = 0x0A000000u;
constexpr uint32_t kRegistryAddress = 0x0AFFFFFDu;
constexpr uint32_t kBlockHostsMax = 4096;
constexpr uint32_t kBlocksMax = 1000;

}  // namespace

uint32_t TopologySpec::racks() const {
  if (kind == Kind::kStar) return 1;
  return (hosts + rack_size - 1) / rack_size;
}

uint32_t TopologySpec::rack_of(NodeIndex host) const {
  return kind == Kind::kStar ? 0 : host / rack_size;
}

double TopologySpec::host_rate(NodeIndex host) const {
  const double factor = host < host_rate_factor.size() ? host_rate_factor[host] : 1.0;
  return host_link.rate_bits_per_second * factor;
}

int64_t TopologySpec::host_delay_ns(NodeIndex host) const {
  const double factor = host < host_delay_factor.size() ? host_delay_factor[host] : 1.0;
  return static_cast<int64_t>(static_cast<double>(host_link.delay_ns) * factor);
}

uint32_t TopologySpec::ipv4_of(NodeIndex host) const {
  if (host == kUpstream) return kRegistryAddress;
  const uint32_t block = kind == Kind::kStar ? host / kBlockHostsMax : host / rack_size;
  const uint32_t position = kind == Kind::kStar ? host % kBlockHostsMax : host % rack_size;
  return kHostBase + (block << 14) + (position << 2) + 1;
}

int64_t TopologySpec::path_delay_ns(NodeIndex from, NodeIndex to) const {
  const bool racks = kind == Kind::kRacks;
  if (from == kUpstream || to == kUpstream) {
    const NodeIndex host = from == kUpstream ? to : from;
    if (host == kUpstream) return 0;
    return upstream_link.delay_ns + (racks ? uplink.delay_ns : 0) + host_delay_ns(host);
  }
  int64_t delay = host_delay_ns(from) + host_delay_ns(to);
  if (racks && rack_of(from) != rack_of(to)) delay += 2 * uplink.delay_ns;
  return delay;
}

bool TopologySpec::uplink_nonblocking() const {
  return uplink.rate_bits_per_second >= double(std::min(rack_size, hosts)) * host_link.rate_bits_per_second;
}

std::string TopologySpec::validate() const {
  if (hosts == 0) return "nodes must be at least 1";
  if (kind == Kind::kRacks && (rack_size == 0 || rack_size > kBlockHostsMax)) {
    return "topology.rack_size must be in [1, 4096]";
  }
  const uint32_t blocks = kind == Kind::kStar ? (hosts + kBlockHostsMax - 1) / kBlockHostsMax : racks();
  if (blocks > kBlocksMax) return "too many racks (at most 1000)";
  for (const LinkSpec* link : {&host_link, &uplink, &upstream_link}) {
    if (!(link->rate_bits_per_second > 0)) return "link rates must be positive";
    if (link->delay_ns < 0) return "link delays must not be negative";
  }
  if (mtu_bytes < 576 || mtu_bytes > 65535) return "topology.mtu_bytes must be in [576, 65535]";
  if (queue_packets == 0) return "topology.queue_packets must be positive";
  for (double factor : host_rate_factor) {
    if (!(factor > 0)) return "slow-node bandwidth factors must be positive";
  }
  for (double factor : host_delay_factor) {
    if (!(factor > 0)) return "slow-node latency factors must be positive";
  }
  return {};
}

}  // namespace peerd::sim
