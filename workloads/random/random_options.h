#pragma once
// peerd-random's command line: a pure parser (no I/O) and the help text. --blobs-file names are collected
// here and read by main(), which then calls check_blob_urls().
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"
#include "peerd/daemon/options.h"
#include "workloads/pattern/read_pattern.h"

namespace peerd::workload {

// upstream: straight from the blob's URL; p2p: through peerd's /blobs/ route; both: upstream, then p2p, each
// replaying the same reads.
enum class RandomMode : uint8_t { kUpstream, kP2p, kBoth };
std::string_view to_string(RandomMode mode);

inline constexpr uint32_t kRandomConcurrencyMax = 256;
inline constexpr uint32_t kRandomTimeoutSecondsMax = 3600;

// The read pattern's settings (--reads-per-blob, --read-bytes-max, --jitter-*-ms, --start-delay-*-s) are the
// PatternSettings base.
struct RandomOptions : PatternSettings {
  std::vector<std::string> blob_urls;    // --blob, then the contents of every --blobs-file
  std::vector<std::string> blobs_files;  // --blobs-file
  std::string peerd_url;                 // --peerd, e.g. "http://127.0.0.1:5000" (no trailing slash)
  RandomMode mode = RandomMode::kBoth;
  std::optional<uint64_t> seed;  // unset: a fresh random seed, logged so the run can be replayed
  uint32_t concurrency = 8;      // blobs read at the same time
  uint32_t verify_reads = 0;     // reads per mode whose bytes are compared with upstream
  uint32_t timeout_s = 60;       // per request
  double error_rate_max = 0;     // the run fails above this error rate
  bool insecure_tls = false;
  std::string node_name;  // "" : $NODE_NAME, else the host name
  daemon::LogLevel log_level = daemon::LogLevel::kInfo;
};

struct RandomCommand {
  enum class Action : uint8_t { kRun, kHelp, kVersion };
  Action action = Action::kRun;
  RandomOptions options;
};

// `arguments` excludes the program name. Errors are one line.
Result<RandomCommand, std::string> parse_random_arguments(std::span<const std::string> arguments);
// At least one blob, at most kPatternBlobsMax, each an http:// or https:// URL.
Result<bool, std::string> check_blob_urls(const std::vector<std::string>& blob_urls);
// The URL a p2p read uses: "<peerd>/blobs/<blob url>", as peerd's /blobs/ route expects it.
std::string p2p_url(std::string_view peerd_url, std::string_view blob_url);

std::string_view random_help();

}  // namespace peerd::workload
