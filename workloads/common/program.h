#pragma once
// What both workload programs' main() need: the node name for log lines, a stdout sink (the log lines are the
// programs' output), list files, and the one-line usage error.
#include <string>
#include <string_view>
#include <vector>

#include "peerd/core/common/result.h"

namespace peerd::workload {

// `flag` when set, else $NODE_NAME (the Kubernetes downward API), else the host name.
std::string resolve_node_name(const std::string& flag);
// Writes a whole log line to stdout.
void write_stdout(std::string_view line);
// The words of a list file (split_list), or a one-line error.
Result<std::vector<std::string>, std::string> read_list_file(const std::string& path);
// Prints "<program>: <message> (see --help)" to stderr and returns kExitUsage.
int usage_error(std::string_view program, std::string_view message);

}  // namespace peerd::workload
