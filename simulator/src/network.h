#pragma once
// The seam between the simulator's two halves.
//
//   * The C++20 half (cluster.cc, scenario.cc, report.cc, main.cc) includes peerd/core and drives the very
//     Dht and transfer::Engine the daemon runs: it is the adapter, and makes no routing or transfer decision.
//   * The C++17 half (packet_network.cc, flow_network.cc) includes ns-3, whose 3.37 headers GCC 12 cannot
//     compile as C++20. It moves datagrams and chunk responses between hosts and owns the clock (the ns-3
//     event scheduler in both fidelities).
//
// This header is everything the halves share. It must stay C++17-clean and include neither ns-3 nor
// peerd/core (simulator/tests/purity_test.cc checks both).
//
// Model of a chunk transfer (both fidelities implement exactly this; the packet one over real ns-3 TCP with a
// small request/response framing, the flow one as fluid flows):
//   client: start_request(client, server, chunk) -> RequestId
//   server: NetworkHandler::on_request(server, client, id, chunk); the handler answers with respond() (send
//           `length` virtual bytes) or respond_status() (a 404/503-style answer without a body), at once or
//           later (a fetch-through owner answers when its own upstream fetch is done). Before that final
//           answer it may send an interim header with respond_pending() ("alive, fetching it for you").
//   client: on_response_header(kPending) when an interim header arrives, on_response_header(status, taint)
//           when the final header arrives, on_response_data(bytes)
//           as payload arrives (cumulative deltas), on_response_complete() after the last byte, or
//           on_request_failed() (could not connect / the stream broke).
//   server: on_response_sent(bytes) exactly once per request it was handed, when the response is fully sent
//           or the client went away (bytes sent so far, 0 if no response had started). Later respond() calls
//           for that id are ignored.
//   cancel_request(id): the client aborts; no further client callbacks for that id.
// A dead host sends and receives nothing; its pending callbacks are dropped. The registry (kUpstream) is a
// server like any host, answered by the handler; its egress is the topology's upstream link.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace peerd::sim {

using NodeIndex = uint32_t;
inline constexpr NodeIndex kUpstream = 0xffffffffu;  // the registry
using RequestId = uint64_t;

// The request frame of the chunk protocol (what an HTTP range GET of a chunk carries).
struct ChunkRequest {
  uint32_t content = 0;  // index into the scenario's item table (both ends share it, like a digest)
  uint64_t chunk_index = 0;
  uint64_t begin_in_chunk = 0;
  uint64_t end_in_chunk = 0;
  uint64_t content_bytes = 0;
  bool fetch_through = false;
};

enum class ResponseStatus : uint8_t { kOk = 0, kMiss = 1, kRefused = 2, kPending = 3 };
enum class RequestFailure : uint8_t { kUnreachable = 0, kBroken = 1 };

// Callbacks from the network into the adapter. They come from the scheduler, with one exception:
// on_response_sent may be called from inside respond() or respond_status() (a response that fit in the send
// buffer at once is done when the call returns, like a write(2) that does not block).
class NetworkHandler {
 public:
  virtual ~NetworkHandler() = default;
  virtual void on_datagram(NodeIndex to, NodeIndex from, const uint8_t* bytes, size_t size) = 0;
  virtual void on_request(NodeIndex server, NodeIndex client, RequestId request,
                          const ChunkRequest& chunk) = 0;
  virtual void on_response_sent(NodeIndex server, RequestId request, uint64_t bytes_sent) = 0;
  // `taint` says what the payload bytes are: 0 = true bytes, otherwise they differ from the truth (a
  // corrupting server's tag). It travels in the response header.
  virtual void on_response_header(NodeIndex client, RequestId request, ResponseStatus status,
                                  uint32_t taint) = 0;
  virtual void on_response_data(NodeIndex client, RequestId request, uint64_t bytes) = 0;
  virtual void on_response_complete(NodeIndex client, RequestId request) = 0;
  virtual void on_request_failed(NodeIndex client, RequestId request, RequestFailure failure) = 0;
};

struct LinkSpec {
  double rate_bits_per_second = 10e9;
  int64_t delay_ns = 12'500;  // one way
};

// Hosts in racks (host link to a top-of-rack switch, ToR uplink to one spine) or a flat star (every host on
// one switch). The registry hangs off the spine (or the star's switch) through `upstream_link`, whose rate is
// the registry's egress cap U.
struct TopologySpec {
  enum class Kind : uint8_t { kStar, kRacks };

  Kind kind = Kind::kRacks;
  uint32_t hosts = 0;
  uint32_t rack_size = 40;
  LinkSpec host_link{10e9, 12'500};      // 50 us rack RTT = 4 host-link hops
  LinkSpec uplink{400e9, 12'500};        // ToR <-> spine
  LinkSpec upstream_link{1e9, 500'000};  // registry <-> spine
  uint32_t mtu_bytes = 9000;
  uint32_t queue_packets = 4000;          // per device (packet fidelity)
  std::vector<double> host_rate_factor;   // per host, default 1 (slow nodes < 1)
  std::vector<double> host_delay_factor;  // per host, default 1 (slow nodes > 1)

  uint32_t racks() const;
  uint32_t rack_of(NodeIndex host) const;  // 0 for a star
  double host_rate(NodeIndex host) const;
  int64_t host_delay_ns(NodeIndex host) const;
  // The IPv4 address of a host (the registry for kUpstream), as a host-order uint32: 10.<rack+1>.x.y for
  // hosts, 10.250.0.1 for the registry. Both fidelities use the same plan, so DHT endpoints are identical.
  uint32_t ipv4_of(NodeIndex host) const;
  // Propagation delay of the path (sum of one-way link delays), without serialisation or queueing.
  int64_t path_delay_ns(NodeIndex from, NodeIndex to) const;
  // True when a rack's uplink can never be a bottleneck (its rate covers every host link of the rack).
  bool uplink_nonblocking() const;
  // Empty when valid, otherwise what is wrong.
  std::string validate() const;
};

struct PacketOptions {
  uint64_t seed = 1;                 // ns-3's RngSeedManager; the adapter sets it to the scenario's seed
  double tcp_min_rto_seconds = 0.2;  // Linux's 200 ms (ns-3's default is 1 s)
  uint32_t socket_buffer_bytes = 4u << 20;  // per direction (ns-3's default is 128 KiB)
  uint32_t initial_cwnd_segments = 10;
  // Segments per ACK. Linux ACKs every second full segment but GRO coalesces received jumbo segments, so a
  // receiver ACKs about every 4; fewer ACKs also mean fewer packets to simulate.
  uint32_t delayed_ack_segments = 4;
  double connect_timeout_seconds = 1.0;  // a SYN to a dead host fails after this
  uint32_t idle_connections_max = 2;     // pooled keep-alive connections per client host
};

struct FlowOptions {
  // Rates are recomputed (max-min fair) when flows start or end, at most once per quantum, and flows end on
  // the quantum's grid; 0 = at every instant a flow changes. Starts and ends that fall into one quantum share
  // one recomputation and one wakeup.
  int64_t recompute_quantum_ns = 0;
  // Rates may lag the max-min allocation by this fraction (see flow_allocator.h); 0 = exact.
  double share_tolerance = 0.01;
  // Long flows report the bytes received so far at least every this (the engine's stall detection must not
  // mistake a slow stream for a stalled one; the adapter keeps it below the engine's stall_timeout).
  int64_t progress_interval_ns = 2'000'000'000;
  int64_t connect_failure_ns = 1'000'000'000;  // a request to a dead host fails after this
};

struct NetworkStats {
  uint64_t datagrams_sent = 0;
  uint64_t datagrams_delivered = 0;
  uint64_t datagrams_dropped = 0;
  uint64_t requests = 0;
  uint64_t connections_opened = 0;      // packet fidelity: TCP connections created
  uint64_t payload_bytes_sent = 0;      // response payload handed to the network by servers
  uint64_t payload_bytes_received = 0;  // response payload delivered to clients
  uint64_t flow_recomputations = 0;     // flow fidelity: links whose fair share was recomputed
  uint64_t flows_max = 0;               // flow fidelity: most flows active at once
};

class Network {
 public:
  virtual ~Network() = default;

  // Clock and scheduler (ns-3's Simulator in both fidelities).
  virtual int64_t now_ns() const = 0;
  virtual void schedule_at(int64_t at_ns, std::function<void()> callback) = 0;
  // Runs events until stop() or until none is left before `deadline_ns`.
  virtual void run(int64_t deadline_ns) = 0;
  virtual void stop() = 0;
  virtual uint64_t events_executed() const = 0;

  virtual void send_datagram(NodeIndex from, NodeIndex to, const uint8_t* bytes, size_t size) = 0;
  virtual RequestId start_request(NodeIndex client, NodeIndex server, const ChunkRequest& chunk) = 0;
  virtual void cancel_request(RequestId request) = 0;
  virtual void respond(RequestId request, uint64_t length_bytes, uint32_t taint) = 0;
  virtual void respond_status(RequestId request, ResponseStatus status) = 0;
  virtual void respond_pending(RequestId request) = 0;  // interim header; a final answer follows

  virtual void kill(NodeIndex host) = 0;
  virtual const NetworkStats& stats() const = 0;
};

// Both end the ns-3 simulation (Simulator::Destroy) in their destructor; one network exists at a time.
std::unique_ptr<Network> make_packet_network(const TopologySpec& topology, const PacketOptions& options,
                                             NetworkHandler& handler);
std::unique_ptr<Network> make_flow_network(const TopologySpec& topology, const FlowOptions& options,
                                           NetworkHandler& handler);

}  // namespace peerd::sim
