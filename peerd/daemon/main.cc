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
#include "peerd/daemon/containerd/containerd_store.h"
#include "peerd/daemon/content_service.h"
#include "peerd/daemon/core_driver.h"
#include "peerd/daemon/daemon_metrics.h"
#include "peerd/daemon/disk_chunk_store.h"
#include "peerd/daemon/engine_service.h"
#include "peerd/daemon/http_server.h"
#include "peerd/daemon/k8s/api_client.h"
#include "peerd/daemon/k8s/bootstrap_sources.h"
#include "peerd/daemon/k8s/event_recorder.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/metrics.h"
#include "peerd/daemon/mirror_config.h"
#include "peerd/daemon/options.h"
#include "peerd/daemon/peer_tls.h"
#include "peerd/daemon/readiness.h"
#include "peerd/daemon/router.h"
#include "peerd/daemon/upstream_client.h"

namespace {

using namespace peerd::daemon;
namespace net = boost::asio;

constexpr std::string_view kVersion = PEERD_VERSION;
// How often the peer TLS files are re-read (a Secret volume update shows within about a minute anyway).
constexpr std::chrono::seconds kPeerTlsRefreshInterval{5};

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
  // With peer mTLS, peers come through the peer listener only.
  server.peer_requests_allowed = !options.peer_tls();
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

  // Kubernetes, when in a pod or given --kubeconfig: P2P* events from here on, and the default --bootstrap.
  auto kube_config = k8s::find_api_config(options.kubeconfig);
  if (!kube_config) {
    logger.error("cannot use the Kubernetes API", {{"error", kube_config.error()}});
    return 1;
  }
  const k8s::ApiConfig* kube = kube_config->has_value() ? &**kube_config : nullptr;
  std::vector<BootstrapEntry> bootstrap_entries = options.bootstrap;
  if (bootstrap_entries.empty() && kube != nullptr)
    bootstrap_entries.push_back({BootstrapEntry::Kind::kK8sAuto, peerd::Endpoint{}, "", 0});
  std::unique_ptr<k8s::EventRecorder> events;
  if (kube != nullptr && options.k8s_events) {
    k8s::EventRecorderOptions event_options;
    event_options.namespace_name = kube->namespace_name;
    event_options.pod_name = k8s::process_environment("POD_NAME");
    event_options.node_name = k8s::process_environment("NODE_NAME");
    event_options.host_name = host_name();
    event_options.interval_min = options.k8s_event_interval;
    event_options.peer_bytes = [&metrics] { return metrics.bytes_fetched(ByteSource::kPeer).value(); };
    const Logger events_logger = logger.with({{"component", "k8s-events"}});
    events = std::make_unique<k8s::EventRecorder>(
        std::make_unique<k8s::ApiClient>(*kube, k8s::ApiClientOptions{}, events_logger), event_options,
        events_logger);
    events->start();
    events->record(k8s::P2PReason::kInitializing, "peerd " + std::string(kVersion) + " is starting");
  }
  // A fatal start-up error: logged, and reported as P2PFailed (waiting a little for it to be posted).
  const auto start_failed = [&logger, &events](std::string_view what, const std::string& error) {
    logger.error(what, {{"error", error}});
    if (events) {
      events->record(k8s::P2PReason::kFailed, std::string(what) + ": " + error);
      events->stop(std::chrono::seconds(5));
    }
    return 1;
  };

  auto store = DiskChunkStore::open({options.cache_dir, options.cache_bytes_max, options.cache_fsync},
                                    logger.with({{"component", "cache"}}), &metrics);
  if (!store) {
    return start_failed("cannot open the chunk cache", store.error());
  }
  readiness.set("cache", true);

  if (options.add_mirror_configuration) {
    const auto mirrors = options.mirrors.empty()
                             ? std::vector<std::string>{default_mirror_url(options.http_address)}
                             : options.mirrors;
    auto written = write_mirror_configuration(options.containerd_hosts_config_path, options.hosts, mirrors,
                                              logger.with({{"component", "containerd-mirror"}}));
    if (!written) {
      return start_failed("cannot write the containerd mirror configuration", written.error());
    }
  }

  AllowedUpstreams allowed(options.allowed_upstreams, options.hosts);
  net::io_context io;
  // Peer mutual TLS (peer_tls.h); the options allow plaintext peers only with --peer-plaintext.
  std::unique_ptr<PeerTls> peer_tls;
  UpstreamOptions upstream_settings = upstream_options(options);
  if (options.peer_tls()) {
    PeerTlsOptions tls_options;
    tls_options.ca_dir = options.peer_tls_dir;
    tls_options.cert_file = options.peer_tls_cert_file;
    tls_options.key_file = options.peer_tls_key_file;
    tls_options.ca_file = options.peer_tls_ca_file;
    tls_options.node_ip = advertised_dht_endpoint(options);
    tls_options.node_name = options.node_name.empty() ? host_name() : options.node_name;
    auto created = PeerTls::create(tls_options, logger.with({{"component", "peer-tls"}}), WallClock::now());
    if (!created) return start_failed("cannot load the peer TLS material", created.error());
    peer_tls = std::move(*created);
    upstream_settings.peer_tls = [tls = peer_tls.get()] { return tls->current(); };
  }
  auto upstream = std::make_unique<UpstreamClient>(std::move(upstream_settings),
                                                   logger.with({{"component", "upstream"}}), &metrics);

  CoreDriverOptions core;
  core.dht_listen = options.router_address;
  core.dht_advertised = advertised_dht_endpoint(options);
  core.http_port = options.peer_tls() ? options.peer_address.port : options.http_address.port;  // peers' port
  core.engine.chunk_bytes = options.chunk_bytes;
  core.engine.prefetch_workers = options.prefetch_workers;
  CoreDriver driver(io, core, **store, logger.with({{"component", "core"}}), &metrics);
  EngineServiceOptions service_options;
  service_options.chunk_bytes = options.chunk_bytes;
  service_options.resolve_tags_from_peers = options.resolve_tags_ttl.has_value();
  EngineContentService content(service_options, driver, **store, *upstream, allowed,
                               logger.with({{"component", "content"}}), &metrics);
  // containerd's content store: images already on the node are offered to peers and served to them.
  std::unique_ptr<containerd::Store> containerd_store;
  if (options.containerd_store) {
    containerd::StoreOptions store_options;
    store_options.socket_path = options.containerd_socket;
    store_options.name_space = options.containerd_namespace;
    store_options.content_root = options.containerd_content_root;
    for (const auto& host : options.hosts) store_options.hosts.push_back(host.authority);
    store_options.tag_ttl = options.resolve_tags_ttl;
    store_options.refresh_interval = options.containerd_refresh;
    const bool gate_readiness = options.containerd_socket_given;
    if (gate_readiness) readiness.require("containerd");
    containerd_store = std::make_unique<containerd::Store>(
        store_options,
        containerd::Advertiser{[&driver](const peerd::NodeId& key) { driver.provide(key); },
                               [&driver](const peerd::NodeId& key) { driver.withdraw(key); }},
        [&readiness, gate_readiness](bool connected) {
          if (gate_readiness) readiness.set("containerd", connected);
        },
        logger.with({{"component", "containerd"}}));
    content.set_local_content(containerd_store.get());
  }
  // Readiness follows the DHT join; peerd's "P2PConnected" moment is logged once and posted as an event on
  // every join, "P2PDisconnected" when a joined DHT loses its network.
  driver.on_bootstrap_change([&readiness, &logger, &driver, &events, &containerd_store, connected = false,
                              joined_now = false](bool joined) mutable {
    readiness.set("dht", joined);
    if (joined && containerd_store) containerd_store->readvertise();  // records stored before the join
    const auto snapshot = driver.snapshot();
    if (joined && !connected) {
      connected = true;
      logger.info("p2p connected", {{"peers", snapshot.routing_table_peers}, {"members", snapshot.members}});
    }
    if (events && joined != joined_now) {
      if (joined) {
        events->record(k8s::P2PReason::kConnected,
                       "joined the p2p network: " + std::to_string(snapshot.routing_table_peers) + " peers");
      } else {
        events->record(k8s::P2PReason::kDisconnected, "lost the p2p network");
      }
    }
    joined_now = joined;
  });
  readiness.require("dht");
  auto core_started = driver.start(content);
  if (!core_started) {
    return start_failed("cannot start the router", core_started.error());
  }
  if (containerd_store) containerd_store->start();
  Router router(content, allowed, registry, readiness, logger.with({{"component", "http"}}));

  HttpServer http(io, server_options(options), router, logger.with({{"component", "http"}}), &metrics);
  auto http_bound = http.listen(to_asio(options.http_address));
  if (!http_bound) {
    return start_failed("cannot start the HTTP server", http_bound.error());
  }
  std::optional<HttpServer> metrics_server;
  if (options.metrics_address && *options.metrics_address != options.http_address) {
    metrics_server.emplace(io, server_options(options), router, logger.with({{"component", "metrics"}}),
                           &metrics);
    auto bound = metrics_server->listen(to_asio(*options.metrics_address));
    if (!bound) {
      return start_failed("cannot start the metrics server", bound.error());
    }
  }
  std::optional<HttpServer> peer_server;
  std::optional<PeerTlsWatcher> peer_tls_watcher;
  if (peer_tls) {
    HttpServerOptions peer_options = server_options(options);
    peer_options.peer_requests_allowed = true;
    peer_options.tls_context = [tls = peer_tls.get()] { return tls->current()->server_context; };
    peer_server.emplace(io, peer_options, router, logger.with({{"component", "peer"}}), &metrics);
    auto bound = peer_server->listen(to_asio(options.peer_address));
    if (!bound) return start_failed("cannot start the peer listener", bound.error());
    logger.info("peer listener (mutual TLS)", {{"peer", peerd::daemon::from_asio(*bound).to_string()}});
    peer_tls_watcher.emplace(io, *peer_tls, kPeerTlsRefreshInterval,
                             logger.with({{"component", "peer-tls"}}));
    peer_tls_watcher->start();
  }
  readiness.set("http", true);

  k8s::KubernetesBootstrapSettings kube_bootstrap_settings;
  kube_bootstrap_settings.service_name = options.k8s_service;
  kube_bootstrap_settings.router_port = options.router_address.port;
  kube_bootstrap_settings.dht_advertised = core.dht_advertised;
  auto kube_bootstrap = k8s::make_kubernetes_sources(bootstrap_entries, kube, kube_bootstrap_settings,
                                                     logger.with({{"component", "bootstrap"}}));
  if (!kube_bootstrap) return start_failed("cannot bootstrap from Kubernetes", kube_bootstrap.error());
  auto peer_sources = make_peer_sources(bootstrap_entries);
  for (auto& source : kube_bootstrap->sources) peer_sources.push_back(std::move(source));
  const bool first_node = peer_sources.empty();
  BootstrapRefresher bootstrap(
      std::move(peer_sources), options.bootstrap_interval,
      [&driver](const std::vector<peerd::Endpoint>& peers) { driver.set_bootstrap_peers(peers); },
      logger.with({{"component", "bootstrap"}}), &metrics);
  if (kube_bootstrap->lease != nullptr) {
    // A new leader means new bootstrap peers: resolve at once rather than at the next interval.
    kube_bootstrap->lease->set_on_change([&bootstrap] { bootstrap.refresh_now(); });
    kube_bootstrap->lease->start();
  }
  if (first_node) {
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
    if (peer_server) peer_server->stop();
    if (peer_tls_watcher) peer_tls_watcher->stop();
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
               {"hosts", options.hosts.size()},
               {"kubernetes", kube != nullptr ? kube->origin : "off"},
               {"bootstrap", kube_bootstrap->mode.empty() ? "static/dns" : kube_bootstrap->mode}});

  std::vector<std::thread> threads;
  for (uint32_t i = 1; i < options.http_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  bootstrap.stop();
  if (kube_bootstrap->lease != nullptr) kube_bootstrap->lease->stop();  // hands the lease over at once
  if (events) events->stop(std::chrono::seconds(2));
  if (containerd_store) containerd_store->stop();
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
