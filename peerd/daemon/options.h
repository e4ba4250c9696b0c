#pragma once
// `peerd` command line: the Options struct, a pure parser (no I/O, no globals) and the help text. Flags
// follow the original Azure/peerd (`--http-addr`, `--router-addr`, `--hosts`, `--add-mirror-configuration`,
// `--containerd-hosts-config-path`, `--prefetch-workers`, `--log-level`) plus the cache, bootstrap and limit
// flags this daemon adds. Every error is one line; main prints it and exits with status 2.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"

namespace peerd::daemon {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::string_view to_string(LogLevel level);
Result<LogLevel, std::string> parse_log_level(std::string_view text);

// A registry to mirror, from `--hosts`: "https://ghcr.io", "http://127.0.0.1:5000" or a bare "ghcr.io"
// (https implied).
struct RegistryHost {
  std::string scheme;     // "http" | "https"
  std::string authority;  // "host" or "host:port", lower-case, as containerd names the certs.d directory

  // The URL containerd and peerd send requests to: docker.io is an alias for registry-1.docker.io.
  std::string server_url() const;
  // The host part of server_url() (no port): what the allow-list matches.
  std::string server_host() const;

  auto operator<=>(const RegistryHost&) const = default;
};

Result<RegistryHost, std::string> parse_registry_host(std::string_view text);

// One `--bootstrap` entry: a literal "ip:port" / "[ipv6]:port" (static) or "name:port" (DNS, every A/AAAA
// record, re-resolved every --bootstrap-interval), or a Kubernetes mode: "k8s-lease" (the leader of the Lease
// peerd-leader-election), "dns" (the headless Service --k8s-service in peerd's namespace) or "auto" ("dns"
// when that Service exists, else "k8s-lease"; the default in a cluster when --bootstrap is not given).
struct BootstrapEntry {
  enum class Kind { kStatic, kDns, kK8sLease, kK8sService, kK8sAuto };
  Kind kind = Kind::kStatic;
  Endpoint endpoint;     // kStatic
  std::string dns_name;  // kDns
  uint16_t port = 0;     // kDns

  bool operator==(const BootstrapEntry&) const = default;
};

Result<BootstrapEntry, std::string> parse_bootstrap_entry(std::string_view text);

struct Options {
  // Listeners. The HTTP API serves containerd (mirror), peers (same API, marked with a header) and /blobs/.
  Endpoint http_address = Endpoint::ipv4(0, 0, 0, 0, 5000);
  Endpoint router_address = Endpoint::ipv4(0, 0, 0, 0, 5003);  // DHT
  std::optional<Endpoint> metrics_address = Endpoint::ipv4(0, 0, 0, 0, 5004);
  std::optional<Endpoint> node_ip;  // port unused; see --node-ip

  // Peers with mutual TLS: with a CA directory (--peer-tls-dir: the mounted Secret's ca.crt + ca.key) or
  // static files (--peer-tls-cert/-key/-ca), peers talk TLS to peer_address (every node uses the same port)
  // and peer requests on the HTTP port are refused. --peer-plaintext keeps peers on the HTTP port without
  // TLS.
  Endpoint peer_address = Endpoint::ipv4(0, 0, 0, 0, 5443);
  std::string peer_tls_dir;
  std::string peer_tls_cert_file;
  std::string peer_tls_key_file;
  std::string peer_tls_ca_file;
  bool peer_plaintext = false;
  bool peer_tls() const { return !peer_tls_dir.empty() || !peer_tls_cert_file.empty(); }

  // Mirroring.
  std::vector<RegistryHost> hosts;  // default: mcr.microsoft.com, ghcr.io
  bool add_mirror_configuration = false;
  std::string containerd_hosts_config_path = "/etc/containerd/certs.d";

  // containerd's content store: images already on the node are offered to peers (see containerd/).
  bool containerd_store = true;
  std::string containerd_socket = "/run/containerd/containerd.sock";
  bool containerd_socket_given = false;  // readiness waits for containerd only when the socket was named
  std::string containerd_namespace = "k8s.io";
  std::string containerd_content_root;  // "<root>/io.containerd.content.v1.content"; empty: gRPC reads only
  std::chrono::milliseconds containerd_refresh{std::chrono::minutes(5)};
  // Peers' tag lookups answered from local images created/updated within this; nullopt: digests only.
  std::optional<std::chrono::milliseconds> resolve_tags_ttl;
  std::vector<std::string> mirrors;  // mirror URLs written to hosts.toml; empty: derived from http_address
  // Hosts `/blobs/` and fetch-through may reach ("host", "host:port" or "*.suffix"); empty: the --hosts
  // registries plus the storage hosts they redirect to.
  std::vector<std::string> allowed_upstreams;

  // Cache.
  std::string cache_dir = "/var/cache/peerd";
  uint64_t cache_bytes_max = 10ull << 30;
  // Registries spend ~5-10 ms per range request: 1 MiB ranges capped a pull near 150 MB/s.
  uint64_t chunk_bytes = 4ull << 20;
  bool cache_fsync = true;
  uint32_t prefetch_workers = 50;

  // Peers.
  std::vector<BootstrapEntry> bootstrap;
  std::chrono::milliseconds bootstrap_interval{std::chrono::seconds(30)};

  // Kubernetes (in a pod: the service account; outside: --kubeconfig). Without either, none of it is used.
  std::string kubeconfig;             // empty: in-cluster configuration when in a pod
  std::string k8s_service = "peerd";  // headless Service for --bootstrap dns/auto
  bool k8s_events = true;             // post P2P* Events about this pod (or node)
  std::chrono::milliseconds k8s_event_interval{std::chrono::seconds(30)};  // per reason

  // Upstream (libcurl).
  std::chrono::milliseconds upstream_connect_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds upstream_stall_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds upstream_total_timeout{0};  // 0: none (multi-GB layers)
  uint32_t upstream_retries_max = 3;
  std::string upstream_ca_file;  // empty: the system trust store

  // HTTP server limits.
  uint32_t connections_max = 10000;
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds request_header_timeout{std::chrono::seconds(10)};
  uint32_t header_bytes_max = 8 * 1024;
  uint32_t http_threads = 2;

  // Logging.
  LogLevel log_level = LogLevel::kInfo;
  std::string node_name;  // "self" field of every log line; empty: the host name
};

struct Command {
  enum class Kind { kRun, kHelp, kVersion };
  Kind kind = Kind::kHelp;
  Options options;  // meaningful for kRun
};

// `args` excludes argv[0]. Accepts `run [--flag=value | --flag value | --bool-flag]...`,
// `--help`/`-h`/`help`, `version`/`--version`/`-v`. The error is a single line naming the offending flag.
Result<Command, std::string> parse_command_line(std::span<const std::string_view> args);

std::string help_text();

// "10GiB", "512MiB", "1GB", "4096", "64k". Binary suffixes (KiB, MiB, GiB, TiB, and bare K, M, G, T) are
// powers of 1024; decimal ones (KB, MB, GB, TB) powers of 1000. Case-insensitive. Overflow is an error.
Result<uint64_t, std::string> parse_size_bytes(std::string_view text);

// Go-style: "1h30m", "30s", "250ms", "0". Units h, m, s, ms; at least one unit unless the value is "0".
Result<std::chrono::milliseconds, std::string> parse_duration(std::string_view text);

// "0.0.0.0:5000", "[::]:5000", ":5000" (all IPv4 addresses).
Result<Endpoint, std::string> parse_listen_address(std::string_view text);

// "10.0.0.5" or "fd00::5" (no port; the Endpoint's port is 0): --node-ip, $NODE_IP, $POD_IP.
Result<Endpoint, std::string> parse_ip_address(std::string_view text);

}  // namespace peerd::daemon
