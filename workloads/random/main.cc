// peerd-random: random Range reads of blobs through peerd and from upstream (see random_options.cc's help).
// main() only wires: parse the arguments, read the blob lists, build the logger, run.
#include <iostream>
#include <string>
#include <vector>

#include "peerd/daemon/log.h"
#include "workloads/common/arguments.h"
#include "workloads/common/program.h"
#include "workloads/random/random_options.h"
#include "workloads/random/random_workload.h"

int main(int argc, char** argv) {
  using namespace peerd::workload;
  constexpr std::string_view kProgram = "peerd-random";
  const std::vector<std::string> arguments(argv + 1, argv + argc);
  auto command = parse_random_arguments(arguments);
  if (!command) return usage_error(kProgram, command.error());
  if (command->action == RandomCommand::Action::kHelp) {
    std::cout << random_help();
    return kExitPassed;
  }
  if (command->action == RandomCommand::Action::kVersion) {
    std::cout << kProgram << " " << PEERD_VERSION << "\n";
    return kExitPassed;
  }
  RandomOptions& options = command->options;
  for (const auto& path : options.blobs_files) {
    auto urls = read_list_file(path);
    if (!urls) return usage_error(kProgram, "--blobs-file: " + urls.error());
    options.blob_urls.insert(options.blob_urls.end(), urls->begin(), urls->end());
  }
  if (auto checked = check_blob_urls(options.blob_urls); !checked)
    return usage_error(kProgram, checked.error());

  const auto logger = peerd::daemon::Logger(options.log_level, write_stdout)
                          .with({{"node", resolve_node_name(options.node_name)}, {"version", PEERD_VERSION}});
  return run_random_workload(options, logger);
}
