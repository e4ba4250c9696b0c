#include "peerd/daemon/k8s/bootstrap_sources.h"

namespace peerd::daemon::k8s {

bool needs_kubernetes(const std::vector<BootstrapEntry>& entries) {
  return std::any_of(entries.begin(), entries.end(), [](const BootstrapEntry& entry) {
    return entry.kind == BootstrapEntry::Kind::kK8sLease || entry.kind == BootstrapEntry::Kind::kK8sService ||
           entry.kind == BootstrapEntry::Kind::kK8sAuto;
  });
}

ApiClientOptions lease_client_options() {
  ApiClientOptions options;
  options.connect_timeout = std::chrono::seconds(2);
  options.request_timeout = std::chrono::seconds(2);
  options.retries_max = 1;
  options.backoff_initial = std::chrono::milliseconds(100);
  options.backoff_max = std::chrono::milliseconds(500);
  return options;
}

Result<KubernetesBootstrap, std::string> make_kubernetes_sources(const std::vector<BootstrapEntry>& entries,
                                                                 const ApiConfig* config,
                                                                 const KubernetesBootstrapSettings& settings,
                                                                 const Logger& logger) {
  KubernetesBootstrap plan;
  if (!needs_kubernetes(entries)) return plan;
  if (config == nullptr) {
    return fail(std::string(
        "--bootstrap k8s-lease/dns/auto need the Kubernetes API: run in a pod or pass --kubeconfig"));
  }
  bool want_lease = false;
  bool want_service = false;
  for (const auto& entry : entries) {
    if (entry.kind == BootstrapEntry::Kind::kK8sLease) want_lease = true;
    if (entry.kind == BootstrapEntry::Kind::kK8sService) want_service = true;
    if (entry.kind != BootstrapEntry::Kind::kK8sAuto) continue;
    // auto: is the chart's headless Service there?
    ApiClient client(*config, ApiClientOptions{}, logger);
    const std::string path =
        "/api/v1/namespaces/" + config->namespace_name + "/services/" + settings.service_name;
    auto answer = client.get(path);
    const auto service = answer && answer->status == 200 ? answer->json() : nlohmann::json();
    const bool headless = service.is_object() && service.contains("spec") && service["spec"].is_object() &&
                          service["spec"].value("clusterIP", "") == "None";
    if (headless) {
      want_service = true;
    } else {
      want_lease = true;
      logger.info("no headless Service to bootstrap from: using the leader lease",
                  {{"service", settings.service_name},
                   {"status", answer ? answer->status : 0},
                   {"error", answer ? (answer->status == 200 ? "not headless" : answer->error_message())
                                    : answer.error()}});
    }
  }
  if (want_service) {
    const std::string name = settings.service_name + "." + config->namespace_name + ".svc";
    plan.sources.push_back(std::make_unique<DnsPeerSource>(name, settings.router_port));
    plan.mode = "dns";
  }
  if (want_lease) {
    LeaseOptions lease = settings.lease;
    lease.namespace_name = config->namespace_name;
    lease.identity = settings.dht_advertised.to_string();
    auto source = std::make_unique<LeasePeerSource>(
        std::make_unique<ApiClient>(*config, lease_client_options(), logger), lease, logger);
    plan.lease = source.get();
    plan.sources.push_back(std::move(source));
    plan.mode = plan.mode.empty() ? "k8s-lease" : plan.mode + "+k8s-lease";
  }
  return plan;
}

}  // namespace peerd::daemon::k8s
