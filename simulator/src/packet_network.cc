// Packet fidelity: every host, switch and the registry is an ns-3 node; links are point-to-point devices with
// their rate, delay and a drop-tail queue; routing is static (host -> ToR -> spine -> ToR -> host). DHT
// datagrams travel in real UDP packets (port 4000). Chunk requests travel over real TCP (port 5000) with a
// minimal framing: a fixed 52-byte request frame, a 20-byte response header, then `length` payload bytes that
// are virtual (zero-filled ns-3 packets: sizes travel, no buffer is allocated or copied). Clients keep a
// small pool of idle keep-alive connections per host; one request is in flight per connection (HTTP/1.1
// style) and cancelling closes the connection. Servers write at most GetTxAvailable() bytes (Send is
// all-or-nothing) and resume from the send callback. C++17: includes ns-3.
#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"
#include "simulator/src/network.h"
#include "simulator/src/ns3_clock.h"
#include "simulator/src/ns3_endpoint_memo.h"

namespace peerd::sim {

namespace {

constexpr uint16_t kDhtPort = 4000;
constexpr uint16_t kChunkPort = 5000;
constexpr size_t kRequestFrameBytes = 52;
constexpr size_t kResponseHeaderBytes = 20;
constexpr uint32_t kRequestMagic = 0x50535251;   // "PSRQ"
constexpr uint32_t kResponseMagic = 0x50535253;  // "PSRS"
constexpr size_t kDatagramBytesMax = 65507;

void put_u32(uint8_t* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(value >> (24 - 8 * i));
}
void put_u64(uint8_t* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(value >> (56 - 8 * i));
}
uint32_t get_u32(const uint8_t* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 8) | in[i];
  return value;
}
uint64_t get_u64(const uint8_t* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | in[i];
  return value;
}

std::array<uint8_t, kRequestFrameBytes> encode_request(RequestId id, const ChunkRequest& chunk) {
  std::array<uint8_t, kRequestFrameBytes> frame{};
  put_u32(&frame[0], kRequestMagic);
  put_u64(&frame[4], id);
  put_u32(&frame[12], chunk.content);
  put_u64(&frame[16], chunk.chunk_index);
  put_u64(&frame[24], chunk.begin_in_chunk);
  put_u64(&frame[32], chunk.end_in_chunk);
  put_u64(&frame[40], chunk.content_bytes);
  frame[48] = chunk.fetch_through ? 1 : 0;
  return frame;
}

bool decode_request(const uint8_t* frame, RequestId& id, ChunkRequest& chunk) {
  if (get_u32(&frame[0]) != kRequestMagic) return false;
  id = get_u64(&frame[4]);
  chunk.content = get_u32(&frame[12]);
  chunk.chunk_index = get_u64(&frame[16]);
  chunk.begin_in_chunk = get_u64(&frame[24]);
  chunk.end_in_chunk = get_u64(&frame[32]);
  chunk.content_bytes = get_u64(&frame[40]);
  chunk.fetch_through = frame[48] != 0;
  return chunk.end_in_chunk >= chunk.begin_in_chunk;
}

// Forwarding in the switches by one hash lookup of the destination. ns-3's static routing scans the node's
// routes and, for "is it for me", every address of every interface, for each packet at each hop: a ToR has 41
// interfaces, and that was a tenth of a packet-fidelity run. The fabric is a tree, so every destination has
// one route per switch; they are taken once from the static routing set up in build() (the same routes, so a
// run gives the same result), plus the default route for the rest (a ToR's uplink).
class FabricRouting final : public ns3::Ipv4RoutingProtocol {
 public:
  static ns3::TypeId GetTypeId() {
    static const ns3::TypeId type = ns3::TypeId("peerd::sim::FabricRouting")
                                        .SetParent<ns3::Ipv4RoutingProtocol>()
                                        .SetGroupName("Internet");
    return type;
  }

  void add_route(uint32_t destination, ns3::Ptr<ns3::Ipv4Route> route) { routes_[destination] = route; }
  void set_default_route(ns3::Ptr<ns3::Ipv4Route> route) { default_route_ = route; }

  ns3::Ptr<ns3::Ipv4Route> RouteOutput(ns3::Ptr<ns3::Packet>, const ns3::Ipv4Header& header,
                                       ns3::Ptr<ns3::NetDevice>, ns3::Socket::SocketErrno& error) override {
    ns3::Ptr<ns3::Ipv4Route> route = route_to(header.GetDestination().Get());
    error = route ? ns3::Socket::ERROR_NOTERROR : ns3::Socket::ERROR_NOROUTETOHOST;
    return route;
  }

  bool RouteInput(ns3::Ptr<const ns3::Packet> packet, const ns3::Ipv4Header& header,
                  ns3::Ptr<const ns3::NetDevice> input_device, UnicastForwardCallback forward,
                  MulticastForwardCallback, LocalDeliverCallback deliver, ErrorCallback) override {
    const uint32_t destination = header.GetDestination().Get();
    if (own_addresses_.count(destination) != 0) {
      deliver(packet, header, ipv4_->GetInterfaceForDevice(input_device));
      return true;
    }
    ns3::Ptr<ns3::Ipv4Route> route = route_to(destination);
    if (!route) return false;  // dropped, as static routing drops what it has no route for
    forward(route, packet, header);
    return true;
  }

  void NotifyInterfaceUp(uint32_t) override {}
  void NotifyInterfaceDown(uint32_t) override {}
  void NotifyAddAddress(uint32_t, ns3::Ipv4InterfaceAddress address) override {
    own_addresses_.insert(address.GetLocal().Get());
  }
  void NotifyRemoveAddress(uint32_t, ns3::Ipv4InterfaceAddress address) override {
    own_addresses_.erase(address.GetLocal().Get());
  }
  void SetIpv4(ns3::Ptr<ns3::Ipv4> ipv4) override {
    ipv4_ = ipv4;
    own_addresses_.clear();
    for (uint32_t interface = 0; interface < ipv4->GetNInterfaces(); ++interface) {
      for (uint32_t i = 0; i < ipv4->GetNAddresses(interface); ++i)
        own_addresses_.insert(ipv4->GetAddress(interface, i).GetLocal().Get());
    }
  }
  void PrintRoutingTable(ns3::Ptr<ns3::OutputStreamWrapper> stream, ns3::Time::Unit) const override {
    *stream->GetStream() << "FabricRouting: " << routes_.size() << " host routes"
                         << (default_route_ ? " and a default route\n" : "\n");
  }

 private:
  ns3::Ptr<ns3::Ipv4Route> route_to(uint32_t destination) const {
    const auto it = routes_.find(destination);
    return it != routes_.end() ? it->second : default_route_;
  }

  ns3::Ptr<ns3::Ipv4> ipv4_;
  std::unordered_map<uint32_t, ns3::Ptr<ns3::Ipv4Route>> routes_;
  ns3::Ptr<ns3::Ipv4Route> default_route_;
  std::unordered_set<uint32_t> own_addresses_;
};

class PacketNetwork final : public Network {
 public:
  PacketNetwork(const TopologySpec& topology, const PacketOptions& options, NetworkHandler& handler)
      : topology_(topology), options_(options), handler_(handler) {
    ns3::Simulator::Destroy();
    reset_endpoint_memo();
    ns3::Ipv4AddressGenerator::Reset();  // addresses are global to the process; every run starts afresh
    set_defaults();
    build();
    ns3::Simulator::Schedule(ns3::Seconds(0), [this] { open_sockets(); });
  }

  ~PacketNetwork() override {
    connections_.clear();
    ns3::Simulator::Destroy();
    reset_endpoint_memo();  // the demultiplexers it points into are gone
  }

  int64_t now_ns() const override { return ns3_now_ns(); }
  void schedule_at(int64_t at_ns, std::function<void()> callback) override {
    ns3_schedule_at(at_ns, std::move(callback));
  }
  void run(int64_t deadline_ns) override { ns3_run(deadline_ns); }
  void stop() override { ns3::Simulator::Stop(); }
  uint64_t events_executed() const override { return ns3::Simulator::GetEventCount(); }
  const NetworkStats& stats() const override { return stats_; }

  void send_datagram(NodeIndex from, NodeIndex to, const uint8_t* bytes, size_t size) override {
    ++stats_.datagrams_sent;
    Host& host = hosts_[slot(from)];
    if (host.dead || !host.udp || size > kDatagramBytesMax) {
      ++stats_.datagrams_dropped;
      return;
    }
    ns3::Ptr<ns3::Packet> packet = ns3::Create<ns3::Packet>(bytes, static_cast<uint32_t>(size));
    if (host.udp->SendTo(packet, 0, ns3::InetSocketAddress(hosts_[slot(to)].address, kDhtPort)) < 0) {
      ++stats_.datagrams_dropped;
    }
  }

  RequestId start_request(NodeIndex client, NodeIndex server, const ChunkRequest& chunk) override {
    const RequestId id = next_request_++;
    ++stats_.requests;
    Request& request = requests_[id];
    request.client = client;
    request.server = server;
    request.chunk = chunk;
    const uint64_t connection = take_idle(client, server);
    if (connection != 0) {
      attach(connection, id);
      send_request_frame(connection);
    } else {
      attach(open_connection(client, server), id);  // the frame goes out when it connects
    }
    return id;
  }

  void cancel_request(RequestId id) override {
    auto it = requests_.find(id);
    if (it == requests_.end()) return;
    const uint64_t connection = it->second.client_connection;
    requests_.erase(it);  // no more client callbacks; the server learns from the closed connection
    if (connection != 0) close_later(connection);
  }

  void respond(RequestId id, uint64_t length_bytes, uint32_t taint) override {
    Connection* connection = server_connection_of(id);
    if (!connection) return;
    start_response(*connection, ResponseStatus::kOk, taint, length_bytes);
  }

  void respond_status(RequestId id, ResponseStatus status) override {
    Connection* connection = server_connection_of(id);
    if (!connection) return;
    start_response(*connection, status, 0, 0);
  }

  void respond_pending(RequestId id) override {
    Connection* connection = server_connection_of(id);
    if (!connection || connection->responding || hosts_[slot(connection->local)].dead) return;
    std::array<uint8_t, kResponseHeaderBytes> header{};
    put_u32(&header[0], kResponseMagic);
    header[4] = static_cast<uint8_t>(ResponseStatus::kPending);
    // A 20-byte write fits: nothing else is queued on a connection whose request awaits its answer.
    if (connection->socket->GetTxAvailable() >= kResponseHeaderBytes) {
      connection->socket->Send(
          ns3::Create<ns3::Packet>(header.data(), static_cast<uint32_t>(kResponseHeaderBytes)));
    }
  }

  void kill(NodeIndex host_index) override {
    Host& host = hosts_[slot(host_index)];
    if (host.dead) return;
    host.dead = true;
    ns3::Ptr<ns3::Ipv4> ipv4 = host.node->GetObject<ns3::Ipv4>();
    for (uint32_t interface = 1; interface < ipv4->GetNInterfaces(); ++interface) ipv4->SetDown(interface);
  }

 private:
  struct Host {
    ns3::Ptr<ns3::Node> node;
    ns3::Ipv4Address address;
    ns3::Ptr<ns3::Socket> udp;
    ns3::Ptr<ns3::Socket> listener;
    bool dead = false;
    std::deque<uint64_t> idle;  // client connections, least recently used first
  };
  struct Connection {
    ns3::Ptr<ns3::Socket> socket;
    NodeIndex local = 0;
    NodeIndex remote = 0;
    bool client = false;
    bool connected = false;
    bool closed = false;
    RequestId request = 0;  // 0 = idle
    // Client side: the response being read.
    bool frame_sent = false;
    std::array<uint8_t, kResponseHeaderBytes> header{};
    size_t header_bytes = 0;
    uint64_t body_bytes = 0;
    uint64_t body_received = 0;
    // Server side: the request being read and the response being written.
    std::vector<uint8_t> frame;
    bool responding = false;
    std::array<uint8_t, kResponseHeaderBytes> out_header{};
    bool header_pending = false;
    uint64_t out_remaining = 0;
    uint64_t out_sent = 0;
  };
  struct Request {
    NodeIndex client = 0;
    NodeIndex server = 0;
    ChunkRequest chunk;
    uint64_t client_connection = 0;
  };

  size_t slot(NodeIndex index) const { return index == kUpstream ? topology_.hosts : index; }
  NodeIndex index_of_slot(size_t host_slot) const {
    return host_slot == topology_.hosts ? kUpstream : static_cast<NodeIndex>(host_slot);
  }

  void set_defaults() {
    using ns3::Config::SetDefault;
    ns3::RngSeedManager::SetSeed(static_cast<uint32_t>(options_.seed % 2147483647u) + 1);
    ns3::RngSeedManager::SetRun(1);
    SetDefault("ns3::TcpSocket::SegmentSize", ns3::UintegerValue(topology_.mtu_bytes - 52));
    SetDefault("ns3::TcpSocket::SndBufSize", ns3::UintegerValue(options_.socket_buffer_bytes));
    SetDefault("ns3::TcpSocket::RcvBufSize", ns3::UintegerValue(options_.socket_buffer_bytes));
    SetDefault("ns3::TcpSocket::InitialCwnd", ns3::UintegerValue(options_.initial_cwnd_segments));
    SetDefault("ns3::TcpSocket::DelAckTimeout", ns3::TimeValue(ns3::MilliSeconds(1)));
    SetDefault("ns3::TcpSocket::DelAckCount", ns3::UintegerValue(options_.delayed_ack_segments));
    SetDefault("ns3::TcpSocket::ConnTimeout",
               ns3::TimeValue(ns3::Seconds(options_.connect_timeout_seconds / 2)));
    SetDefault("ns3::TcpSocket::ConnCount", ns3::UintegerValue(2));
    SetDefault("ns3::TcpSocketBase::MinRto", ns3::TimeValue(ns3::Seconds(options_.tcp_min_rto_seconds)));
    SetDefault("ns3::TcpSocketBase::MaxSegLifetime",
               ns3::DoubleValue(0.05));  // short TIME_WAIT: frees sockets
    SetDefault("ns3::TcpL4Protocol::SocketType",
               ns3::TypeIdValue(ns3::TypeId::LookupByName("ns3::TcpCubic")));
    SetDefault("ns3::PointToPointNetDevice::Mtu", ns3::UintegerValue(topology_.mtu_bytes));
    SetDefault("ns3::UdpSocket::RcvBufSize", ns3::UintegerValue(1u << 22));
  }

  ns3::NetDeviceContainer connect(ns3::Ptr<ns3::Node> a, ns3::Ptr<ns3::Node> b, double rate_bits,
                                  int64_t delay_ns) {
    ns3::PointToPointHelper helper;
    helper.SetDeviceAttribute("DataRate",
                              ns3::DataRateValue(ns3::DataRate(static_cast<uint64_t>(rate_bits))));
    helper.SetChannelAttribute("Delay", ns3::TimeValue(ns3::NanoSeconds(delay_ns)));
    helper.SetQueue("ns3::DropTailQueue<Packet>", "MaxSize",
                    ns3::QueueSizeValue(ns3::QueueSize(std::to_string(topology_.queue_packets) + "p")));
    return helper.Install(a, b);
  }

  // Numbers a /30 link: `host_address` on the first device, + 1 on the second.
  void number(const ns3::NetDeviceContainer& devices, uint32_t first_address) {
    ns3::Ipv4AddressHelper addresses;
    addresses.SetBase(ns3::Ipv4Address(first_address - 1), ns3::Ipv4Mask("255.255.255.252"));
    addresses.Assign(devices);
    ns3::TrafficControlHelper control;
    control.Uninstall(devices);  // no FqCoDel: the device's drop-tail queue is the model
  }

  void build() {
    const uint32_t hosts = topology_.hosts;
    hosts_.resize(hosts + 1);
    for (Host& host : hosts_) host.node = ns3::CreateObject<ns3::Node>();
    const bool racks = topology_.kind == TopologySpec::Kind::kRacks;
    const uint32_t switches = racks ? topology_.racks() + 1 : 1;  // ToRs then the spine, or one star switch
    for (uint32_t i = 0; i < switches; ++i) switches_.push_back(ns3::CreateObject<ns3::Node>());
    ns3::Ipv4StaticRoutingHelper static_routing;
    ns3::InternetStackHelper stack;
    stack.SetRoutingHelper(static_routing);
    for (Host& host : hosts_) stack.Install(host.node);
    for (auto& node : switches_) stack.Install(node);
    ns3::Ptr<ns3::Node> core = switches_.back();  // spine, or the star switch

    for (NodeIndex index = 0; index < hosts; ++index) {
      const uint32_t rack = topology_.rack_of(index);
      ns3::Ptr<ns3::Node> edge = racks ? switches_[rack] : core;
      ns3::NetDeviceContainer devices =
          connect(hosts_[index].node, edge, topology_.host_rate(index), topology_.host_delay_ns(index));
      const uint32_t address = topology_.ipv4_of(index);
      number(devices, address);
      hosts_[index].address = ns3::Ipv4Address(address);
      address_to_slot_[address] = index;
      static_routing.GetStaticRouting(hosts_[index].node->GetObject<ns3::Ipv4>())
          ->SetDefaultRoute(ns3::Ipv4Address(address + 1), 1);
    }
    if (racks) {
      for (uint32_t rack = 0; rack < topology_.racks(); ++rack) {
        ns3::NetDeviceContainer devices =
            connect(switches_[rack], core, topology_.uplink.rate_bits_per_second, topology_.uplink.delay_ns);
        const uint32_t tor_address = 0xAC100001u + (rack << 2);  // 172.16.x.y/30 per uplink
        number(devices, tor_address);
        auto tor = static_routing.GetStaticRouting(switches_[rack]->GetObject<ns3::Ipv4>());
        const uint32_t tor_uplink = switches_[rack]->GetObject<ns3::Ipv4>()->GetNInterfaces() - 1;
        tor->SetDefaultRoute(ns3::Ipv4Address(tor_address + 1), tor_uplink);
        auto spine = static_routing.GetStaticRouting(core->GetObject<ns3::Ipv4>());
        const uint32_t spine_interface = core->GetObject<ns3::Ipv4>()->GetNInterfaces() - 1;
        spine->AddNetworkRouteTo(ns3::Ipv4Address(topology_.ipv4_of(rack * topology_.rack_size) - 1),
                                 ns3::Ipv4Mask("255.255.192.0"), ns3::Ipv4Address(tor_address),
                                 spine_interface);
      }
    }
    Host& registry = hosts_[hosts];
    ns3::NetDeviceContainer devices = connect(
        registry.node, core, topology_.upstream_link.rate_bits_per_second, topology_.upstream_link.delay_ns);
    const uint32_t registry_address = topology_.ipv4_of(kUpstream);
    number(devices, registry_address);
    registry.address = ns3::Ipv4Address(registry_address);
    address_to_slot_[registry_address] = hosts;
    static_routing.GetStaticRouting(registry.node->GetObject<ns3::Ipv4>())
        ->SetDefaultRoute(ns3::Ipv4Address(registry_address + 1), 1);
    for (const auto& node : switches_) install_fabric_routing(node);
  }

  // Replaces a switch's static routing by the same routes in a FabricRouting: one route per host it reaches
  // without its default route (a ToR: its rack; the spine: every host), the default route for the rest.
  void install_fabric_routing(ns3::Ptr<ns3::Node> node) {
    ns3::Ptr<ns3::Ipv4> ipv4 = node->GetObject<ns3::Ipv4>();
    ns3::Ptr<ns3::Ipv4RoutingProtocol> current = ipv4->GetRoutingProtocol();
    auto route_to = [&](uint32_t address) {
      ns3::Ipv4Header header;
      header.SetDestination(ns3::Ipv4Address(address));
      ns3::Socket::SocketErrno error = ns3::Socket::ERROR_NOTERROR;
      return current->RouteOutput(nullptr, header, nullptr, error);
    };
    ns3::Ptr<FabricRouting> fabric = ns3::CreateObject<FabricRouting>();
    // 198.51.100.1 (TEST-NET-2) is in no network of the plan: only a default route reaches it.
    const ns3::Ptr<ns3::Ipv4Route> fallback = route_to(0xC6336401u);
    if (fallback) fabric->set_default_route(fallback);
    for (const Host& host : hosts_) {
      ns3::Ptr<ns3::Ipv4Route> route = route_to(host.address.Get());
      if (!route) continue;
      if (fallback && route->GetOutputDevice() == fallback->GetOutputDevice() &&
          route->GetGateway() == fallback->GetGateway())
        continue;
      fabric->add_route(host.address.Get(), route);
    }
    ipv4->SetRoutingProtocol(fabric);
  }

  void open_sockets() {
    const ns3::TypeId udp = ns3::UdpSocketFactory::GetTypeId();
    const ns3::TypeId tcp = ns3::TcpSocketFactory::GetTypeId();
    for (size_t host_slot = 0; host_slot < hosts_.size(); ++host_slot) {
      Host& host = hosts_[host_slot];
      if (host_slot < topology_.hosts) {
        host.udp = ns3::Socket::CreateSocket(host.node, udp);
        host.udp->Bind(ns3::InetSocketAddress(ns3::Ipv4Address::GetAny(), kDhtPort));
        host.udp->SetRecvCallback(ns3::Callback<void, ns3::Ptr<ns3::Socket>>(
            [this, host_slot](ns3::Ptr<ns3::Socket> socket) { on_datagrams(host_slot, socket); }));
      }
      host.listener = ns3::Socket::CreateSocket(host.node, tcp);
      host.listener->Bind(ns3::InetSocketAddress(ns3::Ipv4Address::GetAny(), kChunkPort));
      host.listener->Listen();
      host.listener->SetAcceptCallback(
          ns3::MakeNullCallback<bool, ns3::Ptr<ns3::Socket>, const ns3::Address&>(),
          ns3::Callback<void, ns3::Ptr<ns3::Socket>, const ns3::Address&>(
              [this, host_slot](ns3::Ptr<ns3::Socket> socket, const ns3::Address& from) {
                on_accept(host_slot, socket, from);
              }));
    }
  }

  // ---- Datagrams ----

  void on_datagrams(size_t host_slot, ns3::Ptr<ns3::Socket> socket) {
    ns3::Address from;
    while (ns3::Ptr<ns3::Packet> packet = socket->RecvFrom(from)) {
      if (hosts_[host_slot].dead) continue;
      const auto sender = address_to_slot_.find(ns3::InetSocketAddress::ConvertFrom(from).GetIpv4().Get());
      if (sender == address_to_slot_.end()) {
        ++stats_.datagrams_dropped;
        continue;
      }
      datagram_.resize(packet->GetSize());
      packet->CopyData(datagram_.data(), static_cast<uint32_t>(datagram_.size()));
      ++stats_.datagrams_delivered;
      handler_.on_datagram(index_of_slot(host_slot), index_of_slot(sender->second), datagram_.data(),
                           datagram_.size());
    }
  }

  // ---- Connections ----

  uint64_t add_connection(ns3::Ptr<ns3::Socket> socket, NodeIndex local, NodeIndex remote, bool client) {
    const uint64_t id = next_connection_++;
    Connection& connection = connections_[id];
    connection.socket = socket;
    connection.local = local;
    connection.remote = remote;
    connection.client = client;
    socket->SetRecvCallback(
        ns3::Callback<void, ns3::Ptr<ns3::Socket>>([this, id](ns3::Ptr<ns3::Socket>) { on_readable(id); }));
    socket->SetSendCallback(ns3::Callback<void, ns3::Ptr<ns3::Socket>, uint32_t>(
        [this, id](ns3::Ptr<ns3::Socket>, uint32_t) { on_writable(id); }));
    socket->SetCloseCallbacks(ns3::Callback<void, ns3::Ptr<ns3::Socket>>(
                                  [this, id](ns3::Ptr<ns3::Socket>) { on_closed(id, false); }),
                              ns3::Callback<void, ns3::Ptr<ns3::Socket>>(
                                  [this, id](ns3::Ptr<ns3::Socket>) { on_closed(id, true); }));
    return id;
  }

  uint64_t open_connection(NodeIndex client, NodeIndex server) {
    ++stats_.connections_opened;
    ns3::Ptr<ns3::Socket> socket =
        ns3::Socket::CreateSocket(hosts_[slot(client)].node, ns3::TcpSocketFactory::GetTypeId());
    const uint64_t id = add_connection(socket, client, server, true);
    socket->SetConnectCallback(
        ns3::Callback<void, ns3::Ptr<ns3::Socket>>([this, id](ns3::Ptr<ns3::Socket>) { on_connected(id); }),
        ns3::Callback<void, ns3::Ptr<ns3::Socket>>(
            [this, id](ns3::Ptr<ns3::Socket>) { on_closed(id, true); }));
    socket->Bind();
    socket->Connect(ns3::InetSocketAddress(hosts_[slot(server)].address, kChunkPort));
    return id;
  }

  uint64_t take_idle(NodeIndex client, NodeIndex server) {
    std::deque<uint64_t>& idle = hosts_[slot(client)].idle;
    for (auto it = idle.rbegin(); it != idle.rend(); ++it) {
      const auto connection = connections_.find(*it);
      if (connection == connections_.end() || connection->second.closed) continue;
      if (connection->second.remote != server) continue;
      const uint64_t id = *it;
      idle.erase(std::next(it).base());
      return id;
    }
    return 0;
  }

  void release_to_pool(uint64_t id) {
    Connection& connection = connections_.at(id);
    connection.request = 0;
    connection.frame_sent = false;
    std::deque<uint64_t>& idle = hosts_[slot(connection.local)].idle;
    idle.push_back(id);
    while (idle.size() > options_.idle_connections_max) {
      const uint64_t oldest = idle.front();
      idle.pop_front();
      close_later(oldest);
    }
  }

  void attach(uint64_t connection, RequestId id) {
    connections_.at(connection).request = id;
    requests_.at(id).client_connection = connection;
  }

  void close_later(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second.closed) return;
    it->second.closed = true;
    it->second.request = 0;
    // Not from inside the socket's own callback: TCP would continue on a half-updated state.
    ns3::Simulator::ScheduleNow([this, id] { destroy(id); });
  }

  void destroy(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    ns3::Ptr<ns3::Socket> socket = it->second.socket;
    connections_.erase(it);
    socket->SetRecvCallback(ns3::MakeNullCallback<void, ns3::Ptr<ns3::Socket>>());
    socket->SetSendCallback(ns3::MakeNullCallback<void, ns3::Ptr<ns3::Socket>, uint32_t>());
    socket->SetCloseCallbacks(ns3::MakeNullCallback<void, ns3::Ptr<ns3::Socket>>(),
                              ns3::MakeNullCallback<void, ns3::Ptr<ns3::Socket>>());
    socket->Close();
  }

  void on_connected(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second.closed) return;
    it->second.connected = true;
    if (it->second.request != 0) {
      send_request_frame(id);
    } else {
      release_to_pool(id);  // its request was cancelled while connecting
    }
  }

  void send_request_frame(uint64_t id) {
    Connection& connection = connections_.at(id);
    if (!connection.connected || connection.frame_sent || connection.request == 0) return;
    const auto request = requests_.find(connection.request);
    if (request == requests_.end()) return;
    if (connection.socket->GetTxAvailable() < kRequestFrameBytes) return;  // resumes from on_writable
    const auto frame = encode_request(connection.request, request->second.chunk);
    connection.socket->Send(ns3::Create<ns3::Packet>(frame.data(), static_cast<uint32_t>(frame.size())));
    connection.frame_sent = true;
    connection.header_bytes = 0;
    connection.body_bytes = 0;
    connection.body_received = 0;
  }

  void on_accept(size_t host_slot, ns3::Ptr<ns3::Socket> socket, const ns3::Address& from) {
    const auto client = address_to_slot_.find(ns3::InetSocketAddress::ConvertFrom(from).GetIpv4().Get());
    const NodeIndex remote = client == address_to_slot_.end() ? kUpstream : index_of_slot(client->second);
    add_connection(socket, index_of_slot(host_slot), remote, false);
  }

  void on_readable(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    Connection& connection = it->second;
    const bool dead = hosts_[slot(connection.local)].dead;
    while (ns3::Ptr<ns3::Packet> packet = connection.socket->Recv()) {
      if (dead || connection.closed) continue;
      if (connection.client) {
        read_response(id, packet);
      } else {
        read_request(id, packet);
      }
      // The handler may have closed or replaced the connection.
      it = connections_.find(id);
      if (it == connections_.end()) return;
    }
  }

  void read_request(uint64_t id, ns3::Ptr<ns3::Packet> packet) {
    Connection& connection = connections_.at(id);
    const size_t old = connection.frame.size();
    connection.frame.resize(old + packet->GetSize());
    packet->CopyData(connection.frame.data() + old, packet->GetSize());
    while (connection.frame.size() >= kRequestFrameBytes && !connection.responding &&
           connection.request == 0) {
      RequestId request_id = 0;
      ChunkRequest chunk;
      const bool valid = decode_request(connection.frame.data(), request_id, chunk);
      connection.frame.erase(connection.frame.begin(), connection.frame.begin() + kRequestFrameBytes);
      if (!valid) {
        close_later(id);
        return;
      }
      connection.request = request_id;
      connection.out_sent = 0;
      serving_[request_id] = id;
      handler_.on_request(connection.local, connection.remote, request_id, chunk);
      if (connections_.find(id) == connections_.end()) return;
    }
  }

  Connection* server_connection_of(RequestId request) {
    const auto it = serving_.find(request);
    if (it == serving_.end()) return nullptr;
    const auto connection = connections_.find(it->second);
    if (connection == connections_.end() || connection->second.closed) return nullptr;
    return &connection->second;
  }

  void start_response(Connection& connection, ResponseStatus status, uint32_t taint, uint64_t length) {
    if (connection.responding || hosts_[slot(connection.local)].dead) return;
    connection.responding = true;
    put_u32(&connection.out_header[0], kResponseMagic);
    connection.out_header[4] = static_cast<uint8_t>(status);
    put_u32(&connection.out_header[5], taint);
    put_u64(&connection.out_header[9], length);
    connection.header_pending = true;
    connection.out_remaining = length;
    connection.out_sent = 0;
    pump(connection);
  }

  void pump(Connection& connection) {
    if (connection.closed || !connection.responding) return;
    if (connection.header_pending) {
      if (connection.socket->GetTxAvailable() < kResponseHeaderBytes) return;
      connection.socket->Send(ns3::Create<ns3::Packet>(connection.out_header.data(),
                                                       static_cast<uint32_t>(kResponseHeaderBytes)));
      connection.header_pending = false;
    }
    while (connection.out_remaining > 0) {
      const uint32_t available = connection.socket->GetTxAvailable();
      if (available == 0) return;  // on_writable resumes
      const uint32_t bytes = static_cast<uint32_t>(std::min<uint64_t>(available, connection.out_remaining));
      if (connection.socket->Send(ns3::Create<ns3::Packet>(bytes)) < 0) return;
      connection.out_remaining -= bytes;
      connection.out_sent += bytes;
      stats_.payload_bytes_sent += bytes;
    }
    finish_serving(connection);
  }

  void finish_serving(Connection& connection) {
    const RequestId request = connection.request;
    const uint64_t sent = connection.out_sent;
    connection.responding = false;
    connection.request = 0;
    serving_.erase(request);
    handler_.on_response_sent(connection.local, request, sent);
  }

  void on_writable(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second.closed) return;
    if (hosts_[slot(it->second.local)].dead) return;
    if (it->second.client) {
      send_request_frame(id);
    } else {
      pump(it->second);
    }
  }

  void read_response(uint64_t id, ns3::Ptr<ns3::Packet> packet) {
    Connection& connection = connections_.at(id);
    const RequestId request_id = connection.request;
    if (request_id == 0 || requests_.find(request_id) == requests_.end()) return;  // stray bytes
    uint64_t size = packet->GetSize();
    if (connection.header_bytes < kResponseHeaderBytes) {
      const size_t take = std::min<uint64_t>(size, kResponseHeaderBytes - connection.header_bytes);
      uint8_t buffer[kResponseHeaderBytes];
      packet->CopyData(buffer, static_cast<uint32_t>(take));
      std::memcpy(connection.header.data() + connection.header_bytes, buffer, take);
      connection.header_bytes += take;
      size -= take;
      if (connection.header_bytes < kResponseHeaderBytes) return;
      if (get_u32(&connection.header[0]) != kResponseMagic) {
        fail_client(id, RequestFailure::kBroken);
        return;
      }
      const auto status = static_cast<ResponseStatus>(connection.header[4]);
      const uint32_t taint = get_u32(&connection.header[5]);
      connection.body_bytes = get_u64(&connection.header[9]);
      const NodeIndex client = connection.local;
      if (status == ResponseStatus::kPending) {
        // An interim header: the final one follows on the same stream.
        connection.header_bytes = 0;
        handler_.on_response_header(client, request_id, status, 0);
        if (requests_.find(request_id) == requests_.end() || size == 0) return;
        const auto rest = packet->CreateFragment(packet->GetSize() - static_cast<uint32_t>(size),
                                                 static_cast<uint32_t>(size));
        read_response(id, rest);
        return;
      }
      if (status != ResponseStatus::kOk || connection.body_bytes == 0) {
        requests_.erase(request_id);
        release_to_pool(id);
        handler_.on_response_header(client, request_id, status, taint);
        if (status == ResponseStatus::kOk) handler_.on_response_complete(client, request_id);
        return;
      }
      handler_.on_response_header(client, request_id, status, taint);
      if (requests_.find(request_id) == requests_.end()) return;  // cancelled from the handler
    }
    if (size == 0) return;
    Connection& same = connections_.at(id);
    const uint64_t body = std::min<uint64_t>(size, same.body_bytes - same.body_received);
    same.body_received += body;
    stats_.payload_bytes_received += body;
    const NodeIndex client = same.local;
    const bool complete = same.body_received == same.body_bytes;
    if (complete) {
      requests_.erase(request_id);
      release_to_pool(id);
    }
    handler_.on_response_data(client, request_id, body);
    if (complete) handler_.on_response_complete(client, request_id);
  }

  void fail_client(uint64_t id, RequestFailure failure) {
    Connection& connection = connections_.at(id);
    const RequestId request_id = connection.request;
    const NodeIndex client = connection.local;
    close_later(id);
    if (request_id == 0 || requests_.erase(request_id) == 0) return;
    if (!hosts_[slot(client)].dead) handler_.on_request_failed(client, request_id, failure);
  }

  void on_closed(uint64_t id, bool error) {
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second.closed) return;
    Connection& connection = it->second;
    if (connection.client) {
      const bool established = connection.connected;
      const RequestId request_id = connection.request;
      if (request_id == 0) {
        close_later(id);
        return;
      }
      fail_client(id, established ? RequestFailure::kBroken : RequestFailure::kUnreachable);
      return;
    }
    (void)error;
    // Server side: the client went away (cancel, failure or death).
    const RequestId request_id = connection.request;
    const uint64_t sent = connection.out_sent;
    const NodeIndex server = connection.local;
    const bool open_request = request_id != 0;
    close_later(id);
    serving_.erase(request_id);
    if (open_request && !hosts_[slot(server)].dead) handler_.on_response_sent(server, request_id, sent);
  }

  TopologySpec topology_;
  PacketOptions options_;
  NetworkHandler& handler_;
  NetworkStats stats_;
  std::vector<Host> hosts_;  // hosts, then the registry
  std::vector<ns3::Ptr<ns3::Node>> switches_;
  std::unordered_map<uint32_t, size_t> address_to_slot_;
  std::map<uint64_t, Connection> connections_;
  std::unordered_map<RequestId, uint64_t> serving_;  // request -> server connection
  std::unordered_map<RequestId, Request> requests_;
  uint64_t next_connection_ = 1;
  RequestId next_request_ = 1;
  std::vector<uint8_t> datagram_;
};

}  // namespace

std::unique_ptr<Network> make_packet_network(const TopologySpec& topology, const PacketOptions& options,
                                             NetworkHandler& handler) {
  return std::make_unique<PacketNetwork>(topology, options, handler);
}

}  // namespace peerd::sim
