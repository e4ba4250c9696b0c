// Leader failover across real peerd processes against one stateful fake Kubernetes API server (HTTPS, the
// processes reach it through --kubeconfig): three peerd with --bootstrap k8s-lease elect one leader, the
// others bootstrap their DHT from the leader's address, every pod reports P2PInitializing and P2PConnected
// (checked with kind/scripts/p2p_events.py, the script the kind tests wait with). The leader is killed
// (SIGKILL, no release): a survivor takes the lease once it expired, and a new peerd joins the network
// through the new leader. A leader stopped with SIGTERM hands the lease over at once.
//
// Processes on 127.0.0.170-175, ports picked free; every wait is bounded (a guard against hangs, not a timing
// assertion).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "peerd/daemon/tests/k8s_fake_api_server.h"
#include "peerd/daemon/tests/local_cluster.h"

namespace peerd::daemon {
namespace {

using testing::base64;
using testing::FakeApiServer;
using testing::FakeKubernetes;
using testing::GroupProcess;
using testing::TempDir;

constexpr const char* kApiAddress = "127.0.0.170";
constexpr const char* kNamespace = "peerd-ns";

template <typename Condition>
bool eventually(Condition condition, std::chrono::seconds limit = std::chrono::seconds(40)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return condition();
}

struct Node {
  std::string pod;
  std::string address;
  uint16_t http_port = 0;
  uint16_t router_port = 0;
  uint16_t metrics_port = 0;
  std::string uid;
  std::unique_ptr<GroupProcess> process;

  std::string dht() const { return address + ":" + std::to_string(router_port); }
  bool ready() const {
    const auto answer =
        testing::http_request("http://" + address + ":" + std::to_string(metrics_port) + "/readyz", {}, false,
                              std::chrono::seconds(2));
    return answer.status == 200;
  }
};

class K8sLeaseFailover : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start());
    std::ofstream(dir_.path() / "kubeconfig")
        << "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: " << server_.url()
        << "\n    certificate-authority-data: " << base64(server_.ca_pem())
        << "\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: peerd\n    namespace: "
        << kNamespace << "\ncurrent-context: fake\nusers:\n- name: peerd\n  user:\n    token: test-token\n";
  }

  Node& start_node(int index) {
    auto node = std::make_unique<Node>();
    node->pod = "peerd-" + std::to_string(index);
    node->address = "127.0.0." + std::to_string(171 + index);
    node->http_port = testing::free_port(node->address);
    node->router_port = testing::free_port(node->address);
    node->metrics_port = testing::free_port(node->address);
    node->uid = "pod-uid-" + std::to_string(index);
    kube_.add_pod(kNamespace, node->pod, node->uid);
    const auto cache = dir_.path() / ("cache-" + std::to_string(index));
    std::filesystem::create_directories(cache);
    // The downward API's variables, as the chart sets them; the spawned process inherits them.
    ::setenv("POD_NAME", node->pod.c_str(), 1);
    ::setenv("NODE_NAME", ("node-" + std::to_string(index)).c_str(), 1);
    ::unsetenv("NAMESPACE");
    ::unsetenv("KUBERNETES_SERVICE_HOST");
    node->process = std::make_unique<GroupProcess>();
    const std::vector<std::string> argv = {
        PEERD_BINARY,
        "run",
        "--peer-plaintext",
        "--http-addr=" + node->address + ":" + std::to_string(node->http_port),
        "--router-addr=" + node->address + ":" + std::to_string(node->router_port),
        "--metrics-addr=" + node->address + ":" + std::to_string(node->metrics_port),
        "--cache-dir=" + cache.string(),
        "--cache-size=64MiB",
        "--bootstrap=k8s-lease",
        "--kubeconfig=" + (dir_.path() / "kubeconfig").string(),
        "--k8s-event-interval=1s",
        "--node-name=node-" + std::to_string(index),
        "--log-level=debug",
    };
    EXPECT_TRUE(node->process->start(argv, dir_.path() / (node->pod + ".log")));
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }

  std::string holder() const {
    const auto lease = kube_.lease(kNamespace, "peerd-leader-election");
    if (!lease) return "";
    return (*lease)["spec"].value("holderIdentity", "");
  }

  std::set<std::string> reasons_for(const std::string& pod) const {
    std::set<std::string> reasons;
    for (const auto& event : kube_.events()) {
      if (event["involvedObject"]["name"] == pod) reasons.insert(event["reason"].get<std::string>());
    }
    return reasons;
  }

  std::string logs() const {
    std::string text;
    for (const auto& node : nodes_) {
      const std::string log = node->process->log();
      text += "---- " + node->pod + " (last 3000 bytes)\n" +
              log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    }
    return text;
  }

  // kind/scripts/p2p_events.py on the fake server's pods and events: its exit status (0: every pod has
  // reason).
  int kind_script_status(const std::vector<const Node*>& pods, const std::string& reason) const {
    nlohmann::json pod_list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", nlohmann::json::array()}};
    for (const Node* node : pods) {
      pod_list["items"].push_back(
          {{"apiVersion", "v1"},
           {"kind", "Pod"},
           {"metadata", {{"name", node->pod}, {"namespace", kNamespace}, {"uid", node->uid}}}});
    }
    nlohmann::json event_list = {{"apiVersion", "v1"}, {"kind", "EventList"}, {"items", kube_.events()}};
    std::ofstream(dir_.path() / "pods.json") << pod_list.dump();
    std::ofstream(dir_.path() / "events.json") << event_list.dump();
    const std::string command = "python3 " + std::string(PEERD_SOURCE_DIR) +
                                "/kind/scripts/p2p_events.py --pods " + (dir_.path() / "pods.json").string() +
                                " --events " + (dir_.path() / "events.json").string() + " --reason " +
                                reason + " > " + (dir_.path() / "p2p_events.out").string() + " 2>&1";
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  TempDir dir_;
  FakeKubernetes kube_;
  FakeApiServer server_{kApiAddress, kube_.handler()};
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST_F(K8sLeaseFailover, OneLeaderFollowersJoinThroughItAndASurvivorTakesOver) {
  for (int i = 0; i < 3; ++i) start_node(i);
  for (auto& node : nodes_)
    ASSERT_TRUE(eventually([&] { return node->ready(); })) << node->pod << "\n" << logs();

  // One leader, holding the lease under its DHT address; the others bootstrapped from it.
  const std::string leader = holder();
  Node* leader_node = nullptr;
  for (auto& node : nodes_) {
    if (node->dht() == leader) leader_node = node.get();
  }
  ASSERT_NE(leader_node, nullptr) << "lease holder '" << leader << "'\n" << logs();
  for (auto& node : nodes_) {
    const std::string log = node->process->log();
    EXPECT_EQ(log.find("became the leader") != std::string::npos, node.get() == leader_node) << node->pod;
  }

  // Every pod reported P2PInitializing and P2PConnected, in the shape the kind scripts read.
  for (auto& node : nodes_) {
    ASSERT_TRUE(eventually([&] { return reasons_for(node->pod).count("P2PConnected") == 1; })) << node->pod;
    EXPECT_EQ(reasons_for(node->pod).count("P2PInitializing"), 1u) << node->pod;
    EXPECT_EQ(reasons_for(node->pod).count("P2PFailed"), 0u) << node->pod;
  }
  for (const auto& event : kube_.events()) {
    EXPECT_EQ(event["involvedObject"]["kind"], "Pod");
    EXPECT_EQ(event["involvedObject"]["namespace"], kNamespace);
    EXPECT_EQ(event["source"]["component"], "peerd");
  }
  if (testing::find_binary("python3")) {
    EXPECT_EQ(kind_script_status({nodes_[0].get(), nodes_[1].get(), nodes_[2].get()}, "P2PConnected"), 0)
        << testing::read_text(dir_.path() / "p2p_events.out");
  }

  // The leader dies without releasing the lease: a survivor takes it once it expired (10 s + 2 s retry).
  leader_node->process->kill_now();
  std::set<std::string> survivors;
  for (auto& node : nodes_) {
    if (node.get() != leader_node) survivors.insert(node->dht());
  }
  ASSERT_TRUE(eventually([&] { return survivors.count(holder()) == 1; })) << "holder " << holder() << "\n"
                                                                          << logs();
  const std::string new_leader = holder();
  const auto lease = kube_.lease(kNamespace, "peerd-leader-election").value();
  EXPECT_GE(lease["spec"]["leaseTransitions"].get<int>(), 1);

  // A new pod joins the network through the new leader.
  Node& late = start_node(3);
  ASSERT_TRUE(eventually([&] { return late.ready(); })) << logs();
  EXPECT_NE(late.process->log().find("\"seeds\":1"), std::string::npos) << late.process->log();
  ASSERT_TRUE(eventually([&] { return reasons_for(late.pod).count("P2PConnected") == 1; }));
  for (auto& node : nodes_) {
    if (node.get() != leader_node) {
      EXPECT_TRUE(node->ready()) << node->pod;
    }
  }

  // SIGTERM: the leader releases the lease, and another node takes it without waiting for expiry.
  Node* second_leader = nullptr;
  for (auto& node : nodes_) {
    if (node->dht() == new_leader) second_leader = node.get();
  }
  ASSERT_NE(second_leader, nullptr);
  EXPECT_EQ(second_leader->process->stop(), 0);
  EXPECT_NE(second_leader->process->log().find("released the leader lease"), std::string::npos);
  ASSERT_TRUE(eventually([&] {
    const std::string now = holder();
    return !now.empty() && now != new_leader;
  })) << logs();
}

// A fatal start-up error is posted as P2PFailed (a Warning naming the error) before peerd exits with
// status 1.
TEST_F(K8sLeaseFailover, AFatalStartErrorIsReportedAsP2PFailed) {
  kube_.add_pod(kNamespace, "peerd-broken", "pod-uid-broken");
  std::ofstream(dir_.path() / "not-a-directory") << "x";
  ::setenv("POD_NAME", "peerd-broken", 1);
  ::unsetenv("NAMESPACE");
  ::unsetenv("KUBERNETES_SERVICE_HOST");
  GroupProcess process;
  ASSERT_TRUE(process.start(
      {PEERD_BINARY, "run", "--peer-plaintext", "--http-addr=127.0.0.175:0", "--router-addr=127.0.0.175:0",
       "--metrics-addr=off", "--cache-dir=" + (dir_.path() / "not-a-directory").string(),
       "--cache-size=64MiB", "--kubeconfig=" + (dir_.path() / "kubeconfig").string()},
      dir_.path() / "broken.log"));
  EXPECT_EQ(process.wait_exit(std::chrono::seconds(30)), 1) << process.log();
  std::optional<nlohmann::json> failed;
  for (const auto& event : kube_.events()) {
    if (event["reason"] == "P2PFailed") failed = event;
  }
  ASSERT_TRUE(failed) << process.log();
  EXPECT_EQ((*failed)["type"], "Warning");
  EXPECT_EQ((*failed)["involvedObject"]["name"], "peerd-broken");
  EXPECT_EQ((*failed)["involvedObject"]["uid"], "pod-uid-broken");
  EXPECT_NE((*failed)["message"].get<std::string>().find("cannot open the chunk cache"), std::string::npos);
  EXPECT_EQ(reasons_for("peerd-broken").count("P2PInitializing"), 1u);
}

}  // namespace
}  // namespace peerd::daemon
