#pragma once
// LocalCluster: the C++ counterpart of scripts/local-cluster.sh for integration tests. One docker-registry,
// test images built offline (umoci) and pushed (skopeo), and N nodes of peerd + containerd, every process on
// its own loopback address 127.<block>.<subnet>.x (registry .100, file server .101, node N .(10+N)) with
// ports picked free at start, so tests of different binaries and of one binary can run in parallel.
// Processes run in their own process group and are killed (SIGTERM, then SIGKILL) when the cluster is
// destroyed; every wait is bounded. PEERD_CLUSTER_LOGS=DIR keeps the logs after the test.
//
// Usage:
//   if (auto missing = LocalCluster::missing_requirement()) GTEST_SKIP() << *missing;
//   LocalClusterOptions options;
//   options.subnet = 1;  // 127.44.1.x, 3 nodes by default
//   LocalCluster cluster(options);
//   ASSERT_TRUE(cluster.start()) << cluster.error();
//   ASSERT_EQ(cluster.pull(1, cluster.small_reference()), 0) << cluster.pull_log(1);
//   cluster.metric(1, "peerd_bytes_fetched_total{source=\"peer\"}");
#include <curl/curl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "peerd/daemon/peer_tls.h"
#include "peerd/daemon/tests/test_process.h"

namespace peerd::daemon::testing {

// A child in its own process group (so a signal reaches everything it started), with any signal on demand:
// ChildProcess only ever sends SIGTERM/SIGKILL to one pid, and the cluster tests need SIGKILL mid-transfer.
class GroupProcess {
 public:
  GroupProcess() = default;
  GroupProcess(const GroupProcess&) = delete;
  GroupProcess& operator=(const GroupProcess&) = delete;
  ~GroupProcess() { stop(); }

  // Starts argv[0] with stdout and stderr appended to `log` (stdout to `stdout_path` when given).
  bool start(const std::vector<std::string>& argv, const std::filesystem::path& log,
             const std::filesystem::path& stdout_path = {}) {
    log_ = log;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (stdout_path.empty()) {
      posix_spawn_file_actions_adddup2(&actions, 2, 1);
    } else {
      posix_spawn_file_actions_addopen(&actions, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    }
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attributes, 0);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int status = ::posix_spawn(&pid_, args[0], &actions, &attributes, args.data(), environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (status != 0) pid_ = -1;
    return pid_ > 0;
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return false;
    }
    return true;
  }

  // Waits up to `limit` for the process to exit by itself; its exit status, or -1 if it is still running.
  int wait_exit(std::chrono::milliseconds limit) {
    const auto steps = limit / std::chrono::milliseconds(10);
    for (int64_t i = 0; i < steps && running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return running() ? -1 : exit_status_;
  }

  void signal(int signal_number) {
    if (pid_ > 0) ::kill(-pid_, signal_number);
  }

  // SIGTERM to the group, up to 5 s grace, then SIGKILL. Returns the exit status.
  int stop() {
    if (!running()) return exit_status_;
    signal(SIGTERM);
    if (wait_exit(std::chrono::seconds(5)) >= 0) return exit_status_;
    signal(SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_status_ = 128 + SIGKILL;
    pid_ = -1;
    return exit_status_;
  }

  // SIGKILL to the group, reaped at once (a crash, not a shutdown).
  void kill_now() {
    if (!running()) return;
    signal(SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_status_ = 128 + SIGKILL;
    pid_ = -1;
  }

  std::string log() const { return read_text(log_); }

 private:
  pid_t pid_ = -1;
  int exit_status_ = -1;
  std::filesystem::path log_;
};

// One HTTP exchange (libcurl; bounded by a timeout).
struct HttpResult {
  long status = 0;  // 0: no response (refused, timed out)
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names

  std::string header(const std::string& lower_case_name) const {
    const auto found = headers.find(lower_case_name);
    return found == headers.end() ? "" : found->second;
  }
};

inline HttpResult http_request(const std::string& url, const std::vector<std::string>& request_headers = {},
                               bool head = false, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  HttpResult result;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return result;
  curl_slist* list = nullptr;
  for (const auto& header : request_headers) list = curl_slist_append(list, header.c_str());
  const auto on_body = +[](char* data, size_t size, size_t count, void* user) -> size_t {
    static_cast<HttpResult*>(user)->body.append(data, size * count);
    return size * count;
  };
  const auto on_header = +[](char* data, size_t size, size_t count, void* user) -> size_t {
    const std::string line(data, size * count);
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(value.begin());
      while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
      static_cast<HttpResult*>(user)->headers[name] = value;
    }
    return size * count;
  };
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_NOBODY, head ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &result);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");  // never an environment proxy: everything here is loopback
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return result;
}

// "sha256:<hex>" of a file (OpenSSL), or "" when it cannot be read.
inline std::string file_sha256(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 20);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
    EVP_DigestUpdate(context, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  EVP_DigestFinal_ex(context, digest, &digest_bytes);
  EVP_MD_CTX_free(context);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex = "sha256:";
  for (unsigned int i = 0; i < digest_bytes; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

// Deterministic pseudo-random bytes (splitmix64): reproducible test files without /dev/urandom.
inline void write_pseudo_random_file(const std::filesystem::path& path, uint64_t size_bytes, uint64_t seed) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<uint64_t> block(1 << 17);  // 1 MiB
  uint64_t state = seed;
  for (uint64_t written = 0; written < size_bytes;) {
    for (auto& word : block) {
      uint64_t z = (state += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      word = z ^ (z >> 31);
    }
    const uint64_t step = std::min<uint64_t>(size_bytes - written, block.size() * sizeof(uint64_t));
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(step));
    written += step;
  }
}

struct LocalClusterOptions {
  uint32_t subnet = 1;  // addresses 127.<block>.<subnet>.x: give each test its own
  uint32_t block = 44;  // helpers' test suites each have their own
  uint32_t nodes = 3;
  bool big_image = false;                   // also build and push test/big (one big random layer)
  uint64_t big_image_bytes = 200ull << 20;  // size of that layer's single file
  bool file_server = false;                 // nginx on .101 serving files_dir() (for /blobs/)
  std::string cache_size = "2GiB";
  std::vector<std::string> extra_peerd_flags;
  // Peers use mutual TLS: a cluster CA is written to peer_tls_dir() (ca.crt + ca.key, like the Secret volume)
  // and every peerd gets --peer-tls-dir and --peer-addr=<node>:<peer_port()>.
  bool peer_tls = false;
  // Flags for one node's peerd (after extra_peerd_flags), e.g. its containerd socket: (node, node directory).
  std::function<std::vector<std::string>(uint32_t node, const std::filesystem::path& node_dir)>
      node_peerd_flags;
};

class LocalCluster {
 public:
  static constexpr uint32_t kNodesMax = 40;
  static constexpr auto kPullTimeout = std::chrono::seconds(120);

  // Why the cluster cannot run here (a missing program, not root), or nullopt.
  static std::optional<std::string> missing_requirement() {
    for (const char* name : {"docker-registry", "umoci", "skopeo", "containerd", "ctr"}) {
      if (!find_binary(name)) return std::string(name) + " not installed";
    }
    if (::geteuid() != 0) return std::string("containerd needs root");
    if (::access(PEERD_BINARY, X_OK) != 0) return std::string("no peerd binary at ") + PEERD_BINARY;
    return std::nullopt;
  }

  explicit LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {
    for (uint32_t node = 0; node < options_.nodes && node < kNodesMax; ++node) {
      nodes_.push_back(std::make_unique<Node>());
    }
  }
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;
  ~LocalCluster() {
    for (auto& node : nodes_) {
      node->containerd.stop();
      node->peerd.stop();
    }
    registry_.stop();
    file_server_.stop();
    unmount_below(dir_.path());
    // PEERD_CLUSTER_LOGS=DIR keeps every process's log (DIR/cluster-<subnet>-<pid>/) for a failure's
    // post-mortem.
    if (const char* keep = std::getenv("PEERD_CLUSTER_LOGS"); keep != nullptr && *keep != '\0') {
      const auto target = std::filesystem::path(keep) /
                          ("cluster-" + std::to_string(options_.subnet) + "-" + std::to_string(::getpid()));
      std::error_code ignored;
      std::filesystem::create_directories(target, ignored);
      std::filesystem::copy(dir_.path() / "logs", target, std::filesystem::copy_options::recursive, ignored);
    }
  }

  // Registry, images, nginx (if asked), then every node. False with error() on the first failure.
  bool start() {
    if (options_.nodes == 0 || options_.nodes > kNodesMax) return fail("nodes must be 1..40");
    for (const char* name : {"docker-registry", "umoci", "skopeo", "containerd", "ctr"}) {
      binaries_[name] = find_binary(name).value_or(name);
    }
    http_port_ = free_port(node_address(1));
    router_port_ = free_port(node_address(1));
    for (int i = 0; i < 100 && router_port_ == http_port_; ++i) router_port_ = free_port(node_address(1));
    registry_port_ = free_port(registry_address());
    if (options_.peer_tls && !write_cluster_ca()) return false;
    std::filesystem::create_directories(dir_.path() / "logs");
    if (!start_registry() || !build_and_push_images()) return false;
    if (options_.file_server && !start_file_server()) return false;
    for (uint32_t node = 1; node <= options_.nodes; ++node) {
      if (!start_peerd(node) || !start_containerd(node)) return false;
    }
    return true;
  }
  const std::string& error() const { return error_; }

  // ---- addresses ----
  std::string address(uint32_t host) const {
    return "127." + std::to_string(options_.block) + "." + std::to_string(options_.subnet) + "." +
           std::to_string(host);
  }
  std::string node_address(uint32_t node) const { return address(10 + node); }
  std::string registry_address() const { return address(100); }
  std::string file_server_address() const { return address(101); }
  uint16_t http_port() const { return http_port_; }
  uint16_t peer_port() const { return peer_port_; }  // with peer_tls
  std::filesystem::path peer_tls_dir() const { return dir_.path() / "peer-tls"; }
  std::string registry() const { return registry_address() + ":" + std::to_string(registry_port_); }
  std::string node_url(uint32_t node) const {
    return "http://" + node_address(node) + ":" + std::to_string(http_port_);
  }
  // "http://127.44.S.101:PORT": the base URL of files_dir() on nginx.
  std::string file_server_url() const {
    return "http://" + file_server_address() + ":" + std::to_string(file_server_port_);
  }
  std::filesystem::path files_dir() const { return dir_.path() / "files"; }
  const std::filesystem::path& dir() const { return dir_.path(); }

  std::string small_reference() const { return registry() + "/test/small:latest"; }
  std::string big_reference() const { return registry() + "/test/big:latest"; }
  // "registry/test/<repository>@sha256:…" for the pushed manifest, or "" when the registry cannot say.
  std::string digest_reference(const std::string& repository) const {
    const HttpResult head =
        http_request("http://" + registry() + "/v2/test/" + repository + "/manifests/latest",
                     {"Accept: application/vnd.oci.image.manifest.v1+json"}, true);
    const auto digest = head.headers.find("docker-content-digest");
    if (head.status != 200 || digest == head.headers.end()) return "";
    return registry() + "/test/" + repository + "@" + digest->second;
  }

  // ---- the registry ----
  // Blob GETs the registry answered so far (one access-log line each).
  size_t registry_blob_gets() const {
    std::istringstream lines(read_text(dir_.path() / "logs" / "registry.log"));
    size_t count = 0;
    for (std::string line; std::getline(lines, line);) {
      const auto get = line.find("\"GET /v2/");
      count += get != std::string::npos && line.find("/blobs/sha256:", get) != std::string::npos;
    }
    return count;
  }
  void stop_registry() { registry_.stop(); }

  // GETs nginx answered for `path` so far (its access log; written once each response is complete).
  size_t file_server_gets(const std::string& path) const {
    std::istringstream lines(read_text(dir_.path() / "nginx" / "access.log"));
    size_t count = 0;
    for (std::string line; std::getline(lines, line);)
      count += line.find("\"GET " + path + " ") != std::string::npos;
    return count;
  }
  std::string registry_log() const { return read_text(dir_.path() / "logs" / "registry.log"); }

  // ---- nodes ----
  // `ctr images pull` on the node through its peerd (hosts.toml peerd wrote); the exit status (-1: timeout).
  int pull(uint32_t node, const std::string& reference) {
    GroupProcess process;
    if (!start_pull(process, node, reference)) return -1;
    const int status = process.wait_exit(kPullTimeout);
    return status;
  }
  bool start_pull(GroupProcess& process, uint32_t node, const std::string& reference) {
    return process.start({binaries_["ctr"], "--address", socket(node).string(), "images", "pull",
                          "--plain-http", "--hosts-dir", (node_dir(node) / "certs.d").string(), reference},
                         pull_log_path(node));
  }
  // The pull's output without ctr's progress display (bars and "elapsed:" lines, redrawn every 100 ms).
  std::string pull_log(uint32_t node) const {
    std::istringstream lines(read_text(pull_log_path(node)));
    std::string kept;
    for (std::string line; std::getline(lines, line);) {
      if (line.find('|') == std::string::npos && !line.starts_with("elapsed:")) kept += line + "\n";
    }
    return kept;
  }

  GroupProcess& peerd(uint32_t node) { return nodes_.at(node - 1)->peerd; }
  std::string peerd_log(uint32_t node) const {
    return read_text(dir_.path() / "logs" / node_log(node, "peerd"));
  }
  bool restart_peerd(uint32_t node) { return start_peerd(node); }

  // ---- a node's containerd ----
  std::filesystem::path containerd_socket(uint32_t node) const { return socket(node); }
  // `ctr --address <node's socket> args...` to completion; stdout to `stdout_path` when given. Exit status.
  int ctr(uint32_t node, const std::vector<std::string>& args,
          const std::filesystem::path& stdout_path = {}) {
    std::vector<std::string> argv = {binaries_["ctr"], "--address", socket(node).string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, stdout_path);
  }
  void stop_containerd(uint32_t node) { nodes_.at(node - 1)->containerd.stop(); }
  // Starts the node's containerd again (same root and socket); false with error() when it does not come up.
  bool restart_containerd(uint32_t node) {
    nodes_.at(node - 1)->containerd.stop();
    return start_containerd(node);
  }

  // A sample from the node's /metrics ("name{labels}" exactly as rendered); 0 when absent or unreachable.
  uint64_t metric(uint32_t node, const std::string& series) const {
    const HttpResult metrics = http_request(node_url(node) + "/metrics", {}, false, std::chrono::seconds(5));
    std::istringstream lines(metrics.body);
    for (std::string line; std::getline(lines, line);) {
      if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
          line[series.size()] == ' ') {
        return static_cast<uint64_t>(std::stod(line.substr(series.size() + 1)));
      }
    }
    return 0;
  }
  uint64_t bytes_fetched(uint32_t node, const std::string& source) const {
    return metric(node, "peerd_bytes_fetched_total{source=\"" + source + "\"}");
  }
  // "node N: P from peers, U from upstream" (peerd_bytes_fetched_total) for every node, for failure messages.
  std::string fetched_summary() const {
    std::string summary;
    for (uint32_t node = 1; node <= options_.nodes; ++node) {
      summary += "node " + std::to_string(node) + ": " + std::to_string(bytes_fetched(node, "peer")) +
                 " bytes from peers, " + std::to_string(bytes_fetched(node, "upstream")) + " from upstream\n";
    }
    return summary;
  }
  uint64_t bytes_served(uint32_t node) const {
    uint64_t total = 0;
    for (const char* source : {"peer", "upstream", "cache"}) {
      total += metric(node, std::string("peerd_bytes_served_total{source=\"") + source + "\"}");
    }
    return total;
  }

  // Every blob digest in the node's containerd content store, sorted.
  std::set<std::string> content_digests(uint32_t node) {
    const auto out = dir_.path() / ("content-ls-" + std::to_string(node) + ".txt");
    run({binaries_["ctr"], "--address", socket(node).string(), "content", "ls", "-q"}, out);
    std::set<std::string> digests;
    std::istringstream lines(read_text(out));
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("sha256:")) digests.insert(line);
    }
    return digests;
  }
  // The SHA-256 of the bytes `ctr content get <digest>` returns on the node ("sha256:<hex>").
  std::string content_sha256(uint32_t node, const std::string& digest) {
    const auto out = dir_.path() / "content-get.bin";
    if (run({binaries_["ctr"], "--address", socket(node).string(), "content", "get", digest}, out) != 0)
      return "";
    std::string hash = file_sha256(out);
    std::filesystem::remove(out);
    return hash;
  }

 private:
  struct Node {
    GroupProcess peerd;
    GroupProcess containerd;
  };

  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }
  std::filesystem::path node_dir(uint32_t node) const {
    return dir_.path() / ("node" + std::to_string(node));
  }
  std::filesystem::path socket(uint32_t node) const { return node_dir(node) / "containerd.sock"; }
  static std::string node_log(uint32_t node, const char* what) {
    return std::string(what) + std::to_string(node) + ".log";
  }
  std::filesystem::path pull_log_path(uint32_t node) const {
    return dir_.path() / "logs" / node_log(node, "pull");
  }

  // Runs a command to completion (2 min guard); stdout to `stdout_path` when given. The exit status.
  int run(const std::vector<std::string>& argv, const std::filesystem::path& stdout_path = {}) {
    GroupProcess process;
    if (!process.start(argv, dir_.path() / "logs" / "commands.log", stdout_path)) return -1;
    return process.wait_exit(std::chrono::minutes(2));
  }

  static bool wait_until_accepts(GroupProcess& process, const std::string& address, uint16_t port) {
    for (int i = 0; i < 1000; ++i) {  // 10 s guard against hangs, not a timing assertion
      if (port_accepts(address, port)) return true;
      if (!process.running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  bool start_registry() {
    const auto config = dir_.path() / "registry.yml";
    // The access log records every request: "GET /v2/test/big/blobs/sha256:… HTTP/1.1" 200 BYTES.
    std::ofstream(config)
        << "version: 0.1\nlog: {level: info, formatter: text, accesslog: {disabled: false}}\n"
        << "storage: {filesystem: {rootdirectory: " << (dir_.path() / "registry").string()
        << "}, delete: {enabled: true}}\nhttp: {addr: " << registry() << "}\n";
    if (!registry_.start({binaries_["docker-registry"], "serve", config.string()},
                         dir_.path() / "logs" / "registry.log") ||
        !wait_until_accepts(registry_, registry_address(), registry_port_)) {
      return fail("docker-registry did not start: " + registry_.log());
    }
    return true;
  }

  bool build_and_push_images() {
    const auto root = dir_.path() / "images";
    std::filesystem::create_directories(root / "small" / "etc");
    for (const char* name : {"motd", "hostname", "issue"}) {
      std::ofstream(root / "small" / "etc" / name) << "peerd cluster test: " << name << "\n";
    }
    const std::string layout = (root / "oci").string();
    std::vector<std::vector<std::string>> commands = {
        {binaries_["umoci"], "init", "--layout", layout},
        {binaries_["umoci"], "new", "--image", layout + ":small"},
        {binaries_["umoci"], "insert", "--image", layout + ":small", (root / "small").string(), "/"}};
    if (options_.big_image) {
      std::filesystem::create_directories(root / "big");
      write_pseudo_random_file(root / "big" / "blob.bin", options_.big_image_bytes, options_.subnet);
      commands.push_back({binaries_["umoci"], "new", "--image", layout + ":big"});
      commands.push_back(
          {binaries_["umoci"], "insert", "--image", layout + ":big", (root / "big").string(), "/"});
    }
    commands.push_back({binaries_["umoci"], "gc", "--layout", layout});
    for (const char* tag : {"small", "big"}) {
      if (std::string(tag) == "big" && !options_.big_image) continue;
      commands.push_back({binaries_["skopeo"], "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                          "oci:" + layout + ":" + tag,
                          "docker://" + registry() + "/test/" + tag + ":latest"});
    }
    for (const auto& argv : commands) {
      if (run(argv) != 0) {
        return fail(argv[0] + " " + argv[1] + " failed: " + read_text(dir_.path() / "logs" / "commands.log"));
      }
    }
    std::filesystem::remove_all(root / "big");
    return true;
  }

  bool start_file_server() {
    const auto binary = find_binary("nginx");
    if (!binary) return fail("nginx not installed");
    file_server_port_ = free_port(file_server_address());
    const auto conf = dir_.path() / "nginx";
    std::filesystem::create_directories(conf);
    std::filesystem::create_directories(files_dir());
    std::ofstream(conf / "nginx.conf")
        << "daemon off;\nuser root;\nworker_processes 1;\npid " << (conf / "nginx.pid").string()
        << ";\nerror_log " << (conf / "error.log").string() << ";\nevents { worker_connections 256; }\n"
        << "http {\n  access_log " << (conf / "access.log").string() << ";\n"
        << "  client_body_temp_path " << (conf / "body").string() << ";\n"
        << "  proxy_temp_path " << (conf / "proxy").string() << ";\n"
        << "  fastcgi_temp_path " << (conf / "fastcgi").string() << ";\n"
        << "  uwsgi_temp_path " << (conf / "uwsgi").string() << ";\n"
        << "  scgi_temp_path " << (conf / "scgi").string() << ";\n"
        << "  sendfile on;\n  server {\n    listen " << file_server_address() << ":" << file_server_port_
        << ";\n    root " << files_dir().string() << ";\n  }\n}\n";
    if (!file_server_.start({*binary, "-e", (conf / "error.log").string(), "-p", conf.string(), "-c",
                             (conf / "nginx.conf").string()},
                            dir_.path() / "logs" / "nginx.log") ||
        !wait_until_accepts(file_server_, file_server_address(), file_server_port_)) {
      return fail("nginx did not start: " + read_text(conf / "error.log"));
    }
    return true;
  }

  bool start_peerd(uint32_t node) {
    const auto dir = node_dir(node);
    std::filesystem::create_directories(dir / "cache");
    const std::string address = node_address(node);
    std::string bootstrap;
    for (uint32_t peer = 1; peer <= options_.nodes && peer <= 3; ++peer) {
      bootstrap += (bootstrap.empty() ? "" : ",") + node_address(peer) + ":" + std::to_string(router_port_);
    }
    std::vector<std::string> argv = {PEERD_BINARY,
                                     "run",
                                     "--http-addr=" + address + ":" + std::to_string(http_port_),
                                     "--router-addr=" + address + ":" + std::to_string(router_port_),
                                     "--metrics-addr=off",
                                     "--hosts=http://" + registry(),
                                     "--cache-dir=" + (dir / "cache").string(),
                                     "--cache-size=" + options_.cache_size,
                                     "--cache-fsync=false",
                                     "--bootstrap=" + bootstrap,
                                     "--node-name=node" + std::to_string(node),
                                     "--log-level=info",
                                     "--add-mirror-configuration",
                                     "--containerd-hosts-config-path=" + (dir / "certs.d").string()};
    if (peerd_supports("--node-ip")) argv.push_back("--node-ip=" + address);
    if (options_.file_server) {
      argv.push_back("--allowed-upstreams=" + registry() + "," + file_server_address() + ":" +
                     std::to_string(file_server_port_));
    }
    if (options_.peer_tls) {
      argv.push_back("--peer-tls-dir=" + peer_tls_dir().string());
      argv.push_back("--peer-addr=" + address + ":" + std::to_string(peer_port_));
    } else if (peerd_supports("--peer-plaintext")) {
      argv.push_back("--peer-plaintext");
    }
    for (const auto& flag : options_.extra_peerd_flags) argv.push_back(flag);
    if (options_.node_peerd_flags) {
      for (const auto& flag : options_.node_peerd_flags(node, dir)) argv.push_back(flag);
    }
    GroupProcess& process = nodes_.at(node - 1)->peerd;
    if (!process.start(argv, dir_.path() / "logs" / node_log(node, "peerd")) ||
        !wait_until_accepts(process, address, http_port_)) {
      return fail("peerd of node " + std::to_string(node) + " did not start: " + peerd_log(node));
    }
    return true;
  }

  bool start_containerd(uint32_t node) {
    const auto dir = node_dir(node);
    std::ofstream(dir / "containerd.toml")
        << "version = 2\nroot = \"" << (dir / "root").string() << "\"\n"
        << "state = \"" << (dir / "state").string() << "\"\n"
        << "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        << "[grpc]\n  address = \"" << socket(node).string() << "\"\n"
        << "[ttrpc]\n  address = \"" << socket(node).string() << ".ttrpc\"\n";
    GroupProcess& process = nodes_.at(node - 1)->containerd;
    if (!process.start({binaries_["containerd"], "--config", (dir / "containerd.toml").string()},
                       dir_.path() / "logs" / node_log(node, "containerd"))) {
      return fail("containerd did not start");
    }
    for (int i = 0; i < 100; ++i) {  // 10 s guard against hangs
      if (run({binaries_["ctr"], "--address", socket(node).string(), "version"}) == 0) return true;
      if (!process.running()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return fail("containerd of node " + std::to_string(node) +
                " did not come up: " + read_text(dir_.path() / "logs" / node_log(node, "containerd")));
  }

  bool write_cluster_ca() {
    const auto now = std::chrono::system_clock::now();
    auto ca =
        create_self_signed_ca("peerd test cluster", now - std::chrono::hours(1), std::chrono::hours(24 * 7));
    if (!ca) return fail("cannot create the cluster CA: " + ca.error());
    std::filesystem::create_directories(peer_tls_dir());
    std::ofstream(peer_tls_dir() / "ca.crt") << ca->cert_pem;
    std::ofstream(peer_tls_dir() / "ca.key") << ca->key_pem;
    for (int i = 0; i < 100 && (peer_port_ == 0 || peer_port_ == http_port_ || peer_port_ == router_port_);
         ++i) {
      peer_port_ = free_port(node_address(1));
    }
    return true;
  }

  bool peerd_supports(const std::string& flag) {
    if (!help_text_) {
      const auto out = dir_.path() / "peerd-help.txt";
      run({PEERD_BINARY, "--help"}, out);
      help_text_ = read_text(out);
    }
    return help_text_->find(flag) != std::string::npos;
  }

  // containerd's overlayfs snapshotter mounts only while unpacking; detach anything left before removal.
  static void unmount_below(const std::filesystem::path& root) {
    std::istringstream mounts(read_text("/proc/mounts"));
    std::vector<std::string> targets;
    for (std::string line; std::getline(mounts, line) && targets.size() < 1000;) {
      std::istringstream fields(line);
      std::string device, target;
      fields >> device >> target;
      if (!root.empty() && target.starts_with(root.string() + "/")) targets.push_back(target);
    }
    for (auto it = targets.rbegin(); it != targets.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  }

  LocalClusterOptions options_;
  TempDir dir_;
  std::map<std::string, std::string> binaries_;
  GroupProcess registry_;
  GroupProcess file_server_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::optional<std::string> help_text_;
  std::string error_;
  uint16_t http_port_ = 0;
  uint16_t router_port_ = 0;
  uint16_t registry_port_ = 0;
  uint16_t file_server_port_ = 0;
  uint16_t peer_port_ = 0;
};

}  // namespace peerd::daemon::testing
