#include "workloads/common/program.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "workloads/common/arguments.h"

namespace peerd::workload {

std::string resolve_node_name(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* name = std::getenv("NODE_NAME"); name != nullptr && *name != '\0') return name;
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') return host;
  return "unknown";
}

void write_stdout(std::string_view line) {
  while (!line.empty()) {
    const ssize_t written = ::write(STDOUT_FILENO, line.data(), line.size());
    if (written <= 0) return;  // nowhere left to report it
    line.remove_prefix(static_cast<size_t>(written));
  }
}

Result<std::vector<std::string>, std::string> read_list_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) return fail("cannot read " + path);
  std::stringstream text;
  text << file.rdbuf();
  return split_list(text.str());
}

int usage_error(std::string_view program, std::string_view message) {
  std::cerr << program << ": " << message << " (see --help)\n";
  return kExitUsage;
}

}  // namespace peerd::workload
