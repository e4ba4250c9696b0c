#include "peerd/daemon/mirror_config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace peerd::daemon {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class MirrorConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path_template[] = "/tmp/peerd-mirror-test-XXXXXX";
    directory_ = ::mkdtemp(path_template);
  }
  void TearDown() override { fs::remove_all(directory_); }

  Result<std::vector<fs::path>, std::string> write(const std::vector<std::string>& hosts) {
    std::vector<RegistryHost> registries;
    for (const auto& host : hosts) registries.push_back(*parse_registry_host(host));
    return write_mirror_configuration(directory_, registries, {"http://127.0.0.1:5000"},
                                      Logger(LogLevel::kError, [](std::string_view) {}));
  }

  fs::path directory_;
};

// Shows the hosts.toml text: server URL (docker.io -> registry-1.docker.io) and each mirror with
// pull+resolve.
TEST(MirrorConfig, RendersContainerdHostsToml) {
  const std::string text =
      render_hosts_toml(*parse_registry_host("docker.io"), {"http://127.0.0.1:5000", "http://10.0.0.5:5000"});
  EXPECT_TRUE(text.starts_with(kMirrorConfigMarker));
  EXPECT_NE(text.find("server = \"https://registry-1.docker.io\"\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("[host.\"http://10.0.0.5:5000\"]"), std::string::npos);
}

// Shows the default mirror URL replaces wildcard listen addresses with loopback.
TEST(MirrorConfig, DefaultMirrorUrl) {
  EXPECT_EQ(default_mirror_url(Endpoint::ipv4(0, 0, 0, 0, 5000)), "http://127.0.0.1:5000");
  EXPECT_EQ(default_mirror_url(Endpoint::ipv4(127, 0, 0, 7, 5100)), "http://127.0.0.7:5100");
  const std::string v6 = default_mirror_url(*Endpoint::parse("[::]:5000"));
  EXPECT_EQ(v6, "http://" + Endpoint::parse("[::1]:5000")->to_string());
}

// Shows one hosts.toml per registry, in the directory containerd looks up (host, with port when given).
TEST_F(MirrorConfigTest, WritesOneFilePerRegistry) {
  auto written = write({"https://ghcr.io", "docker.io", "http://127.0.0.1:5001"});
  ASSERT_TRUE(written.ok()) << written.error();
  ASSERT_EQ(written->size(), 3u);
  EXPECT_NE(slurp(directory_ / "ghcr.io" / "hosts.toml").find("server = \"https://ghcr.io\""),
            std::string::npos);
  EXPECT_NE(slurp(directory_ / "docker.io" / "hosts.toml").find("registry-1.docker.io"), std::string::npos);
  EXPECT_NE(slurp(directory_ / "127.0.0.1:5001" / "hosts.toml").find("server = \"http://127.0.0.1:5001\""),
            std::string::npos);
  EXPECT_FALSE(fs::exists(directory_ / "_backup"));
}

// Shows an existing foreign hosts.toml is backed up once; a second run (or a changed config) never
// overwrites the backup with peerd's own file.
TEST_F(MirrorConfigTest, BacksUpForeignFileOnce) {
  fs::create_directories(directory_ / "ghcr.io");
  std::ofstream(directory_ / "ghcr.io" / "hosts.toml")
      << "server = \"https://ghcr.io\"\n# the admin's file\n";
  ASSERT_TRUE(write({"ghcr.io"}).ok());
  const fs::path backup = directory_ / "_backup" / "ghcr.io" / "hosts.toml";
  ASSERT_TRUE(fs::exists(backup));
  EXPECT_NE(slurp(backup).find("the admin's file"), std::string::npos);
  EXPECT_TRUE(slurp(directory_ / "ghcr.io" / "hosts.toml").starts_with(kMirrorConfigMarker));

  // The admin edits the live file again; peerd rewrites it but keeps the first backup.
  std::ofstream(directory_ / "ghcr.io" / "hosts.toml") << "# a second foreign version\n";
  ASSERT_TRUE(write({"ghcr.io"}).ok());
  EXPECT_NE(slurp(backup).find("the admin's file"), std::string::npos);
  ASSERT_TRUE(write({"ghcr.io"}).ok());
  EXPECT_NE(slurp(backup).find("the admin's file"), std::string::npos);
  EXPECT_FALSE(fs::exists(directory_ / "ghcr.io" / "hosts.toml.peerd-tmp"));
}

// Shows an unwritable location gives a one-line error instead of a partial success.
TEST_F(MirrorConfigTest, ReportsFailures) {
  std::ofstream(directory_ / "blocked") << "a file where a directory should be";
  std::vector<RegistryHost> registries = {*parse_registry_host("ghcr.io")};
  auto result = write_mirror_configuration(directory_ / "blocked", registries, {"http://127.0.0.1:5000"},
                                           Logger(LogLevel::kError, [](std::string_view) {}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().find('\n'), std::string::npos);
}

}  // namespace
}  // namespace peerd::daemon
