// peerd-ctr against a real containerd 1.6 and docker-registry, no peerd needed: a one-layer image (2 MiB of
// random bytes, built with umoci, pushed with skopeo) is pulled with `ctr images pull --plain-http`, sized
// from the content store and read back; nginx serves a static peerd /metrics page whose peer counter never
// moves. Shows the JSON lines, --remove-first, the --expect-peer-bytes check and the exit statuses. Skips
// unless docker-registry, umoci, skopeo, containerd, ctr and nginx are installed and it runs as root.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peerd/core/common/rng.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::workload {
namespace {

using daemon::testing::ChildProcess;
using daemon::testing::TempDir;

constexpr const char* kRegistryAddress = "127.0.0.156";
constexpr const char* kMetricsAddress = "127.0.0.157";
constexpr uint64_t kFileBytes = 2 << 20;

int run_to_completion(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  ChildProcess process;
  if (!process.start(argv, log)) return -1;
  return process.wait_exit();
}

// Registry, image, containerd and nginx, started once for the whole suite (building the image takes seconds).
struct Environment {
  TempDir dir;
  ChildProcess registry;
  ChildProcess containerd;
  ChildProcess nginx;
  std::string registry_authority;
  std::string metrics_url;
  std::string error;  // why the environment is unusable; empty when it is ready

  std::filesystem::path socket() const { return dir.path() / "containerd.sock"; }
  std::string image() const { return registry_authority + "/test/app:1"; }

  bool start() {
    std::map<std::string, std::string> binaries;
    for (const char* name : {"docker-registry", "umoci", "skopeo", "containerd", "ctr", "nginx"}) {
      const auto path = daemon::testing::find_binary(name);
      if (!path) return fail(std::string(name) + " not installed");
      binaries[name] = *path;
    }
    if (::geteuid() != 0) return fail("containerd needs root");
    const auto& root = dir.path();
    ::chmod(root.c_str(), 0755);  // nginx workers run as an unprivileged user
    const auto log = root / "commands.log";

    const uint16_t registry_port = daemon::testing::free_port(kRegistryAddress);
    registry_authority = std::string(kRegistryAddress) + ":" + std::to_string(registry_port);
    std::ofstream(root / "registry.yml")
        << "version: 0.1\nstorage: {filesystem: {rootdirectory: " << (root / "registry").string()
        << "}}\nhttp: {addr: " << registry_authority << "}\n";
    if (!registry.start({binaries["docker-registry"], "serve", (root / "registry.yml").string()},
                        root / "registry.log") ||
        !registry.wait_for_port(kRegistryAddress, registry_port)) {
      return fail("registry did not start: " + registry.log());
    }

    std::filesystem::create_directories(root / "rootfs");
    Rng rng(11);
    std::string data(kFileBytes, '\0');
    for (auto& c : data) c = static_cast<char>(rng.next_u64());
    std::ofstream(root / "rootfs" / "data.bin", std::ios::binary) << data;
    const std::string layout = (root / "oci").string();
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {binaries["umoci"], "init", "--layout", layout},
             {binaries["umoci"], "new", "--image", layout + ":app"},
             {binaries["umoci"], "insert", "--image", layout + ":app", (root / "rootfs").string(), "/"},
             {binaries["umoci"], "gc", "--layout", layout},
             {binaries["skopeo"], "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
              "oci:" + layout + ":app", "docker://" + image()}}) {
      if (run_to_completion(argv, log) != 0)
        return fail(argv[0] + " failed: " + daemon::testing::read_text(log));
    }

    std::ofstream(root / "containerd.toml") << "version = 2\nroot = \"" << (root / "croot").string() << "\"\n"
                                            << "state = \"" << (root / "cstate").string() << "\"\n"
                                            << "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                                            << "[grpc]\n  address = \"" << socket().string() << "\"\n"
                                            << "[ttrpc]\n  address = \"" << socket().string() << ".ttrpc\"\n";
    if (!containerd.start({binaries["containerd"], "--config", (root / "containerd.toml").string()},
                          root / "containerd.log")) {
      return fail("containerd did not start");
    }
    bool up = false;
    for (int i = 0; i < 100 && !up; ++i) {  // ~10 s guard against hangs
      up = run_to_completion({binaries["ctr"], "--address", socket().string(), "version"}, log) == 0;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!up) return fail("containerd did not come up: " + containerd.log());

    std::filesystem::create_directories(root / "www");
    ::chmod((root / "www").c_str(), 0755);
    std::ofstream(root / "www" / "metrics") << "# TYPE peerd_bytes_fetched_total counter\n"
                                            << "peerd_bytes_fetched_total{source=\"peer\"} 0\n"
                                            << "peerd_bytes_fetched_total{source=\"upstream\"} 12345\n";
    ::chmod((root / "www" / "metrics").c_str(), 0644);
    const uint16_t metrics_port = daemon::testing::free_port(kMetricsAddress);
    metrics_url = "http://" + std::string(kMetricsAddress) + ":" + std::to_string(metrics_port) + "/metrics";
    const std::string r = root.string();
    std::ofstream(root / "nginx.conf")
        << "worker_processes 1;\npid " << r << "/nginx.pid;\n"
        << "events { worker_connections 16; }\nhttp {\n  access_log off;\n"
        << "  client_body_temp_path " << r << "/body;\n  proxy_temp_path " << r
        << "/proxy;\n  fastcgi_temp_path " << r << "/fastcgi;\n  uwsgi_temp_path " << r
        << "/uwsgi;\n  scgi_temp_path " << r << "/scgi;\n  server { listen " << kMetricsAddress << ":"
        << metrics_port << "; root " << r << "/www; }\n}\n";
    if (!nginx.start({binaries["nginx"], "-p", r, "-e", r + "/nginx-error.log", "-c", r + "/nginx.conf", "-g",
                      "daemon off;"},
                     root / "nginx.log") ||
        !nginx.wait_for_port(kMetricsAddress, metrics_port)) {
      return fail("nginx did not start: " + nginx.log());
    }
    return true;
  }

  bool fail(std::string why) {
    error = std::move(why);
    return false;
  }
};

struct CtrRun {
  int exit_status = -1;
  std::string output;
  std::vector<nlohmann::json> lines;

  nlohmann::json line(const std::string& message) const {
    for (const auto& line : lines) {
      if (line.value("message", "") == message) return line;
    }
    return nlohmann::json::object();
  }
};

class CtrWorkload : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    environment_ = new Environment();
    environment_->start();
  }
  static void TearDownTestSuite() {
    delete environment_;
    environment_ = nullptr;
  }
  void SetUp() override {
    if (!environment_->error.empty()) GTEST_SKIP() << environment_->error;
  }

  CtrRun run(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(),
                     {PEERD_CTR_BINARY, "--address", environment_->socket().string(), "--node", "node-c"});
    const auto log = environment_->dir.path() / ("run-" + std::to_string(runs_++) + ".log");
    ChildProcess process;
    CtrRun result;
    if (!process.start(arguments, log)) return result;
    result.exit_status = process.wait_exit();
    result.output = daemon::testing::read_text(log);
    std::stringstream text(result.output);
    for (std::string line; std::getline(text, line);) {
      auto json = nlohmann::json::parse(line, nullptr, false);
      if (!json.is_discarded() && json.is_object()) result.lines.push_back(std::move(json));
    }
    return result;
  }

  static Environment* environment_;
  static inline int runs_ = 0;
};

Environment* CtrWorkload::environment_ = nullptr;

// Shows a pull end to end: the image is pulled, sized from its manifest (config plus the ~2 MiB layer), its
// layer read back in full and checked, the speed lines use pull.* and read.*, and the run exits 0. A second
// run with --remove-first removes it first.
TEST_F(CtrWorkload, PullsSizesAndReadsTheLayerBack) {
  const auto first = run({"--plain-http", "--image", environment_->image()});
  ASSERT_EQ(first.exit_status, 0) << first.output;
  const auto pulled = first.line("pulled image");
  EXPECT_EQ(pulled["image"], environment_->image());
  EXPECT_EQ(pulled["node"], "node-c");
  EXPECT_EQ(pulled["layers"], 1);
  EXPECT_GT(pulled["size"].get<uint64_t>(), kFileBytes) << pulled;  // random bytes do not compress
  EXPECT_GT(pulled["speed"].get<double>(), 0);
  const auto read = first.line("read layer");
  EXPECT_EQ(read["read"], read["size"]) << read;
  EXPECT_GT(read["size"].get<uint64_t>(), kFileBytes);
  EXPECT_TRUE(first.line("speeds (MB/s)").contains("pull.p100")) << first.output;
  EXPECT_EQ(first.line("error rates")["pull.error_rate"], 0);
  EXPECT_EQ(first.line("workload result")["passed"], true);

  const auto second = run({"--plain-http", "--remove-first", "--no-read", "--image", environment_->image()});
  ASSERT_EQ(second.exit_status, 0) << second.output;
  EXPECT_EQ(second.line("removed image")["image"], environment_->image()) << second.output;
  EXPECT_EQ(second.line("pulled image")["size"], pulled["size"]);
  EXPECT_TRUE(second.line("read layer").empty());
}

// Shows the peer-bytes check: with --peerd-metrics the counter is read around the pull and reported (0 here),
// and --expect-peer-bytes turns "no bytes from peers" into exit status 1.
TEST_F(CtrWorkload, ExpectPeerBytesFailsWhenPeersServedNothing) {
  const auto reported = run({"--plain-http", "--no-read", "--image", environment_->image(), "--peerd-metrics",
                             environment_->metrics_url});
  ASSERT_EQ(reported.exit_status, 0) << reported.output;
  EXPECT_EQ(reported.line("pulled image")["peer_bytes"], 0) << reported.output;
  EXPECT_EQ(reported.line("bytes from peers")["peer_bytes"], 0);

  const auto expected = run({"--plain-http", "--no-read", "--image", environment_->image(), "--peerd-metrics",
                             environment_->metrics_url, "--expect-peer-bytes"});
  EXPECT_EQ(expected.exit_status, 1) << expected.output;
  const auto verdict = expected.line("workload result");
  EXPECT_EQ(verdict["passed"], false);
  EXPECT_EQ(verdict["failed_checks"], nlohmann::json::array({"no bytes came from peers"})) << verdict;
}

// Shows failures are reported and fail the run: a missing image (pull.error_rate 0.5 next to a good one) and
// metrics that cannot be read.
TEST_F(CtrWorkload, FailedPullsAndUnreadableMetricsFailTheRun) {
  const auto result = run({"--plain-http", "--no-read", "--image", environment_->image(), "--image",
                           environment_->registry_authority + "/test/missing:1", "--peerd-metrics",
                           "http://" + std::string(kMetricsAddress) + ":1/metrics"});
  EXPECT_EQ(result.exit_status, 1) << result.output;
  EXPECT_FALSE(result.line("pull failed").empty()) << result.output;
  EXPECT_FALSE(result.line("cannot read peerd metrics").empty()) << result.output;
  EXPECT_DOUBLE_EQ(result.line("error rates")["pull.error_rate"].get<double>(), 0.5);
}

// Shows the command-line contract: a bad argument exits 2 with one line, --help exits 0.
TEST_F(CtrWorkload, BadArgumentsExitTwo) {
  const auto bad = run({"--image", "x", "--platform", "linux"});
  EXPECT_EQ(bad.exit_status, 2);
  EXPECT_EQ(std::count(bad.output.begin(), bad.output.end(), '\n'), 1) << bad.output;
  EXPECT_EQ(run({"--help"}).exit_status, 0);
}

}  // namespace
}  // namespace peerd::workload
