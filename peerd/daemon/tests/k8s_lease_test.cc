// Leader election on Lease peerd-leader-election against a fake API server: the exact requests (create when
// missing, PUT with the resourceVersion read), followers of a live lease, take-over after expiry judged on
// the local clock, losing a resourceVersion race (409), stepping down after the renew deadline, release, and
// the bootstrap source's answers (the leader's DHT address, or nothing for the leader itself).
#include <gtest/gtest.h>

#include "peerd/daemon/k8s/lease.h"
#include "peerd/daemon/tests/k8s_fake_api_server.h"

namespace peerd::daemon::k8s {
namespace {

using testing::FakeApiServer;
using testing::FakeKubernetes;
using testing::FakeResponse;
using testing::RecordedRequest;

constexpr const char* kAddress = "127.0.0.162";
constexpr const char* kLeasePath =
    "/apis/coordination.k8s.io/v1/namespaces/peerd-ns/leases/peerd-leader-election";

Logger quiet() {
  return Logger(LogLevel::kError, [](std::string_view) {});
}

class LeaseTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.start()); }

  ApiConfig config() const { return server_.client_config("peerd-ns"); }

  LeaseOptions options(const std::string& identity) const {
    LeaseOptions options;
    options.namespace_name = "peerd-ns";
    options.identity = identity;
    return options;
  }

  std::unique_ptr<LeaseElector> elector(ApiClient& client, const std::string& identity) {
    return std::make_unique<LeaseElector>(
        client, options(identity), quiet(), [this] { return steady_now_; },
        [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1764755000)); });
  }

  // Another node's lease as the API server stores it.
  nlohmann::json foreign_lease(const std::string& holder) const {
    return {{"apiVersion", "coordination.k8s.io/v1"},
            {"kind", "Lease"},
            {"metadata", {{"name", "peerd-leader-election"}, {"namespace", "peerd-ns"}}},
            {"spec",
             {{"holderIdentity", holder},
              {"leaseDurationSeconds", 10},
              {"acquireTime", "2025-12-03T09:40:00.000000Z"},
              {"renewTime", "2025-12-03T09:43:00.000000Z"},
              {"leaseTransitions", 3}}}};
  }

  FakeResponse handle(const RecordedRequest& request) {
    if (fail_everything_) return {503, testing::status_body(503, "ServiceUnavailable", "down")};
    if (request.method == "PUT" && race_next_put_) {
      // Another node writes between this node's GET and PUT.
      race_next_put_ = false;
      kube_.put_lease("peerd-ns", foreign_lease("10.0.0.9:5003"));
    }
    return kube_.handler()(request);
  }

  std::chrono::steady_clock::time_point steady_now_ =
      std::chrono::steady_clock::time_point(std::chrono::hours(1));
  std::atomic<bool> fail_everything_{false};
  std::atomic<bool> race_next_put_{false};
  FakeKubernetes kube_;
  FakeApiServer server_{kAddress, [this](const RecordedRequest& request) { return handle(request); }};
};

TEST_F(LeaseTest, CreatesTheLeaseWhenMissingThenRenewsWithTheVersionItRead) {
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  const auto state = node->try_acquire_or_renew();
  EXPECT_TRUE(state.leader);
  EXPECT_EQ(state.holder, "127.0.0.1:5003");

  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].path, kLeasePath);
  EXPECT_EQ(requests[1].method, "POST");
  EXPECT_EQ(requests[1].path, "/apis/coordination.k8s.io/v1/namespaces/peerd-ns/leases");
  const auto created = requests[1].json();
  EXPECT_EQ(created["apiVersion"], "coordination.k8s.io/v1");
  EXPECT_EQ(created["kind"], "Lease");
  EXPECT_EQ(created["metadata"]["name"], "peerd-leader-election");
  EXPECT_EQ(created["metadata"]["namespace"], "peerd-ns");
  EXPECT_EQ(created["spec"]["holderIdentity"], "127.0.0.1:5003");
  EXPECT_EQ(created["spec"]["leaseDurationSeconds"], 10);
  EXPECT_EQ(created["spec"]["acquireTime"], "2025-12-03T09:43:20.000000Z");
  EXPECT_EQ(created["spec"]["renewTime"], "2025-12-03T09:43:20.000000Z");
  EXPECT_EQ(created["spec"]["leaseTransitions"], 0);

  const std::string version =
      kube_.lease("peerd-ns", "peerd-leader-election").value()["metadata"]["resourceVersion"];
  server_.clear_requests();
  steady_now_ += std::chrono::seconds(2);
  EXPECT_TRUE(node->try_acquire_or_renew().leader);
  requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].method, "PUT");
  EXPECT_EQ(requests[1].path, kLeasePath);
  const auto renewed = requests[1].json();
  EXPECT_EQ(renewed["metadata"]["resourceVersion"], version);
  EXPECT_EQ(renewed["spec"]["holderIdentity"], "127.0.0.1:5003");
  EXPECT_EQ(renewed["spec"]["leaseTransitions"], 0);
  EXPECT_EQ(renewed["spec"]["acquireTime"], "2025-12-03T09:43:20.000000Z");
}

TEST_F(LeaseTest, FollowsALiveLeaseAndTakesItOverOnlyAfterItExpired) {
  kube_.put_lease("peerd-ns", foreign_lease("10.0.0.9:5003"));
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  auto state = node->try_acquire_or_renew();
  EXPECT_FALSE(state.leader);
  EXPECT_EQ(state.holder, "10.0.0.9:5003");

  // The holder's renewTime is in the past by the wall clock, but expiry is judged from when this node saw the
  // record change: 9 s later it is still live.
  steady_now_ += std::chrono::seconds(9);
  EXPECT_FALSE(node->try_acquire_or_renew().leader);
  for (const auto& request : server_.requests()) EXPECT_EQ(request.method, "GET");

  steady_now_ += std::chrono::seconds(2);
  const std::string version =
      kube_.lease("peerd-ns", "peerd-leader-election").value()["metadata"]["resourceVersion"];
  server_.clear_requests();
  state = node->try_acquire_or_renew();
  EXPECT_TRUE(state.leader);
  const auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].method, "PUT");
  const auto taken = requests[1].json();
  EXPECT_EQ(taken["metadata"]["resourceVersion"], version);
  EXPECT_EQ(taken["spec"]["holderIdentity"], "127.0.0.1:5003");
  EXPECT_EQ(taken["spec"]["leaseTransitions"], 4);
  EXPECT_EQ(taken["spec"]["acquireTime"], "2025-12-03T09:43:20.000000Z");
  EXPECT_EQ(kube_.lease("peerd-ns", "peerd-leader-election").value()["spec"]["holderIdentity"],
            "127.0.0.1:5003");
}

TEST_F(LeaseTest, ARenewedLeaseStaysWithItsHolder) {
  kube_.put_lease("peerd-ns", foreign_lease("10.0.0.9:5003"));
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  for (int round = 0; round < 10; ++round) {
    auto lease = foreign_lease("10.0.0.9:5003");
    lease["spec"]["renewTime"] = "2025-12-03T09:43:" + std::to_string(10 + round) + ".000000Z";
    kube_.put_lease("peerd-ns", lease);  // the holder renews every 2 s
    EXPECT_FALSE(node->try_acquire_or_renew().leader) << round;
    steady_now_ += std::chrono::seconds(2);
  }
}

TEST_F(LeaseTest, LosesAResourceVersionRace) {
  auto lease = foreign_lease("10.0.0.8:5003");
  kube_.put_lease("peerd-ns", lease);
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  EXPECT_FALSE(node->try_acquire_or_renew().leader);
  steady_now_ += std::chrono::seconds(11);
  race_next_put_ = true;
  server_.clear_requests();
  EXPECT_FALSE(node->try_acquire_or_renew().leader);
  const auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].method, "PUT");
  EXPECT_EQ(kube_.lease("peerd-ns", "peerd-leader-election").value()["spec"]["holderIdentity"],
            "10.0.0.9:5003");
  // The next round sees the winner's fresh record and follows it.
  const auto state = node->try_acquire_or_renew();
  EXPECT_FALSE(state.leader);
  EXPECT_EQ(state.holder, "10.0.0.9:5003");
}

TEST_F(LeaseTest, TwoNodesRacingForAMissingLeaseElectOne) {
  ApiClient first_client(config(), ApiClientOptions{}, quiet());
  ApiClient second_client(config(), ApiClientOptions{}, quiet());
  auto first = elector(first_client, "127.0.0.1:5003");
  auto second = elector(second_client, "127.0.0.2:5003");
  EXPECT_TRUE(first->try_acquire_or_renew().leader);
  const auto state = second->try_acquire_or_renew();
  EXPECT_FALSE(state.leader);
  EXPECT_EQ(state.holder, "127.0.0.1:5003");
}

TEST_F(LeaseTest, ALeaderThatCannotRenewStepsDownAfterTheRenewDeadline) {
  ApiClientOptions no_retries;
  no_retries.retries_max = 0;
  ApiClient client(config(), no_retries, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  ASSERT_TRUE(node->try_acquire_or_renew().leader);
  fail_everything_ = true;
  steady_now_ += std::chrono::seconds(2);
  EXPECT_TRUE(node->try_acquire_or_renew().leader);  // within the 5 s renew deadline
  steady_now_ += std::chrono::seconds(4);
  EXPECT_FALSE(node->try_acquire_or_renew().leader);
}

TEST_F(LeaseTest, ReleaseHandsTheLeaseOver) {
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  ASSERT_TRUE(node->try_acquire_or_renew().leader);
  node->release();
  EXPECT_FALSE(node->state().leader);
  const auto lease = kube_.lease("peerd-ns", "peerd-leader-election").value();
  EXPECT_EQ(lease["spec"]["holderIdentity"], "");
  // Another node takes a released lease at once.
  ApiClient other_client(config(), ApiClientOptions{}, quiet());
  auto other = elector(other_client, "127.0.0.2:5003");
  EXPECT_TRUE(other->try_acquire_or_renew().leader);
}

TEST_F(LeaseTest, ForbiddenWritesLeaveTheNodeAFollower) {
  server_.script({404, testing::status_body(404, "NotFound", "leases \"peerd-leader-election\" not found")});
  server_.script({403, testing::status_body(403, "Forbidden", "cannot create resource \"leases\"")});
  ApiClient client(config(), ApiClientOptions{}, quiet());
  auto node = elector(client, "127.0.0.1:5003");
  EXPECT_FALSE(node->try_acquire_or_renew().leader);
}

TEST_F(LeaseTest, TheSourceGivesFollowersTheLeadersAddressAndTheLeaderNothing) {
  LeaseOptions fast = options("127.0.0.1:5003");
  fast.retry_period = std::chrono::milliseconds(20);
  LeasePeerSource leader(std::make_unique<ApiClient>(config(), ApiClientOptions{}, quiet()), fast, quiet());
  leader.start();
  auto leader_peers = leader.resolve();
  ASSERT_TRUE(leader_peers) << leader_peers.error();
  EXPECT_TRUE(leader_peers->empty());

  fast.identity = "127.0.0.2:5003";
  LeasePeerSource follower(std::make_unique<ApiClient>(config(), ApiClientOptions{}, quiet()), fast, quiet());
  std::atomic<int> changes{0};
  follower.set_on_change([&changes] { ++changes; });
  follower.start();
  auto follower_peers = follower.resolve();
  ASSERT_TRUE(follower_peers) << follower_peers.error();
  ASSERT_EQ(follower_peers->size(), 1u);
  EXPECT_EQ(follower_peers->front(), *Endpoint::parse("127.0.0.1:5003"));
  // on_change runs right after the state is published (resolve() may return first).
  for (int i = 0; i < 500 && changes.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(changes.load(), 1);

  // Stopping the leader releases the lease; the follower takes it over.
  leader.stop();
  EXPECT_EQ(kube_.lease("peerd-ns", "peerd-leader-election").value()["spec"]["holderIdentity"], "");
  for (int i = 0; i < 500 && !follower.state().leader; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(follower.state().leader);
  follower.stop();
}

TEST(LeaseIdentity, ParsesTheDhtAddress) {
  EXPECT_EQ(endpoint_from_identity("10.0.0.5:5003"), *Endpoint::parse("10.0.0.5:5003"));
  EXPECT_EQ(endpoint_from_identity("node-1/10.0.0.5:5003"), *Endpoint::parse("10.0.0.5:5003"));
  EXPECT_EQ(endpoint_from_identity("[fd00::5]:5003"), *Endpoint::parse("[fd00::5]:5003"));
  EXPECT_FALSE(endpoint_from_identity("peerd-abc"));
  EXPECT_FALSE(endpoint_from_identity(""));
  EXPECT_FALSE(endpoint_from_identity("10.0.0.5:0"));
}

}  // namespace
}  // namespace peerd::daemon::k8s
