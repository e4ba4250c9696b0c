// peerd: the only place that wires the daemon's components together.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "peerd/daemon/allowed_upstreams.h"
#include "peerd/daemon/bootstrap.h"
#include "peerd/daemon/content_service.h"
#include "peerd/daemon/core_driver.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/disk_chunk_store.h"
#include "peerd/daemon/engine_service.h"
#include "peerd/daemon/http_server.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/metrics.h"
#include "peerd/daemon/mirror_config.h"
#include "peerd/daemon/options.h"
#include "peerd/daemon/readiness.h"
#include "peerd/daemon/router.h"
#include "peerd/daemon/upstream_client.h"

namespace {

using namespace peerd::daemon;
namespace net = boost::asio;

constexpr std::string_view kVersion = PEERD_VERSION;

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

HttpServerOptions server_options(const Options& options) {
  HttpServerOptions server;
  server.connections_max = options.connections_max;
  server.idle_timeout = options.idle_timeout;
  server.request_header_timeout = options.request_header_timeout;
  server.header_bytes_max = options.header_bytes_max;
  return server;
}

UpstreamOptions upstream_options(const Options& options) {
  UpstreamOptions upstream;
  upstream.connect_timeout = options.upstream_connect_timeout;
  upstream.stall_timeout = options.upstream_stall_timeout;
  upstream.total_timeout = options.upstream_total_timeout;
  upstream.retries_max = options.upstream_retries_max;
  upstream.ca_file = options.upstream_ca_file;
  upstream.user_agent = "peerd/" + std::string(kVersion);
  return upstream;
}

bool unspecified(const peerd::Endpoint& endpoint) {
  return std::all_of(endpoint.address.begin(), endpoint.address.end(), [](uint8_t b) { return b == 0; });
}

std::optional<peerd::Endpoint> ip_from_environment(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == 0) return std::nullopt;
  auto address = parse_ip_address(text);
  if (!address) return std::nullopt;
  return *address;
}

// The first IPv4 address of an interface that is up and not loopback.
std::optional<peerd::Endpoint> first_interface_ipv4() {
  ifaddrs* addresses = nullptr;
  if (::getifaddrs(&addresses) != 0) return std::nullopt;
  std::optional<peerd::Endpoint> found;
  for (ifaddrs* it = addresses; it != nullptr && !found; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(it->ifa_addr);
    const uint32_t host = ntohl(in->sin_addr.s_addr);
    if ((host >> 24) == 127) continue;
    found = peerd::Endpoint::ipv4(host >> 24, (host >> 16) & 0xff, (host >> 8) & 0xff, host & 0xff, 0);
  }
  ::freeifaddrs(addresses);
  return found;
}

// Where peers reach this node's DHT: --node-ip, the --router-addr IP when it is specific, $NODE_IP or $POD_IP
// (the chart sets them from the downward API), the first interface address, loopback.
peerd::Endpoint advertised_dht_endpoint(const Options& options) {
  std::optional<peerd::Endpoint> ip = options.node_ip;
  if (!ip && !unspecified(options.router_address)) ip = options.router_address;
  if (!ip) ip = ip_from_environment("NODE_IP");
  if (!ip) ip = ip_from_environment("POD_IP");
  if (!ip) ip = first_interface_ipv4();
  if (!ip) ip = peerd::Endpoint::ipv4(127, 0, 0, 1, 0);
  ip->port = options.router_address.port;
  return *ip;
}

int run(const Options& options) {
  const Logger logger = Logger(options.log_level)
                            .with({{"self", options.node_name.empty() ? host_name() : options.node_name},
                                   {"version", std::string(kVersion)}});
  MetricsRegistry registry;
  DaemonMetrics metrics(registry);
  Readiness readiness;
  readiness.require("cache");
  readiness.require("http");

  auto store = DiskChunkStore::open({options.cache_dir, options.cache_bytes_max, options.cache_fsync},
                                    logger.with({{"component", "cache"}}), &metrics);
  if (!store) {
    logger.error("cannot open the chunk cache", {{"error", store.error()}});
    return 1;
  }
  readiness.set("cache", true);

  if (options.add_mirror_configuration) {
    const auto mirrors = options.mirrors.empty()
                             ? std::vector<std::string>{default_mirror_url(options.http_address)}
                             : options.mirrors;
    auto written = write_mirror_configuration(options.containerd_hosts_config_path, options.hosts, mirrors,
                                              logger.with({{"component", "containerd-mirror"}}));
    if (!written) {
      logger.error("cannot write the containerd mirror configuration", {{"error", written.error()}});
      return 1;
    }
  }

  AllowedUpstreams allowed(options.allowed_upstreams, options.hosts);
  net::io_context io;
  auto upstream = std::make_unique<UpstreamClient>(upstream_options(options),
                                                   logger.with({{"component", "upstream"}}), &metrics);

  CoreDriverOptions core;
  core.dht_listen = options.router_address;
  core.dht_advertised = advertised_dht_endpoint(options);
  core.http_port = options.http_address.port;
  core.engine.chunk_bytes = options.chunk_bytes;
  core.engine.prefetch_workers = options.prefetch_workers;
  CoreDriver driver(io, core, **store, logger.with({{"component", "core"}}), &metrics);
  EngineServiceOptions service_options;
  service_options.chunk_bytes = options.chunk_bytes;
  EngineContentService content(service_options, driver, **store, *upstream, allowed,
                               logger.with({{"component", "content"}}), &metrics);
  // Readiness follows the DHT join; peerd's "P2PConnected" moment is logged once.
  driver.on_bootstrap_change([&readiness, &logger, &driver, connected = false](bool joined) mutable {
    readiness.set("dht", joined);
    if (joined && !connected) {
      connected = true;
      const auto snapshot = driver.snapshot();
      logger.info("p2p connected", {{"peers", snapshot.routing_table_peers}, {"members", snapshot.members}});
    }
  });
  readiness.require("dht");
  auto core_started = driver.start(content);
  if (!core_started) {
    logger.error("cannot start the router", {{"error", core_started.error()}});
    return 1;
  }
  Router router(content, allowed, registry, readiness, logger.with({{"component", "http"}}));

  HttpServer http(io, server_options(options), router, logger.with({{"component", "http"}}), &metrics);
  auto http_bound = http.listen(to_asio(options.http_address));
  if (!http_bound) {
    logger.error("cannot start the HTTP server", {{"error", http_bound.error()}});
    return 1;
  }
  std::optional<HttpServer> metrics_server;
  if (options.metrics_address && *options.metrics_address != options.http_address) {
    metrics_server.emplace(io, server_options(options), router, logger.with({{"component", "metrics"}}),
                           &metrics);
    auto bound = metrics_server->listen(to_asio(*options.metrics_address));
    if (!bound) {
      logger.error("cannot start the metrics server", {{"error", bound.error()}});
      return 1;
    }
  }
  readiness.set("http", true);

  BootstrapRefresher bootstrap(
      make_peer_sources(options.bootstrap), options.bootstrap_interval,
      [&driver](const std::vector<peerd::Endpoint>& peers) { driver.set_bootstrap_peers(peers); },
      logger.with({{"component", "bootstrap"}}), &metrics);
  if (options.bootstrap.empty()) {
    driver.set_bootstrap_peers({});  // the first node of its network
  } else {
    bootstrap.start();
  }

  net::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& error, int signal_number) {
    if (error) return;
    logger.info("shutting down", {{"signal", signal_number}});
    http.stop();
    if (metrics_server) metrics_server->stop();
    driver.stop();
    io.stop();
  });

  logger.info("server start",
              {{"http", peerd::daemon::from_asio(*http_bound).to_string()},
               {"router", options.router_address.to_string()},
               {"node", core.dht_advertised.to_string()},
               {"id", driver.self().id.short_hex()},
               {"metrics", options.metrics_address ? options.metrics_address->to_string() : "off"},
               {"cache", options.cache_dir},
               {"hosts", options.hosts.size()}});

  std::vector<std::thread> threads;
  for (uint32_t i = 1; i < options.http_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  bootstrap.stop();
  content.shutdown();
  upstream.reset();  // completes its transfers (kShutdown) while the service and the driver still exist
  logger.info("server shutdown");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto command = parse_command_line(args);
  if (!command) {
    std::fprintf(stderr, "peerd: %s\n", command.error().c_str());
    return 2;
  }
  switch (command->kind) {
    case Command::Kind::kHelp:
      std::cout << help_text();
      return 0;
    case Command::Kind::kVersion:
      std::cout << "peerd " << kVersion << "\n";
      return 0;
    case Command::Kind::kRun:
      break;
  }
  // sendfile(2) on a socket the client closed raises SIGPIPE; the error code is enough.
  std::signal(SIGPIPE, SIG_IGN);
  return run(command->options);
}
