#include "peerd/daemon/options.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <functional>
#include <limits>

namespace peerd::daemon {
namespace {

using Error = std::string;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

Result<uint64_t, Error> parse_unsigned(std::string_view text, uint64_t max) {
  uint64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end)
    return fail(Error("not a non-negative integer: '" + std::string(text) + "'"));
  if (value > max)
    return fail(Error("value " + std::string(text) + " is larger than " + std::to_string(max)));
  return value;
}

Result<bool, Error> parse_bool(std::string_view text) {
  const std::string value = lower(text);
  if (value == "true" || value == "1" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "no") return false;
  return fail(Error("not a boolean (true|false): '" + std::string(text) + "'"));
}

// Splits a list flag value on commas and whitespace, dropping empty items.
std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> items;
  std::string current;
  for (char c : text) {
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
      if (!current.empty()) items.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) items.push_back(std::move(current));
  return items;
}

Result<uint16_t, Error> parse_port(std::string_view text) {
  auto port = parse_unsigned(text, 65535);
  if (!port) return fail(Error("bad port '" + std::string(text) + "'"));
  return static_cast<uint16_t>(*port);
}

// A DNS name per RFC 1123: labels of [a-z0-9-], not starting or ending with '-', at most 253 characters.
bool is_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t label_bytes = 0;
  char previous = '.';
  for (char c : name) {
    if (c == '.') {
      if (label_bytes == 0 || previous == '-') return false;
      label_bytes = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      if (label_bytes == 0 && c == '-') return false;
      if (++label_bytes > 63) return false;
    } else {
      return false;
    }
    previous = c;
  }
  return previous != '-';
}

enum class FlagArity { kValue, kOptionalBool, kList };

struct Flag {
  std::string_view name;
  FlagArity arity;
  std::string_view value_name;
  std::string_view help;
  std::function<std::optional<Error>(Options&, std::string_view)> apply;
};

template <typename T>
std::optional<Error> assign(Result<T, Error> parsed, T& target) {
  if (!parsed) return parsed.error();
  target = std::move(parsed.value());
  return std::nullopt;
}

std::optional<Error> assign_count(std::string_view text, uint64_t min, uint64_t max, uint32_t& target) {
  auto value = parse_unsigned(text, max);
  if (!value) return value.error();
  if (*value < min) return "value " + std::string(text) + " is smaller than " + std::to_string(min);
  target = static_cast<uint32_t>(*value);
  return std::nullopt;
}

const std::vector<Flag>& flags() {
  static const std::vector<Flag> table = {
      {"--http-addr", FlagArity::kValue, "ADDR",
       "HTTP API: containerd mirror, peers, /blobs/ (default 0.0.0.0:5000)",
       [](Options& o, std::string_view v) { return assign(parse_listen_address(v), o.http_address); }},
      {"--router-addr", FlagArity::kValue, "ADDR", "P2P router (DHT) address (default 0.0.0.0:5003)",
       [](Options& o, std::string_view v) { return assign(parse_listen_address(v), o.router_address); }},
      {"--node-ip", FlagArity::kValue, "IP",
       "this node's address as peers reach it (default: the --router-addr IP if set, else $NODE_IP, "
       "$POD_IP, else the first non-loopback interface)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         auto address = parse_ip_address(v);
         if (!address) return address.error();
         o.node_ip = *address;
         return std::nullopt;
       }},
      {"--metrics-addr", FlagArity::kValue, "ADDR",
       "extra listener for /metrics, /healthz, /readyz; 'off' to disable (default 0.0.0.0:5004)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v == "off" || v == "none" || v.empty()) {
           o.metrics_address.reset();
           return std::nullopt;
         }
         auto address = parse_listen_address(v);
         if (!address) return address.error();
         o.metrics_address = *address;
         return std::nullopt;
       }},
      {"--peer-addr", FlagArity::kValue, "ADDR",
       "mutual-TLS listener for peers; every node must use the same port (default 0.0.0.0:5443)",
       [](Options& o, std::string_view v) { return assign(parse_listen_address(v), o.peer_address); }},
      {"--peer-tls-dir", FlagArity::kValue, "DIR",
       "cluster CA (ca.crt + ca.key, e.g. a mounted Secret): this node mints its own short-lived "
       "certificate; changes are picked up without a restart",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.peer_tls_dir = std::string(v);
         return std::nullopt;
       }},
      {"--peer-tls-cert", FlagArity::kValue, "FILE",
       "this node's peer certificate (PEM; with --peer-tls-key and --peer-tls-ca, instead of --peer-tls-dir)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.peer_tls_cert_file = std::string(v);
         return std::nullopt;
       }},
      {"--peer-tls-key", FlagArity::kValue, "FILE", "the key of --peer-tls-cert (PEM)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.peer_tls_key_file = std::string(v);
         return std::nullopt;
       }},
      {"--peer-tls-ca", FlagArity::kValue, "FILE", "CA certificate(s) peers must chain to (PEM)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.peer_tls_ca_file = std::string(v);
         return std::nullopt;
       }},
      {"--peer-plaintext", FlagArity::kOptionalBool, "",
       "peers use plain HTTP on --http-addr, unauthenticated (only without --peer-tls-*)",
       [](Options& o, std::string_view v) { return assign(parse_bool(v), o.peer_plaintext); }},
      {"--hosts", FlagArity::kList, "URL...",
       "registries to mirror, e.g. https://ghcr.io,docker.io (default "
       "https://mcr.microsoft.com,https://ghcr.io)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         auto host = parse_registry_host(v);
         if (!host) return host.error();
         if (std::find(o.hosts.begin(), o.hosts.end(), *host) == o.hosts.end()) o.hosts.push_back(*host);
         return std::nullopt;
       }},
      {"--add-mirror-configuration", FlagArity::kOptionalBool, "",
       "write <containerd-hosts-config-path>/<host>/hosts.toml for every --hosts entry",
       [](Options& o, std::string_view v) { return assign(parse_bool(v), o.add_mirror_configuration); }},
      {"--containerd-hosts-config-path", FlagArity::kValue, "DIR",
       "containerd hosts directory (default /etc/containerd/certs.d)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty path");
         o.containerd_hosts_config_path = std::string(v);
         return std::nullopt;
       }},
      {"--containerd-store", FlagArity::kOptionalBool, "",
       "offer images in containerd's content store to peers (default true)",
       [](Options& o, std::string_view v) { return assign(parse_bool(v), o.containerd_store); }},
      {"--containerd-socket", FlagArity::kValue, "PATH",
       "containerd gRPC socket (default /run/containerd/containerd.sock; when given, /readyz waits for it)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty path");
         o.containerd_socket = std::string(v);
         o.containerd_socket_given = true;
         return std::nullopt;
       }},
      {"--containerd-namespace", FlagArity::kValue, "NAME",
       "containerd namespace of the images (default k8s.io)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty namespace");
         o.containerd_namespace = std::string(v);
         return std::nullopt;
       }},
      {"--containerd-content-root", FlagArity::kValue, "DIR",
       "containerd's content directory (<root>/io.containerd.content.v1.content), read with sendfile "
       "(default: none, blobs are streamed over gRPC)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty path");
         o.containerd_content_root = std::string(v);
         return std::nullopt;
       }},
      {"--containerd-refresh", FlagArity::kValue, "DURATION",
       "rescan containerd's images and re-provide them every DURATION (default 5m)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.containerd_refresh); }},
      {"--resolve-tags", FlagArity::kValue, "POLICY",
       "tags peers may resolve from this node's images: digest-only (none) or ttl:DURATION (images "
       "created or updated within DURATION) (default digest-only)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v == "digest-only") {
           o.resolve_tags_ttl.reset();
           return std::nullopt;
         }
         if (!v.starts_with("ttl:")) return "not digest-only or ttl:DURATION: '" + std::string(v) + "'";
         auto ttl = parse_duration(v.substr(4));
         if (!ttl) return ttl.error();
         if (ttl->count() <= 0) return Error("the ttl must be positive");
         o.resolve_tags_ttl = *ttl;
         return std::nullopt;
       }},
      {"--mirrors", FlagArity::kList, "URL...",
       "mirror URLs written to hosts.toml (default: from --http-addr)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (!v.starts_with("http://") && !v.starts_with("https://")) {
           return "mirror URL must start with http:// or https://: '" + std::string(v) + "'";
         }
         o.mirrors.emplace_back(v);
         return std::nullopt;
       }},
      {"--allowed-upstreams", FlagArity::kList, "HOST...",
       "hosts /blobs/ may fetch from: host, host:port or *.suffix (default: --hosts and their redirect "
       "hosts)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         std::string host = lower(v);
         const std::string_view name = std::string_view(host).starts_with("*.")
                                           ? std::string_view(host).substr(2)
                                           : std::string_view(host);
         const auto colon = name.rfind(':');
         const bool has_port = colon != std::string_view::npos && name.find(']') == std::string_view::npos;
         const std::string_view bare = has_port ? name.substr(0, colon) : name;
         if (has_port && !parse_port(name.substr(colon + 1)))
           return "bad port in allowed upstream '" + host + "'";
         if (!is_dns_name(bare) && !Endpoint::parse(std::string(bare) + ":0")) {
           return "bad allowed upstream host '" + host + "'";
         }
         o.allowed_upstreams.push_back(std::move(host));
         return std::nullopt;
       }},
      {"--cache-dir", FlagArity::kValue, "DIR", "disk cache directory (default /var/cache/peerd)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty path");
         o.cache_dir = std::string(v);
         return std::nullopt;
       }},
      {"--cache-size", FlagArity::kValue, "SIZE", "disk cache cap, e.g. 10GiB (default 10GiB)",
       [](Options& o, std::string_view v) { return assign(parse_size_bytes(v), o.cache_bytes_max); }},
      {"--chunk-size", FlagArity::kValue, "SIZE",
       "chunk size, a power of two from 64KiB to 64MiB; every node must use the same (default 4MiB)",
       [](Options& o, std::string_view v) { return assign(parse_size_bytes(v), o.chunk_bytes); }},
      {"--cache-fsync", FlagArity::kOptionalBool, "", "fsync each chunk before publishing it (default true)",
       [](Options& o, std::string_view v) { return assign(parse_bool(v), o.cache_fsync); }},
      {"--prefetch-workers", FlagArity::kValue, "N", "number of workers prefetching content (default 50)",
       [](Options& o, std::string_view v) { return assign_count(v, 0, 1024, o.prefetch_workers); }},
      {"--bootstrap", FlagArity::kList, "PEER...",
       "bootstrap peers: ip:port (static), name:port (every A/AAAA record, re-resolved), k8s-lease (the "
       "leader of Lease peerd-leader-election), dns (the headless --k8s-service), auto (dns if that Service "
       "exists, else k8s-lease; default in a cluster)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         auto entry = parse_bootstrap_entry(v);
         if (!entry) return entry.error();
         o.bootstrap.push_back(*entry);
         return std::nullopt;
       }},
      {"--bootstrap-interval", FlagArity::kValue, "DURATION", "DNS re-resolution interval (default 30s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.bootstrap_interval); }},
      {"--kubeconfig", FlagArity::kValue, "FILE",
       "kubeconfig for the Kubernetes API outside a pod (default: the service account when in a pod)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (v.empty()) return Error("empty path");
         o.kubeconfig = std::string(v);
         return std::nullopt;
       }},
      {"--k8s-service", FlagArity::kValue, "NAME",
       "headless Service in peerd's namespace for --bootstrap dns/auto (default peerd)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         if (!is_dns_name(v) || v.find('.') != std::string_view::npos)
           return "not a Service name: '" + std::string(v) + "'";
         o.k8s_service = lower(v);
         return std::nullopt;
       }},
      {"--k8s-events", FlagArity::kOptionalBool, "",
       "post P2PInitializing/Connected/Active/Disconnected/Failed events on the pod or node (default true)",
       [](Options& o, std::string_view v) { return assign(parse_bool(v), o.k8s_events); }},
      {"--k8s-event-interval", FlagArity::kValue, "DURATION",
       "at most one event per reason per interval; repeats add to its count (default 30s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.k8s_event_interval); }},
      {"--upstream-connect-timeout", FlagArity::kValue, "DURATION", "upstream connect timeout (default 10s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.upstream_connect_timeout); }},
      {"--upstream-stall-timeout", FlagArity::kValue, "DURATION",
       "abort an upstream transfer that receives nothing for this long (default 30s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.upstream_stall_timeout); }},
      {"--upstream-timeout", FlagArity::kValue, "DURATION",
       "total upstream transfer timeout, 0 = none (default 0)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.upstream_total_timeout); }},
      {"--upstream-retries", FlagArity::kValue, "N",
       "retries on upstream 5xx or connection errors (default 3)",
       [](Options& o, std::string_view v) { return assign_count(v, 0, 10, o.upstream_retries_max); }},
      {"--upstream-ca-file", FlagArity::kValue, "FILE", "CA bundle for upstream TLS (default: system store)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.upstream_ca_file = std::string(v);
         return std::nullopt;
       }},
      {"--max-connections", FlagArity::kValue, "N", "HTTP connections kept at once (default 10000)",
       [](Options& o, std::string_view v) { return assign_count(v, 16, 1000000, o.connections_max); }},
      {"--idle-timeout", FlagArity::kValue, "DURATION",
       "close a keep-alive connection idle this long (default 60s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.idle_timeout); }},
      {"--request-header-timeout", FlagArity::kValue, "DURATION",
       "time allowed to receive a request's headers once it started (default 10s)",
       [](Options& o, std::string_view v) { return assign(parse_duration(v), o.request_header_timeout); }},
      {"--header-limit", FlagArity::kValue, "SIZE", "request header size limit, larger -> 431 (default 8KiB)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         auto bytes = parse_size_bytes(v);
         if (!bytes) return bytes.error();
         if (*bytes < 1024 || *bytes > 1024 * 1024)
           return Error("header limit must be between 1KiB and 1MiB");
         o.header_bytes_max = static_cast<uint32_t>(*bytes);
         return std::nullopt;
       }},
      {"--http-threads", FlagArity::kValue, "N", "threads running the HTTP server (default 2)",
       [](Options& o, std::string_view v) { return assign_count(v, 1, 64, o.http_threads); }},
      {"--log-level", FlagArity::kValue, "LEVEL", "debug|info|warn|error (default info)",
       [](Options& o, std::string_view v) { return assign(parse_log_level(v), o.log_level); }},
      {"--node-name", FlagArity::kValue, "NAME", "name logged as \"self\" (default: the host name)",
       [](Options& o, std::string_view v) -> std::optional<Error> {
         o.node_name = std::string(v);
         return std::nullopt;
       }},
  };
  return table;
}

const Flag* find_flag(std::string_view name) {
  for (const auto& flag : flags()) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

std::optional<Error> validate(Options& options) {
  if (options.hosts.empty()) {
    options.hosts = {RegistryHost{"https", "mcr.microsoft.com"}, RegistryHost{"https", "ghcr.io"}};
  }
  const uint64_t chunk = options.chunk_bytes;
  if (chunk < (64u << 10) || chunk > (64u << 20) || (chunk & (chunk - 1)) != 0) {
    return "--chunk-size must be a power of two from 64KiB to 64MiB, got " + std::to_string(chunk);
  }
  if (options.cache_bytes_max < chunk * 4) return Error("--cache-size must hold at least 4 chunks");
  if (options.bootstrap_interval < std::chrono::milliseconds(100)) {
    return Error("--bootstrap-interval must be at least 100ms");
  }
  if (options.k8s_event_interval < std::chrono::seconds(1))
    return Error("--k8s-event-interval must be at least 1s");
  if (options.containerd_refresh < std::chrono::seconds(1))
    return Error("--containerd-refresh must be at least 1s");
  if (options.upstream_connect_timeout.count() <= 0)
    return Error("--upstream-connect-timeout must be positive");
  if (options.upstream_stall_timeout.count() <= 0) return Error("--upstream-stall-timeout must be positive");
  if (options.idle_timeout.count() <= 0) return Error("--idle-timeout must be positive");
  if (options.request_header_timeout.count() <= 0) return Error("--request-header-timeout must be positive");
  const bool peer_static_files = !options.peer_tls_cert_file.empty() || !options.peer_tls_key_file.empty() ||
                                 !options.peer_tls_ca_file.empty();
  if (peer_static_files && (options.peer_tls_cert_file.empty() || options.peer_tls_key_file.empty() ||
                            options.peer_tls_ca_file.empty())) {
    return Error("--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together");
  }
  if (peer_static_files && !options.peer_tls_dir.empty())
    return Error("--peer-tls-dir and --peer-tls-cert/-key/-ca exclude each other");
  if (options.peer_tls() && options.peer_plaintext)
    return Error("--peer-plaintext and --peer-tls-* exclude each other");
  if (!options.peer_tls() && !options.peer_plaintext) {
    return Error(
        "peers need --peer-tls-dir (or --peer-tls-cert, --peer-tls-key and --peer-tls-ca) for mutual TLS, or "
        "--peer-plaintext for unauthenticated plain HTTP");
  }
  if (options.peer_tls() && options.peer_address.port == 0)
    return Error("--peer-addr needs a fixed port: peers reach each other on it");
  if (options.peer_tls() && options.peer_address.port == options.http_address.port)
    return Error("--peer-addr and --http-addr need different ports");
  if (options.add_mirror_configuration && options.mirrors.empty() && options.http_address.port == 0) {
    return Error("--add-mirror-configuration needs --mirrors or a fixed --http-addr port");
  }
  return std::nullopt;
}

Result<Command, Error> parse_run(std::span<const std::string_view> args) {
  Command command{Command::Kind::kRun, Options{}};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return Command{Command::Kind::kHelp, {}};
    if (!arg.starts_with("--"))
      return fail("unexpected argument '" + std::string(arg) + "' (see peerd --help)");
    const auto equals = arg.find('=');
    const std::string_view name = arg.substr(0, equals);
    const Flag* flag = find_flag(name);
    if (flag == nullptr) return fail("unknown flag " + std::string(name) + " (see peerd --help)");

    std::vector<std::string> values;
    if (equals != std::string_view::npos) {
      values.emplace_back(arg.substr(equals + 1));
    } else if (flag->arity == FlagArity::kOptionalBool) {
      values.emplace_back("true");
    } else if (flag->arity == FlagArity::kList) {
      // go-arg style: `--hosts a b c` takes every following non-flag argument.
      while (i + 1 < args.size() && !args[i + 1].starts_with("-")) values.emplace_back(args[++i]);
      if (values.empty()) return fail(std::string(name) + " needs a value");
    } else {
      if (i + 1 >= args.size()) return fail(std::string(name) + " needs a value");
      values.emplace_back(args[++i]);
    }
    if (flag->arity == FlagArity::kList) {
      std::vector<std::string> items;
      for (const auto& value : values) {
        for (auto& item : split_list(value)) items.push_back(std::move(item));
      }
      if (items.empty()) return fail(std::string(name) + " needs a value");
      values = std::move(items);
    }
    for (const auto& value : values) {
      if (auto error = flag->apply(command.options, value)) return fail(std::string(name) + ": " + *error);
    }
  }
  if (auto error = validate(command.options)) return fail(std::move(*error));
  return command;
}

}  // namespace

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

Result<LogLevel, std::string> parse_log_level(std::string_view text) {
  const std::string value = lower(text);
  if (value == "debug" || value == "trace") return LogLevel::kDebug;
  if (value == "info") return LogLevel::kInfo;
  if (value == "warn" || value == "warning") return LogLevel::kWarn;
  if (value == "error" || value == "fatal" || value == "panic") return LogLevel::kError;
  return fail(Error("unknown log level '" + std::string(text) + "' (debug|info|warn|error)"));
}

std::string RegistryHost::server_url() const {
  if (authority == "docker.io") return scheme + "://registry-1.docker.io";
  return scheme + "://" + authority;
}

std::string RegistryHost::server_host() const {
  const std::string url = server_url();
  std::string host = url.substr(url.find("://") + 3);
  if (host.starts_with("[")) return host.substr(0, host.find(']') + 1);
  const auto colon = host.rfind(':');
  return colon == std::string::npos ? host : host.substr(0, colon);
}

Result<RegistryHost, std::string> parse_registry_host(std::string_view text) {
  RegistryHost host{"https", ""};
  std::string_view rest = text;
  if (const auto scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    host.scheme = lower(rest.substr(0, scheme_end));
    rest = rest.substr(scheme_end + 3);
    if (host.scheme != "http" && host.scheme != "https") {
      return fail("registry URL scheme must be http or https: '" + std::string(text) + "'");
    }
  }
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find_first_of("/?#@") != std::string_view::npos) {
    return fail("registry URL must be scheme://host[:port] without path, query or user: '" +
                std::string(text) + "'");
  }
  std::string_view name = rest;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return fail("bad registry host '" + std::string(text) + "'");
    name = rest.substr(0, close + 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty() && (!after.starts_with(":") || !parse_port(after.substr(1)))) {
      return fail("bad registry port in '" + std::string(text) + "'");
    }
    if (!Endpoint::parse(std::string(name) + ":0"))
      return fail("bad registry host '" + std::string(text) + "'");
  } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    name = rest.substr(0, colon);
    if (!parse_port(rest.substr(colon + 1))) return fail("bad registry port in '" + std::string(text) + "'");
  }
  if (!rest.starts_with("[") && !is_dns_name(name))
    return fail("bad registry host '" + std::string(text) + "'");
  host.authority = lower(rest);
  return host;
}

Result<BootstrapEntry, std::string> parse_bootstrap_entry(std::string_view text) {
  const std::string mode = lower(text);
  if (mode == "k8s-lease") return BootstrapEntry{BootstrapEntry::Kind::kK8sLease, Endpoint{}, "", 0};
  if (mode == "dns") return BootstrapEntry{BootstrapEntry::Kind::kK8sService, Endpoint{}, "", 0};
  if (mode == "auto") return BootstrapEntry{BootstrapEntry::Kind::kK8sAuto, Endpoint{}, "", 0};
  if (auto endpoint = Endpoint::parse(text))
    return BootstrapEntry{BootstrapEntry::Kind::kStatic, *endpoint, "", 0};
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return fail("bootstrap peer needs a port: '" + std::string(text) + "'");
  auto port = parse_port(text.substr(colon + 1));
  const std::string name = lower(text.substr(0, colon));
  if (!port || *port == 0) return fail("bad bootstrap port in '" + std::string(text) + "'");
  if (!is_dns_name(name))
    return fail("bad bootstrap peer '" + std::string(text) + "' (ip:port or name:port)");
  return BootstrapEntry{BootstrapEntry::Kind::kDns, Endpoint{}, name, *port};
}

Result<Endpoint, std::string> parse_ip_address(std::string_view text) {
  auto address = Endpoint::parse(std::string(text) + ":0");
  if (!address) address = Endpoint::parse("[" + std::string(text) + "]:0");
  if (!address) return fail(Error("not an IPv4 or IPv6 address: " + std::string(text)));
  return *address;
}

Result<Endpoint, std::string> parse_listen_address(std::string_view text) {
  if (text.starts_with(":")) return parse_listen_address("0.0.0.0" + std::string(text));
  auto endpoint = Endpoint::parse(text);
  if (!endpoint) return fail("bad address '" + std::string(text) + "' (ip:port or [ipv6]:port)");
  return *endpoint;
}

Result<uint64_t, std::string> parse_size_bytes(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0) return fail("bad size '" + std::string(text) + "' (e.g. 10GiB, 512MiB, 4096)");
  auto number = parse_unsigned(text.substr(0, digits), std::numeric_limits<uint64_t>::max());
  if (!number) return fail("bad size '" + std::string(text) + "'");
  const std::string suffix = lower(text.substr(digits));
  struct Unit {
    std::string_view suffix;
    uint64_t factor;
  };
  static constexpr std::array<Unit, 16> units = {{
      {"", 1},
      {"b", 1},
      {"k", 1ull << 10},
      {"kib", 1ull << 10},
      {"kb", 1000ull},
      {"m", 1ull << 20},
      {"mib", 1ull << 20},
      {"mb", 1000ull * 1000},
      {"g", 1ull << 30},
      {"gib", 1ull << 30},
      {"gb", 1000ull * 1000 * 1000},
      {"t", 1ull << 40},
      {"tib", 1ull << 40},
      {"tb", 1000ull * 1000 * 1000 * 1000},
      {"ki", 1ull << 10},
      {"mi", 1ull << 20},
  }};
  for (const auto& unit : units) {
    if (unit.suffix != suffix) continue;
    if (*number > std::numeric_limits<uint64_t>::max() / unit.factor) {
      return fail("size '" + std::string(text) + "' is too large");
    }
    return *number * unit.factor;
  }
  return fail("bad size unit in '" + std::string(text) + "' (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
}

Result<std::chrono::milliseconds, std::string> parse_duration(std::string_view text) {
  if (text == "0") return std::chrono::milliseconds(0);
  const auto bad = [&] { return fail("bad duration '" + std::string(text) + "' (e.g. 30s, 1m30s, 250ms)"); };
  if (text.empty()) return bad();
  constexpr int64_t kMillisMax = std::numeric_limits<int64_t>::max() / 4;
  int64_t total_ms = 0;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t digits = 0;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
    if (digits == 0) return bad();
    auto number = parse_unsigned(rest.substr(0, digits), 1ull << 40);
    if (!number) return bad();
    rest.remove_prefix(digits);
    int64_t factor_ms = 0;
    if (rest.starts_with("ms")) {
      factor_ms = 1;
      rest.remove_prefix(2);
    } else if (rest.starts_with("h")) {
      factor_ms = 3600 * 1000;
      rest.remove_prefix(1);
    } else if (rest.starts_with("m")) {
      factor_ms = 60 * 1000;
      rest.remove_prefix(1);
    } else if (rest.starts_with("s")) {
      factor_ms = 1000;
      rest.remove_prefix(1);
    } else {
      return bad();
    }
    total_ms += static_cast<int64_t>(*number) * factor_ms;
    if (total_ms > kMillisMax) return fail("duration '" + std::string(text) + "' is too large");
  }
  return std::chrono::milliseconds(total_ms);
}

Result<Command, std::string> parse_command_line(std::span<const std::string_view> args) {
  if (args.empty()) return fail(Error("missing command (see peerd --help)"));
  const std::string_view command = args[0];
  if (command == "--help" || command == "-h" || command == "help") return Command{Command::Kind::kHelp, {}};
  if (command == "version" || command == "--version" || command == "-v") {
    if (args.size() > 1) return fail("version takes no arguments, got '" + std::string(args[1]) + "'");
    return Command{Command::Kind::kVersion, {}};
  }
  if (command == "run") return parse_run(args.subspan(1));
  return fail("unknown command '" + std::string(command) + "' (see peerd --help)");
}

std::string help_text() {
  std::string text =
      "peerd: peer-to-peer distribution of container images and blobs.\n"
      "\n"
      "Usage:\n"
      "  peerd run [flags]    run the daemon\n"
      "  peerd version        print the version\n"
      "  peerd --help         print this help\n"
      "\n"
      "Flags of run (--flag=value or --flag value; lists take commas or repeated flags):\n";
  for (const auto& flag : flags()) {
    std::string left = "  " + std::string(flag.name);
    if (!flag.value_name.empty()) left += " " + std::string(flag.value_name);
    if (left.size() < 40)
      left.resize(40, ' ');
    else
      left += "\n" + std::string(40, ' ');
    text += left + std::string(flag.help) + "\n";
  }
  text +=
      "\n"
      "Sizes take B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB); durations take h, m, s, ms (e.g. 1m30s).\n"
      "Invalid flags print one line to stderr and exit with status 2.\n";
  return text;
}

}  // namespace peerd::daemon
