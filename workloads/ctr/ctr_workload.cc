#include "workloads/ctr/ctr_workload.h"

#include <openssl/evp.h>
#include <sys/utsname.h>

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <thread>

#include "peerd/core/crypto/sha256.h"
#include "workloads/common/arguments.h"
#include "workloads/common/http_client.h"
#include "workloads/common/prometheus_text.h"
#include "workloads/common/statistics.h"
#include "workloads/common/subprocess.h"
#include "workloads/ctr/image_content.h"

namespace peerd::workload {
namespace {

using daemon::LogField;
using daemon::Logger;

constexpr uint64_t kDocumentBytesMax = 4 << 20;  // manifests and indexes are small; refuse anything bigger
constexpr uint64_t kMetricsBytesMax = 16 << 20;

struct ResolvedImage {
  std::string digest;      // what `ctr images ls` lists (an index or a manifest)
  ImageDocument manifest;  // the platform's manifest
};

// What a workload run counts, beside the per-request statistics.
struct Tally {
  uint64_t metrics_failures = 0;
  uint64_t peer_bytes = 0;
};

std::vector<std::string> ctr_command(const CtrOptions& options, std::vector<std::string> rest) {
  std::vector<std::string> argv = {options.ctr_binary, "--address", options.address, "--namespace",
                                   options.namespace_name};
  for (auto& word : rest) argv.push_back(std::move(word));
  return argv;
}

ProcessResult run_ctr(const CtrOptions& options, std::vector<std::string> rest, ProcessOptions process = {}) {
  process.timeout = std::chrono::seconds(options.pull_timeout_s);
  return run_process(ctr_command(options, std::move(rest)), process);
}

Platform effective_platform(const CtrOptions& options) {
  if (!options.platform.architecture.empty()) return options.platform;
  utsname name{};
  ::uname(&name);
  return Platform{"linux", oci_architecture(name.machine), ""};
}

std::string platform_text(const Platform& platform) {
  return platform.os + "/" + platform.architecture + (platform.variant.empty() ? "" : "/" + platform.variant);
}

Result<ImageDocument, std::string> content_document(const CtrOptions& options, const std::string& digest) {
  ProcessOptions process;
  process.stdout_keep_bytes_max = kDocumentBytesMax;
  const auto result = run_ctr(options, {"content", "get", digest}, process);
  if (!result.succeeded()) return fail("ctr content get " + digest + ": " + result.describe_failure());
  if (result.stdout_bytes > kDocumentBytesMax) return fail(digest + " is too large for a manifest");
  auto document = parse_image_document(result.stdout_text);
  if (!document) return fail(digest + ": " + document.error());
  return document;
}

Result<ResolvedImage, std::string> resolve_image(const CtrOptions& options, const std::string& ref) {
  const auto list = run_ctr(options, {"images", "ls"});
  if (!list.succeeded()) return fail("ctr images ls: " + list.describe_failure());
  const auto digest = image_digest_from_list(list.stdout_text, ref);
  if (!digest) return fail("ctr images ls does not list " + ref);
  auto document = content_document(options, *digest);
  if (!document) return fail(document.error());
  if (document->is_index) {
    const Platform platform = effective_platform(options);
    const auto entry = select_manifest(*document, platform);
    if (!entry) return fail("the index of " + ref + " has no manifest for " + platform_text(platform));
    document = content_document(options, entry->digest);
    if (!document) return fail(document.error());
    if (document->is_index) return fail("the index of " + ref + " points at another index");
  }
  return ResolvedImage{*digest, std::move(*document)};
}

struct LayerRead {
  uint64_t bytes = 0;
  double seconds = 0;
};

// Streams the layer out of the content store and checks its size and SHA-256 against the descriptor.
Result<LayerRead, std::string> read_layer(const CtrOptions& options, const Descriptor& layer) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> hash(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!hash || EVP_DigestInit_ex(hash.get(), EVP_sha256(), nullptr) != 1)
    return fail(std::string("no SHA-256"));
  ProcessOptions process;
  process.on_stdout = [&](std::span<const char> chunk) {
    EVP_DigestUpdate(hash.get(), chunk.data(), chunk.size());
  };
  const auto result = run_ctr(options, {"content", "get", layer.digest}, process);
  if (!result.succeeded()) return fail("ctr content get " + layer.digest + ": " + result.describe_failure());
  if (result.stdout_bytes != layer.size_bytes) {
    return fail("read " + std::to_string(result.stdout_bytes) + " bytes, the manifest says " +
                std::to_string(layer.size_bytes));
  }
  crypto::Sha256Digest digest{};
  unsigned int digest_length = 0;
  EVP_DigestFinal_ex(hash.get(), digest.data(), &digest_length);
  const std::string actual = "sha256:" + crypto::to_hex(digest);
  if (actual != layer.digest) return fail("layer bytes hash to " + actual);
  return LayerRead{result.stdout_bytes, result.seconds};
}

Result<double, std::string> read_peer_bytes(HttpClient& client, const std::string& url) {
  const auto response = client.get(url, "", BodyHandling::kKeep, kMetricsBytesMax);
  if (!response.transport_ok()) return fail(response.error);
  if (response.status != 200) return fail("status " + std::to_string(response.status));
  return prometheus_sample(response.body, "peerd_bytes_fetched_total", {{"source", "peer"}});
}

// peerd's peer-byte counter, or nullopt (counted and logged) when it cannot be read.
std::optional<double> sample_peer_bytes(HttpClient* client, const CtrOptions& options, Tally& tally,
                                        const Logger& logger) {
  if (client == nullptr) return std::nullopt;
  auto value = read_peer_bytes(*client, options.peerd_metrics_url);
  if (!value) {
    ++tally.metrics_failures;
    logger.error("cannot read peerd metrics",
                 {{"url", daemon::redact_url(options.peerd_metrics_url)}, {"error", value.error()}});
    return std::nullopt;
  }
  return *value;
}

void remove_image(const CtrOptions& options, const std::string& ref, const Logger& logger) {
  const auto result = run_ctr(options, {"images", "rm", "--sync", ref});
  if (!result.succeeded()) {
    logger.warn("cannot remove image", {{"image", ref}, {"error", result.describe_failure()}});
  } else if (result.stderr_tail.find("not found") != std::string::npos) {
    logger.debug("image was not present", {{"image", ref}});  // ctr warns and exits 0
  } else {
    logger.info("removed image", {{"image", ref}});
  }
}

std::vector<std::string> pull_arguments(const CtrOptions& options, const std::string& ref) {
  std::vector<std::string> rest = {"images", "pull"};
  if (options.plain_http) rest.push_back("--plain-http");
  if (!options.hosts_dir.empty()) rest.insert(rest.end(), {"--hosts-dir", options.hosts_dir});
  if (!options.snapshotter.empty()) rest.insert(rest.end(), {"--snapshotter", options.snapshotter});
  if (!options.platform.architecture.empty())
    rest.insert(rest.end(), {"--platform", platform_text(options.platform)});
  rest.push_back(ref);
  return rest;
}

// Pulls one image and reads its largest layer back; records into the statistics.
void pull_image(const CtrOptions& options, const std::string& ref, HttpClient* metrics, RequestStats& pulls,
                RequestStats& reads, Tally& tally, const Logger& logger) {
  if (options.remove_first) remove_image(options, ref, logger);
  const auto before = sample_peer_bytes(metrics, options, tally, logger);
  logger.info("pulling image", {{"image", ref}});
  const auto pulled = run_ctr(options, pull_arguments(options, ref));
  if (!pulled.succeeded()) {
    pulls.record_failure();
    logger.error("pull failed", {{"image", ref}, {"error", pulled.describe_failure()}});
    return;
  }
  auto image = resolve_image(options, ref);
  if (!image) {
    pulls.record_failure();
    logger.error("cannot size the pulled image", {{"image", ref}, {"error", image.error()}});
    return;
  }
  const uint64_t size_bytes = image_bytes(image->manifest);
  pulls.record_success(size_bytes, pulled.seconds);
  std::vector<LogField> fields = {{"image", ref},
                                  {"digest", image->digest},
                                  {"size", size_bytes},
                                  {"layers", image->manifest.layers.size()},
                                  {"seconds", pulled.seconds},
                                  {"speed", megabytes_per_second(size_bytes, pulled.seconds)}};
  const auto after = sample_peer_bytes(metrics, options, tally, logger);
  if (before && after) {
    const uint64_t peer_bytes = *after > *before ? static_cast<uint64_t>(*after - *before) : 0;
    tally.peer_bytes += peer_bytes;
    fields.push_back({"peer_bytes", peer_bytes});
  }
  logger.with(std::move(fields)).info("pulled image");

  if (!options.read_layer) return;
  const auto layer = largest_layer(image->manifest);
  if (!layer) return;  // an image without layers has nothing to read
  auto read = read_layer(options, *layer);
  if (!read) {
    reads.record_failure();
    logger.error("read failed", {{"image", ref}, {"digest", layer->digest}, {"error", read.error()}});
    return;
  }
  reads.record_success(read->bytes, read->seconds);
  logger.info("read layer", {{"image", ref},
                             {"digest", layer->digest},
                             {"size", layer->size_bytes},
                             {"read", read->bytes},
                             {"seconds", read->seconds},
                             {"speed", megabytes_per_second(read->bytes, read->seconds)}});
}

void log_speeds(const Logger& logger, std::string_view prefix, const RequestStats::Snapshot& stats) {
  const auto summary = summarize(stats.speeds_megabytes_per_second);
  if (!summary) return;
  std::vector<LogField> fields;
  for (size_t i = 0; i < kReportedPercentiles.size(); ++i) {
    fields.push_back(
        {std::string(prefix) + ".p" + std::to_string(kReportedPercentiles[i]), summary->values[i]});
  }
  logger.with(std::move(fields)).info("speeds (MB/s)");
}

void start_delay(const CtrOptions& options, const Logger& logger) {
  if (options.start_delay_max_s == 0) return;
  std::random_device device;
  const uint32_t seconds =
      std::uniform_int_distribution<uint32_t>(options.start_delay_min_s, options.start_delay_max_s)(device);
  logger.info("sleeping", {{"seconds", seconds}});
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
}

}  // namespace

int run_ctr_workload(const CtrOptions& options, const Logger& logger) {
  HttpClient::global_init();
  std::optional<HttpClient> metrics_client;
  if (!options.peerd_metrics_url.empty()) {
    HttpClientOptions client;
    client.request_timeout = std::chrono::seconds(30);
    client.insecure_tls = options.insecure_tls;
    metrics_client.emplace(client);
  }
  start_delay(options, logger);

  RequestStats pulls;
  RequestStats reads;
  Tally tally;
  for (const auto& ref : options.image_refs) {
    pull_image(options, ref, metrics_client ? &*metrics_client : nullptr, pulls, reads, tally, logger);
  }

  const auto pull_stats = pulls.snapshot();
  const auto read_stats = reads.snapshot();
  log_speeds(logger, "pull", pull_stats);
  log_speeds(logger, "read", read_stats);
  logger.info("error rates", {{"pull.error_rate", pull_stats.error_rate()},
                              {"read.error_rate", read_stats.error_rate()},
                              {"pull.requests", pull_stats.requests},
                              {"pull.failures", pull_stats.failures},
                              {"read.requests", read_stats.requests},
                              {"read.failures", read_stats.failures}});
  std::vector<std::string> failed;
  if (pull_stats.failures > 0) failed.push_back(std::to_string(pull_stats.failures) + " pulls failed");
  if (read_stats.failures > 0) failed.push_back(std::to_string(read_stats.failures) + " layer reads failed");
  if (metrics_client) {
    logger.info("bytes from peers",
                {{"peer_bytes", tally.peer_bytes}, {"expect_peer_bytes", options.expect_peer_bytes}});
    if (tally.metrics_failures > 0) failed.push_back("peerd metrics could not be read");
    if (options.expect_peer_bytes && tally.peer_bytes == 0) failed.push_back("no bytes came from peers");
  }
  logger.info("workload result", {{"passed", failed.empty()}, {"failed_checks", failed}});
  return failed.empty() ? kExitPassed : kExitChecksFailed;
}

}  // namespace peerd::workload
