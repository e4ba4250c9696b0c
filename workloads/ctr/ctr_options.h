#pragma once
// peerd-ctr's command line: a pure parser (no I/O) and the help text. --images-file names are collected here
// and read by main(), which then calls check_image_refs().
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"
#include "peerd/daemon/options.h"
#include "workloads/ctr/image_content.h"

namespace peerd::workload {

inline constexpr size_t kCtrImagesMax = 1000;
inline constexpr uint32_t kCtrTimeoutSecondsMax = 24 * 3600;

struct CtrOptions {
  std::vector<std::string> image_refs;    // --image, then the contents of every --images-file
  std::vector<std::string> images_files;  // --images-file
  std::string ctr_binary = "ctr";
  std::string address = "/run/containerd/containerd.sock";
  std::string namespace_name = "default";
  std::string hosts_dir;  // "" : ctr's default (no --hosts-dir)
  bool plain_http = false;
  bool remove_first = false;
  std::string snapshotter;  // "" : containerd's default
  Platform platform;        // architecture "" : this machine's
  bool read_layer = true;   // read the largest layer back after the pull
  std::string peerd_metrics_url;
  bool expect_peer_bytes = false;
  uint32_t pull_timeout_s = 600;
  uint32_t start_delay_min_s = 0;
  uint32_t start_delay_max_s = 0;
  bool insecure_tls = false;
  std::string node_name;
  daemon::LogLevel log_level = daemon::LogLevel::kInfo;
};

struct CtrCommand {
  enum class Action : uint8_t { kRun, kHelp, kVersion };
  Action action = Action::kRun;
  CtrOptions options;
};

Result<CtrCommand, std::string> parse_ctr_arguments(std::span<const std::string> arguments);
// At least one image, at most kCtrImagesMax, none starting with '-' (it would reach ctr as a flag).
Result<bool, std::string> check_image_refs(const std::vector<std::string>& image_refs);

std::string_view ctr_help();

}  // namespace peerd::workload
