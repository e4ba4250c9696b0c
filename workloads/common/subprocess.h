#pragma once
// Runs a program (no shell) with a deadline and collects its output: stdout is kept (bounded) or streamed to
// a callback, stderr keeps its last bytes for error messages. peerd-ctr drives `ctr` with it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace peerd::workload {

struct ProcessOptions {
  std::chrono::milliseconds timeout{600'000};  // the process is killed (SIGKILL) after this
  uint64_t stdout_keep_bytes_max = 16 << 20;   // beyond this stdout is counted but not kept
  uint64_t stderr_keep_bytes_max = 4096;       // the tail is kept
  // When set, stdout goes here chunk by chunk instead of being kept.
  std::function<void(std::span<const char>)> on_stdout;
};

struct ProcessResult {
  std::string error;     // could not start, or timed out; empty otherwise
  int exit_status = -1;  // 0..255, or 128 + signal
  std::string stdout_text;
  uint64_t stdout_bytes = 0;
  std::string stderr_tail;
  double seconds = 0;

  bool succeeded() const { return error.empty() && exit_status == 0; }
  // A one-line description of a failure for logs: the error or exit status and the last stderr line.
  std::string describe_failure() const;
};

// argv[0] is looked up on PATH.
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

}  // namespace peerd::workload
