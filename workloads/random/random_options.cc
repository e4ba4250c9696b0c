#include "workloads/random/random_options.h"

#include <cstdint>

#include "peerd/daemon/log.h"

#include "workloads/common/arguments.h"
#include "workloads/pattern/read_pattern.h"

namespace peerd::workload {
namespace {

constexpr std::string_view kHelp =
    R"help(peerd-random: random Range reads of blobs, through peerd and from upstream.

For every blob: HEAD for its size, then --reads-per-blob random Range reads, one after another with a short
jitter pause. Blobs are read --concurrency at a time. In p2p mode a read is GET <peerd>/blobs/<blob url>; in
upstream mode it goes to the blob URL itself; "both" runs upstream, then p2p, replaying the same reads. The
reads come from the shared pattern generator (workloads/pattern), so --seed replays a run exactly.

Logs JSON lines: "downloading blob", "speeds (MB/s)" (<mode>.p50 .. <mode>.p100: nearest-rank percentiles of
the per-read speeds in ascending order, p100 is the fastest read; MB = 10^6 bytes), "error rates"
(<mode>.error_rate = failed reads / reads issued) and "workload result".

Usage: peerd-random [flags]
  --blob URL                 a blob URL (repeatable)
  --blobs-file PATH          a file of blob URLs, whitespace separated; '#' starts a comment (repeatable)
  --peerd URL                peerd's HTTP address, e.g. http://127.0.0.1:5000 (needed by p2p and both)
  --mode MODE                upstream | p2p | both (default both)
  --reads-per-blob N         reads of each blob (default 5)
  --read-bytes-max N         longest single read in bytes; 0: up to the end of the blob (default 0)
  --seed N                   pattern seed (default: random, logged)
  --jitter-min-ms N          shortest pause between reads of a blob (default 3)
  --jitter-max-ms N          longest pause between reads of a blob (default 25)
  --start-delay-min-s N      shortest delay before a mode's first reads (default 0)
  --start-delay-max-s N      longest delay before a mode's first reads (default 0; the original used 1-100)
  --concurrency N            blobs read at the same time (default 8)
  --verify N                 compare the bytes of N reads per mode with an upstream read of the same range
  --timeout-s N              per-request timeout in seconds (default 60)
  --error-rate-max X         fail when a mode's error rate exceeds X in [0, 1] (default 0)
  --insecure                 do not verify TLS certificates
  --node NAME                node name in log lines (default $NODE_NAME, else the host name)
  --log-level LEVEL          debug | info | warn | error (default info)
  --help                     this text
  --version                  the version

Exit status: 0 when every check passed; 1 when a HEAD or read failed beyond --error-rate-max, a verification
failed or nothing was read; 2 for bad arguments.
)help";

bool is_http_url(std::string_view url) {
  return (url.starts_with("http://") && url.size() > 7) || (url.starts_with("https://") && url.size() > 8);
}

Result<uint32_t, std::string> parse_u32(ArgumentCursor& cursor, std::string_view flag, uint64_t min,
                                        uint64_t max) {
  auto text = cursor.value();
  if (!text) return fail(text.error());
  auto value = parse_unsigned(flag, *text, min, max);
  if (!value) return fail(value.error());
  return static_cast<uint32_t>(*value);
}

// One flag into `options`; false when the flag is unknown.
Result<bool, std::string> apply_flag(const std::string& flag, ArgumentCursor& cursor,
                                     RandomOptions& options) {
  auto assign_u32 = [&](uint32_t& target, uint64_t min, uint64_t max) -> Result<bool, std::string> {
    auto value = parse_u32(cursor, flag, min, max);
    if (!value) return fail(value.error());
    target = *value;
    return true;
  };
  if (flag == "--blob" || flag == "--blobs-file") {
    auto value = cursor.value();
    if (!value) return fail(value.error());
    (flag == "--blob" ? options.blob_urls : options.blobs_files).push_back(*value);
    return true;
  }
  if (flag == "--peerd") {
    auto value = cursor.value();
    if (!value) return fail(value.error());
    if (!is_http_url(*value))
      return fail("--peerd: expected an http:// or https:// URL, got '" + *value + "'");
    options.peerd_url = *value;
    while (options.peerd_url.ends_with('/')) options.peerd_url.pop_back();
    return true;
  }
  if (flag == "--mode") {
    auto value = cursor.value();
    if (!value) return fail(value.error());
    if (*value == "upstream") {
      options.mode = RandomMode::kUpstream;
    } else if (*value == "p2p") {
      options.mode = RandomMode::kP2p;
    } else if (*value == "both") {
      options.mode = RandomMode::kBoth;
    } else {
      return fail("--mode: expected upstream, p2p or both, got '" + *value + "'");
    }
    return true;
  }
  if (flag == "--reads-per-blob") return assign_u32(options.reads_per_blob, 1, kPatternReadsPerBlobMax);
  if (flag == "--read-bytes-max") {
    auto text = cursor.value();
    if (!text) return fail(text.error());
    auto value = parse_unsigned(flag, *text, 0, UINT64_MAX);
    if (!value) return fail(value.error());
    options.read_bytes_max = *value;
    return true;
  }
  if (flag == "--seed") {
    auto text = cursor.value();
    if (!text) return fail(text.error());
    auto value = parse_unsigned(flag, *text, 0, UINT64_MAX);
    if (!value) return fail(value.error());
    options.seed = *value;
    return true;
  }
  const uint64_t delay_ms_max = static_cast<uint64_t>(kPatternDelayMax.micros / 1000);
  if (flag == "--jitter-min-ms") return assign_u32(options.jitter_min_ms, 0, delay_ms_max);
  if (flag == "--jitter-max-ms") return assign_u32(options.jitter_max_ms, 0, delay_ms_max);
  if (flag == "--start-delay-min-s") return assign_u32(options.start_delay_min_s, 0, delay_ms_max / 1000);
  if (flag == "--start-delay-max-s") return assign_u32(options.start_delay_max_s, 0, delay_ms_max / 1000);
  if (flag == "--concurrency") return assign_u32(options.concurrency, 1, kRandomConcurrencyMax);
  if (flag == "--verify") return assign_u32(options.verify_reads, 0, kPatternReadsMax);
  if (flag == "--timeout-s") return assign_u32(options.timeout_s, 1, kRandomTimeoutSecondsMax);
  if (flag == "--error-rate-max") {
    auto text = cursor.value();
    if (!text) return fail(text.error());
    auto value = parse_fraction(flag, *text);
    if (!value) return fail(value.error());
    options.error_rate_max = *value;
    return true;
  }
  if (flag == "--insecure") {
    auto none = cursor.no_value();
    if (!none) return fail(none.error());
    options.insecure_tls = true;
    return true;
  }
  if (flag == "--node") {
    auto value = cursor.value();
    if (!value) return fail(value.error());
    options.node_name = *value;
    return true;
  }
  if (flag == "--log-level") {
    auto text = cursor.value();
    if (!text) return fail(text.error());
    auto level = daemon::parse_log_level(*text);
    if (!level) return fail("--log-level: " + level.error());
    options.log_level = *level;
    return true;
  }
  return false;
}

}  // namespace

std::string_view to_string(RandomMode mode) {
  switch (mode) {
    case RandomMode::kUpstream:
      return "upstream";
    case RandomMode::kP2p:
      return "p2p";
    case RandomMode::kBoth:
      return "both";
  }
  return "unknown";
}

Result<RandomCommand, std::string> parse_random_arguments(std::span<const std::string> arguments) {
  RandomCommand command;
  ArgumentCursor cursor(arguments);
  while (!cursor.done()) {
    auto flag = cursor.next_flag();
    if (!flag) return fail(flag.error());
    if (*flag == "--help" || *flag == "--version") {
      command.action = *flag == "--help" ? RandomCommand::Action::kHelp : RandomCommand::Action::kVersion;
      return command;
    }
    auto applied = apply_flag(*flag, cursor, command.options);
    if (!applied) return fail(applied.error());
    if (!*applied) return fail("unknown flag " + *flag);
  }
  const auto& options = command.options;
  if (options.blob_urls.empty() && options.blobs_files.empty())
    return fail(std::string("give --blob or --blobs-file"));
  if (options.mode != RandomMode::kUpstream && options.peerd_url.empty()) {
    return fail("--mode " + std::string(to_string(options.mode)) + " needs --peerd");
  }
  if (options.jitter_min_ms > options.jitter_max_ms)
    return fail(std::string("--jitter-min-ms is above --jitter-max-ms"));
  if (options.start_delay_min_s > options.start_delay_max_s) {
    return fail(std::string("--start-delay-min-s is above --start-delay-max-s"));
  }
  return command;
}

Result<bool, std::string> check_blob_urls(const std::vector<std::string>& blob_urls) {
  if (blob_urls.empty()) return fail(std::string("no blob URLs given"));
  if (blob_urls.size() > kPatternBlobsMax) {
    return fail("too many blobs: " + std::to_string(blob_urls.size()) + " > " +
                std::to_string(kPatternBlobsMax));
  }
  for (const auto& url : blob_urls) {
    if (!is_http_url(url)) return fail("not an http:// or https:// URL: '" + daemon::redact_url(url) + "'");
  }
  return true;
}

std::string p2p_url(std::string_view peerd_url, std::string_view blob_url) {
  return std::string(peerd_url) + "/blobs/" + std::string(blob_url);
}

std::string_view random_help() {
  return kHelp;
}

}  // namespace peerd::workload
