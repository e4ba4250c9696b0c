#pragma once
// The Kubernetes `--bootstrap` modes as bootstrap sources:
//   k8s-lease  LeasePeerSource on Lease peerd-leader-election (Azure/peerd's way)
//   dns        DNS of the headless Service <service>.<namespace>.svc, every pod's address (Spegel's answer to
//              Lease load on clusters of more than a thousand nodes, spegel#663/#682)
//   auto       dns when GET services/<service> shows a headless Service, else k8s-lease
#include <memory>
#include <string>
#include <vector>

#include "peerd/core/common/endpoint.h"
#include "peerd/core/common/result.h"
#include "peerd/daemon/bootstrap.h"
#include "peerd/daemon/k8s/api_client.h"
#include "peerd/daemon/k8s/lease.h"
#include "peerd/daemon/log.h"
#include "peerd/daemon/options.h"

namespace peerd::daemon::k8s {

struct KubernetesBootstrapSettings {
  std::string service_name = "peerd";
  uint16_t router_port = 5003;  // every node's DHT port: the port of the Service's DNS name
  Endpoint dht_advertised;      // this node's DHT address: its identity in the Lease
  LeaseOptions lease;           // name and timings; namespace and identity are filled in
};

struct KubernetesBootstrap {
  std::vector<std::unique_ptr<PeerSource>> sources;
  LeasePeerSource* lease = nullptr;  // owned by `sources`; set when a Lease source is among them
  std::string mode;                  // "k8s-lease", "dns" or "" (no Kubernetes entry)
};

// True when `entries` hold a Kubernetes mode.
bool needs_kubernetes(const std::vector<BootstrapEntry>& entries);

// The sources for the Kubernetes entries of `entries` (others are ignored). `config` must be set when
// needs_kubernetes(entries). The Lease source is not started.
Result<KubernetesBootstrap, std::string> make_kubernetes_sources(const std::vector<BootstrapEntry>& entries,
                                                                 const ApiConfig* config,
                                                                 const KubernetesBootstrapSettings& settings,
                                                                 const Logger& logger);

// The API client settings of the lease elector: short timeouts and one retry, since the elector's own loop
// retries every retry period and a leader must renew within its renew deadline.
ApiClientOptions lease_client_options();

}  // namespace peerd::daemon::k8s
