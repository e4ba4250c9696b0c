// peerd-random against a real HTTP server, no peerd needed: nginx serves generated blobs on 127.0.0.150, and
// two more nginx servers stand in for peerd's /blobs/ route, one serving the right bytes and one serving
// other bytes of the same size. Shows upstream and p2p reads, byte verification, the JSON lines, and the exit
// statuses. Skips when nginx is not installed.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
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

constexpr const char* kAddress = "127.0.0.150";
constexpr uint64_t kBlobBytes = 8 << 20;
constexpr uint64_t kSmallBlobBytes = 100'000;

void write_random_file(const std::filesystem::path& path, uint64_t bytes, uint64_t seed) {
  Rng rng(seed);
  std::string data(bytes, '\0');
  for (auto& c : data) c = static_cast<char>(rng.next_u64());
  std::ofstream(path, std::ios::binary) << data;
  std::filesystem::permissions(path, std::filesystem::perms(0644));
}

// One nginx with three servers: upstream (serves www/), an honest stand-in for peerd (/blobs/<url> serves the
// file the URL names) and a lying one (/blobs/<url> serves other bytes of the same size).
class NginxFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto nginx = daemon::testing::find_binary("nginx");
    if (!nginx) GTEST_SKIP() << "nginx not installed";
    const auto& root = dir_.path();
    ::chmod(root.c_str(), 0755);  // nginx workers run as an unprivileged user
    std::filesystem::create_directories(root / "www");
    std::filesystem::create_directories(root / "wrong");
    ::chmod((root / "www").c_str(), 0755);
    ::chmod((root / "wrong").c_str(), 0755);
    write_random_file(root / "www" / "blob.bin", kBlobBytes, 1);
    write_random_file(root / "www" / "small.bin", kSmallBlobBytes, 2);
    write_random_file(root / "wrong" / "blob.bin", kBlobBytes, 3);
    write_random_file(root / "wrong" / "small.bin", kSmallBlobBytes, 4);

    upstream_port_ = daemon::testing::free_port(kAddress);
    honest_port_ = daemon::testing::free_port(kAddress);
    lying_port_ = daemon::testing::free_port(kAddress);
    const std::string r = root.string();
    std::ofstream(root / "nginx.conf")
        << "worker_processes 1;\npid " << r << "/nginx.pid;\nerror_log " << r << "/error.log;\n"
        << "events { worker_connections 64; }\n"
        << "http {\n  access_log " << r << "/access.log;\n  default_type application/octet-stream;\n"
        << "  client_body_temp_path " << r << "/body;\n  proxy_temp_path " << r << "/proxy;\n"
        << "  fastcgi_temp_path " << r << "/fastcgi;\n  uwsgi_temp_path " << r << "/uwsgi;\n"
        << "  scgi_temp_path " << r << "/scgi;\n"
        << "  server { listen " << kAddress << ":" << upstream_port_ << "; root " << r << "/www; }\n"
        << "  server { listen " << kAddress << ":" << honest_port_ << "; root " << r << "/www;\n"
        << "    location /blobs/ { rewrite ^/blobs/.*/([^/]+)$ /$1 break; } }\n"
        << "  server { listen " << kAddress << ":" << lying_port_ << "; root " << r << "/wrong;\n"
        << "    location /blobs/ { rewrite ^/blobs/.*/([^/]+)$ /$1 break; } }\n"
        << "}\n";
    ASSERT_TRUE(
        nginx_.start({*nginx, "-p", r, "-e", r + "/error.log", "-c", r + "/nginx.conf", "-g", "daemon off;"},
                     root / "nginx.out"));
    for (const uint16_t port : {upstream_port_, honest_port_, lying_port_}) {
      ASSERT_TRUE(nginx_.wait_for_port(kAddress, port)) << nginx_.log();
    }
  }

  std::string base_url(uint16_t port) const {
    return "http://" + std::string(kAddress) + ":" + std::to_string(port);
  }
  std::string blob_url(const std::string& name) const { return base_url(upstream_port_) + "/" + name; }

  struct Run {
    int exit_status = -1;
    std::string output;
    std::vector<nlohmann::json> lines;  // stdout and stderr lines that parse as JSON objects

    // The first line with this message, or an empty object.
    nlohmann::json line(const std::string& message) const {
      for (const auto& line : lines) {
        if (line.value("message", "") == message) return line;
      }
      return nlohmann::json::object();
    }
    size_t count(const std::string& message) const {
      size_t found = 0;
      for (const auto& line : lines) found += line.value("message", "") == message ? 1 : 0;
      return found;
    }
  };

  Run run(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), PEERD_RANDOM_BINARY);
    const auto log = dir_.path() / ("run-" + std::to_string(runs_++) + ".log");
    ChildProcess process;
    Run result;
    if (!process.start(arguments, log)) return result;
    result.exit_status = process.wait_exit();
    result.output = daemon::testing::read_text(log);
    std::stringstream text(result.output);
    std::string line;
    while (std::getline(text, line)) {
      auto json = nlohmann::json::parse(line, nullptr, false);
      if (!json.is_discarded() && json.is_object()) result.lines.push_back(std::move(json));
    }
    return result;
  }

  TempDir dir_;
  ChildProcess nginx_;
  uint16_t upstream_port_ = 0;
  uint16_t honest_port_ = 0;
  uint16_t lying_port_ = 0;
  int runs_ = 0;
};

// Shows upstream mode end to end: both blobs HEADed and read 5 times each, every read verified against a
// second upstream read, the original's JSON lines with correct statistics, and exit status 0.
TEST_F(NginxFixture, UpstreamModeReadsAndVerifies) {
  const auto result =
      run({"--mode", "upstream", "--blob", blob_url("blob.bin"), "--blob", blob_url("small.bin"), "--verify",
           "10", "--seed", "7", "--jitter-min-ms", "0", "--jitter-max-ms", "2", "--node", "node-a"});
  ASSERT_EQ(result.exit_status, 0) << result.output;
  EXPECT_EQ(result.count("downloading blob"), 2u) << result.output;
  const auto downloading = result.line("downloading blob");
  EXPECT_EQ(downloading["mode"], "upstream");
  EXPECT_EQ(downloading["node"], "node-a");
  EXPECT_EQ(downloading["readsPerBlob"], 5);
  EXPECT_TRUE(downloading["size"] == kBlobBytes || downloading["size"] == kSmallBlobBytes) << downloading;

  const auto speeds = result.line("speeds (MB/s)");
  for (const char* field :
       {"upstream.p50", "upstream.p75", "upstream.p90", "upstream.p95", "upstream.p100"}) {
    ASSERT_TRUE(speeds.contains(field)) << speeds;
    EXPECT_GT(speeds[field].get<double>(), 0) << field;
  }
  EXPECT_LE(speeds["upstream.p50"].get<double>(), speeds["upstream.p100"].get<double>());
  EXPECT_FALSE(speeds.contains("p2p.p50"));

  const auto errors = result.line("error rates");
  EXPECT_EQ(errors["upstream.error_rate"], 0);
  EXPECT_EQ(errors["upstream.requests"], 10);
  EXPECT_FALSE(errors.contains("p2p.error_rate"));
  const auto verdict = result.line("workload result");
  EXPECT_EQ(verdict["passed"], true);
  EXPECT_EQ(verdict["verify.reads"], 10);
  EXPECT_EQ(verdict["verify.failures"], 0);
  EXPECT_EQ(verdict["seed"], 7);
}

// Shows the same seed replays the same Range requests (nginx's access log holds the same ranges twice over).
TEST_F(NginxFixture, SameSeedReplaysTheSameRanges) {
  const auto first = run({"--mode", "upstream", "--blob", blob_url("blob.bin"), "--seed", "99",
                          "--jitter-max-ms", "0", "--jitter-min-ms", "0", "--log-level", "debug"});
  const auto second = run({"--mode", "upstream", "--blob", blob_url("blob.bin"), "--seed", "99",
                           "--jitter-max-ms", "0", "--jitter-min-ms", "0", "--log-level", "debug"});
  ASSERT_EQ(first.exit_status, 0) << first.output;
  ASSERT_EQ(second.exit_status, 0) << second.output;
  std::vector<std::string> first_ranges;
  std::vector<std::string> second_ranges;
  for (const auto& line : first.lines) {
    if (line.value("message", "") == "read") first_ranges.push_back(line["http.request.range"]);
  }
  for (const auto& line : second.lines) {
    if (line.value("message", "") == "read") second_ranges.push_back(line["http.request.range"]);
  }
  EXPECT_EQ(first_ranges.size(), 5u);
  EXPECT_EQ(first_ranges, second_ranges);
}

// Shows "both" mode: upstream then p2p through <peerd>/blobs/<url> (nginx's access log has the /blobs/
// requests), the same reads in each, both error rates on one line, and verification passing when the bytes
// are right.
TEST_F(NginxFixture, BothModesThroughTheBlobsRoute) {
  const auto result = run({"--mode", "both", "--peerd", base_url(honest_port_), "--blob",
                           blob_url("blob.bin"), "--blob", blob_url("small.bin"), "--reads-per-blob", "3",
                           "--verify", "6", "--jitter-min-ms", "0", "--jitter-max-ms", "1"});
  ASSERT_EQ(result.exit_status, 0) << result.output;
  EXPECT_EQ(result.count("downloading blob"), 4u);
  EXPECT_EQ(result.count("speeds (MB/s)"), 2u);
  const auto errors = result.line("error rates");
  EXPECT_EQ(errors["upstream.error_rate"], 0) << errors;
  EXPECT_EQ(errors["p2p.error_rate"], 0) << errors;
  EXPECT_EQ(errors["p2p.requests"], 6);
  EXPECT_EQ(result.line("workload result")["verify.reads"], 12);
  const std::string access = daemon::testing::read_text(dir_.path() / "access.log");
  EXPECT_NE(access.find("GET /blobs/" + blob_url("blob.bin")), std::string::npos) << access;
  EXPECT_NE(access.find("HEAD /" + std::string("blob.bin")), std::string::npos) << access;
}

// Shows verification catches wrong bytes: a stand-in peerd serving other bytes of the right size passes every
// Range check, but --verify finds each sampled read differs from upstream, counts it failed, and exits 1.
TEST_F(NginxFixture, VerificationCatchesWrongBytes) {
  const auto result = run({"--mode", "p2p", "--peerd", base_url(lying_port_), "--blob", blob_url("blob.bin"),
                           "--verify", "3", "--jitter-min-ms", "0", "--jitter-max-ms", "0"});
  EXPECT_EQ(result.exit_status, 1) << result.output;
  const auto verdict = result.line("workload result");
  EXPECT_EQ(verdict["passed"], false);
  EXPECT_EQ(verdict["verify.reads"], 3);
  EXPECT_EQ(verdict["verify.failures"], 3);
  EXPECT_EQ(result.count("verification failed: bytes differ from upstream"), 3u);
  const auto errors = result.line("error rates");
  EXPECT_EQ(errors["p2p.requests"], 5);
  EXPECT_EQ(errors["p2p.failures"], 3);
  EXPECT_DOUBLE_EQ(errors["p2p.error_rate"].get<double>(), 0.6);
}

// Shows a blob that cannot be sized fails the run (exit 1) while the other blob is still read and reported.
TEST_F(NginxFixture, MissingBlobFailsTheRun) {
  const auto result = run({"--mode", "upstream", "--blob", blob_url("missing.bin"), "--blob",
                           blob_url("small.bin"), "--jitter-min-ms", "0", "--jitter-max-ms", "0"});
  EXPECT_EQ(result.exit_status, 1) << result.output;
  EXPECT_EQ(result.line("head failed")["status"], 404);
  EXPECT_EQ(result.line("error rates")["upstream.requests"], 5);
  EXPECT_EQ(result.line("workload result")["head_failures"], 1);
}

// Shows the command-line contract: --help exits 0, a bad argument exits 2 with exactly one line.
TEST_F(NginxFixture, HelpAndBadArguments) {
  const auto help = run({"--help"});
  EXPECT_EQ(help.exit_status, 0);
  EXPECT_NE(help.output.find("--reads-per-blob"), std::string::npos);
  const auto bad = run({"--blob", blob_url("blob.bin"), "--mode", "upstream", "--reads-per-blob", "zero"});
  EXPECT_EQ(bad.exit_status, 2);
  EXPECT_EQ(std::count(bad.output.begin(), bad.output.end(), '\n'), 1) << bad.output;
  EXPECT_NE(bad.output.find("--reads-per-blob"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace peerd::workload
