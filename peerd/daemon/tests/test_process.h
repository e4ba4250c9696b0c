#pragma once
// Helpers for integration tests that run real programs (docker-registry, nginx, containerd, peerd itself) on
// 127.0.0.x with free ports: find a binary, pick a port, spawn with output to a log file, wait until the port
// accepts, and kill the process (SIGTERM, then SIGKILL) when the test ends.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace peerd::daemon::testing {

// The first executable named `name` on PATH (plus sbin directories), or nullopt.
inline std::optional<std::string> find_binary(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/local/sbin";
  std::stringstream directories(path);
  std::string directory;
  while (std::getline(directories, directory, ':')) {
    const std::filesystem::path candidate = std::filesystem::path(directory) / name;
    if (!directory.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return std::nullopt;
}

// A port that was free on `address` a moment ago (bind to 0, read it back, close).
inline uint16_t free_port(const std::string& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  ::inet_pton(AF_INET, address.c_str(), &in.sin_addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof(in));
  socklen_t length = sizeof(in);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&in), &length);
  ::close(fd);
  return ntohs(in.sin_port);
}

inline bool port_accepts(const std::string& address, uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &in.sin_addr);
  const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof(in)) == 0;
  ::close(fd);
  return connected;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { stop(); }

  // Starts argv[0] with stdout and stderr appended to `log`. False if it could not be spawned.
  bool start(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    log_ = log;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int status = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (status != 0) pid_ = -1;
    return pid_ > 0;
  }

  // Polls until the port accepts or the process died (10 s guard against hangs, not a timing assertion).
  bool wait_for_port(const std::string& address, uint16_t port) {
    for (int i = 0; i < 1000; ++i) {
      if (port_accepts(address, port)) return true;
      if (!running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return false;
    }
    return true;
  }

  // Waits for the process to exit by itself (10 s guard) and returns its exit status, or -1.
  int wait_exit() {
    for (int i = 0; i < 1000 && running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return running() ? -1 : exit_status_;
  }

  // SIGTERM, up to 5 s grace, then SIGKILL. Returns the exit status.
  int stop() {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 500 && running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (running()) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      exit_status_ = 128 + SIGKILL;
      pid_ = -1;
    }
    return exit_status_;
  }

  std::string log() const { return read_text(log_); }

 private:
  pid_t pid_ = -1;
  int exit_status_ = -1;
  std::filesystem::path log_;
};

// A temporary directory removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    char path_template[] = "/tmp/peerd-it-XXXXXX";
    path_ = ::mkdtemp(path_template);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace peerd::daemon::testing
