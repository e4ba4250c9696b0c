#include "peerd/daemon/options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace peerd::daemon {
namespace {

Result<Command, std::string> parse(std::vector<std::string_view> args) {
  return parse_command_line(args);
}

Options parse_run_ok(std::vector<std::string_view> args) {
  args.insert(args.begin(), "run");
  auto command = parse(args);
  EXPECT_TRUE(command.ok()) << (command.ok() ? "" : command.error());
  EXPECT_EQ(command->kind, Command::Kind::kRun);
  return command->options;
}

std::string parse_run_error(std::vector<std::string_view> args) {
  args.insert(args.begin(), "run");
  auto command = parse(args);
  EXPECT_FALSE(command.ok());
  return command.ok() ? "" : command.error();
}

// Shows the defaults follow the original peerd: ports 5000/5003/5004, mcr + ghcr mirrored, 10GiB cache.
TEST(Options, DefaultsWhenRunHasNoFlags) {
  const Options options = parse_run_ok({});
  EXPECT_EQ(options.http_address.to_string(), "0.0.0.0:5000");
  EXPECT_EQ(options.router_address.to_string(), "0.0.0.0:5003");
  ASSERT_TRUE(options.metrics_address.has_value());
  EXPECT_EQ(options.metrics_address->to_string(), "0.0.0.0:5004");
  ASSERT_EQ(options.hosts.size(), 2u);
  EXPECT_EQ(options.hosts[0].server_url(), "https://mcr.microsoft.com");
  EXPECT_EQ(options.hosts[1].server_url(), "https://ghcr.io");
  EXPECT_EQ(options.cache_bytes_max, 10ull << 30);
  EXPECT_EQ(options.prefetch_workers, 50u);
  EXPECT_FALSE(options.add_mirror_configuration);
  EXPECT_EQ(options.containerd_hosts_config_path, "/etc/containerd/certs.d");
}

// Shows both `--flag=value` and `--flag value` forms, bare boolean flags and every value type parse.
TEST(Options, ParsesBothFlagFormsAndAllValueKinds) {
  const Options options = parse_run_ok(
      {"--http-addr=127.0.0.2:5100", "--router-addr", "[::1]:5103", "--metrics-addr=off", "--cache-size",
       "512MiB", "--cache-dir=/tmp/c", "--add-mirror-configuration", "--prefetch-workers=8", "--log-level",
       "debug", "--idle-timeout=1m30s", "--upstream-retries", "5", "--cache-fsync=false"});
  EXPECT_EQ(options.http_address.to_string(), "127.0.0.2:5100");
  EXPECT_EQ(options.router_address, *Endpoint::parse("[::1]:5103"));
  EXPECT_FALSE(options.metrics_address.has_value());
  EXPECT_EQ(options.cache_bytes_max, 512ull << 20);
  EXPECT_EQ(options.cache_dir, "/tmp/c");
  EXPECT_TRUE(options.add_mirror_configuration);
  EXPECT_EQ(options.prefetch_workers, 8u);
  EXPECT_EQ(options.log_level, LogLevel::kDebug);
  EXPECT_EQ(options.idle_timeout, std::chrono::seconds(90));
  EXPECT_EQ(options.upstream_retries_max, 5u);
  EXPECT_FALSE(options.cache_fsync);
}

// Shows list flags accept commas, repeats and go-arg style space-separated values, and that docker.io is
// served from registry-1.docker.io.
TEST(Options, ListFlagsAcceptCommasRepeatsAndSpaces) {
  const Options options =
      parse_run_ok({"--hosts", "https://ghcr.io,docker.io", "--hosts=http://127.0.0.1:5000", "--bootstrap",
                    "10.0.0.1:5003", "peerd.peerd-ns.svc:5003", "--log-level=warn"});
  ASSERT_EQ(options.hosts.size(), 3u);
  EXPECT_EQ(options.hosts[0].authority, "ghcr.io");
  EXPECT_EQ(options.hosts[1].authority, "docker.io");
  EXPECT_EQ(options.hosts[1].server_url(), "https://registry-1.docker.io");
  EXPECT_EQ(options.hosts[1].server_host(), "registry-1.docker.io");
  EXPECT_EQ(options.hosts[2].server_url(), "http://127.0.0.1:5000");
  EXPECT_EQ(options.hosts[2].server_host(), "127.0.0.1");
  ASSERT_EQ(options.bootstrap.size(), 2u);
  EXPECT_EQ(options.bootstrap[0].kind, BootstrapEntry::Kind::kStatic);
  EXPECT_EQ(options.bootstrap[0].endpoint.to_string(), "10.0.0.1:5003");
  EXPECT_EQ(options.bootstrap[1].kind, BootstrapEntry::Kind::kDns);
  EXPECT_EQ(options.bootstrap[1].dns_name, "peerd.peerd-ns.svc");
  EXPECT_EQ(options.bootstrap[1].port, 5003);
  EXPECT_EQ(options.log_level, LogLevel::kWarn);
}

// Shows help and version are recognised in all their spellings.
TEST(Options, HelpAndVersionCommands) {
  for (std::string_view help : {"--help", "-h", "help"}) EXPECT_EQ(parse({help})->kind, Command::Kind::kHelp);
  EXPECT_EQ(parse({"run", "--http-addr=:1", "--help"})->kind, Command::Kind::kHelp);
  for (std::string_view version : {"version", "--version", "-v"}) {
    EXPECT_EQ(parse({version})->kind, Command::Kind::kVersion);
  }
  const std::string text = help_text();
  EXPECT_NE(text.find("--http-addr"), std::string::npos);
  EXPECT_NE(text.find("--cache-size"), std::string::npos);
}

// Shows every kind of bad input gives a single-line error naming the flag.
TEST(Options, BadInputGivesOneLineErrors) {
  const std::vector<std::pair<std::vector<std::string_view>, std::string>> cases = {
      {{"--nope"}, "unknown flag --nope"},
      {{"--cache-size", "10XB"}, "--cache-size"},
      {{"--cache-size"}, "needs a value"},
      {{"--http-addr=localhost:5000"}, "--http-addr"},
      {{"--http-addr=1.2.3.4:70000"}, "--http-addr"},
      {{"--hosts=ftp://x.io"}, "--hosts"},
      {{"--hosts=https://x.io/path"}, "--hosts"},
      {{"--hosts=https://user@x.io"}, "--hosts"},
      {{"--bootstrap=peer"}, "needs a port"},
      {{"--bootstrap=bad_name!:5"}, "--bootstrap"},
      {{"--idle-timeout=5"}, "--idle-timeout"},
      {{"--idle-timeout=0"}, "--idle-timeout must be positive"},
      {{"--chunk-size=1000"}, "power of two"},
      {{"--cache-size=1MiB"}, "at least 4 chunks"},
      {{"--prefetch-workers=-1"}, "--prefetch-workers"},
      {{"--log-level=loud"}, "--log-level"},
      {{"--add-mirror-configuration=maybe"}, "boolean"},
      {{"stray"}, "unexpected argument"},
  };
  for (const auto& [args, expected] : cases) {
    const std::string error = parse_run_error(args);
    EXPECT_NE(error.find(expected), std::string::npos) << "args[0]=" << args[0] << " error=" << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
  EXPECT_FALSE(parse({}).ok());
  EXPECT_FALSE(parse({"serve"}).ok());
  EXPECT_FALSE(parse({"version", "extra"}).ok());
}

// Shows sizes take binary and decimal suffixes case-insensitively and refuse overflow.
TEST(Options, SizesWithUnits) {
  EXPECT_EQ(*parse_size_bytes("4096"), 4096u);
  EXPECT_EQ(*parse_size_bytes("10GiB"), 10ull << 30);
  EXPECT_EQ(*parse_size_bytes("10gib"), 10ull << 30);
  EXPECT_EQ(*parse_size_bytes("10G"), 10ull << 30);
  EXPECT_EQ(*parse_size_bytes("1GB"), 1000ull * 1000 * 1000);
  EXPECT_EQ(*parse_size_bytes("64k"), 64ull << 10);
  EXPECT_EQ(*parse_size_bytes("2TiB"), 2ull << 40);
  EXPECT_EQ(*parse_size_bytes("7B"), 7u);
  EXPECT_FALSE(parse_size_bytes("").ok());
  EXPECT_FALSE(parse_size_bytes("GiB").ok());
  EXPECT_FALSE(parse_size_bytes("1.5GiB").ok());
  EXPECT_FALSE(parse_size_bytes("-1").ok());
  EXPECT_FALSE(parse_size_bytes("99999999999TiB").ok());
  EXPECT_FALSE(parse_size_bytes("18446744073709551616").ok());
}

// Shows durations use Go syntax with compound units.
TEST(Options, DurationsInGoSyntax) {
  EXPECT_EQ(*parse_duration("0"), std::chrono::milliseconds(0));
  EXPECT_EQ(*parse_duration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(*parse_duration("30s"), std::chrono::seconds(30));
  EXPECT_EQ(*parse_duration("1h2m3s"), std::chrono::seconds(3723));
  EXPECT_EQ(*parse_duration("1m500ms"), std::chrono::milliseconds(60500));
  EXPECT_FALSE(parse_duration("").ok());
  EXPECT_FALSE(parse_duration("10").ok());
  EXPECT_FALSE(parse_duration("s").ok());
  EXPECT_FALSE(parse_duration("5d").ok());
  EXPECT_FALSE(parse_duration("1.5s").ok());
}

// Shows registry hosts normalise case, accept IPv6 with ports and refuse paths and queries.
TEST(Options, RegistryHosts) {
  EXPECT_EQ(parse_registry_host("GHCR.io")->server_url(), "https://ghcr.io");
  EXPECT_EQ(parse_registry_host("https://ghcr.io/")->authority, "ghcr.io");
  EXPECT_EQ(parse_registry_host("http://[::1]:5000")->server_host(), "[::1]");
  EXPECT_FALSE(parse_registry_host("https://ghcr.io?x=1").ok());
  EXPECT_FALSE(parse_registry_host("https://ghcr.io:0x1").ok());
  EXPECT_FALSE(parse_registry_host("https://").ok());
}

}  // namespace
}  // namespace peerd::daemon
