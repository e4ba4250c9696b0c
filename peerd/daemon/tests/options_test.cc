#include "peerd/daemon/options.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace peerd::daemon {
namespace {

Result<Command, std::string> parse_exactly(std::vector<std::string_view> args) {
  return parse_command_line(args);
}

// `run` needs a peer transport; tests about other flags choose plaintext unless they set a --peer-* flag.
Result<Command, std::string> parse(std::vector<std::string_view> args) {
  const bool run = !args.empty() && args.front() == "run";
  const bool peer_flag =
      std::any_of(args.begin(), args.end(), [](std::string_view arg) { return arg.starts_with("--peer-"); });
  if (run && !peer_flag) args.insert(args.begin() + 1, "--peer-plaintext");
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

// Shows the containerd content-store flags: on by default with k8s.io, the socket gates readiness only when
// named, and tags are resolved for peers only under an explicit ttl policy.
TEST(Options, ContainerdStoreFlags) {
  auto defaults = parse({"run"});
  ASSERT_TRUE(defaults.ok()) << defaults.error();
  EXPECT_TRUE(defaults->options.containerd_store);
  EXPECT_EQ(defaults->options.containerd_socket, "/run/containerd/containerd.sock");
  EXPECT_FALSE(defaults->options.containerd_socket_given);
  EXPECT_EQ(defaults->options.containerd_namespace, "k8s.io");
  EXPECT_TRUE(defaults->options.containerd_content_root.empty());
  EXPECT_FALSE(defaults->options.resolve_tags_ttl.has_value());

  auto set = parse({"run", "--containerd-socket=/tmp/c.sock", "--containerd-namespace", "default",
                    "--containerd-content-root=/var/lib/containerd/io.containerd.content.v1.content",
                    "--containerd-refresh=30s", "--resolve-tags=ttl:10m"});
  ASSERT_TRUE(set.ok()) << set.error();
  EXPECT_EQ(set->options.containerd_socket, "/tmp/c.sock");
  EXPECT_TRUE(set->options.containerd_socket_given);
  EXPECT_EQ(set->options.containerd_namespace, "default");
  EXPECT_EQ(set->options.containerd_content_root, "/var/lib/containerd/io.containerd.content.v1.content");
  EXPECT_EQ(set->options.containerd_refresh, std::chrono::seconds(30));
  EXPECT_EQ(set->options.resolve_tags_ttl, std::chrono::minutes(10));
  EXPECT_FALSE(parse({"run", "--resolve-tags=ttl:10m", "--resolve-tags=digest-only"})
                   ->options.resolve_tags_ttl.has_value());
  EXPECT_FALSE(parse({"run", "--containerd-store=false"})->options.containerd_store);

  for (std::string_view bad :
       {"--resolve-tags=always", "--resolve-tags=ttl:", "--resolve-tags=ttl:0", "--resolve-tags=ttl:5x",
        "--containerd-socket=", "--containerd-namespace=", "--containerd-refresh=10ms"}) {
    auto parsed = parse({"run", bad});
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().find('\n'), std::string::npos);
  }
  for (std::string_view flag : {"--containerd-socket", "--containerd-namespace", "--containerd-content-root",
                                "--resolve-tags", "--containerd-store", "--containerd-refresh"}) {
    EXPECT_NE(help_text().find(flag), std::string::npos) << flag;
  }
}

// Peer mutual TLS: a CA directory or all three static files, never with --peer-plaintext; the peer port is
// fixed and differs from the HTTP port.
TEST(Options, PeerTlsFlags) {
  const auto bare = parse_exactly({"run"});
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.error().find("--peer-plaintext"), std::string::npos) << bare.error();
  const Options defaults = parse_run_ok({"--peer-plaintext"});
  EXPECT_FALSE(defaults.peer_tls());
  EXPECT_TRUE(defaults.peer_plaintext);
  EXPECT_EQ(defaults.peer_address, Endpoint::ipv4(0, 0, 0, 0, 5443));

  const Options dir = parse_run_ok({"--peer-tls-dir=/etc/peerd/peer-tls", "--peer-addr=127.0.0.180:6443"});
  EXPECT_TRUE(dir.peer_tls());
  EXPECT_EQ(dir.peer_tls_dir, "/etc/peerd/peer-tls");
  EXPECT_EQ(dir.peer_address, Endpoint::ipv4(127, 0, 0, 180, 6443));

  const Options files =
      parse_run_ok({"--peer-tls-cert", "/c.pem", "--peer-tls-key", "/k.pem", "--peer-tls-ca", "/ca.pem"});
  EXPECT_TRUE(files.peer_tls());
  EXPECT_EQ(files.peer_tls_key_file, "/k.pem");
  EXPECT_TRUE(parse_run_ok({"--peer-plaintext"}).peer_plaintext);

  EXPECT_NE(parse_run_error({"--peer-tls-cert=/c.pem"}).find("go together"), std::string::npos);
  EXPECT_NE(parse_run_error({"--peer-tls-dir=/d", "--peer-plaintext"}).find("exclude"), std::string::npos);
  EXPECT_NE(
      parse_run_error({"--peer-tls-dir=/d", "--peer-tls-cert=/c", "--peer-tls-key=/k", "--peer-tls-ca=/a"})
          .find("exclude"),
      std::string::npos);
  EXPECT_NE(parse_run_error({"--peer-tls-dir=/d", "--peer-addr=:0"}).find("fixed port"), std::string::npos);
  EXPECT_NE(parse_run_error({"--peer-tls-dir=/d", "--peer-addr=:5000"}).find("different ports"),
            std::string::npos);
  EXPECT_NE(help_text().find("--peer-tls-dir"), std::string::npos);
}

// Kubernetes: --bootstrap modes next to the ip:port and name:port forms, --kubeconfig, the event flags.
TEST(Options, KubernetesFlags) {
  const Options defaults = parse_run_ok({});
  EXPECT_TRUE(defaults.bootstrap.empty());  // main picks "auto" when a Kubernetes API is configured
  EXPECT_TRUE(defaults.kubeconfig.empty());
  EXPECT_EQ(defaults.k8s_service, "peerd");
  EXPECT_TRUE(defaults.k8s_events);
  EXPECT_EQ(defaults.k8s_event_interval, std::chrono::seconds(30));

  const Options options =
      parse_run_ok({"--bootstrap", "k8s-lease,DNS", "10.0.0.1:5003", "dns:5003", "--bootstrap=auto",
                    "--kubeconfig=/home/u/.kube/config", "--k8s-service=peerd-release", "--k8s-events=false",
                    "--k8s-event-interval=1m"});
  ASSERT_EQ(options.bootstrap.size(), 5u);
  EXPECT_EQ(options.bootstrap[0].kind, BootstrapEntry::Kind::kK8sLease);
  EXPECT_EQ(options.bootstrap[1].kind, BootstrapEntry::Kind::kK8sService);
  EXPECT_EQ(options.bootstrap[2].kind, BootstrapEntry::Kind::kStatic);
  EXPECT_EQ(options.bootstrap[3].kind, BootstrapEntry::Kind::kDns);  // a host named "dns" still works
  EXPECT_EQ(options.bootstrap[3].dns_name, "dns");
  EXPECT_EQ(options.bootstrap[4].kind, BootstrapEntry::Kind::kK8sAuto);
  EXPECT_EQ(options.kubeconfig, "/home/u/.kube/config");
  EXPECT_EQ(options.k8s_service, "peerd-release");
  EXPECT_FALSE(options.k8s_events);
  EXPECT_EQ(options.k8s_event_interval, std::chrono::minutes(1));

  EXPECT_NE(parse_run_error({"--k8s-service=a.b"}).find("--k8s-service"), std::string::npos);
  EXPECT_NE(parse_run_error({"--k8s-event-interval=10ms"}).find("at least 1s"), std::string::npos);
  EXPECT_NE(parse_run_error({"--kubeconfig="}).find("--kubeconfig"), std::string::npos);
  for (std::string_view flag :
       {"--kubeconfig", "--k8s-service", "--k8s-events", "--k8s-event-interval", "k8s-lease"})
    EXPECT_NE(help_text().find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace peerd::daemon
