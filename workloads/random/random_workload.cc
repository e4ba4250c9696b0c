#include "workloads/random/random_workload.h"

#include <atomic>
#include <charconv>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "workloads/common/arguments.h"
#include "workloads/common/http_client.h"
#include "workloads/common/statistics.h"

namespace peerd::workload {
namespace {

using daemon::LogField;
using daemon::Logger;
using daemon::redact_url;

struct Blob {
  std::string url;
  uint64_t size_bytes = 0;  // 0 when unknown or empty: no reads
};

// The reads of one blob: a contiguous slice of the pattern (it is grouped by blob).
struct BlobReads {
  uint32_t blob_index = 0;
  size_t begin = 0;
  size_t end = 0;
};

struct Verification {
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> failures{0};
};

struct ModeOutcome {
  RandomMode mode = RandomMode::kUpstream;
  RequestStats::Snapshot stats;
  uint64_t verified_reads = 0;
  uint64_t verify_failures = 0;
};

// What every worker of a mode shares; read-only while the workers run.
struct ModeRun {
  const RandomOptions& options;
  RandomMode mode;
  const std::vector<Blob>& blobs;
  const ReadPattern& pattern;
  const std::vector<bool>& verify;  // one flag per read of the pattern
  const std::vector<BlobReads>& groups;
  const Logger& logger;
};

std::vector<RandomMode> modes_to_run(RandomMode mode) {
  if (mode == RandomMode::kBoth) return {RandomMode::kUpstream, RandomMode::kP2p};
  return {mode};
}

std::string read_url(const RandomOptions& options, RandomMode mode, const std::string& blob_url) {
  return mode == RandomMode::kP2p ? p2p_url(options.peerd_url, blob_url) : blob_url;
}

HttpClientOptions client_options(const RandomOptions& options) {
  HttpClientOptions client;
  client.request_timeout = std::chrono::seconds(options.timeout_s);
  client.connect_timeout =
      std::min<std::chrono::milliseconds>(client.request_timeout, std::chrono::seconds(10));
  client.insecure_tls = options.insecure_tls;
  return client;
}

uint64_t fresh_seed() {
  std::random_device device;
  return (uint64_t{device()} << 32) ^ device();
}

void sleep_for(Duration delay) {
  if (delay > Duration::zero()) std::this_thread::sleep_for(std::chrono::microseconds(delay.micros));
}

std::optional<uint64_t> parse_decimal(std::string_view text) {
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// HEADs every blob through `mode`'s route. Returns how many blobs have no usable size.
uint64_t head_blobs(const RandomOptions& options, RandomMode mode, std::vector<Blob>& blobs,
                    const Logger& logger) {
  HttpClient client(client_options(options));
  uint64_t failures = 0;
  for (auto& blob : blobs) {
    const auto response = client.head(read_url(options, mode, blob.url));
    if (!response.transport_ok() || response.status != 200 || !response.content_length) {
      ++failures;
      logger.error("head failed",
                   {{"url", redact_url(blob.url)},
                    {"status", response.status},
                    {"error", response.transport_ok() ? "no Content-Length" : response.error}});
      continue;
    }
    blob.size_bytes = *response.content_length;
    if (blob.size_bytes == 0) logger.warn("empty blob, nothing to read", {{"url", redact_url(blob.url)}});
  }
  return failures;
}

std::vector<BlobReads> group_by_blob(const ReadPattern& pattern) {
  std::vector<BlobReads> groups;
  for (size_t i = 0; i < pattern.reads.size(); ++i) {
    if (groups.empty() || groups.back().blob_index != pattern.reads[i].blob_index) {
      groups.push_back({pattern.reads[i].blob_index, i, i});
    }
    groups.back().end = i + 1;
  }
  return groups;
}

enum class VerifyOutcome : uint8_t { kMatch, kMismatch, kUnverifiable };

// Reads the same range straight from upstream and compares digests.
VerifyOutcome verify_read(const ModeRun& run, const PlannedRead& read, const crypto::Sha256Digest& digest,
                          HttpClient& client) {
  const Blob& blob = run.blobs[read.blob_index];
  const std::string range = range_header_value(read);
  const auto reference = client.get(blob.url, range, BodyHandling::kHash);
  auto checked = reference.transport_ok()
                     ? check_range_response(read, blob.size_bytes, reference.status, reference.content_range,
                                            reference.body_bytes)
                     : Result<bool, std::string>(fail(reference.error));
  if (!checked) {
    run.logger.error(
        "verification read failed",
        {{"url", redact_url(blob.url)}, {"http.request.range", range}, {"error", checked.error()}});
    return VerifyOutcome::kUnverifiable;
  }
  if (reference.body_sha256 != digest) {
    run.logger.error("verification failed: bytes differ from upstream",
                     {{"url", redact_url(blob.url)},
                      {"http.request.range", range},
                      {"sha256", crypto::to_hex(digest)},
                      {"upstream.sha256", crypto::to_hex(reference.body_sha256)}});
    return VerifyOutcome::kMismatch;
  }
  return VerifyOutcome::kMatch;
}

void read_once(const ModeRun& run, size_t read_number, HttpClient& client, RequestStats& stats,
               Verification& verification) {
  const PlannedRead& read = run.pattern.reads[read_number];
  const Blob& blob = run.blobs[read.blob_index];
  const bool verify = run.verify[read_number];
  const std::string range = range_header_value(read);
  const auto response = client.get(read_url(run.options, run.mode, blob.url), range,
                                   verify ? BodyHandling::kHash : BodyHandling::kDiscard);
  auto checked = response.transport_ok() ? check_range_response(read, blob.size_bytes, response.status,
                                                                response.content_range, response.body_bytes)
                                         : Result<bool, std::string>(fail(response.error));
  if (!checked) {
    stats.record_failure();
    run.logger.error("read failed", {{"url", redact_url(blob.url)},
                                     {"size", blob.size_bytes},
                                     {"http.request.range", range},
                                     {"status", response.status},
                                     {"error", checked.error()}});
    return;
  }
  if (verify) {
    verification.reads.fetch_add(1, std::memory_order_relaxed);
    const VerifyOutcome outcome = verify_read(run, read, response.body_sha256, client);
    if (outcome != VerifyOutcome::kMatch) verification.failures.fetch_add(1, std::memory_order_relaxed);
    // Wrong bytes make a failed read; an unverifiable one (the upstream read failed) still counts as served.
    if (outcome == VerifyOutcome::kMismatch) {
      stats.record_failure();
      return;
    }
  }
  stats.record_success(response.body_bytes, response.seconds);
  run.logger.debug("read", {{"url", redact_url(blob.url)},
                            {"http.request.range", range},
                            {"seconds", response.seconds},
                            {"speed", megabytes_per_second(response.body_bytes, response.seconds)}});
}

void read_blobs(const ModeRun& run, std::atomic<size_t>& next_group, RequestStats& stats,
                Verification& verification) {
  HttpClient client(client_options(run.options));
  for (size_t group = next_group.fetch_add(1); group < run.groups.size(); group = next_group.fetch_add(1)) {
    const BlobReads& reads = run.groups[group];
    const Blob& blob = run.blobs[reads.blob_index];
    run.logger.info("downloading blob", {{"url", redact_url(blob.url)},
                                         {"size", blob.size_bytes},
                                         {"readsPerBlob", reads.end - reads.begin}});
    for (size_t i = reads.begin; i < reads.end; ++i) {
      sleep_for(run.pattern.reads[i].start_delay);
      read_once(run, i, client, stats, verification);
    }
  }
}

ModeOutcome run_mode(const ModeRun& run) {
  RequestStats stats;
  Verification verification;
  std::atomic<size_t> next_group{0};
  const size_t workers = std::min<size_t>(run.options.concurrency, run.groups.size());
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (size_t i = 0; i < workers; ++i) {
    threads.emplace_back([&] { read_blobs(run, next_group, stats, verification); });
  }
  for (auto& thread : threads) thread.join();
  return {run.mode, stats.snapshot(), verification.reads.load(), verification.failures.load()};
}

void log_speeds(const Logger& logger, const ModeOutcome& outcome) {
  const std::string mode(to_string(outcome.mode));
  const auto summary = summarize(outcome.stats.speeds_megabytes_per_second);
  if (!summary) {
    logger.warn("no successful reads, no speeds", {{"mode", mode}});
    return;
  }
  std::vector<LogField> fields;
  for (size_t i = 0; i < kReportedPercentiles.size(); ++i) {
    fields.push_back({mode + ".p" + std::to_string(kReportedPercentiles[i]), summary->values[i]});
  }
  logger.with(std::move(fields)).info("speeds (MB/s)");
}

void log_error_rates(const Logger& logger, const std::vector<ModeOutcome>& outcomes) {
  std::vector<LogField> fields;
  for (const auto& outcome : outcomes) {
    fields.push_back({std::string(to_string(outcome.mode)) + ".error_rate", outcome.stats.error_rate()});
  }
  for (const auto& outcome : outcomes) {
    const std::string mode(to_string(outcome.mode));
    fields.push_back({mode + ".requests", outcome.stats.requests});
    fields.push_back({mode + ".failures", outcome.stats.failures});
  }
  logger.with(std::move(fields)).info("error rates");
}

// The checks a run must pass, each failure one short sentence.
std::vector<std::string> failed_checks(const RandomOptions& options, uint64_t head_failures,
                                       const std::vector<ModeOutcome>& outcomes) {
  std::vector<std::string> failed;
  if (head_failures > 0) failed.push_back(std::to_string(head_failures) + " HEAD requests failed");
  for (const auto& outcome : outcomes) {
    const std::string mode(to_string(outcome.mode));
    if (outcome.stats.requests == 0) failed.push_back(mode + ": no reads issued");
    if (outcome.stats.error_rate() > options.error_rate_max) {
      failed.push_back(mode + ": error rate above --error-rate-max");
    }
    if (outcome.verify_failures > 0) {
      failed.push_back(mode + ": " + std::to_string(outcome.verify_failures) + " reads failed verification");
    }
  }
  return failed;
}

}  // namespace

Result<bool, std::string> check_range_response(const PlannedRead& read, uint64_t blob_size_bytes, long status,
                                               std::string_view content_range, uint64_t body_bytes) {
  const auto expect_body = [&](uint64_t expected) -> Result<bool, std::string> {
    if (body_bytes != expected) {
      return fail("got " + std::to_string(body_bytes) + " body bytes, expected " + std::to_string(expected));
    }
    return true;
  };
  if (status == 200) {
    if (read.offset_bytes != 0 || read.length_bytes != blob_size_bytes) {
      return fail(std::string("status 200 (Range ignored) for a partial read"));
    }
    return expect_body(blob_size_bytes);
  }
  if (status != 206) return fail("unexpected status " + std::to_string(status));
  const std::string expected_prefix =
      "bytes " + std::to_string(read.offset_bytes) + "-" + std::to_string(read.last_byte()) + "/";
  if (!content_range.starts_with(expected_prefix)) {
    return fail("Content-Range '" + std::string(content_range) + "' does not match " +
                range_header_value(read));
  }
  const std::string_view total = content_range.substr(expected_prefix.size());
  if (total != "*" && parse_decimal(total) != blob_size_bytes) {
    return fail("Content-Range '" + std::string(content_range) + "' names another size than " +
                std::to_string(blob_size_bytes));
  }
  return expect_body(read.length_bytes);
}

int run_random_workload(const RandomOptions& options, const Logger& logger) {
  HttpClient::global_init();
  const uint64_t seed = options.seed.value_or(fresh_seed());
  const std::vector<RandomMode> modes = modes_to_run(options.mode);

  std::vector<Blob> blobs;
  for (const auto& url : options.blob_urls) blobs.push_back({url, 0});
  const uint64_t head_failures = head_blobs(options, modes.front(), blobs, logger);

  std::vector<uint64_t> blob_sizes;
  for (const auto& blob : blobs) blob_sizes.push_back(blob.size_bytes);
  auto pattern = plan_reads(options.pattern_options(seed, std::move(blob_sizes)));
  if (!pattern) {
    logger.error("cannot plan reads", {{"error", std::string(describe(pattern.error()))}});
    return kExitChecksFailed;
  }
  logger.info("read pattern", {{"seed", seed},
                               {"blobs", blobs.size()},
                               {"reads", pattern->reads.size()},
                               {"readsPerBlob", options.reads_per_blob},
                               {"startDelayMs", pattern->start_delay.micros / 1000},
                               {"verify", options.verify_reads}});

  std::vector<bool> verify(pattern->reads.size(), false);
  for (const size_t index : verification_sample(pattern->reads.size(), options.verify_reads))
    verify[index] = true;
  const auto groups = group_by_blob(*pattern);

  std::vector<ModeOutcome> outcomes;
  for (const RandomMode mode : modes) {
    const Logger mode_logger = logger.with({{"mode", std::string(to_string(mode))}});
    outcomes.push_back(run_mode({options, mode, blobs, *pattern, verify, groups, mode_logger}));
  }

  for (const auto& outcome : outcomes) log_speeds(logger, outcome);
  log_error_rates(logger, outcomes);
  uint64_t verified_reads = 0;
  uint64_t verify_failures = 0;
  for (const auto& outcome : outcomes) {
    verified_reads += outcome.verified_reads;
    verify_failures += outcome.verify_failures;
  }
  const auto failed = failed_checks(options, head_failures, outcomes);
  logger.info("workload result", {{"passed", failed.empty()},
                                  {"seed", seed},
                                  {"head_failures", head_failures},
                                  {"verify.reads", verified_reads},
                                  {"verify.failures", verify_failures},
                                  {"failed_checks", failed}});
  return failed.empty() ? kExitPassed : kExitChecksFailed;
}

}  // namespace peerd::workload
