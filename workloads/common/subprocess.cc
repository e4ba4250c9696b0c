#include "workloads/common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

extern char** environ;

namespace peerd::workload {
namespace {

struct Pipe {
  int read_end = -1;
  int write_end = -1;
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    read_end = fds[0];
    write_end = fds[1];
    return true;
  }
  void close_read() {
    if (read_end >= 0) ::close(read_end);
    read_end = -1;
  }
  void close_write() {
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
  ~Pipe() {
    close_read();
    close_write();
  }
};

std::string last_line(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  const auto newline = text.rfind('\n');
  return std::string(newline == std::string_view::npos ? text : text.substr(newline + 1));
}

int decode_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::string ProcessResult::describe_failure() const {
  std::string text = error.empty() ? "exit status " + std::to_string(exit_status) : error;
  const std::string line = last_line(stderr_tail);
  if (!line.empty()) text += ": " + line;
  return text;
}

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  ProcessResult result;
  Pipe out;
  Pipe err;
  if (argv.empty() || !out.open() || !err.open()) {
    result.error = "cannot start a process";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out.write_end, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write_end, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const auto started = std::chrono::steady_clock::now();
  const int spawned = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  out.close_write();
  err.close_write();
  if (spawned != 0) {
    result.error = "cannot run " + argv[0];
    return result;
  }

  const auto deadline = started + options.timeout;
  std::array<char, 64 * 1024> buffer;
  bool timed_out = false;
  while (out.read_end >= 0 || err.read_end >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{out.read_end, POLLIN, 0}, {err.read_end, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t bytes = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (bytes < 0 && errno == EINTR) continue;
      Pipe& pipe = i == 0 ? out : err;
      if (bytes <= 0) {
        pipe.close_read();
        continue;
      }
      const std::span<const char> chunk(buffer.data(), static_cast<size_t>(bytes));
      if (i == 0) {
        result.stdout_bytes += chunk.size();
        if (options.on_stdout) {
          options.on_stdout(chunk);
        } else if (result.stdout_text.size() < options.stdout_keep_bytes_max) {
          const size_t room = options.stdout_keep_bytes_max - result.stdout_text.size();
          result.stdout_text.append(chunk.data(), std::min(room, chunk.size()));
        }
      } else {
        result.stderr_tail.append(chunk.data(), chunk.size());
        if (result.stderr_tail.size() > options.stderr_keep_bytes_max) {
          result.stderr_tail.erase(0, result.stderr_tail.size() - options.stderr_keep_bytes_max);
        }
      }
    }
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    result.error = argv[0] + " timed out after " + std::to_string(options.timeout.count()) + " ms";
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_status = decode_status(status);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace peerd::workload
