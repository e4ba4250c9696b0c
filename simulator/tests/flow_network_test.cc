// The flow network's side of the contract in network.h, driven directly: a slow response reports its bytes
// when due (at least every progress interval, so the engine's stall detection never mistakes it for a
// stalled one, and not much more often), the parts add up to the response, and the server hears once.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "simulator/src/network.h"

namespace peerd::sim {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

class Recorder final : public NetworkHandler {
 public:
  Network* network = nullptr;
  uint64_t length = 0;
  int64_t header_ns = -1;
  int64_t complete_ns = -1;
  std::vector<std::pair<int64_t, uint64_t>> data;  // (arrival, bytes)
  std::vector<uint64_t> sent_reports;

  void on_datagram(NodeIndex, NodeIndex, const uint8_t*, size_t) override {}
  void on_request(NodeIndex, NodeIndex, RequestId request, const ChunkRequest&) override {
    network->respond(request, length, 0);
  }
  void on_response_sent(NodeIndex, RequestId, uint64_t bytes) override { sent_reports.push_back(bytes); }
  void on_response_header(NodeIndex, RequestId, ResponseStatus status, uint32_t) override {
    EXPECT_EQ(status, ResponseStatus::kOk);
    header_ns = network->now_ns();
  }
  void on_response_data(NodeIndex, RequestId, uint64_t bytes) override {
    data.emplace_back(network->now_ns(), bytes);
  }
  void on_response_complete(NodeIndex, RequestId) override { complete_ns = network->now_ns(); }
  void on_request_failed(NodeIndex, RequestId, RequestFailure) override { ADD_FAILURE() << "request failed"; }
};

TEST(FlowNetworkTest, SlowResponseReportsProgressWhenDue) {
  TopologySpec topology;
  topology.kind = TopologySpec::Kind::kStar;
  topology.hosts = 2;
  topology.host_link = LinkSpec{80e6, 12'500};  // 10 MB/s: 100 MB take about 10 s
  FlowOptions options;
  options.progress_interval_ns = 2 * kSecond;
  Recorder recorder;
  recorder.length = 100'000'000;
  const std::unique_ptr<Network> network = make_flow_network(topology, options, recorder);
  recorder.network = network.get();
  ChunkRequest chunk;
  chunk.end_in_chunk = recorder.length;
  chunk.content_bytes = recorder.length;
  network->start_request(/*client=*/1, /*server=*/0, chunk);
  network->run(60 * kSecond);

  ASSERT_GE(recorder.header_ns, 0);
  ASSERT_GT(recorder.complete_ns, 9 * kSecond);
  uint64_t total = 0;
  int64_t last = recorder.header_ns;
  for (const auto& [at, bytes] : recorder.data) {
    EXPECT_LE(at - last, options.progress_interval_ns) << "a gap of " << at - last << " ns at " << at;
    total += bytes;
    last = at;
  }
  EXPECT_LE(recorder.complete_ns - last, options.progress_interval_ns);
  EXPECT_EQ(total, recorder.length);
  // About 10 s reported at most 2 s and at least 1.5 s apart (a report may come a quarter interval early).
  EXPECT_GE(recorder.data.size(), 5u);
  EXPECT_LE(recorder.data.size(), 8u);
  EXPECT_EQ(recorder.sent_reports, std::vector<uint64_t>{recorder.length});
}

}  // namespace
}  // namespace peerd::sim
