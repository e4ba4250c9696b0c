// P2P* Kubernetes events against a fake API server: the Event objects (shaped like the recorded EventLists
// the kind scripts read), the subject (this Pod, or the Node when not in a pod or with hostNetwork,
// Azure/peerd#61), coalescing and rate limiting per reason (PATCHed counts), P2PActive from the peer-bytes
// counter, draining on stop, and API errors that never reach the caller.
#include <gtest/gtest.h>

#include <thread>

#include "peerd/daemon/k8s/event_recorder.h"
#include "peerd/daemon/tests/k8s_fake_api_server.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon::k8s {
namespace {

using testing::FakeApiServer;
using testing::FakeKubernetes;

constexpr const char* kAddress = "127.0.0.163";

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

// Polls `condition` (bounded: a guard against hangs, not a timing assertion).
template <typename Condition>
bool eventually(Condition condition) {
  for (int i = 0; i < 1000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

class EventRecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kube_.add_pod("peerd-ns", "peerd-5trwv", "6f1c2a9e-3b7d-4c1e-9a55-0d2e8b7f4a11");
    kube_.add_node("peerd-worker", "node-uid-1");
    ASSERT_TRUE(server_.start());
  }

  ApiConfig config() const { return server_.client_config("peerd-ns"); }

  std::unique_ptr<ApiClient> client() const {
    ApiClientOptions options;
    options.backoff_initial = std::chrono::milliseconds(1);
    options.backoff_max = std::chrono::milliseconds(5);
    return std::make_unique<ApiClient>(config(), options, quiet());
  }

  EventRecorderOptions pod_options() const {
    EventRecorderOptions options;
    options.namespace_name = "peerd-ns";
    options.pod_name = "peerd-5trwv";
    options.node_name = "peerd-worker";
    options.host_name = "peerd-5trwv";
    options.interval_min = std::chrono::milliseconds(50);
    return options;
  }

  std::vector<testing::RecordedRequest> requests_to(const std::string& method) const {
    std::vector<testing::RecordedRequest> out;
    for (auto& request : server_.requests()) {
      if (request.method == method && request.path.find("/events") != std::string::npos)
        out.push_back(request);
    }
    return out;
  }

  FakeKubernetes kube_;
  FakeApiServer server_{kAddress, kube_.handler()};
};

TEST_F(EventRecorderTest, PostsEventsAboutThisPodShapedLikeTheKindFixtures) {
  EventRecorder recorder(client(), pod_options(), quiet());
  recorder.start();
  recorder.record(P2PReason::kInitializing, "peerd 0.1.0 is starting");
  recorder.record(P2PReason::kConnected, "joined the p2p network: 2 peers");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 2; }));
  recorder.stop(std::chrono::seconds(1));

  const auto requests = server_.requests();
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].path, "/api/v1/namespaces/peerd-ns/pods/peerd-5trwv");
  const auto posts = requests_to("POST");
  EXPECT_EQ(posts[0].path, "/api/v1/namespaces/peerd-ns/events");
  const auto first = posts[0].json();
  const auto second = posts[1].json();
  EXPECT_EQ(first["reason"], "P2PInitializing");
  EXPECT_EQ(second["reason"], "P2PConnected");
  for (const auto& event : {first, second}) {
    EXPECT_EQ(event["apiVersion"], "v1");
    EXPECT_EQ(event["kind"], "Event");
    EXPECT_EQ(event["type"], "Normal");
    EXPECT_EQ(event["metadata"]["namespace"], "peerd-ns");
    EXPECT_TRUE(event["metadata"]["name"].get<std::string>().starts_with("peerd-5trwv."));
    EXPECT_EQ(event["involvedObject"]["apiVersion"], "v1");
    EXPECT_EQ(event["involvedObject"]["kind"], "Pod");
    EXPECT_EQ(event["involvedObject"]["name"], "peerd-5trwv");
    EXPECT_EQ(event["involvedObject"]["namespace"], "peerd-ns");
    EXPECT_EQ(event["involvedObject"]["uid"], "6f1c2a9e-3b7d-4c1e-9a55-0d2e8b7f4a11");
    EXPECT_EQ(event["source"]["component"], "peerd");
    EXPECT_EQ(event["source"]["host"], "peerd-worker");
    EXPECT_EQ(event["reportingComponent"], "peerd");
    EXPECT_EQ(event["reportingInstance"], "peerd-worker");
    EXPECT_EQ(event["count"], 1);
    EXPECT_EQ(event["firstTimestamp"].get<std::string>().size(), 20u);  // 2026-12-03T10:00:00Z
    EXPECT_EQ(event["firstTimestamp"], event["lastTimestamp"]);
  }
  EXPECT_EQ(second["message"], "joined the p2p network: 2 peers");
  EXPECT_EQ(recorder.posted(), 2u);
  EXPECT_EQ(kube_.events().size(), 2u);
}

TEST_F(EventRecorderTest, WarningsForDisconnectedAndFailed) {
  EXPECT_EQ(event_type(P2PReason::kDisconnected), "Warning");
  EXPECT_EQ(event_type(P2PReason::kFailed), "Warning");
  EXPECT_EQ(event_type(P2PReason::kActive), "Normal");
  EXPECT_EQ(to_string(P2PReason::kActive), "P2PActive");
  EXPECT_EQ(to_string(P2PReason::kDisconnected), "P2PDisconnected");
}

TEST_F(EventRecorderTest, WithHostNetworkTheHostNameIsTheNodeSoEventsAreAboutTheNode) {
  // No $POD_NAME, and the host name is the node's (hostNetwork): no such pod, so the Node.
  EventRecorderOptions options = pod_options();
  options.pod_name.reset();
  options.host_name = "peerd-worker";
  options.node_name.reset();
  EventRecorder recorder(client(), options, quiet());
  recorder.start();
  recorder.record(P2PReason::kConnected, "joined");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 1; }));
  recorder.stop(std::chrono::seconds(1));
  const auto requests = server_.requests();
  ASSERT_GE(requests.size(), 3u);
  EXPECT_EQ(requests[0].path, "/api/v1/namespaces/peerd-ns/pods/peerd-worker");
  EXPECT_EQ(requests[1].path, "/api/v1/nodes/peerd-worker");
  const auto event = requests_to("POST")[0].json();
  EXPECT_EQ(event["involvedObject"]["kind"], "Node");
  EXPECT_EQ(event["involvedObject"]["name"], "peerd-worker");
  EXPECT_EQ(event["involvedObject"]["uid"], "node-uid-1");
  EXPECT_FALSE(event["involvedObject"].contains("namespace"));
  EXPECT_EQ(event["metadata"]["namespace"], "peerd-ns");
}

TEST_F(EventRecorderTest, AHostNameThatIsAPodIsThatPod) {
  ApiClient lookups(config(), ApiClientOptions{}, quiet());
  const auto subject =
      find_event_subject(lookups, "peerd-ns", std::nullopt, std::nullopt, "peerd-5trwv", quiet());
  EXPECT_EQ(subject.kind, "Pod");
  EXPECT_EQ(subject.uid, "6f1c2a9e-3b7d-4c1e-9a55-0d2e8b7f4a11");
  // $POD_NAME that cannot be read (RBAC): still that pod, without a uid.
  server_.script({403, testing::status_body(403, "Forbidden", "pods is forbidden")});
  const auto forbidden = find_event_subject(lookups, "peerd-ns", "peerd-5trwv", std::nullopt, "h", quiet());
  EXPECT_EQ(forbidden.kind, "Pod");
  EXPECT_EQ(forbidden.name, "peerd-5trwv");
  EXPECT_EQ(forbidden.uid, "");
}

TEST_F(EventRecorderTest, RepeatsAreCoalescedAndPatchedIntoTheSameEventsCount) {
  EventRecorderOptions options = pod_options();
  options.interval_min = std::chrono::milliseconds(300);
  EventRecorder recorder(client(), options, quiet());
  recorder.start();
  recorder.record(P2PReason::kConnected, "joined 1");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 1; }));
  // Three repeats inside the interval: one PATCH carrying all of them.
  recorder.record(P2PReason::kConnected, "joined 2");
  recorder.record(P2PReason::kConnected, "joined 3");
  recorder.record(P2PReason::kConnected, "joined 4");
  ASSERT_TRUE(eventually([&] { return requests_to("PATCH").size() == 1; }));
  recorder.stop(std::chrono::seconds(1));
  EXPECT_EQ(requests_to("POST").size(), 1u);
  const auto patch = requests_to("PATCH")[0];
  const std::string name = requests_to("POST")[0].json()["metadata"]["name"];
  EXPECT_EQ(patch.path, "/api/v1/namespaces/peerd-ns/events/" + name);
  EXPECT_EQ(patch.content_type, "application/merge-patch+json");
  EXPECT_EQ(patch.json()["count"], 4);
  EXPECT_EQ(patch.json()["message"], "joined 4");
  EXPECT_EQ(recorder.coalesced(), 2u);
  ASSERT_EQ(kube_.events().size(), 1u);
  EXPECT_EQ(kube_.events()[0]["count"], 4);
}

TEST_F(EventRecorderTest, AnExpiredEventIsCreatedAgain) {
  EventRecorder recorder(client(), pod_options(), quiet());
  recorder.start();
  recorder.record(P2PReason::kActive, "a");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 1; }));
  server_.script({404, testing::status_body(404, "NotFound", "events \"x\" not found")});
  recorder.record(P2PReason::kActive, "b");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 2; }));
  recorder.stop(std::chrono::seconds(1));
  EXPECT_EQ(requests_to("PATCH").size(), 1u);
  EXPECT_EQ(requests_to("POST")[1].json()["count"], 1);
}

TEST_F(EventRecorderTest, PeerBytesMakeP2PActive) {
  std::atomic<uint64_t> peer_bytes{0};
  EventRecorderOptions options = pod_options();
  options.activity_poll_interval = std::chrono::milliseconds(10);
  options.peer_bytes = [&peer_bytes] { return peer_bytes.load(); };
  EventRecorder recorder(client(), options, quiet());
  recorder.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(requests_to("POST").empty());  // no peer bytes, no event
  peer_bytes = 4 << 20;
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 1; }));
  recorder.stop(std::chrono::seconds(1));
  const auto event = requests_to("POST")[0].json();
  EXPECT_EQ(event["reason"], "P2PActive");
  EXPECT_EQ(event["message"], "downloaded 4194304 bytes from peers (4194304 in total)");
}

TEST_F(EventRecorderTest, StopPostsWhatIsPendingEvenInsideTheInterval) {
  EventRecorderOptions options = pod_options();
  options.interval_min = std::chrono::hours(1);
  EventRecorder recorder(client(), options, quiet());
  recorder.start();
  recorder.record(P2PReason::kFailed, "first");
  ASSERT_TRUE(eventually([&] { return requests_to("POST").size() == 1; }));
  recorder.record(P2PReason::kFailed, "cannot open the chunk cache: permission denied");
  recorder.stop(std::chrono::seconds(5));
  ASSERT_EQ(requests_to("PATCH").size(), 1u);
  EXPECT_EQ(requests_to("PATCH")[0].json()["message"], "cannot open the chunk cache: permission denied");
  EXPECT_EQ(requests_to("POST")[0].json()["type"], "Warning");
}

TEST_F(EventRecorderTest, ApiErrorsAreCountedNeverThrown) {
  EventRecorder recorder(client(), pod_options(), quiet());
  server_.script({200, nlohmann::json::object()});  // the pod lookup: a pod without a uid
  recorder.start();
  ASSERT_TRUE(eventually([&] { return !server_.requests().empty(); }));
  server_.script({403, testing::status_body(403, "Forbidden", "events is forbidden")});
  recorder.record(P2PReason::kConnected, "x");
  ASSERT_TRUE(eventually([&] { return recorder.failed() == 1; }));
  recorder.stop(std::chrono::seconds(1));
  EXPECT_EQ(recorder.posted(), 0u);
}

TEST_F(EventRecorderTest, RecordNeverWaitsForAnUnreachableApi) {
  ApiConfig unreachable = config();
  unreachable.server = "https://127.0.0.164:" + std::to_string(testing::free_port("127.0.0.164"));
  EventRecorder recorder(std::make_unique<ApiClient>(unreachable, ApiClientOptions{}, quiet()), pod_options(),
                         quiet());
  recorder.start();
  for (int i = 0; i < 10000; ++i) recorder.record(P2PReason::kActive, "bytes");
  EXPECT_GE(recorder.coalesced(), 9999u);  // one pending slot per reason, whatever the rate
  recorder.stop(std::chrono::milliseconds(100));
  EXPECT_EQ(recorder.posted(), 0u);
}

}  // namespace
}  // namespace peerd::daemon::k8s
