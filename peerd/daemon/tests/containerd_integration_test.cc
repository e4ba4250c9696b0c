// containerd 1.6 pulling through peerd with the hosts.toml peerd wrote: containerd accepts peerd's mirror
// configuration, and its real requests (HEAD/GET manifests and blobs with ?ns=) pass peerd's validation and
// are served by peerd (a single node: the bytes come from the registry through peerd's engine). Skips unless
// docker-registry, umoci, skopeo, containerd and ctr are installed and it runs as root.
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using testing::ChildProcess;
using testing::TempDir;

constexpr const char* kRegistryAddress = "127.0.0.41";
constexpr const char* kPeerdAddress = "127.0.0.42";

int run_to_completion(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  ChildProcess process;
  if (!process.start(argv, log)) return -1;
  return process.wait_exit();
}

std::string http_get_body(uint16_t port, const std::string& target) {
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address(kPeerdAddress), port));
  http::request<http::empty_body> request{http::verb::get, target, 11};
  http::write(socket, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  return response.body();
}

// Shows `ctr images pull` through peerd's hosts.toml succeeds and every request it sent peerd carried ns.
TEST(Containerd, PullsThroughPeerdMirrorConfiguration) {
  std::map<std::string, std::string> binaries;
  for (const char* name : {"docker-registry", "umoci", "skopeo", "containerd", "ctr"}) {
    const auto path = testing::find_binary(name);
    if (!path) GTEST_SKIP() << name << " not installed";
    binaries[name] = *path;
  }
  if (::geteuid() != 0) GTEST_SKIP() << "containerd needs root";
  TempDir dir;
  const auto& root = dir.path();
  const auto log = root / "commands.log";

  const uint16_t registry_port = testing::free_port(kRegistryAddress);
  const std::string registry = std::string(kRegistryAddress) + ":" + std::to_string(registry_port);
  std::ofstream(root / "registry.yml")
      << "version: 0.1\nstorage: {filesystem: {rootdirectory: " << (root / "registry").string()
      << "}}\nhttp: {addr: " << registry << "}\n";
  ChildProcess registry_process;
  ASSERT_TRUE(registry_process.start({binaries["docker-registry"], "serve", (root / "registry.yml").string()},
                                     root / "registry.log"));
  ASSERT_TRUE(registry_process.wait_for_port(kRegistryAddress, registry_port)) << registry_process.log();

  // A one-file image, pushed with skopeo.
  std::filesystem::create_directories(root / "rootfs");
  std::ofstream(root / "rootfs" / "hello.txt") << "hello from peerd's test\n";
  const std::string layout = (root / "oci").string();
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {binaries["umoci"], "init", "--layout", layout},
           {binaries["umoci"], "new", "--image", layout + ":img"},
           {binaries["umoci"], "insert", "--image", layout + ":img", (root / "rootfs").string(), "/"},
           {binaries["umoci"], "gc", "--layout", layout},
           {binaries["skopeo"], "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
            "oci:" + layout + ":img", "docker://" + registry + "/test/img:latest"}}) {
    ASSERT_EQ(run_to_completion(argv, log), 0) << argv[0] << " " << argv[1] << "\n"
                                               << testing::read_text(log);
  }

  const uint16_t peerd_port = testing::free_port(kPeerdAddress);
  ChildProcess peerd;
  ASSERT_TRUE(peerd.start(
      {PEERD_BINARY, "run", "--http-addr=" + std::string(kPeerdAddress) + ":" + std::to_string(peerd_port),
       "--router-addr=" + std::string(kPeerdAddress) + ":" + std::to_string(peerd_port), "--metrics-addr=off",
       "--cache-dir=" + (root / "cache").string(), "--cache-size=64MiB", "--hosts=http://" + registry,
       "--add-mirror-configuration", "--containerd-hosts-config-path=" + (root / "certs.d").string(),
       "--log-level=debug", "--peer-plaintext"},
      root / "peerd.log"));
  ASSERT_TRUE(peerd.wait_for_port(kPeerdAddress, peerd_port)) << peerd.log();

  const auto socket = root / "containerd.sock";
  std::ofstream(root / "containerd.toml") << "version = 2\nroot = \"" << (root / "croot").string() << "\"\n"
                                          << "state = \"" << (root / "cstate").string() << "\"\n"
                                          << "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                                          << "[grpc]\n  address = \"" << socket.string() << "\"\n"
                                          << "[ttrpc]\n  address = \"" << socket.string() << ".ttrpc\"\n";
  ChildProcess containerd;
  ASSERT_TRUE(containerd.start({binaries["containerd"], "--config", (root / "containerd.toml").string()},
                               root / "containerd.log"));
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {  // ~10 s guard against hangs
    up = run_to_completion({binaries["ctr"], "--address", socket.string(), "version"}, log) == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << containerd.log();

  const int pulled =
      run_to_completion({binaries["ctr"], "--address", socket.string(), "images", "pull", "--plain-http",
                         "--hosts-dir", (root / "certs.d").string(), registry + "/test/img:latest"},
                        root / "pull.log");
  EXPECT_EQ(pulled, 0) << testing::read_text(root / "pull.log") << containerd.log();

  const std::string metrics = http_get_body(peerd_port, "/metrics");
  EXPECT_NE(metrics.find("peerd_requests_total{route=\"manifest\",status=\"200\"}"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("peerd_requests_total{route=\"blob\",status=\"200\"}"), std::string::npos)
      << metrics;
  EXPECT_EQ(metrics.find("route=\"blob\",status=\"404\""), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("status=\"400\""), std::string::npos) << metrics;
  const std::string peerd_log = peerd.log();
  EXPECT_NE(peerd_log.find("\"registry\":\"" + registry + "\",\"name\":\"test/img\""), std::string::npos)
      << peerd_log;
  containerd.stop();
  peerd.stop();
}

}  // namespace
}  // namespace peerd::daemon
