// The `peerd` binary end to end: command line handling (help, version, bad flags -> one line and exit 2) and
// a running daemon on 127.0.0.31 answering the HTTP API, writing the containerd mirror configuration, logging
// JSON lines and shutting down cleanly on SIGTERM.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using testing::ChildProcess;
using testing::TempDir;

constexpr const char* kAddress = "127.0.0.31";

http::response<http::string_body> http_get(uint16_t port, const std::string& target,
                                           std::vector<std::pair<std::string, std::string>> headers = {}) {
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address(kAddress), port));
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, kAddress);
  for (const auto& [name, value] : headers) request.set(name, value);
  http::write(socket, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  return response;
}

struct PeerdRun {
  int status = -1;
  std::string output;
};

PeerdRun run_peerd(std::vector<std::string> args, const TempDir& dir) {
  args.insert(args.begin(), PEERD_BINARY);
  ChildProcess process;
  const auto log = dir.path() / ("run-" + std::to_string(::rand()) + ".log");
  if (!process.start(args, log)) return {};
  PeerdRun run;
  run.status = process.wait_exit();
  run.output = process.log();
  return run;
}

// Shows --help and version succeed and every bad flag is one line on stderr with exit status 2.
TEST(DaemonBinary, CommandLine) {
  TempDir dir;
  const PeerdRun help = run_peerd({"--help"}, dir);
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--cache-size"), std::string::npos);
  const PeerdRun version = run_peerd({"version"}, dir);
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.output, std::string("peerd ") + PEERD_VERSION + "\n");
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"run", "--cache-size=lots"}, {"run", "--bogus"}, {"serve"}, {}, {"run", "--http-addr"}}) {
    const PeerdRun run = run_peerd(bad, dir);
    EXPECT_EQ(run.status, 2) << run.output;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
    EXPECT_TRUE(run.output.starts_with("peerd: ")) << run.output;
  }
}

// Shows a running daemon: the registry API base, health, readiness, metrics, input validation (400, 403,
// 431), the unwired content routes (404 OCI errors), hosts.toml written for every --hosts entry, JSON log
// lines, and a clean exit on SIGTERM.
TEST(DaemonBinary, ServesTheHttpApiAndShutsDown) {
  TempDir dir;
  const uint16_t port = testing::free_port(kAddress);
  const uint16_t metrics_port = testing::free_port(kAddress);
  ChildProcess peerd;
  ASSERT_TRUE(peerd.start(
      {PEERD_BINARY, "run", "--http-addr=" + std::string(kAddress) + ":" + std::to_string(port),
       "--metrics-addr", std::string(kAddress) + ":" + std::to_string(metrics_port),
       "--router-addr=127.0.0.31:0", "--cache-dir=" + (dir.path() / "cache").string(), "--cache-size=64MiB",
       "--hosts=http://127.0.0.21:5000,docker.io", "--add-mirror-configuration",
       "--containerd-hosts-config-path=" + (dir.path() / "certs.d").string(), "--log-level=debug",
       "--peer-plaintext", "--node-name=node-31"},
      dir.path() / "peerd.log"));
  ASSERT_TRUE(peerd.wait_for_port(kAddress, port)) << peerd.log();
  ASSERT_TRUE(peerd.wait_for_port(kAddress, metrics_port)) << peerd.log();

  EXPECT_EQ(http_get(port, "/v2/").result(), http::status::ok);
  EXPECT_EQ(http_get(port, "/healthz").result(), http::status::ok);
  EXPECT_EQ(http_get(port, "/readyz").result(), http::status::ok);
  const auto manifest = http_get(port, "/v2/test/img/manifests/latest?ns=127.0.0.21%3A5000");
  EXPECT_EQ(manifest.result(), http::status::not_found);
  EXPECT_EQ(nlohmann::json::parse(manifest.body())["errors"][0]["code"], "MANIFEST_UNKNOWN");
  EXPECT_EQ(http_get(port, "/blobs/https://evil.example.com/x").result(), http::status::forbidden);
  EXPECT_EQ(http_get(port, "/v2/x/%2e%2e/manifests/latest").result(), http::status::bad_request);
  EXPECT_EQ(http_get(port, "/v2/", {{"X-Big", std::string(9000, 'a')}}).result(),
            http::status::request_header_fields_too_large);
  const auto metrics = http_get(metrics_port, "/metrics");
  EXPECT_NE(metrics.body().find("peerd_requests_total{route=\"manifest\",status=\"404\"} 1"),
            std::string::npos)
      << metrics.body();

  const std::string registry_toml =
      testing::read_text(dir.path() / "certs.d" / "127.0.0.21:5000" / "hosts.toml");
  EXPECT_NE(registry_toml.find("[host.\"http://127.0.0.31:" + std::to_string(port) + "\"]"),
            std::string::npos)
      << registry_toml;
  EXPECT_NE(
      testing::read_text(dir.path() / "certs.d" / "docker.io" / "hosts.toml").find("registry-1.docker.io"),
      std::string::npos);

  EXPECT_EQ(peerd.stop(), 0);
  std::istringstream lines(peerd.log());
  bool started = false;
  bool shut_down = false;
  for (std::string line; std::getline(lines, line);) {
    const auto json = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(json.is_discarded()) << "not JSON: " << line;
    EXPECT_EQ(json["self"], "node-31");
    started = started || json["message"] == "server start";
    shut_down = shut_down || json["message"] == "server shutdown";
  }
  EXPECT_TRUE(started);
  EXPECT_TRUE(shut_down);
}

}  // namespace
}  // namespace peerd::daemon
